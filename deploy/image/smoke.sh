#!/usr/bin/env bash
# Run an image built from the Dockerfile as a container runtime would, on a machine where
# `podman run` cannot (the shared build machine: "crun: setrlimit `RLIMIT_NOFILE`:
# Operation not permitted: OCI permission denied"), and check what the Dockerfile promises.
#
#   sudo deploy/image/smoke.sh localhost/lkps:dev      (root: it mounts the image)
#
# The image's root filesystem (`podman image mount`) is bind-mounted read-only in a mount
# namespace of its own, with a tmpfs on /tmp and /run, the host's /dev and /proc, and the
# secrets read-only under /run/secrets; commands run chrooted as the image's user (10001) with
# only the image's environment and LKPS_* settings (np, PostgreSQL on 127.0.0.1:5432 as
# lkps/lkps, a database of its own, dropped at the end). Not a container: the network,
# PID and user namespaces and the cgroup are the host's, and the runtime's own checks
# (HEALTHCHECK scheduling, read-only flag) are replaced by the equivalents below.
#
# Checks: `lkps db upgrade`; `lkps serve` (2 worker processes) answers /api/health, the
# image's own HEALTHCHECK command succeeds inside the image, a session start without a
# token is refused 401 with the contract body, /metrics serves LKPS's metrics (the worker
# processes' samples under /tmp), nothing under / is writable, and SIGTERM stops it with
# status 0.
set -euo pipefail

image=${1:?usage: deploy/image/smoke.sh IMAGE}
export PGHOST=127.0.0.1 PGUSER=lkps PGPASSWORD=lkps
database=lkps_smoke_$$
work=$(mktemp -d)
chmod 755 "$work"
root=$(podman image mount "$image")
server=
cleanup() {
    [ -z "$server" ] || kill -KILL "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    dropdb --if-exists "$database" 2>/dev/null || true
    podman image unmount "$image" >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "smoke: FAIL: $*" >&2
    exit 1
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The secrets, as the chart mounts them (files readable by the pod's user).
mkdir -p "$work/secrets" "$work/root"
openssl rand -base64 32 >"$work/secrets/audit.key"
openssl genpkey -algorithm ed25519 -out "$work/secrets/audit-signing.pem" 2>/dev/null
echo '{"agents": {}}' >"$work/secrets/authz.json"
chmod 644 "$work/secrets"/*
createdb "$database"
port=$(free_port)
metrics_port=$(free_port)

# The image's environment (PATH, LANG, LKPS_HOST, ...), then LKPS's settings.
mapfile -t environment < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" | sed '/^$/d')
environment+=(
    LKPS_ENV=np
    "LKPS_PORT=$port"
    "LKPS_METRICS_PORT=$metrics_port"
    LKPS_WORKERS=2
    "LKPS_DATABASE_URL=postgresql+asyncpg://lkps:lkps@127.0.0.1:5432/$database"
    LKPS_LIVEKIT_URL=wss://livekit.invalid
    LKPS_LIVEKIT_API_KEY=smoke
    LKPS_LIVEKIT_API_SECRET=smoke-secret-of-at-least-32-characters
    LKPS_ENTRA_TENANT_ID=00000000-0000-0000-0000-00000000cafe
    LKPS_ENTRA_AUDIENCES=api://lkps-smoke
    LKPS_AUTHZ_SOURCE=file
    LKPS_AUTHZ_FILE=/run/secrets/authz.json
    LKPS_AUDIT_KEY_FILE=/run/secrets/audit.key
    LKPS_AUDIT_SIGNING_KEY=/run/secrets/audit-signing.pem
)

# in_image COMMAND...: COMMAND in the image as described above (exec'd: the caller's
# background PID is the command's own).
in_image() {
    # shellcheck disable=SC2016 # expanded by the inner shell
    exec unshare --mount -- sh -c '
        set -e
        root=$1 new=$2 secrets=$3; shift 3
        mount --bind "$root" "$new"
        mount -o remount,bind,ro "$new"
        mount -t tmpfs -o mode=1777,size=64m tmpfs "$new/tmp"
        mount --rbind /dev "$new/dev"
        mount --rbind /proc "$new/proc"
        mount -t tmpfs -o mode=755,size=1m tmpfs "$new/run"
        mkdir "$new/run/secrets"
        mount --bind -o ro "$secrets" "$new/run/secrets"
        for file in hosts resolv.conf; do mount --bind "/etc/$file" "$new/etc/$file"; done
        exec "$@"
    ' smoke "$root" "$work/root" "$work/secrets" \
        env -i "${environment[@]}" "$(command -v chroot)" --userspec=10001:10001 "$work/root" "$@"
}
(in_image lkps db upgrade) || fail "lkps db upgrade"
echo "smoke: lkps db upgrade: ok"

in_image lkps serve >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 120); do
    curl -fsS "http://127.0.0.1:$port/api/health" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; fail "lkps serve exited"; }
    sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/api/health" || { cat "$work/serve.log"; fail "/api/health"; }
echo
echo "smoke: lkps serve answers /api/health: ok"

mapfile -t healthcheck < <(podman image inspect --format '{{range .Config.Healthcheck.Test}}{{println .}}{{end}}' "$image" | sed '/^$/d')
[ "${healthcheck[0]:-}" = CMD ] || fail "no HEALTHCHECK CMD in the image (build with --format docker)"
(in_image "${healthcheck[@]:1}") || fail "the HEALTHCHECK command"
echo "smoke: HEALTHCHECK (${healthcheck[*]:1:2} ...) inside the image: ok"

status=$(curl -s -o "$work/refused.json" -w '%{http_code}' -X POST -H 'content-type: application/json' \
    -d '{"agent_id": "smoke"}' "http://127.0.0.1:$port/api/session/start")
[ "$status" = 401 ] && grep -q '"request_id"' "$work/refused.json" || fail "session start without a token: $status $(cat "$work/refused.json")"
echo "smoke: session start without a token: 401 $(cat "$work/refused.json")"

curl -fsS "http://127.0.0.1:$port/api/health" >/dev/null
curl -fsS "http://127.0.0.1:$metrics_port/metrics" >"$work/metrics.txt" || fail "/metrics"
grep -q '^lkps_http_requests_total{' "$work/metrics.txt" || fail "/metrics has no lkps_http_requests_total"
echo "smoke: /metrics serves lkps_ series: ok"

# shellcheck disable=SC2016 # the image's python evaluates it
(in_image python3 -c '
import os, sys
writable = [d for d in ("/", "/opt/lkps", "/etc", "/var/lib/lkps", "/usr") if os.access(d, os.W_OK)]
for directory in ("/opt/lkps", "/var/lib/lkps"):
    try:
        open(os.path.join(directory, "probe"), "w")
        writable.append(directory + " (open)")
    except OSError:
        pass
sys.exit("writable: %s" % writable if writable else 0)
') || fail "the root filesystem is writable"
echo "smoke: nothing outside /tmp is writable: ok"

kill -TERM "$server"
code=0
wait "$server" || code=$?
server=
[ "$code" = 0 ] || { tail -20 "$work/serve.log"; fail "lkps serve exited $code on SIGTERM"; }
echo "smoke: SIGTERM: lkps serve exited 0"
grep -iE 'shut|stop' "$work/serve.log" | tail -3 || true
echo "smoke: $image: all checks passed"
