//! Validated domain types. A value of these types is valid by construction;
//! wire types are converted at the edge (`from_pb`/`to_pb`).

pub mod audit;
mod codes;
pub mod consent;
pub mod org;
mod peer;
pub mod referral;
pub mod time;

pub use codes::{
    AgeBand, CollectionMethod, DataCategory, DeclineReason, FailureReason, Gender,
    IdeologicalContext, LegalBasisKind, NeedArea, Progress, Purpose, ReferralState, Restriction,
    RiskLevel, Sector, Service, Setting, Urgency,
};
pub use codes::{MAX_CODES, code_list};
pub use org::{OrgId, OrgProfile, bounded_text, endpoint_check, org_name_check};
pub use peer::{Awaiting, Peer, PeerAction, PeerState};

/// Lower-case hexadecimal of `bytes` (fingerprints, hashes in reports).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
