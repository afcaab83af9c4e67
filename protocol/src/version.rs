//! Version negotiation: the guest offers a range in `Hello`, the host picks
//! the highest version both speak or refuses.

use thiserror::Error;

use crate::message::VersionRange;

/// Major protocol version this build speaks natively.
///
/// - 1: the first wire.
/// - 2: adds host→guest `Keepalive` (so an agent notices a dead session)
///   and the report trigger `Changed` (when the agent last looked and
///   found nothing new). Neither is sent in a version-1 session.
/// - 3: snapshots carry the guest's network ([`crate::snapshot::Network`])
///   after the `Report` / `ProbeReply` message in the same frame; older
///   sessions leave it out, and their frames are unchanged.
pub const PROTOCOL_VERSION: u8 = 3;
/// Versions this build can speak.
pub const SUPPORTED: VersionRange = VersionRange {
    min: 1,
    max: PROTOCOL_VERSION,
};

/// The two sides share no protocol version.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
#[error("no common protocol version: peer speaks {}..={}, we speak {}..={}",
    peer.min, peer.max, ours.min, ours.max)]
pub struct NoCommonVersion {
    /// The peer's range.
    pub peer: VersionRange,
    /// Our range.
    pub ours: VersionRange,
}

/// The highest version in both ranges.
pub fn negotiate(ours: VersionRange, peer: VersionRange) -> Result<u8, NoCommonVersion> {
    let hi = ours.max.min(peer.max);
    let lo = ours.min.max(peer.min);
    if lo <= hi && peer.min <= peer.max && ours.min <= ours.max {
        Ok(hi)
    } else {
        Err(NoCommonVersion { peer, ours })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(min: u8, max: u8) -> VersionRange {
        VersionRange { min, max }
    }

    #[test]
    fn negotiation_table() {
        let cases = [
            (r(1, 1), r(1, 1), Some(1)),
            (r(1, 3), r(2, 5), Some(3)),
            (r(2, 5), r(1, 3), Some(3)),
            (r(1, 1), r(2, 2), None),
            (r(3, 4), r(1, 2), None),
            (r(1, 3), r(3, 1), None), // inverted range from a broken peer
        ];
        for (ours, peer, want) in cases {
            assert_eq!(negotiate(ours, peer).ok(), want, "{ours:?} vs {peer:?}");
        }
    }

    #[test]
    fn refusal_message_names_both_ranges() {
        let e = negotiate(r(1, 1), r(2, 3)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no common protocol version: peer speaks 2..=3, we speak 1..=1"
        );
    }
}
