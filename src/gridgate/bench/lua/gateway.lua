-- Signed gateway calls, each pre-signed request used once (the gateway refuses a nonce twice).
-- args: <file: path TAB timestamp TAB nonce TAB signature, one a line> <channel> <Authorization>
-- A run longer than the file wraps around: the replays are answered 409 and counted as errors.
local lines = {}
local i = 0
local channel, authorization

function init(args)
  for line in io.lines(args[1]) do
    lines[#lines + 1] = line
  end
  channel, authorization = args[2], args[3]
end

function request()
  i = i % #lines + 1
  local path, timestamp, nonce, signature = lines[i]:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t(.+)$")
  return wrk.format("GET", path, {
    ["X-GG-Channel"] = channel,
    ["X-GG-Timestamp"] = timestamp,
    ["X-GG-Nonce"] = nonce,
    ["X-GG-Signature"] = signature,
    ["Authorization"] = authorization,
  })
end
