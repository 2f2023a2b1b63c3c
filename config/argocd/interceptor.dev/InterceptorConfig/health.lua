-- Argo CD health of an interceptor.dev InterceptorConfig, read from the conditions its operator writes
-- (docs/operator.md, "GitOps: what Argo CD and Flux show"). Lua 5.1, as Argo CD runs it.
local hs = {}

local function condition(status, wanted)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function explain(c)
  return c.reason .. ": " .. c.message
end

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

-- A status written for an older spec says nothing about the current one.
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

-- Cannot progress without a change (invalid spec, apply refused, double capture), or in trouble now
-- (a worker cut off from Kafka, workers reporting Degraded).
for _, wanted in ipairs({"Stalled", "Degraded"}) do
  local c = condition(status, wanted)
  if c ~= nil and c.status == "True" then
    hs.status = "Degraded"
    hs.message = explain(c)
    return hs
  end
end

local reconciling = condition(status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = explain(reconciling)
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
hs.status = "Progressing"
if ready ~= nil then
  hs.message = explain(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
