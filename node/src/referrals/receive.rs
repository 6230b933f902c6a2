//! Messages from peers: checked against the terms that travel with them and
//! against this node's own rules, applied once, answered with a signed receipt.
//! Nothing is trusted because it came from a peer.

use crate::audit::AuditEntry;
use crate::domain::consent::OutOfScope;
use crate::domain::message::Offer;
use crate::domain::referral::EventDetail;
use crate::domain::referral::{self as rules, Transition};
use crate::domain::{Peer, PeerState, ReferralState};
use crate::error::{Error, FieldError, Result};
use crate::protocol::messages;
use crate::state::NodeState;
use crate::store::{ReceiptRecord, ReferralChange, ReferralEvent, ReferralRecord};
use crate::wire::change as changes;
use exitnet_proto::pb;
use prost::Message;

fn deny(m: impl Into<String>) -> Error {
    Error::PermissionDenied(m.into())
}

/// Counts a received message: new, or a redelivery answered with the
/// receipt stored the first time.
fn count(
    state: &NodeState,
    from: &Peer,
    kind: &str,
    issued: &ReceiptRecord,
    stored: &ReceiptRecord,
) {
    let outcome = if issued.payload == stored.payload {
        "new"
    } else {
        "repeat"
    };
    state.metrics.received(from.org_id.as_str(), kind, outcome);
}

/// Handles a signed message from an authenticated peer. With a `batch`
/// place it came in a `NotifyBatch`, and its receipt is signed with the
/// others of the call.
pub async fn handle(
    state: &NodeState,
    from: &Peer,
    notice_id: &str,
    presented_spki: &[u8],
    signed: &pb::SignedMessage,
    batch: Option<crate::batch_sign::Member>,
) -> Result<pb::SignedReceipt> {
    // Outside an active peering (either side suspended or revoked, or not
    // yet approved) only withdrawals are taken: a purge reaches us while any
    // key of the peer is pinned. Checked once the message is opened.
    let refusal = if from.state != PeerState::Active {
        Some("peer_pending")
    } else if from.remote_state != Some(PeerState::Active) {
        // The peer told us it suspended or ended the peering: it may not send.
        Some("peer_not_active")
    } else {
        None
    };
    // The key the peer called with is pinned (it was found by it) and is
    // almost always the one that signed: the other pinned keys (a rotation
    // under way) are read only when it is not.
    let msg = if messages::signed_by_any(&[presented_spki], signed, Some(&state.verified_roots)) {
        messages::open_signed(state, &from.org_id, notice_id, signed)?
    } else {
        let keys: Vec<Vec<u8>> = state
            .store
            .peer_keys(&from.org_id, state.now_ms())
            .await?
            .into_iter()
            .map(|k| k.spki_der)
            .filter(|k| k.as_slice() != presented_spki)
            .collect();
        messages::open(state, &from.org_id, notice_id, &keys, signed)?
    };
    let body = msg
        .body
        .clone()
        .ok_or_else(|| FieldError::new("message.body", "required"))?;
    if let Some(refusal) = refusal
        && !matches!(body, pb::federation_message::Body::Withdrawal(_))
    {
        return Err(Error::PeeringRefused(refusal));
    }
    let kind = match &body {
        pb::federation_message::Body::Offer(_) => "offer",
        pb::federation_message::Body::Status(_) => "status",
        pb::federation_message::Body::Withdrawal(_) => "withdrawal",
    };
    // An exact repeat (the peer did not get or keep our answer) is answered
    // with the receipt stored the first time, before any state rule: the
    // referral may have moved on since. Offers, the bulk of the traffic, look
    // only when their checks fail: a repeat that passes them finds its
    // receipt when it is stored (`receive_message`, the intake).
    if !matches!(body, pb::federation_message::Body::Offer(_))
        && let Some(stored) = stored_answer(state, &msg, &signed.payload).await?
    {
        state.metrics.received(from.org_id.as_str(), kind, "repeat");
        return to_signed_receipt(stored);
    }
    let receipt = match body {
        pb::federation_message::Body::Offer(offer) => {
            let (policy, _) = crate::policy::for_peer(state.store.as_ref(), &from.org_id).await?;
            let checked = match Offer::from_pb(offer)
                .map_err(Error::from)
                .and_then(|offer| {
                    offer_to_record(&state.org_id, from, &policy, offer, state.now_ms())
                }) {
                // What a peer can make us store is bounded: a new offer over
                // its quota of pending intake is refused (and retried by it).
                Ok(checked) => crate::peering::quotas::intake(state, &from.org_id)
                    .await
                    .map(|()| checked),
                Err(e) => Err(e),
            };
            let (mut record, ev) = match checked {
                Ok(checked) => checked,
                Err(e) => {
                    return match stored_answer(state, &msg, &signed.payload).await? {
                        Some(stored) => {
                            state.metrics.received(from.org_id.as_str(), kind, "repeat");
                            to_signed_receipt(stored)
                        }
                        None => Err(e),
                    };
                }
            };
            // Sealed under a data key of this referral's own, destroyed on
            // purge, and stored with the referral (one transaction).
            let mut wrapped_key = None;
            if let Some(plain) = record.summary.take() {
                let wrapped = state.master_key.new_wrapped_data_key(&record.key_id)?;
                record.summary = Some(state.master_key.seal(
                    &record.key_id,
                    &wrapped,
                    &record.referral_id,
                    &plain,
                )?);
                wrapped_key = Some(wrapped);
            }
            let receipt = messages::issue_receipt(
                state,
                pb::ReceiptKind::Delivery,
                &msg,
                &signed.payload,
                &record.referral_id,
                None,
                batch,
            )
            .await?;
            let referral_id = record.referral_id.clone();
            let audit = AuditEntry::peer(
                state.now_ms(),
                from.org_id.as_str(),
                "referral.receive",
                "referral",
                &referral_id,
            );
            let stored = state
                .intake
                .receive(crate::store::NewOffer {
                    receipt: receipt.clone(),
                    record,
                    event: ev,
                    wrapped_key,
                    audit: vec![audit],
                })
                .await?;
            count(state, from, "offer", &receipt, &stored);
            state.referral_changed(&referral_id);
            stored
        }
        pb::federation_message::Body::Status(s) => {
            super::id_check("status.referral_id", &s.referral_id)?;
            let r = state.store.get_referral(&s.referral_id).await?;
            let r = r
                .filter(|r| r.outbound && r.peer_org == from.org_id)
                .ok_or(Error::NotFound("referral"))?;
            let change = s
                .change
                .ok_or_else(|| FieldError::new("status.change", "required"))?;
            // Only what the transition carries is kept: a peer cannot put
            // anything else (a local actor, a text on an acceptance) into
            // our history.
            let transition = changes::transition("status.change", &change)?;
            let audit = AuditEntry::peer(
                state.now_ms(),
                from.org_id.as_str(),
                &format!("referral.status.{}", transition.to()),
                "referral",
                &r.referral_id,
            )
            .consent(r.consent_id.as_deref());
            let mut c = status_change(from, &r, transition, state.now_ms())?;
            // The recipient's texts and outcome: sealed under the data key
            // of our copy, deleted when it is purged.
            if let Some(ev) = c.event.as_mut() {
                super::content::seal_event(state, &r, ev).await?;
            }
            let receipt = messages::issue_receipt(
                state,
                pb::ReceiptKind::Delivery,
                &msg,
                &signed.payload,
                &r.referral_id,
                None,
                batch,
            )
            .await?;
            let stored = state
                .store
                .receive_message(&receipt, None, Some((&r.referral_id, &c)), &[audit])
                .await?;
            count(state, from, "status", &receipt, &stored);
            state.referral_changed(&r.referral_id);
            stored
        }
        pb::federation_message::Body::Withdrawal(w) => {
            super::id_check("withdrawal.referral_id", &w.referral_id)?;
            let r = state.store.get_referral(&w.referral_id).await?;
            let r = r.filter(|r| !r.outbound && r.peer_org == from.org_id);
            // Outside an active peering a withdrawal is taken only for a
            // referral held from that peer: a suspended, revoked or never
            // approved peer cannot make us store receipts and audit rows for
            // IDs we never held. (Within one, "nothing held" is a receipt.)
            if refusal.is_some() && r.is_none() {
                return Err(Error::NotFound("referral"));
            }
            let receipt = messages::issue_receipt(
                state,
                pb::ReceiptKind::Purge,
                &msg,
                &signed.payload,
                &w.referral_id,
                Some(if r.is_some() {
                    pb::PurgeOutcome::Purged
                } else {
                    pb::PurgeOutcome::NothingHeld
                }),
                batch,
            )
            .await?;
            // Purge: the summary goes, the tombstone (IDs, times, states) stays.
            // Nothing held (it never arrived, or was refused) is purged too.
            let held_state = r.as_ref().map(|r| r.state);
            let c = r.as_ref().map(|r| ReferralChange {
                state: held_state
                    .filter(|s| !rules::is_closed(*s))
                    .map(|_| ReferralState::Withdrawn),
                event: Some(ReferralEvent::new(
                    ReferralState::Withdrawn,
                    from.org_id.as_str(),
                    state.now_ms(),
                    EventDetail::default(),
                )),
                purge_status: Some(crate::domain::PurgeStatus::Done),
                purged_at_ms: Some(state.now_ms()),
                purge_summary: true,
                purge_terms: Some(crate::wire::consent::purged_terms(&r.terms)),
                destroy_key: Some(r.key_id.clone()),
                now_ms: state.now_ms(),
                ..Default::default()
            });
            let stored = state
                .store
                .receive_message(
                    &receipt,
                    None,
                    c.as_ref().map(|c| (w.referral_id.as_str(), c)),
                    &[AuditEntry::peer(
                        state.now_ms(),
                        from.org_id.as_str(),
                        if r.is_some() {
                            "referral.purge"
                        } else {
                            "referral.purge.nothing_held"
                        },
                        "referral",
                        &w.referral_id,
                    )],
                )
                .await?;
            count(state, from, "withdrawal", &receipt, &stored);
            // Purge work (a WAL checkpoint) only when something was purged
            // now: not for a referral never held, not for a repeat.
            if r.is_some() && stored.payload == receipt.payload {
                state.referral_changed(&w.referral_id);
                state.store.after_purge().await?;
                tracing::info!(peer = %from.org_id, "referral purged on withdrawal");
            }
            stored
        }
    };
    to_signed_receipt(receipt)
}

fn to_signed_receipt(receipt: ReceiptRecord) -> Result<pb::SignedReceipt> {
    let batch = match receipt.batch {
        Some(b) => {
            Some(pb::BatchProof::decode(b.as_slice()).map_err(|e| Error::Internal(e.into()))?)
        }
        None => None,
    };
    Ok(pb::SignedReceipt {
        payload: receipt.payload,
        signature: receipt.signature,
        batch,
    })
}

/// The receipt stored for this very message, if it came before. The same
/// message ID with other content is refused: IDs are never reused.
async fn stored_answer(
    state: &NodeState,
    msg: &pb::FederationMessage,
    signed_payload: &[u8],
) -> Result<Option<ReceiptRecord>> {
    let Some(stored) = state
        .store
        .issued_receipt(&msg.message_id, state.org_id.as_str(), &msg.sender_org)
        .await?
    else {
        return Ok(None);
    };
    let first = pb::Receipt::decode(stored.payload.as_slice())
        .map_err(|e| Error::Internal(anyhow::anyhow!("a stored receipt: {e}")))?;
    if first.message_sha256 != crate::crypto::sha256(signed_payload) {
        return Err(Error::FailedPrecondition(
            "message.message_id: already used for another message".into(),
        ));
    }
    Ok(Some(stored))
}

/// Checks a peer's offer, read from the wire (`wire::message`), against
/// the terms that travel with it and this node's policy for `from`, into
/// the records to store. Pure: the fuzz targets call it.
pub fn offer_to_record(
    me: &crate::domain::OrgId,
    from: &Peer,
    policy: &crate::policy::PeerPolicy,
    offer: Offer,
    now: i64,
) -> Result<(ReferralRecord, ReferralEvent)> {
    let Offer {
        referral_id,
        subject_pseudonym,
        need_areas,
        services,
        urgency,
        summary,
        terms,
        consent_ref: _,
    } = offer;
    // The terms that travelled with the referral, checked here again.
    match terms.scope(me, &need_areas, &services, &summary, now) {
        Ok(()) => {}
        Err(OutOfScope::NotInForce) => {
            return Err(deny("offer.terms.valid_until: the consent is not in force"));
        }
        Err(OutOfScope::NotARecipient) => {
            return Err(deny(
                "offer.terms.recipients: this node is not a recipient under the consent",
            ));
        }
        Err(other) => return Err(deny(other.content_refusal("offer.").unwrap_or_default())),
    }
    // And this node's own policy for the sending peer.
    policy.check(
        from.org_id.as_str(),
        "offer.",
        &need_areas,
        &services,
        &summary,
        &terms,
    )?;
    let record = ReferralRecord {
        key_id: format!("referral:{referral_id}"),
        referral_id,
        outbound: false,
        peer_org: from.org_id.clone(),
        owner: String::new(),
        team: None,
        consent_id: None,
        pseudonym: subject_pseudonym,
        need_areas: need_areas
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(","),
        services: services
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(","),
        urgency: urgency.as_str().to_owned(),
        summary: Some(crate::wire::referral::summary_to_stored(&summary)),
        terms: crate::wire::consent::terms_to_stored(&terms),
        state: ReferralState::Received,
        purge_status: crate::domain::PurgeStatus::None,
        purged_at_ms: None,
        created_at_ms: now,
        updated_at_ms: now,
        expires_at_ms: Some(terms.valid_until_ms),
    };
    let ev = ReferralEvent::new(
        ReferralState::Received,
        me.as_str(),
        now,
        EventDetail::default(),
    );
    Ok((record, ev))
}

/// A state change the receiver reports: only states the receiver may set,
/// only legal transitions.
pub fn status_change(
    from: &Peer,
    r: &ReferralRecord,
    transition: Transition,
    now: i64,
) -> Result<ReferralChange> {
    let to = transition.to();
    let current = r.state;
    // The sender may not have recorded "received" yet when the first change arrives.
    let effective = if current == ReferralState::Requested {
        ReferralState::Received
    } else {
        current
    };
    if !rules::receiver_may(effective, to) {
        return Err(Error::FailedPrecondition(format!(
            "status.change.state: a referral that is {current} cannot become {to}"
        )));
    }
    Ok(ReferralChange {
        expected_states: vec![current],
        state: Some(to),
        event: Some(ReferralEvent::new(
            to,
            from.org_id.as_str(),
            now,
            transition.detail(),
        )),
        now_ms: now,
        ..Default::default()
    })
}
