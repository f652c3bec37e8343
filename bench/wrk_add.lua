-- wrk script for bench_log_http.py: POST /add with a fresh ~200-byte entry per request, and a
-- JSON summary on stdout at the end (latencies in microseconds, from wrk's own histogram).
local threads = {}
local counter = 0
local id = 0
local tag = os.getenv("WRK_TAG") or tostring(os.time())
local pad = string.rep("p", 160)

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
end

function request()
  counter = counter + 1
  local body = string.format("wrk-%s-%d-%d-%s", tag, id, counter, pad)
  return wrk.format("POST", "/add", {["Content-Type"] = "application/octet-stream"}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "status_errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
