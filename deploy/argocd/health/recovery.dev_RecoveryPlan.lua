-- Argo CD health check for recovery.dev/v1alpha1 RecoveryPlan.
-- Plain Lua 5.1 without the string and math libraries (Argo CD's default sandbox).
--   status.phase Completed -> Healthy
--   NotNeeded -> Healthy (the target recovered before the plan acted; status.message)
--   Cancelled -> Healthy (a person cancelled it: their decision, not a fault; status.message)
--   Failed -> Degraded (status.message)
--   AwaitingApproval -> Suspended (a Manual plan waits for a person to approve it)
--   Created / Executing, or no status yet -> Progressing
--   a phase this script does not know -> Unknown
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to report status"
  return hs
end
local phase = status.phase
local message = status.message
if message == "" then
  message = nil
end
if phase == "Completed" then
  hs.status = "Healthy"
  hs.message = message or "Completed"
elseif phase == "NotNeeded" then
  hs.status = "Healthy"
  hs.message = message or "Not needed: the target recovered"
elseif phase == "Cancelled" then
  hs.status = "Healthy"
  hs.message = message or "Cancelled"
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message or "Failed"
elseif phase == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = message or "Awaiting approval: annotate the plan with recovery.dev/approved-by"
elseif phase == "Created" or phase == "Executing" then
  hs.status = "Progressing"
  hs.message = message or phase
  if message == nil and status.progress ~= nil then
    hs.message = phase .. " (step " .. status.progress .. ")"
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
