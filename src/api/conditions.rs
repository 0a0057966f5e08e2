//! The words people and tools match on: condition types, the reasons of conditions and
//! Events, and Events' actions. `kubectl describe`, `kubectl wait --for=condition=…`, alert
//! rules and Argo CD health checks read these, so each is named once, here.

/// Condition types on a RecoveryPolicy.
pub mod policy {
    /// All is well: AWS answered, every target exists, and the alert Secrets are there.
    pub const READY: &str = "Ready";
    /// The last probe cycle reached AWS without errors.
    pub const AWS_REACHABLE: &str = "AwsReachable";
    /// Every target named by the policy exists in AWS.
    pub const TARGETS_FOUND: &str = "TargetsFound";
    /// Every target is listed under its kind (an Aurora instance is not under `rdsInstances`).
    pub const TARGETS_PLACED: &str = "TargetsPlaced";
    /// Whether the policy-wide rails (mode, storm guard, circuit breaker) let plans act.
    pub const REMEDIATION_ALLOWED: &str = "RemediationAllowed";
    /// Whether the Secrets named by `alerts` exist with their keys.
    pub const ALERTS_CONFIGURED: &str = "AlertsConfigured";
    /// Whether a pause (`remediation.pause`) holds remediation now, of which targets, until
    /// when and why.
    pub const PAUSED: &str = "Paused";
    /// Whether AWS events (EventBridge → SQS) reach the controller to wake this policy's
    /// probes; polling goes on either way. Absent when no queue is read and the policy
    /// does not ask for events.
    pub const PUSH_DETECTION: &str = "PushDetection";
}

/// Condition types on an Incident.
pub mod incident {
    /// Whether a plan may be (or was) made for the incident.
    pub const REMEDIATION_ALLOWED: &str = "RemediationAllowed";
    /// The plan failed; people take over.
    pub const REMEDIATION_FAILED: &str = "RemediationFailed";
    /// An alert cannot be delivered (the message says which, and why).
    pub const ALERT_DELIVERY_FAILED: &str = "AlertDeliveryFailed";
    /// The incident is over (the reason says how: healthy again, target removed, …).
    pub const RESOLVED: &str = "Resolved";
}

/// Condition types on a RecoveryPlan.
pub mod plan {
    /// A rail holds the plan's next mutating step (the reason names the rail).
    pub const HELD: &str = "Held";
}

/// Reasons of conditions and Events.
pub mod reason {
    // A policy's conditions.
    /// Ready: every target is being probed.
    pub const PROBING: &str = "Probing";
    /// Not ready: some AWS calls fail (see AwsReachable).
    pub const AWS_UNREACHABLE: &str = "AwsUnreachable";
    /// AwsReachable: every call succeeded.
    pub const REACHABLE: &str = "Reachable";
    /// TargetsFound: every target exists.
    pub const FOUND: &str = "Found";
    /// Some targets do not exist (TargetsFound, and Ready).
    pub const TARGETS_MISSING: &str = "TargetsMissing";
    /// TargetsPlaced: every target is listed under its kind.
    pub const PLACED: &str = "Placed";
    /// Some targets are listed under the wrong kind (TargetsPlaced, and Ready).
    pub const TARGETS_MISPLACED: &str = "TargetsMisplaced";
    /// AlertsConfigured: the Secrets and keys are there.
    pub const SECRETS_FOUND: &str = "SecretsFound";
    /// AlertsConfigured: a Secret or key is missing.
    pub const SECRET_MISSING: &str = "SecretMissing";
    /// Not ready: alerts cannot be delivered (see AlertsConfigured).
    pub const ALERTS_NOT_CONFIGURED: &str = "AlertsNotConfigured";
    /// RemediationAllowed: plans may act.
    pub const ALLOWED: &str = "Allowed";

    // The rails (`core::rails::Rail`), on policies, incidents and plans.
    /// The policy's remediation mode is Disabled.
    pub const REMEDIATION_DISABLED: &str = "RemediationDisabled";
    /// More than maxUnhealthyPercent of the policy's targets are unhealthy: the storm guard.
    pub const TOO_MANY_UNHEALTHY: &str = "TooManyUnhealthy";
    /// maxConcurrentPlans of the policy are already executing.
    pub const MAX_CONCURRENT_PLANS: &str = "MaxConcurrentPlans";
    /// The target's cooldown since its last plan has not passed.
    pub const COOLDOWN: &str = "Cooldown";
    /// Too many AWS errors across the process: new remediation pauses.
    pub const AWS_CIRCUIT_OPEN: &str = "AwsCircuitOpen";
    /// The policy that allowed the plan (or would) no longer exists.
    pub const POLICY_MISSING: &str = "PolicyMissing";
    /// The policy's target counts predate the incident: the storm guard cannot judge yet.
    /// Recorded only once the wait outlasts `core::rails::COUNTS_GRACE` after detection.
    pub const COUNTS_PENDING: &str = "CountsPending";
    /// A pause (`remediation.pause`) holds the target's remediation until its `until`.
    pub const PAUSED: &str = "Paused";

    // A policy's pause (the Paused condition, and Events on the policy).
    /// Paused: a pause is in force.
    pub const MAINTENANCE_WINDOW: &str = "MaintenanceWindow";
    /// Not paused: no pause is set.
    pub const NOT_PAUSED: &str = "NotPaused";
    /// Not paused: the pause's `until` has passed (it lifted by itself).
    pub const PAUSE_EXPIRED: &str = "PauseExpired";
    /// The Event when a pause comes into force.
    pub const PAUSE_STARTED: &str = "PauseStarted";
    /// The Event when a pause lifts (its time passed, or it was removed).
    pub const PAUSE_ENDED: &str = "PauseEnded";

    // Push detection (the PushDetection condition).
    /// PushDetection: every event queue answers; events wake this policy's probes.
    pub const RECEIVING: &str = "Receiving";
    /// PushDetection is False: an event queue cannot be read (the message has AWS's error);
    /// detection is by polling.
    pub const QUEUE_UNREADABLE: &str = "QueueUnreadable";
    /// PushDetection is False: the policy asks for events (`Corroborate`) but the
    /// controller reads no queue (`--event-queue`); detection is by polling.
    pub const NO_QUEUE: &str = "NoQueue";
    /// PushDetection is False: the policy's `detection.events` is Ignore.
    pub const EVENTS_IGNORED: &str = "EventsIgnored";
    /// The Event when a probe woken by an AWS event and the event itself agree that a
    /// target is unhealthy (`Corroborate`), opening the incident without waiting.
    pub const EVENT_CORROBORATED: &str = "EventCorroborated";

    // Detection (Events on the policy; the Resolved condition on incidents).
    /// An incident was opened.
    pub const INCIDENT_OPENED: &str = "IncidentOpened";
    /// An incident was resolved.
    pub const INCIDENT_RESOLVED: &str = "IncidentResolved";
    /// Resolved: the target is healthy again.
    pub const HEALTHY: &str = "Healthy";
    /// Resolved: the target recovered before its plan acted and then failed again; a new
    /// incident opens if it stays unhealthy.
    pub const RECOVERED_BEFORE_ACTION: &str = "RecoveredBeforeAction";
    /// Resolved: the target was removed from the policy.
    pub const TARGET_REMOVED: &str = "TargetRemoved";

    // An incident's plan.
    /// The plan was made (RemediationAllowed, and an Event).
    pub const PLAN_CREATED: &str = "PlanCreated";
    /// A person deleted the plan; none is made again.
    pub const PLAN_DELETED: &str = "PlanDeleted";
    /// No plan can be made (e.g. no failover record).
    pub const CANNOT_PLAN: &str = "CannotPlan";
    /// RemediationFailed: the plan failed.
    pub const PLAN_FAILED: &str = "PlanFailed";
    /// The Event when a plan failed and people take over.
    pub const REMEDIATION_FAILED: &str = "RemediationFailed";
    /// AlertDeliveryFailed: an alert keeps failing.
    pub const DELIVERY_FAILED: &str = "DeliveryFailed";
    /// AlertDeliveryFailed is False: every alert was delivered.
    pub const DELIVERED: &str = "Delivered";

    // A plan's transitions (Events on the plan).
    /// A Manual plan waits for the approval annotation.
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    /// The plan started executing.
    pub const PLAN_EXECUTING: &str = "PlanExecuting";
    /// A step was persisted InProgress.
    pub const STEP_STARTED: &str = "StepStarted";
    /// A step completed, with evidence.
    pub const STEP_COMPLETED: &str = "StepCompleted";
    /// A failed attempt will be retried.
    pub const STEP_RETRY: &str = "StepRetry";
    /// A step was not run (dry run, an earlier failure, or not needed).
    pub const STEP_SKIPPED: &str = "StepSkipped";
    /// A step failed.
    pub const STEP_FAILED: &str = "StepFailed";
    /// Every step finished.
    pub const PLAN_COMPLETED: &str = "PlanCompleted";
    /// The plan ended without acting: the target had recovered.
    pub const PLAN_NOT_NEEDED: &str = "PlanNotNeeded";
    /// A person cancelled the plan (the cancel annotation).
    pub const PLAN_CANCELLED: &str = "PlanCancelled";
    /// An on-demand request (retry, re-verify, cancel annotation) was carried out.
    pub const REQUEST_ACCEPTED: &str = "RequestAccepted";
    /// An on-demand request does not apply to the plan as it is (the message says why).
    pub const REQUEST_REFUSED: &str = "RequestRefused";
    /// RemediationFailed is False again: a person asked for the failed plan to be retried.
    pub const RETRYING: &str = "Retrying";

    // Retention (Events on the policy).
    /// Finished incidents (with their plans) were deleted by the policy's retention.
    pub const HISTORY_PRUNED: &str = "HistoryPruned";

    // Any object.
    /// The controller cannot decode the object (e.g. a field of a newer version): it is
    /// left alone until it can.
    pub const UNDECODABLE: &str = "Undecodable";
}

/// Events' actions: which part of the controller acted.
pub mod action {
    /// Detection: incidents opened and resolved.
    pub const DETECT: &str = "Detect";
    /// The policy-wide rails.
    pub const GUARD: &str = "Guard";
    /// Making an incident's plan.
    pub const PLAN: &str = "Plan";
    /// Running a plan.
    pub const REMEDIATE: &str = "Remediate";
    /// Watching the objects.
    pub const WATCH: &str = "Watch";
    /// Retention: deleting finished incidents and their plans.
    pub const RETAIN: &str = "Retain";
}
