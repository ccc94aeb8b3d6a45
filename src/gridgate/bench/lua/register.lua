-- POST registrations of new instances, each with its own host and port.
-- args: <Authorization header value> <service prefix> <number of services>
local headers
local prefix
local services
local n = 0

function setup(thread)
  _bench_threads = (_bench_threads or 0) + 1
  thread:set("thread_no", _bench_threads)
end

function init(args)
  headers = { ["Authorization"] = args[1], ["Content-Type"] = "application/json" }
  prefix = args[2]
  services = tonumber(args[3])
end

function request()
  n = n + 1
  local host = string.format("10.%d.%d.%d", 100 + (thread_no or 1) % 150,
    math.floor(n / 250) % 250, n % 250 + 1)
  local port = 1024 + math.floor(n / 62500) % 60000
  local body = string.format('{"service":"%s%d","host":"%s","port":%d}',
    prefix, n % services, host, port)
  return wrk.format("POST", "/registry/v1/instances", headers, body)
end
