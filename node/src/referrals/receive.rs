//! Messages from peers: checked against the terms that travel with them and
//! against this node's own rules, applied once, answered with a signed receipt.
//! Nothing is trusted because it came from a peer.

use super::Referrals;
use crate::audit::AuditEntry;
use crate::domain::consent::OutOfScope;
use crate::domain::message::{Offer, ReferralMessage};
use crate::domain::referral::EventDetail;
use crate::domain::referral::{self as rules, Transition};
use crate::domain::{Peer, PeerState, ReferralState};
use crate::error::{Error, Result};
use crate::protocol::incoming::{Answer, Incoming, Receipt};
use crate::store::{NoticeKind, ReceiptRecord, ReferralChange, ReferralEvent, ReferralRecord};

fn deny(m: impl Into<String>) -> Error {
    Error::PermissionDenied(m.into())
}

impl Referrals {
    /// Counts a received message: new, or a redelivery answered with the
    /// receipt stored the first time.
    pub(crate) fn count(
        &self,
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
        self.metrics.received(from.org_id.as_str(), kind, outcome);
    }

    /// Handles a message from an authenticated peer, opened and its signature
    /// checked (`protocol::incoming`): our receipt for it, stored with what it
    /// changes, or the one stored when the same message came before.
    pub async fn receive(&self, from: &Peer, incoming: Incoming) -> Result<ReceiptRecord> {
        let Incoming {
            message,
            kind,
            answer,
        } = incoming;
        // Outside an active peering (either side suspended or revoked, or not
        // yet approved) only withdrawals are taken: a purge reaches us while any
        // key of the peer is pinned.
        let refusal = if from.state != PeerState::Active {
            Some("peer_pending")
        } else if from.remote_state != Some(PeerState::Active) {
            // The peer told us it suspended or ended the peering: it may not send.
            Some("peer_not_active")
        } else {
            None
        };
        if let Some(refusal) = refusal
            && kind != NoticeKind::Withdrawal
        {
            return Err(Error::PeeringRefused(refusal));
        }
        let kind_name = kind.as_str();
        // An exact repeat (the peer did not get or keep our answer) is answered
        // with the receipt stored the first time, before any state rule: the
        // referral may have moved on since. Offers, the bulk of the traffic, look
        // only when their checks fail: a repeat that passes them finds its
        // receipt when it is stored (`receive_message`, the intake).
        if kind != NoticeKind::Offer
            && let Some(stored) = answer.stored(&self.protocol).await?
        {
            self.metrics
                .received(from.org_id.as_str(), kind_name, "repeat");
            return Ok(stored);
        }
        let message = match message {
            Ok(m) => m,
            Err(e) => return self.repeat_or(from, kind_name, &answer, e.into()).await,
        };
        match message {
            ReferralMessage::Offer(offer) => self.receive_offer(from, *offer, answer).await,
            ReferralMessage::Status {
                referral_id,
                transition,
                at_ms: _,
            } => {
                self.receive_status(from, &referral_id, transition, answer)
                    .await
            }
            ReferralMessage::Withdrawal {
                referral_id,
                cause: _,
            } => {
                self.receive_withdrawal(from, &referral_id, refusal.is_some(), answer)
                    .await
            }
        }
    }

    /// A message whose checks failed: answered with its stored receipt if it
    /// is a repeat of one taken before, else refused with `e`.
    pub(crate) async fn repeat_or(
        &self,
        from: &Peer,
        kind: &str,
        answer: &Answer,
        e: Error,
    ) -> Result<ReceiptRecord> {
        match answer.stored(&self.protocol).await? {
            Some(stored) => {
                self.metrics.received(from.org_id.as_str(), kind, "repeat");
                Ok(stored)
            }
            None => Err(e),
        }
    }

    pub(crate) async fn receive_offer(
        &self,
        from: &Peer,
        offer: Offer,
        answer: Answer,
    ) -> Result<ReceiptRecord> {
        let (policy, _) = crate::policy::for_peer(self.store.as_ref(), &from.org_id).await?;
        let checked = match offer_to_record(&self.org_id, from, &policy, offer, self.now_ms()) {
            // What a peer can make us store is bounded: a new offer over its
            // quota of pending intake is refused (and retried by it).
            Ok(checked) => self.quotas.intake(&from.org_id).await.map(|()| checked),
            Err(e) => Err(e),
        };
        let (mut record, ev) = match checked {
            Ok(checked) => checked,
            Err(e) => return self.repeat_or(from, "offer", &answer, e).await,
        };
        // Sealed under a data key of this referral's own, destroyed on purge,
        // and stored with the referral (one transaction).
        let mut wrapped_key = None;
        if let Some(plain) = record.summary.take() {
            let wrapped = self.master_key.new_wrapped_data_key(&record.key_id)?;
            record.summary = Some(self.master_key.seal(
                &record.key_id,
                &wrapped,
                &record.referral_id,
                &plain,
            )?);
            wrapped_key = Some(wrapped);
        }
        let referral_id = record.referral_id.clone();
        let receipt = answer
            .issue(&self.protocol, Receipt::Delivery, &referral_id)
            .await?;
        let audit = AuditEntry::peer(
            self.now_ms(),
            from.org_id.as_str(),
            "referral.receive",
            "referral",
            &referral_id,
        );
        let stored = self
            .intake
            .receive(crate::store::NewOffer {
                receipt: receipt.clone(),
                record,
                event: ev,
                wrapped_key,
                audit: vec![audit],
            })
            .await?;
        self.count(from, "offer", &receipt, &stored);
        self.referral_changed(&referral_id);
        Ok(stored)
    }

    pub(crate) async fn receive_status(
        &self,
        from: &Peer,
        referral_id: &str,
        transition: Transition,
        answer: Answer,
    ) -> Result<ReceiptRecord> {
        let r = self.store.get_referral(referral_id).await?;
        let r = r
            .filter(|r| r.outbound && r.peer_org == from.org_id)
            .ok_or(Error::NotFound("referral"))?;
        let audit = AuditEntry::peer(
            self.now_ms(),
            from.org_id.as_str(),
            &format!("referral.status.{}", transition.to()),
            "referral",
            &r.referral_id,
        )
        .consent(r.consent_id.as_deref());
        let mut c = status_change(from, &r, transition, self.now_ms())?;
        // The recipient's texts and outcome: sealed under the data key of our
        // copy, deleted when it is purged.
        if let Some(ev) = c.event.as_mut() {
            self.seal_event(&r, ev).await?;
        }
        let receipt = answer
            .issue(&self.protocol, Receipt::Delivery, &r.referral_id)
            .await?;
        let stored = self
            .store
            .receive_message(&receipt, None, Some((&r.referral_id, &c)), &[audit])
            .await?;
        self.count(from, "status", &receipt, &stored);
        self.referral_changed(&r.referral_id);
        Ok(stored)
    }

    pub(crate) async fn receive_withdrawal(
        &self,
        from: &Peer,
        referral_id: &str,
        outside_peering: bool,
        answer: Answer,
    ) -> Result<ReceiptRecord> {
        let r = self.store.get_referral(referral_id).await?;
        let r = r.filter(|r| !r.outbound && r.peer_org == from.org_id);
        // Outside an active peering a withdrawal is taken only for a referral
        // held from that peer: a suspended, revoked or never approved peer
        // cannot make us store receipts and audit rows for IDs we never held.
        // (Within one, "nothing held" is a receipt.)
        if outside_peering && r.is_none() {
            return Err(Error::NotFound("referral"));
        }
        let held = Receipt::Purge { held: r.is_some() };
        let receipt = answer.issue(&self.protocol, held, referral_id).await?;
        // Purge: the summary goes, the tombstone (IDs, times, states) stays.
        // Nothing held (it never arrived, or was refused) is purged too.
        let c = r
            .as_ref()
            .map(|r| -> Result<ReferralChange> {
                Ok(ReferralChange {
                    state: (!rules::is_closed(r.state)).then_some(ReferralState::Withdrawn),
                    event: Some(ReferralEvent::new(
                        ReferralState::Withdrawn,
                        from.org_id.as_str(),
                        self.now_ms(),
                        EventDetail::default(),
                    )),
                    purge_status: Some(crate::domain::PurgeStatus::Done),
                    purged_at_ms: Some(self.now_ms()),
                    purge_summary: true,
                    purge_terms: Some(crate::wire::consent::purged_terms(&r.terms)?),
                    destroy_key: Some(r.key_id.clone()),
                    now_ms: self.now_ms(),
                    ..Default::default()
                })
            })
            .transpose()?;
        let action = if r.is_some() {
            "referral.purge"
        } else {
            "referral.purge.nothing_held"
        };
        let audit = AuditEntry::peer(
            self.now_ms(),
            from.org_id.as_str(),
            action,
            "referral",
            referral_id,
        );
        let stored = self
            .store
            .receive_message(
                &receipt,
                None,
                c.as_ref().map(|c| (referral_id, c)),
                &[audit],
            )
            .await?;
        self.count(from, "withdrawal", &receipt, &stored);
        // Purge work (a WAL checkpoint) only when something was purged now: not
        // for a referral never held, not for a repeat.
        if r.is_some() && stored.payload == receipt.payload {
            self.referral_changed(referral_id);
            self.store.after_purge().await?;
            tracing::info!(peer = %from.org_id, "referral purged on withdrawal");
        }
        Ok(stored)
    }
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
        need_areas,
        services,
        urgency,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Awaiting, NeedArea, OrgId, OrgProfile};
    use crate::policy::PeerPolicy;
    use crate::wire::message::tests::offer;
    use exitnet_proto::pb;

    const NOW: i64 = 1_750_000_000_000;

    fn org(id: &str) -> OrgId {
        OrgId::parse("org", id).expect("an organisation ID")
    }

    fn sender() -> Peer {
        Peer {
            org_id: org("ngo-a"),
            profile: OrgProfile {
                org_id: org("ngo-a"),
                name: "NGO A".into(),
                sector: None,
                need_areas: vec![],
                services: vec![],
                languages: vec![],
                settings: vec![],
                accepting_referrals: true,
                updated_at_ms: 0,
            },
            state: PeerState::Active,
            awaiting: Awaiting::None,
            remote_state: Some(PeerState::Active),
            endpoint: "127.0.0.1:7710".into(),
            key_fingerprint: String::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
            last_seen_at_ms: None,
            pending_notices: 0,
        }
    }

    fn check(
        o: pb::ReferralOffer,
        me: &str,
        policy: &PeerPolicy,
        now: i64,
    ) -> Result<ReferralRecord> {
        let offer = Offer::from_pb(o)?;
        offer_to_record(&org(me), &sender(), policy, offer, now).map(|(r, _)| r)
    }

    /// An offer inside its terms and this node's policy becomes a received
    /// referral from its sender; outside either, it is refused naming what.
    #[test]
    fn an_offer_is_checked_against_its_terms_and_this_nodes_policy() {
        let policy = PeerPolicy::default();
        let r = check(offer(), "prison-b", &policy, NOW).expect("a valid offer");
        assert_eq!(
            (r.outbound, r.peer_org.as_str(), r.state),
            (false, "ngo-a", ReferralState::Received)
        );
        assert_eq!(r.need_areas, vec![NeedArea::MentalHealth]);
        assert!(r.summary.is_some() && r.owner.is_empty());

        let no_mental_health = PeerPolicy {
            need_areas: vec![NeedArea::Cognitive],
            ..PeerPolicy::default()
        };
        type Change = fn(&mut pb::ReferralOffer);
        let unchanged: Change = |_| {};
        let cases: Vec<(Change, &str, &PeerPolicy, i64, &str)> = vec![
            // Terms ended, or not for us.
            (
                unchanged,
                "prison-b",
                &policy,
                1_900_000_000_000,
                "offer.terms.valid_until",
            ),
            (
                unchanged,
                "health-c",
                &policy,
                NOW,
                "offer.terms.recipients",
            ),
            // A need area or a field the client did not agree to share.
            (
                |o| o.need_areas = vec![pb::NeedArea::Cognitive as i32],
                "prison-b",
                &policy,
                NOW,
                "offer.need_areas",
            ),
            (
                |o| {
                    if let Some(s) = o.summary.as_mut() {
                        s.gender = pb::Gender::Female as i32;
                    }
                },
                "prison-b",
                &policy,
                NOW,
                "offer.summary.gender",
            ),
            // Inside the terms, but not what this node takes from the sender.
            (
                unchanged,
                "prison-b",
                &no_mental_health,
                NOW,
                "offer.need_areas",
            ),
        ];
        for (change, me, policy, now, field) in cases {
            let mut o = offer();
            change(&mut o);
            let e = check(o, me, policy, now).expect_err(field);
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{field}: {e:?}");
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }

    /// A peer's status change is taken only where the receiver's rules allow
    /// it from the state our copy is in.
    #[test]
    fn a_status_change_follows_the_receivers_rules() {
        use ReferralState::*;
        let at = |state: ReferralState| ReferralRecord {
            referral_id: "r-1".into(),
            outbound: true,
            peer_org: org("ngo-a"),
            owner: "alice".into(),
            team: None,
            consent_id: Some("c-1".into()),
            pseudonym: String::new(),
            need_areas: vec![NeedArea::MentalHealth],
            services: vec![],
            urgency: crate::domain::Urgency::Soon,
            key_id: "k".into(),
            summary: None,
            terms: vec![],
            state,
            purge_status: crate::domain::PurgeStatus::None,
            purged_at_ms: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms: None,
        };
        let cases = [
            (Requested, Transition::Accept, true),
            (Received, Transition::Accept, true),
            (Accepted, Transition::Start, true),
            (OnHold, Transition::Start, true),
            (Received, Transition::Start, false),
            (Completed, Transition::Accept, false),
            (Withdrawn, Transition::Start, false),
        ];
        for (from, t, allowed) in cases {
            let to = t.to();
            let got = status_change(&sender(), &at(from), t, NOW);
            match got {
                Ok(c) => {
                    assert!(allowed, "{from} -> {to} was taken");
                    assert_eq!(c.state, Some(to));
                    assert_eq!(c.expected_states, vec![from]);
                }
                Err(e) => assert!(!allowed, "{from} -> {to} refused: {e}"),
            }
        }
    }
}
