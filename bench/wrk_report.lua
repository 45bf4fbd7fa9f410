-- Storefront benchmarks: print wrk's summary as one JSON line that bench/stats.py parses.

-- `wrk ... URL -- METHOD CONTENT_TYPE BODY` sends that request instead of a GET.
init = function(args)
  if #args == 3 then
    wrk.method = args[1]
    wrk.headers["Content-Type"] = args[2]
    wrk.body = args[3]
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
