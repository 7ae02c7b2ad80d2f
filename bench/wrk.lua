-- wrk script for bench/run.py.
--
-- BENCH_POST_BYTES=N (environment) turns the requests into POSTs carrying an
-- N-byte body; wrk adds the Content-Length header itself.
-- done() prints one machine-readable line, "BENCH_JSON {...}", with the exact
-- counters and latency percentiles (microseconds) that run.py records.

local post_bytes = tonumber(os.getenv("BENCH_POST_BYTES") or "0") or 0
-- BENCH_ACCEPT_ENCODING=gzip (environment) asks for compressed responses (run.py --features).
local accept_encoding = os.getenv("BENCH_ACCEPT_ENCODING") or ""

if accept_encoding ~= "" then
   wrk.headers["Accept-Encoding"] = accept_encoding
end

if post_bytes > 0 then
   wrk.method = "POST"
   wrk.body = string.rep("x", post_bytes)
   wrk.headers["Content-Type"] = "application/octet-stream"
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
         .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, '
         .. '"lat_mean_us": %.1f, "lat_max_us": %d, '
         .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.max,
      latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
