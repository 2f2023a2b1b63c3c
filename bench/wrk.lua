-- wrk script for the live benchmark (scripts/bench.sh). Each request is a keep-alive POST of a small JSON
-- body to a unique path (/api/v1/items/<thread>-<n>); the server (bench/nginx.conf) answers with JSON that
-- echoes the path, so every captured pair can be checked (request and response belong together).
--
-- WRK_DELAY_MS (environment): pause this long on each connection before each request, for an
-- approximately fixed rate of connections * 1000 / WRK_DELAY_MS requests per second (wrk2-like; plain
-- wrk has no fixed-rate mode). 0 or unset: as fast as possible.
-- At the end it prints one line: WRK_JSON {...} (requests completed, errors, latency percentiles).

local threads = {}
local counter = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function request()
  counter = counter + 1
  local body = '{"thread":' .. tid .. ',"n":' .. counter ..
    ',"customer":{"name":"Ada Lovelace","email":"ada@example.com"},"items":[{"sku":"B-17","qty":2}]}'
  return wrk.format("POST", "/api/v1/items/" .. tid .. "-" .. counter,
    { ["Content-Type"] = "application/json" }, body)
end

local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0") or 0
if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
