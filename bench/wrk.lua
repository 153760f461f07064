-- wrk script used by bench/run.sh.
--   WRK_PIPELINE=N (default 1): send N requests back to back per write.
-- done() prints one machine-readable line ("WRK_JSON {...}") because wrk
-- exits 0 even when every request failed; run.sh checks the error counts.

local depth = tonumber(os.getenv("WRK_PIPELINE") or "1")

if depth > 1 then
   -- Build the joined batch once per thread; request() only returns it.
   init = function(args)
      local batch = {}
      for i = 1, depth do
         batch[i] = wrk.format("GET", "/")
      end
      pipelined = table.concat(batch)
   end
   request = function()
      return pipelined
   end
end
-- depth 1: no request() override, so wrk keeps its static fast path.

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,' ..
      '"err_timeout":%d,"lat_mean_us":%.1f,"lat_p50_us":%d,"lat_p99_us":%d,' ..
      '"lat_max_us":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50.0), latency:percentile(99.0),
      latency.max))
end
