-- wrk script: POST /api/livekit/webhook, rotating through a file of signed webhooks.
--
--   wrk -t2 -c64 -d20s -s bench/webhooks.lua http://127.0.0.1:8080 -- EVENTS
--
-- EVENTS: one request a line, "<Authorization JWT>\t<event JSON on one line>", as
-- bench/webhooks.py writes them. done() prints "BENCH_JSON {...}" (as session_start.lua).

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local requests = {}
local counter = 0

function init(args)
  for line in io.lines(args[1]) do
    local tab = string.find(line, "\t", 1, true)
    if tab then
      local headers = {
        ["Authorization"] = string.sub(line, 1, tab - 1),
        ["Content-Type"] = "application/webhook+json",
      }
      requests[#requests + 1] =
        wrk.format("POST", "/api/livekit/webhook", headers, string.sub(line, tab + 1))
    end
  end
  counter = ((id or 0) * 397) % #requests
end

function request()
  counter = counter % #requests + 1
  return requests[counter]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
