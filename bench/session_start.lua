-- wrk script: POST /api/session/start, rotating through a file of bearer tokens.
--
--   wrk -t2 -c64 -d20s -s bench/session_start.lua http://127.0.0.1:8080 -- TOKENS BODY
--
-- TOKENS: one token per line; BODY: the JSON body, the same for every request.
-- Requests are built once per thread in init(); each thread starts at its own offset in
-- the token list so the threads do not send the same token at the same moment.
-- done() prints one line "BENCH_JSON {...}" that bench/run.py parses.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local requests = {}
local counter = 0

function init(args)
  local tokens_path = args[1]
  local body = args[2]
  local path = args[3] or "/api/session/start"
  for token in io.lines(tokens_path) do
    if #token > 0 then
      local headers = {
        ["Authorization"] = "Bearer " .. token,
        ["Content-Type"] = "application/json",
      }
      requests[#requests + 1] = wrk.format("POST", path, headers, body)
    end
  end
  -- `id` was set on this thread by setup(); spread the threads over the list.
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
