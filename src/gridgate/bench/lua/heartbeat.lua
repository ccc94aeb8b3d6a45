-- PUT heartbeats cycling over pre-registered instance ids.
-- args: <file of instance ids, one a line> <Authorization header value>
local requests = {}
local i = 0

function setup(thread)
  _bench_threads = (_bench_threads or 0) + 1
  thread:set("offset", _bench_threads * 7919)
end

function init(args)
  local headers = { ["Authorization"] = args[2] }
  for id in io.lines(args[1]) do
    requests[#requests + 1] =
      wrk.format("PUT", "/registry/v1/instances/" .. id .. "/heartbeat", headers)
  end
  i = (offset or 0) % #requests
end

function request()
  i = i % #requests + 1
  return requests[i]
end
