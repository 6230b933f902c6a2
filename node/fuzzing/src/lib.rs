//! Entry points for the fuzz targets in `fuzz/`: every decoder a stranger
//! can reach, from raw bytes, through the same validation the node applies.
//! None may panic, whatever the input; errors are the expected outcome.
//! A crate of its own, outside the node's production library; its tests
//! replay every seed and every input that once crashed a target.

use exitnet_node::domain::{OrgId, OrgProfile, Peer, PeerState, ReferralState};
use exitnet_node::store::ReferralRecord;
use exitnet_proto::pb;
use prost::Message;

fn org(s: &str) -> Option<OrgId> {
    OrgId::parse("org", s).ok()
}

fn peer(id: &OrgId) -> Peer {
    Peer {
        org_id: id.clone(),
        profile: OrgProfile {
            org_id: id.clone(),
            name: "Peer".into(),
            sector: None,
            need_areas: vec![],
            services: vec![],
            languages: vec![],
            settings: vec![],
            accepting_referrals: true,
            updated_at_ms: 0,
        },
        state: PeerState::Active,
        awaiting: exitnet_node::domain::Awaiting::None,
        remote_state: Some(PeerState::Active),
        endpoint: "127.0.0.1:7710".into(),
        key_fingerprint: String::new(),
        created_at_ms: 0,
        updated_at_ms: 0,
        last_seen_at_ms: None,
        pending_notices: 0,
    }
}

fn outbound(state: ReferralState, to: &OrgId) -> ReferralRecord {
    ReferralRecord {
        referral_id: "r-1".into(),
        outbound: true,
        peer_org: to.clone(),
        owner: "alice".into(),
        team: None,
        consent_id: Some("c-1".into()),
        pseudonym: "0".repeat(32),
        need_areas: vec![exitnet_node::domain::NeedArea::FunctionalReintegration],
        services: vec![exitnet_node::domain::Service::Housing],
        urgency: exitnet_node::domain::Urgency::Soon,
        key_id: "k".into(),
        summary: None,
        terms: vec![],
        state,
        purge_status: exitnet_node::domain::PurgeStatus::None,
        purged_at_ms: None,
        created_at_ms: 0,
        updated_at_ms: 0,
        expires_at_ms: None,
    }
}

/// A `NotifyRequest` from a peer, as the federation listener decodes it,
/// through the checks of each kind of notice and message.
pub fn federation_notice(data: &[u8]) {
    let Ok(req) = pb::NotifyRequest::decode(data) else {
        return;
    };
    let (Some(me), Some(them)) = (org("ngo-a"), org("prison-b")) else {
        return;
    };
    let from = peer(&them);
    match req.notice {
        Some(pb::notify_request::Notice::Message(signed)) => {
            let _ =
                exitnet_node::identity::verify_signature(&[], &signed.payload, &signed.signature);
            if let Ok(msg) = pb::FederationMessage::decode(signed.payload.as_slice()) {
                federation_message(&me, &from, msg);
            }
        }
        Some(pb::notify_request::Notice::Profile(p)) => {
            let _ = OrgProfile::from_pb(p);
        }
        Some(pb::notify_request::Notice::State(s)) => {
            let _ = PeerState::from_pb("state", s);
        }
        Some(pb::notify_request::Notice::KeyRotation(k)) => {
            if let Ok(r) = pb::KeyRotation::decode(k.payload.as_slice()) {
                let _ = exitnet_node::identity::verify_signature(
                    &r.old_public_key,
                    &k.payload,
                    &k.signature,
                );
                let _ = exitnet_node::identity::fingerprint_spki(&r.new_public_key);
            }
        }
        Some(pb::notify_request::Notice::Checkpoint(c)) => {
            let _ = exitnet_node::protocol::checkpoint::open_checkpoint(
                &them,
                &[vec![0u8; 91]],
                &c.into(),
            );
        }
        None => {}
    }
}

/// A decoded federation message, as the receiver checks it.
pub fn federation_message(me: &OrgId, from: &Peer, msg: pb::FederationMessage) {
    match msg.body {
        Some(pb::federation_message::Body::Offer(o)) => {
            let policy = exitnet_node::policy::PeerPolicy::default();
            if let Ok(offer) = exitnet_node::domain::message::Offer::from_pb(o) {
                let _ = exitnet_node::referrals::receive::offer_to_record(
                    me,
                    from,
                    &policy,
                    offer,
                    exitnet_node::domain::time::now_ms(),
                );
            }
        }
        Some(pb::federation_message::Body::Status(s)) => {
            let _ = exitnet_node::domain::id_check("status.referral_id", &s.referral_id);
            if let Some(Ok(change)) = s
                .change
                .map(|c| exitnet_node::wire::change::transition("status.change", &c))
            {
                for st in [
                    ReferralState::Requested,
                    ReferralState::Received,
                    ReferralState::Accepted,
                    ReferralState::InProgress,
                    ReferralState::OnHold,
                ] {
                    let r = outbound(st, &from.org_id);
                    let _ = exitnet_node::referrals::receive::status_change(
                        from,
                        &r,
                        change.clone(),
                        exitnet_node::domain::time::now_ms(),
                    );
                }
            }
        }
        Some(pb::federation_message::Body::Withdrawal(w)) => {
            let _ = exitnet_node::domain::id_check("withdrawal.referral_id", &w.referral_id);
        }
        None => {}
    }
}

/// Client API requests that carry case data, through their conversions.
pub fn client_request(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            if let Ok(r) = pb::RecordConsentRequest::decode(rest) {
                let _ = exitnet_node::consents::NewConsent::from_pb(r, 1_800_000_000_000);
            }
        }
        1 => {
            if let Ok(r) = pb::CreateReferralRequest::decode(rest) {
                let _ = exitnet_node::referrals::NewReferral::from_pb(r);
            }
        }
        2 => {
            if let Ok(r) = pb::CompleteReferralRequest::decode(rest) {
                let _ = exitnet_node::wire::change::outcome("outcome", r.outcome);
                let _ = exitnet_node::domain::id_check("referral_id", &r.referral_id);
            }
        }
        3 => {
            // A peer's status change, as the receiver reads it.
            if let Ok(c) = pb::StateChange::decode(rest) {
                let _ = exitnet_node::wire::change::transition("status.change", &c);
            }
        }
        4 => {
            if let Ok(p) = pb::SetPeerPolicyRequest::decode(rest)
                && let Some(p) = p.policy
            {
                let _ = exitnet_node::policy::PeerPolicy::from_pb(p);
            }
        }
        _ => {
            if let Ok(p) = pb::OrgProfile::decode(rest) {
                let _ = OrgProfile::from_pb(p);
            }
        }
    }
}

/// An invitation code as `peer join` reads it.
pub fn invitation(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = exitnet_node::protocol::invitation::decode(s);
    }
}

/// Exported receipts and checkpoints, as `receipt verify` and the witness read them.
pub fn receipt_and_checkpoint(data: &[u8]) {
    if let Ok(r) = pb::SignedReceipt::decode(data) {
        let _ = pb::Receipt::decode(r.payload.as_slice());
        let _ = exitnet_node::identity::verify_signature(&r.payload, &r.payload, &r.signature);
        if let Some(proof) = &r.batch {
            let _ = exitnet_node::protocol::batch_sign::root_of(&r.payload, proof);
            let _ = exitnet_node::protocol::batch_sign::verify(
                exitnet_node::protocol::batch_sign::RECEIPTS,
                &[r.payload.as_slice()],
                &r.payload,
                &r.signature,
                Some(proof),
                None,
            );
        }
    }
    if let Ok(c) = pb::SignedCheckpoint::decode(data)
        && let Some(them) = org("prison-b")
    {
        let _ = exitnet_node::protocol::checkpoint::open_checkpoint(
            &them,
            std::slice::from_ref(&c.payload),
            &c.clone().into(),
        );
    }
    if let Ok(w) = pb::SignedWitness::decode(data) {
        let _ = exitnet_node::protocol::checkpoint::read_witnessing(&w.into());
    }
}

/// A bearer token, as the client API reads it before verifying it.
pub fn token(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jwt) = exitnet_node::auth::jwt::decode(s) {
        let _ = exitnet_node::auth::jwt::algorithm_allowed(&jwt.alg, &["ES256".to_owned()]);
        let _ = exitnet_node::auth::jwt::check_claims(
            &jwt.claims,
            "https://idp",
            "urn:x",
            60,
            1_800_000_000,
        );
        if let Ok(cfg) = exitnet_node::config::Config::from_toml("") {
            let _ =
                exitnet_node::auth::principal_from_claims(&cfg.auth, &jwt.claims, Some("alice"));
        }
    }
}

/// A configuration file, as `config check` reads it.
pub fn config(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = exitnet_node::config::Config::from_toml(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed and every input that once crashed a target (fuzz/regressions).
    #[test]
    fn seeds_and_regressions_pass() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        type Entry = fn(&[u8]);
        let targets: [(&str, Entry); 6] = [
            ("federation", federation_notice),
            ("client", client_request),
            ("invitation", invitation),
            ("receipt", receipt_and_checkpoint),
            ("token", token),
            ("config", config),
        ];
        let mut n = 0;
        for (name, entry) in targets {
            for dir in ["seeds", "regressions"] {
                let Ok(files) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for f in files.flatten() {
                    entry(&std::fs::read(f.path()).unwrap());
                    n += 1;
                }
            }
        }
        assert!(n >= 6, "no seeds found under {}", root.display());
    }

    #[test]
    fn the_entry_points_take_garbage() {
        for data in [
            &b""[..],
            b"\x00",
            b"\xff\xff\xff\xff",
            b"{}",
            b"a.b.c",
            b"exitnet-invite-v1.",
        ] {
            federation_notice(data);
            client_request(data);
            invitation(data);
            receipt_and_checkpoint(data);
            token(data);
            config(data);
        }
    }
}
