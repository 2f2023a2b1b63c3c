-- Argo CD health of an interceptor.dev InterceptorStatus: one worker's report of its node, by its phase
-- (docs/operator.md, "GitOps: what Argo CD and Flux show"). Lua 5.1, as Argo CD runs it. Whether the
-- report is recent is judged by the operator (the InterceptorConfig's Ready condition, AwaitingReports).
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the worker's first report"
  return hs
end

local function detail()
  if status.message ~= nil then
    return status.message
  end
  local counters = status.counters or {}
  return (status.podsTapped or 0) .. " pods tapped, " .. (counters.pairsEmitted or 0) .. " pairs emitted"
end

if status.phase == "Running" then
  hs.status = "Healthy"
elseif status.phase == "Degraded" then
  hs.status = "Degraded"
elseif status.phase == "Starting" or status.phase == "Stopping" then
  hs.status = "Progressing"
else
  hs.status = "Unknown"
end
hs.message = status.phase .. ": " .. detail()
return hs
