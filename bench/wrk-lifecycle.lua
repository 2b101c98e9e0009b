-- wrk script for bench/lifecycles.sh and bench/memory.sh: each request is one whole
-- lifecycle, POST /v1/models/augur/echo/predictions with "Prefer: wait" (create, queue,
-- claim by a worker, succeed; the response comes when the prediction has settled).
-- The Authorization header comes from the command line (-H), or, with BENCH_TOKENS set (a
-- comma-separated list of tokens), from those tokens taken in turn (bench/credits.sh's
-- lifecycles spread over 64 accounts).
--
-- The response hook counts responses that are 201 with "status":"succeeded" in the body
-- (ok) and everything else (bad). With BENCH_REQUESTS_PER_THREAD set, each wrk thread stops
-- after that many responses (bench/memory.sh uses it to create a fixed number).
-- At the end prints one JSON line starting with "WRKJSON " (latencies in milliseconds).

wrk.method = "POST"
wrk.body = '{"input":{"text":"hello from the benchmark"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Prefer"] = "wait"

local tokens = {}
for t in string.gmatch(os.getenv("BENCH_TOKENS") or "", "[^,]+") do
  table.insert(tokens, t)
end
if #tokens > 0 then
  local n = 0
  function request()
    n = n + 1
    local headers = { ["Content-Type"] = "application/json", ["Prefer"] = "wait",
                      ["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1] }
    return wrk.format("POST", nil, headers, wrk.body)
  end
end

ok = 0
bad = 0
local limit = tonumber(os.getenv("BENCH_REQUESTS_PER_THREAD") or "")

function response(status, headers, body)
  if status == 201 and body:find('"status":"succeeded"', 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
    if bad <= 3 then
      io.stderr:write("unexpected response " .. status .. ": " .. body:sub(1, 300) .. "\n")
    end
  end
  if limit and ok + bad >= limit then
    wrk.thread:stop()
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local good, other = 0, 0
  for _, thread in ipairs(threads) do
    good = good + thread:get("ok")
    other = other + thread:get("bad")
  end
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,' ..
    '"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f,"non2xx":%d,"socket_errors":%d,' ..
    '"succeeded":%d,"not_succeeded":%d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000,
    e.status, e.connect + e.read + e.write + e.timeout, good, other))
end
