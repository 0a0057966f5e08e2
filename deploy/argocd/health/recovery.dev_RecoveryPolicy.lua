-- Argo CD health check for recovery.dev/v1alpha1 RecoveryPolicy.
-- Plain Lua 5.1 without the string and math libraries (Argo CD's default sandbox).
--   no status yet, or status.observedGeneration < metadata.generation -> Progressing
--   condition Ready=True -> Healthy, Ready=False -> Degraded (the condition's message)
--   otherwise (no Ready condition, or Ready=Unknown) -> Progressing
local hs = {}
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to report status"
  return hs
end
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe the latest spec"
  return hs
end
local ready = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
local message = ready.message
if message == nil or message == "" then
  message = ready.reason
end
if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
if message ~= nil then
  hs.message = message
end
return hs
