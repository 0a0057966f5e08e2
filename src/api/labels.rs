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

/// Annotation a person sets to retry a Failed plan: its failed step gets one new attempt,
/// under the same at-most-once protocol and rails as any other. The value says who asked,
/// optionally followed by a space and anything that makes the request new (a time): a value
/// already handled is not handled again.
/// `kubectl annotate recoveryplan NAME recovery.dev/retry="$USER $(date +%s)" --overwrite`.
pub const RETRY_ANNOTATION: &str = "recovery.dev/retry";

/// Annotation a person sets to run a plan's verification again now (a fresh stepTimeout):
/// on a plan verifying, or failed at its verify step. It never starts an action. Its value
/// is read like [`RETRY_ANNOTATION`]'s.
pub const REVERIFY_ANNOTATION: &str = "recovery.dev/reverify";

/// Annotation a person sets to cancel a plan that is waiting (created, awaiting approval,
/// held by a rail, or between attempts): it ends `Cancelled` and nothing more is done. A
/// plan whose action may be in flight is not cancelled. Its value is read like
/// [`RETRY_ANNOTATION`]'s.
pub const CANCEL_ANNOTATION: &str = "recovery.dev/cancel";
