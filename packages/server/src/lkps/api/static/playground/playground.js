// The LKPS dev playground (lkps/api/playground.py): plain DOM, no framework, no inline
// script. livekit-client comes from /playground/livekit-client.umd.js (global LivekitClient).
"use strict";

(() => {
  const LK = window.LivekitClient;
  const $ = (id) => document.getElementById(id);
  const defaults = document.body.dataset;
  const TOPIC = defaults.topic;
  const LEVEL_EVERY_MS = 200;
  const LIFECYCLE_EVERY_MS = 2000;

  const state = {
    userToken: null,
    auditorToken: null,
    session: null,
    room: null,
    levelTimer: null,
    lifecycleTimer: null,
  };

  // ---- small helpers -------------------------------------------------------------

  function setStatus(message) {
    $("status").textContent = message;
  }

  function showJson(id, value) {
    $(id).textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }

  function decodeJwt(token) {
    // For learning only: the payload as JSON, unchecked (LKPS and LiveKit check it).
    const payload = token.split(".")[1] || "";
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  async function call(method, path, token, body) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers, body });
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch (_) {
      json = null;
    }
    return { status: response.status, json, text };
  }

  function describeError(answer) {
    const message = answer.json && answer.json.message ? answer.json.message : answer.text;
    return `HTTP ${answer.status}: ${message}`;
  }

  function item(text, attributes = {}) {
    const li = document.createElement("li");
    li.textContent = text;
    for (const [name, value] of Object.entries(attributes)) li.setAttribute(name, value);
    return li;
  }

  // ---- 1. sign in ----------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    const body = JSON.stringify({ user: $("user").value.trim(), client_id: $("client-id").value.trim() });
    const answer = await call("POST", "/playground/sign-in", null, body);
    if (answer.status !== 200) {
      setStatus(`Sign-in refused: ${describeError(answer)}`);
      return;
    }
    state.userToken = answer.json.user_token;
    state.auditorToken = answer.json.auditor_token;
    showJson("user-claims", decodeJwt(state.userToken));
    $("start").disabled = false;
    $("refresh-agents").disabled = false;
    setStatus(`Signed in as ${$("user").value.trim()}.`);
    document.body.dataset.signedIn = "true";
    await loadAgents();
  }

  // ---- 2. agents -----------------------------------------------------------------

  async function loadAgents() {
    const answer = await call("GET", "/api/agents", state.auditorToken);
    const list = $("agent-list");
    list.replaceChildren();
    if (answer.status !== 200) {
      $("agents-empty").textContent = `Cannot list agents: ${describeError(answer)}`;
      return;
    }
    const agents = answer.json.agents;
    $("agents-empty").textContent = agents.length ? "" : "No agent has registered yet: run `lkps dev agent`.";
    for (const agent of agents) {
      const li = document.createElement("li");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "agent";
      input.id = `agent-${agent.agent_id}`;
      input.value = agent.agent_id;
      input.checked = agent.agent_id === $("agent-id").value.trim().toLowerCase();
      input.addEventListener("change", () => {
        $("agent-id").value = agent.agent_id;
      });
      const label = document.createElement("label");
      label.htmlFor = input.id;
      const presence = agent.present ? "present" : "not present";
      label.textContent = ` ${agent.agent_id}: ${presence}, ${agent.active_registrations} worker(s), client authorization ${agent.enforce_client_authz ? "enforced" : "off"}`;
      li.dataset.present = String(agent.present);
      li.append(input, label);
      list.append(li);
    }
  }

  // ---- 3. session ----------------------------------------------------------------

  function metadataText() {
    // Sent as typed (LKPS hands the agent this text, compacted): only checked here.
    const text = $("metadata").value.trim();
    if (!text) return null;
    let value;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new Error(`Metadata is not JSON: ${error.message}`);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new Error("Metadata must be a JSON object");
    }
    return text;
  }

  async function startSession(event) {
    event.preventDefault();
    $("metadata-error").textContent = "";
    let metadata;
    try {
      metadata = metadataText();
    } catch (error) {
      $("metadata-error").textContent = error.message;
      $("metadata").setAttribute("aria-invalid", "true");
      return;
    }
    $("metadata").removeAttribute("aria-invalid");
    const agentId = JSON.stringify($("agent-id").value.trim());
    const body = metadata === null
      ? `{"agent_entra_app_id": ${agentId}}`
      : `{"agent_entra_app_id": ${agentId}, "metadata": ${metadata}}`;
    await leave();
    setStatus("Starting a session…");
    const answer = await call("POST", "/api/session/start", state.userToken, body);
    showJson("raw-response", answer.json || answer.text);
    if (answer.status !== 200) {
      showJson("token-claims", "");
      setStatus(`Session refused: ${describeError(answer)}`);
      return;
    }
    state.session = answer.json;
    showJson("token-claims", decodeJwt(state.session.participant_token));
    await join(state.session);
    watchLifecycle();
  }

  // ---- 4. room -------------------------------------------------------------------

  async function join(session) {
    const room = new LK.Room({ adaptiveStream: false, dynacast: false });
    state.room = room;
    room
      .on(LK.RoomEvent.ParticipantConnected, renderParticipants)
      .on(LK.RoomEvent.ParticipantDisconnected, renderParticipants)
      .on(LK.RoomEvent.ActiveSpeakersChanged, renderParticipants)
      .on(LK.RoomEvent.TrackSubscribed, onTrackSubscribed)
      .on(LK.RoomEvent.TrackUnsubscribed, (track) => track.detach().forEach((el) => el.remove()))
      .on(LK.RoomEvent.DataReceived, onData)
      .on(LK.RoomEvent.ConnectionStateChanged, (connection) => {
        $("room-state").textContent = connection;
      })
      .on(LK.RoomEvent.Disconnected, () => {
        $("room-state").textContent = "disconnected";
        setControls(false);
      });
    $("room-name").textContent = session.room_name;
    setStatus(`Joining ${session.room_name}…`);
    try {
      await room.connect(session.livekit_url, session.participant_token);
    } catch (error) {
      setStatus(`Could not join the room: ${error.message}`);
      return;
    }
    setControls(true);
    renderParticipants();
    setStatus(`Joined ${session.room_name}; waiting for the agent.`);
    state.levelTimer = setInterval(updateAgentLevel, LEVEL_EVERY_MS);
  }

  function setControls(joined) {
    $("mic").disabled = !joined;
    $("leave").disabled = !joined;
    $("send").disabled = !joined;
    if (!joined) {
      $("mic").setAttribute("aria-pressed", "false");
      $("mic").textContent = "Turn microphone on";
    }
  }

  function isAgent(participant) {
    return participant.isAgent === true || participant.kind === LK.ParticipantKind.AGENT;
  }

  function renderParticipants() {
    const room = state.room;
    const list = $("participants");
    list.replaceChildren();
    if (!room) return;
    const everyone = [room.localParticipant, ...room.remoteParticipants.values()];
    for (const participant of everyone) {
      const kind = isAgent(participant) ? "agent" : "standard";
      const who = participant === room.localParticipant ? " (you)" : "";
      const speaking = participant.isSpeaking ? ", speaking" : "";
      const text = `${participant.identity}${who}: ${kind}${speaking}`;
      list.append(item(text, { "data-kind": kind, "data-identity": participant.identity }));
      if (kind === "agent") setStatus(`The agent ${participant.identity} joined.`);
    }
  }

  function onTrackSubscribed(track) {
    if (track.kind !== "audio") return;
    const element = track.attach();
    element.hidden = true;
    document.body.append(element);
  }

  function onData(payload, participant, _kind, topic) {
    const text = new TextDecoder().decode(payload);
    // A message can arrive before its sender is listed as a participant.
    const from = participant ? participant.identity : "(a participant joining)";
    $("messages").append(item(`${from} [${topic || "-"}]: ${text}`, { "data-topic": topic || "" }));
    let message = null;
    try {
      message = JSON.parse(text);
    } catch (_) {
      return;
    }
    if (message && message.heard && typeof message.heard.level === "number") {
      $("heard-level").value = Math.min(1, message.heard.level * 4);
      $("heard-level-text").textContent =
        `level ${message.heard.level.toFixed(4)} (${message.heard.frames} frames so far)`;
    }
  }

  async function updateAgentLevel() {
    const room = state.room;
    if (!room) return;
    let level = 0;
    for (const participant of room.remoteParticipants.values()) {
      if (!isAgent(participant)) continue;
      level = Math.max(level, participant.audioLevel || 0);
      for (const publication of participant.audioTrackPublications.values()) {
        const receiver = publication.track && publication.track.receiver;
        if (!receiver) continue;
        const stats = await receiver.getStats();
        stats.forEach((report) => {
          if (report.type === "inbound-rtp" && typeof report.audioLevel === "number") {
            level = Math.max(level, report.audioLevel);
          }
        });
      }
    }
    $("agent-level").value = level;
    $("agent-level-text").textContent = level.toFixed(2);
  }

  async function toggleMicrophone() {
    const room = state.room;
    if (!room) return;
    const on = !room.localParticipant.isMicrophoneEnabled;
    try {
      await room.localParticipant.setMicrophoneEnabled(on);
    } catch (error) {
      setStatus(`Microphone: ${error.message}`);
      return;
    }
    $("mic").setAttribute("aria-pressed", String(on));
    $("mic").textContent = on ? "Turn microphone off" : "Turn microphone on";
    setStatus(on ? "Microphone on: the agent plays you back." : "Microphone off.");
  }

  async function sendData(event) {
    event.preventDefault();
    const room = state.room;
    if (!room) return;
    const text = $("data-text").value;
    await room.localParticipant.publishData(new TextEncoder().encode(text), { reliable: true, topic: TOPIC });
    $("messages").append(item(`you [${TOPIC}]: ${text}`, { "data-topic": TOPIC, "data-mine": "true" }));
  }

  async function leave() {
    clearInterval(state.levelTimer);
    state.levelTimer = null;
    const room = state.room;
    state.room = null;
    if (room) await room.disconnect();
    $("participants").replaceChildren();
    setControls(false);
  }

  // ---- 5. lifecycle --------------------------------------------------------------

  function watchLifecycle() {
    clearInterval(state.lifecycleTimer);
    $("lifecycle").replaceChildren();
    if (!state.session || !state.session.session_id) {
      $("lifecycle-status").textContent = "This instance names no session id.";
      return;
    }
    readLifecycle();
    state.lifecycleTimer = setInterval(readLifecycle, LIFECYCLE_EVERY_MS);
  }

  async function readLifecycle() {
    const path = `/api/sessions/${encodeURIComponent(state.session.session_id)}`;
    let answer = await call("GET", path, state.userToken);
    if (answer.status === 401 || answer.status === 403) {
      answer = await call("GET", path, state.auditorToken);
    }
    if (answer.status !== 200 || !answer.json || !Array.isArray(answer.json.steps)) {
      clearInterval(state.lifecycleTimer);
      $("lifecycle-status").textContent =
        `This instance does not record session steps (GET ${path}: HTTP ${answer.status}).`;
      return;
    }
    $("lifecycle-status").textContent = `State: ${answer.json.state}`;
    $("lifecycle").replaceChildren(
      ...answer.json.steps.map((step) => item(`${step.at}  ${step.step}`, { "data-step": step.step })),
    );
  }

  // ---- wiring --------------------------------------------------------------------

  function ready() {
    if (!LK) {
      setStatus("livekit-client did not load: /playground/livekit-client.umd.js is missing.");
      return;
    }
    $("sign-in-form").addEventListener("submit", signIn);
    $("refresh-agents").addEventListener("click", loadAgents);
    $("session-form").addEventListener("submit", startSession);
    $("mic").addEventListener("click", toggleMicrophone);
    $("leave").addEventListener("click", () => leave().then(() => setStatus("Left the room.")));
    $("data-form").addEventListener("submit", sendData);
    document.body.dataset.ready = "true";
  }

  ready();
})();
