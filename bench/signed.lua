-- wrk script: cycles through pre-signed requests (path, x-signature, body) from requests.tsv.
local requests = {}
local index = 0

function init(args)
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    local path, signature, body = line:match("^([^\t]+)\t([^\t]+)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", path, {
      ["Content-Type"] = "application/json",
      ["X-Signature"] = signature,
    }, body)
  end
  file:close()
  -- Threads start at different places so they do not send the same request together.
  index = math.random(#requests)
end

function request()
  index = index % #requests + 1
  return requests[index]
end
