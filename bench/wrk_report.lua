-- Storefront benchmarks: print wrk's summary as one JSON line that bench/stats.py parses.

-- `wrk ... URL -- METHOD CONTENT_TYPE BODY [HEADER...]` sends that request instead of a GET,
-- with each HEADER ("Name: value"). A BODY of several lines sends them in turn, one a request,
-- so a write spreads over many rows instead of queueing on one; "{n}" in a header's value
-- becomes the request's number on its connection's thread, so each request can carry a key of
-- its own.
init = function(args)
  if #args < 3 then
    return
  end
  wrk.method = args[1]
  wrk.headers["Content-Type"] = args[2]
  local bodies = {}
  for line in string.gmatch(args[3], "[^\n]+") do
    bodies[#bodies + 1] = line
  end
  wrk.body = bodies[1]
  local numbered = {}
  for i = 4, #args do
    local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
    if string.find(value, "{n}", 1, true) then
      numbered[name] = value
    else
      wrk.headers[name] = value
    end
  end
  if #bodies < 2 and next(numbered) == nil then
    return -- one fixed request: wrk builds it once
  end
  local n = 0
  request = function()
    n = n + 1
    local headers = {} -- wrk.format takes these instead of wrk.headers, not besides them
    for name, value in pairs(wrk.headers) do
      headers[name] = value
    end
    for name, value in pairs(numbered) do
      headers[name] = string.gsub(value, "{n}", tostring(n))
    end
    return wrk.format(nil, nil, headers, bodies[(n - 1) % #bodies + 1])
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
