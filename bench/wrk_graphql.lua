-- wrk script for bench/graphql_throughput.py: POST one GraphQL request on every connection and
-- check every answer (status 200 and the verified body size).
--   wrk ... -s wrk_graphql.lua <url> -- <bearer key> <request body> <expected body bytes>
-- done() prints one JSON line for the script to read; latencies in microseconds.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0  -- a global, so done() can read it from each thread
  expected = tonumber(args[3])
  local headers = {
    ["Authorization"] = "Bearer " .. args[1],
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json",
  }
  req = wrk.format("POST", nil, headers, args[2])
end

function request()
  return req
end

function response(status, headers, body)
  if status ~= 200 or #body ~= expected then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local badTotal = 0
  for _, thread in ipairs(threads) do
    badTotal = badTotal + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bad":%d,"errors":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, badTotal,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
