-- wrk script: POST a job with an id unique across threads and requests.
-- Environment: TOKEN (bearer), DSID (datasource), RUN (a prefix unique to this run).
local counter = 0
local threads = {}
local token = os.getenv("TOKEN") or ""
local dsid = os.getenv("DSID") or "ds1"
local run = os.getenv("RUN") or tostring(os.time())

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local body = string.format('{"job":"%s-%d-%d","request":{"n":%d}}', run, tid, counter, counter)
  return wrk.format("POST", "/" .. dsid .. "/job/", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end
