-- wrk script for bench/status-reads.sh: no request or response hooks (wrk keeps its fast
-- path); at the end prints the summary as one JSON line starting with "WRKJSON ".
-- Latencies in milliseconds; non2xx is wrk's "Non-2xx or 3xx responses" (status > 399).

function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,' ..
    '"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
