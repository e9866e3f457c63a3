-- wrk script for the "hmac" scenario: cycles through pre-signed requests (one nonce each).
-- Env: SIGNED_FILE (lines "<nonce> <signature>"), REQ_PATH, APP_KEY, APP_TS.
-- The "plain" run uses the same file and the same headers on a route without auth, so
-- both runs cost the load generator the same and only the gateway's work differs.
local reqs = {}
local n = 0
local i = 0

-- Each wrk thread takes every k-th line, so no two threads send the same nonce.
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  local stride = tonumber(os.getenv("WRK_THREADS") or "1")
  local lineno = 0
  local path = os.getenv("REQ_PATH")
  local key = os.getenv("APP_KEY")
  local ts = os.getenv("APP_TS")
  for line in io.lines(os.getenv("SIGNED_FILE")) do
    lineno = lineno + 1
    if (lineno - 1) % stride ~= (tid or 0) then goto continue end
    local nonce, sig = line:match("^(%S+) (%S+)$")
    n = n + 1
    reqs[n] = wrk.format("GET", path, {
      ["Host"] = "bench",
      ["X-Rg-Key"] = key,
      ["X-Rg-Timestamp"] = ts,
      ["X-Rg-Nonce"] = nonce,
      ["X-Rg-Signature"] = sig,
    })
    ::continue::
  end
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end
