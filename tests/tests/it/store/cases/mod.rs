//! The cases of the storage suite, by aggregate, and what they share.

use exitnet_node::domain::{
    Awaiting, NeedArea, OrgId, OrgProfile, PeerState, PurgeStatus, ReferralState, Sector, Service,
    Urgency,
};
use exitnet_node::store::{
    JoinRefusal, NewInvitation, NewNotice, NewPeer, NoticeKind, PeerKey, PeerUpdate, Route,
    SecurityEvent, Store,
};
use std::sync::Arc;

mod audit;
mod consents;
mod outbox;
mod peers;
mod receipts;
mod referrals;

pub use audit::*;
pub use consents::*;
pub use outbox::*;
pub use peers::*;
pub use receipts::*;
pub use referrals::*;

pub(super) const NOW: i64 = 1_800_000_000_000;
/// The wrapped data key the test referrals are sealed under.
pub(super) const WRAPPED: &[u8] = b"wrapped-key";

pub(super) fn org(s: &str) -> OrgId {
    OrgId::parse("org", s).unwrap()
}

pub(super) fn profile(id: &str) -> OrgProfile {
    OrgProfile {
        org_id: org(id),
        name: format!("Org {id}"),
        sector: Some(Sector::PrisonProbation),
        need_areas: vec![],
        services: vec![Service::Housing],
        languages: vec!["de".into()],
        settings: vec![],
        accepting_referrals: true,
        updated_at_ms: NOW,
    }
}

pub(super) fn key(fp: &str) -> PeerKey {
    PeerKey {
        fingerprint: fp.into(),
        spki_der: fp.as_bytes().to_vec(),
        added_at_ms: NOW,
        valid_until_ms: None,
    }
}

pub(super) fn new_peer(id: &str, fp: &str, awaiting: Awaiting) -> NewPeer {
    NewPeer {
        profile: profile(id),
        state: PeerState::Pending,
        awaiting,
        remote_state: Some(PeerState::Pending),
        endpoint: "127.0.0.1:7710".into(),
        key: key(fp),
        now_ms: NOW,
    }
}

pub(super) fn invitation(id: &str, secret: &[u8], expires: i64) -> NewInvitation {
    NewInvitation {
        id: id.into(),
        secret_hash: secret.to_vec(),
        expires_at_ms: expires,
        note: String::new(),
        created_at_ms: NOW,
    }
}

pub(super) fn notice(id: &str, to: &str) -> NewNotice {
    NewNotice {
        notice_id: id.into(),
        org_id: org(to),
        payload: id.as_bytes().to_vec(),
        present_key: None,
        route: Route::peering(),
        now_ms: NOW,
    }
}
