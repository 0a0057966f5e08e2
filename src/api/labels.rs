//! Labels and annotations on the objects: what people select by and write to.

/// Label on every object the controller creates, naming the policy it belongs to.
pub const POLICY_LABEL: &str = "recovery.dev/policy";

/// Label on plans naming their target (by hash): cooldown and rollout checks find a
/// target's earlier plans by it.
pub const TARGET_LABEL: &str = "recovery.dev/target";

/// Annotation a person sets to approve a plan waiting in `AwaitingApproval`; its value is
/// recorded as who approved: `kubectl annotate recoveryplan NAME recovery.dev/approved-by=$USER`.
pub const APPROVED_BY_ANNOTATION: &str = "recovery.dev/approved-by";

/// Annotation on an incident recording which plan's failure raised its severity, so it is
/// raised once.
pub const ESCALATED_ANNOTATION: &str = "recovery.dev/escalated-for";
