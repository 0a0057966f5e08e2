-- Argo CD health check for recovery.dev/v1alpha1 Incident.
-- Plain Lua 5.1 without the string and math libraries (Argo CD's default sandbox).
--   status.phase Resolved -> Healthy
--   Detected / Investigating / Mitigating -> Progressing, or Degraded while the condition
--     RemediationFailed is True (its message)
--   no status or no phase yet -> Progressing; a phase this script does not know -> Unknown
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to report status"
  return hs
end
local phase = status.phase
if phase == "Resolved" then
  hs.status = "Healthy"
  hs.message = "Resolved"
  return hs
end
if phase ~= "Detected" and phase ~= "Investigating" and phase ~= "Mitigating" then
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
  return hs
end
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "RemediationFailed" and condition.status == "True" then
      hs.status = "Degraded"
      hs.message = condition.message
      if hs.message == nil or hs.message == "" then
        hs.message = "Remediation failed"
      end
      return hs
    end
  end
end
hs.status = "Progressing"
hs.message = phase
if status.plan ~= nil then
  hs.message = phase .. " (plan " .. status.plan .. ")"
end
return hs
