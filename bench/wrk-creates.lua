-- wrk script for bench/credits.sh's hot-balance runs: each request creates one echo
-- prediction (no Prefer: wait: the answer comes once it is stored, charged and queued), with
-- the bearer token of BENCH_TOKENS (a comma-separated list) taken in turn, so 64 tokens spread
-- the load over 64 accounts and one token puts it all on one account's balance.
-- Counts 201s (ok) and everything else (bad); prints one "WRKJSON " line at the end.

wrk.method = "POST"
wrk.path = "/v1/models/augur/echo/predictions"
wrk.body = '{"input":{"text":"hello from the benchmark"}}'
wrk.headers["Content-Type"] = "application/json"

local tokens = {}
for t in string.gmatch(os.getenv("BENCH_TOKENS") or "", "[^,]+") do
  table.insert(tokens, t)
end
local n = 0
ok = 0
bad = 0

function request()
  n = n + 1
  local headers = { ["Content-Type"] = "application/json",
                    ["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1] }
  return wrk.format("POST", wrk.path, headers, wrk.body)
end

function response(status, headers, body)
  if status == 201 then
    ok = ok + 1
  else
    bad = bad + 1
    if bad <= 3 then
      io.stderr:write("unexpected response " .. status .. ": " .. body:sub(1, 300) .. "\n")
    end
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("n", #threads * 7919)
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
    'WRKJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,' ..
    '"non2xx":%d,"socket_errors":%d,"created":%d,"not_created":%d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout, good, other))
end
