-- wrk script for bench/serve.sh: POST the PNG named by $PNG as image/png on every
-- request (keep-alive: wrk reuses its connections), and print one machine-readable
-- line when done. Latencies are in microseconds.
local f = assert(io.open(os.getenv("PNG"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "image/png"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
