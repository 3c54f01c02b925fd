-- wrk script: walk over pre-created jobs, one request per job id in turn.
-- Environment:
--   TOKEN   bearer token
--   METHOD  GET, POST or DELETE (default GET)
--   REQ_PATH request path; "{id}" is replaced by the job id PREFIX-i (absent: a fixed path)
--   BODY    request body for POST (optional; "{id}" replaced too, and "{n}" by the thread's
--           request counter, so that walking over the same job again changes it again)
--   PREFIX  job id prefix (default "pre"); FIRST, COUNT: the walk covers PREFIX-FIRST ..
--           PREFIX-(FIRST+COUNT-1), each thread starting at its own offset, wrapping at the end.
--   THREADS the wrk -t value (each thread's offset is tid * COUNT / THREADS)
local threads = {}
local token = os.getenv("TOKEN") or ""
local method = os.getenv("METHOD") or "GET"
local path = os.getenv("REQ_PATH") or "/"
local body = os.getenv("BODY")
local prefix = os.getenv("PREFIX") or "pre"
local first = tonumber(os.getenv("FIRST") or "0")
local count = tonumber(os.getenv("COUNT") or "1")
local templated = string.find(path, "{id}", 1, true) ~= nil
local fixed = nil

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  nthreads = tonumber(os.getenv("THREADS") or "1")
  offset = math.floor((tid or 0) * count / nthreads)
  -- wrk.host is not set yet in a thread's init: name the host ourselves.
  local headers = { ["Authorization"] = "Bearer " .. token, ["Host"] = wrk.host or "127.0.0.1" }
  if body then headers["Content-Type"] = "application/json" end
  wrk.headers = headers
  if not templated then
    fixed = wrk.format(method, path, headers, body)
  end
end

function request()
  if fixed then return fixed end
  local n = tostring(counter)
  local id = prefix .. "-" .. tostring(first + (offset + counter) % count)
  counter = counter + 1
  local p = (string.gsub(path, "{id}", id))
  local b = nil
  if body then b = (string.gsub((string.gsub(body, "{id}", id)), "{n}", n)) end
  return wrk.format(method, p, nil, b)
end
