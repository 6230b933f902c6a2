//! Validated domain types. A value of these types is valid by construction;
//! wire types are converted to and from them in `wire`, which this module
//! does not know (the code lists alone carry their wire numbers).

pub mod audit;
mod codes;
pub mod consent;
mod ids;
pub mod message;
pub mod org;
mod peer;
pub mod policy;
pub mod referral;
pub mod time;

pub use codes::{
    AgeBand, CollectionMethod, DataCategory, DeclineReason, FailureReason, Gender,
    IdeologicalContext, LegalBasisKind, NeedArea, Progress, PurgeStatus, Purpose, ReferralState,
    Restriction, RiskLevel, Sector, Service, Setting, Urgency, WithdrawalCause,
};
pub use codes::{MAX_CODES, code_list};
pub use ids::{id_check, request_id_check};
pub use org::{OrgId, OrgProfile, bounded_text, endpoint_check, org_name_check};
pub use peer::{Awaiting, JoinRequest, Peer, PeerAction, PeerState, PeeringNotice, SignedRotation};

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

/// The bytes of hexadecimal text (as `hex` writes it); `None` if it is not.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    // Checked first: `from_str_radix` would take a sign ("+1").
    if !digits.len().is_multiple_of(2) || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips_and_unhex_refuses_what_is_not_hex() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(super::hex(&bytes), "0001abff");
        assert_eq!(super::unhex("0001abff").unwrap(), bytes);
        assert_eq!(super::unhex("0001ABFF").unwrap(), bytes);
        assert_eq!(super::unhex("").unwrap(), Vec::<u8>::new());
        for bad in ["0", "0g", "é0", "+1"] {
            assert!(super::unhex(bad).is_none(), "{bad}");
        }
    }
}
