//! Which copy of an object a watch cache keeps, when it is fed both by the watch and by the
//! answers to this process's own writes (see `controller::Context::wrote`).
//!
//! The rule compares resourceVersions as numbers, as client-go's mutation cache does:
//! kube-apiserver's are etcd revisions, one counter for the whole store, so a later write
//! has a larger one. Kubernetes calls them opaque, so a version that does not parse decides
//! for the watch, which delivers each object's changes in order: its copy is taken, and an
//! own write's is not (the watch brings the same version soon after).

/// Whether a copy at resourceVersion `incoming` goes into the cache, which holds a copy at
/// `held` (`None`: none), when the watch reported the object gone `deleted` (at that
/// resourceVersion, within the last minute; `None`: not).
pub fn admit(incoming: &str, held: Option<&str>, deleted: Option<&str>, own_write: bool) -> bool {
    let newer = |than: &str| match (number(incoming), number(than)) {
        (Some(a), Some(b)) => Some(a > b),
        _ => None,
    };
    match (own_write, held) {
        // The watch is in order: only a copy the cache already has a newer one of, from
        // an own write, is left out (and its equal, already taken).
        (false, Some(held)) => newer(held).unwrap_or(true),
        (false, None) => true,
        // An own write's answer may come after the watch's later copies, or its deletion.
        (true, Some(held)) => newer(held).unwrap_or(false),
        // The watch reported it gone: deleted, or out of the watch's label selection (a
        // policy moved to another shard), where a later write must not bring it back. An
        // object made again comes by the watch.
        (true, None) => deleted.is_none(),
    }
}

fn number(version: &str) -> Option<u64> {
    version.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::admit;

    /// (incoming, held, deleted, own write, admitted).
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, bool, bool);

    #[test]
    fn the_newer_copy_wins_and_a_deleted_object_stays_deleted() {
        let table: &[Case] = &[
            // The watch alone: every change in order, as before own writes joined it.
            ("11", Some("10"), None, false, true),
            ("11", None, None, false, true),
            ("12", None, Some("11"), false, true), // made again after a deletion
            // An own write's answer before the watch's copy: taken; the watch's same
            // version and anything older then left out.
            ("11", Some("10"), None, true, true),
            ("11", Some("11"), None, false, false),
            ("10", Some("11"), None, false, false),
            // Versions compare as numbers, not text.
            ("100", Some("99"), None, true, true),
            ("99", Some("100"), None, false, false),
            // An own write's answer after the watch's later copy: left out.
            ("11", Some("12"), None, true, false),
            ("11", Some("11"), None, true, false),
            // A create's answer: taken; after the watch reported the object deleted, not.
            ("11", None, None, true, true),
            ("11", None, Some("12"), true, false),
            ("13", None, Some("12"), true, false), // made again, or out of the selection: by the watch
            // Versions that are not numbers: the watch decides.
            ("a", Some("10"), None, false, true),
            ("11", Some("b"), None, false, true),
            ("a", Some("10"), None, true, false),
            ("", None, None, true, true),
        ];
        for &(incoming, held, deleted, own, admitted) in table {
            assert_eq!(
                admit(incoming, held, deleted, own),
                admitted,
                "incoming {incoming}, held {held:?}, deleted {deleted:?}, own write {own}"
            );
        }
    }
}
