//! A referral's life after it is sent: the receiver's state changes, the
//! sender's withdrawal (and a consent's, which withdraws every referral
//! resting on it), reassignment within a team.

use super::*;
use crate::domain::WithdrawalCause;
use crate::domain::message::ReferralMessage;
use crate::domain::referral::EventDetail;

impl Referrals {
    /// A state change by the receiver (accept, decline, start, hold, complete, fail).
    pub async fn act(
        &self,
        p: &Principal,
        id: &str,
        transition: Transition,
    ) -> Result<ReferralRecord> {
        let to = transition.to();
        id_check("referral_id", id)?;
        let r = self
            .store
            .get_referral(id)
            .await?
            .ok_or(Error::NotFound("referral"))?;
        let action = format!("referral.{}", to.as_str());
        self.audit
            .guard(|| self.audit_entry(p, &action, &r), write_access(p, &r))
            .await?;
        if r.outbound {
            return Err(Error::FailedPrecondition(
                "only the receiving organisation sets that state".into(),
            ));
        }
        let from = r.state;
        if !rules::receiver_may(from, to) {
            return Err(Error::FailedPrecondition(format!(
                "a referral that is {from} cannot become {to}"
            )));
        }
        let now = self.now_ms();
        let notice = self.protocol.notice_for(
            &r.peer_org,
            &ReferralMessage::Status {
                referral_id: r.referral_id.clone(),
                transition: transition.clone(),
                at_ms: now,
            },
        )?;
        let mut ev = ReferralEvent {
            actor: p.actor(),
            ..ReferralEvent::new(to, self.org_id.as_str(), now, transition.detail())
        };
        self.seal_event(&r, &mut ev).await?;
        let mut c = ReferralChange {
            expected_states: vec![from],
            state: Some(to),
            event: Some(ev),
            notices: vec![notice],
            audit: vec![self.audit_entry(p, &action, &r)],
            now_ms: self.now_ms(),
            ..Default::default()
        };
        // Who accepts takes it on; who declines it from the intake queue keeps
        // it (only they and supervisors see its content from now on).
        if matches!(to, ReferralState::Accepted | ReferralState::Declined) && r.owner.is_empty() {
            c.owner = Some(access::acting_owner(p)?.to_owned());
            c.team = Some(if p.role == Role::CaseManager {
                p.team.clone()
            } else {
                None
            });
        }
        if !self.store.change_referral(id, &c).await? {
            return Err(Error::FailedPrecondition(
                "the referral changed meanwhile; read it and try again".into(),
            ));
        }
        self.outbox.wake();
        self.referral_changed(id);
        self.store
            .get_referral(id)
            .await?
            .ok_or(Error::NotFound("referral"))
    }

    /// The change and message that withdraw one outbound referral.
    pub(super) fn withdrawal(
        &self,
        r: &ReferralRecord,
        cause: WithdrawalCause,
        by: &AuditEntry,
    ) -> Result<Option<ReferralChange>> {
        if r.purge_status != crate::domain::PurgeStatus::None {
            return Ok(None);
        }
        let from = r.state;
        let notice = self.protocol.notice_for(
            &r.peer_org,
            &ReferralMessage::Withdrawal {
                referral_id: r.referral_id.clone(),
                cause: Some(cause),
            },
        )?;
        let live = rules::sender_may_withdraw(from);
        let now = self.now_ms();
        Ok(Some(ReferralChange {
            expected_states: vec![from],
            expected_purge_status: Some(crate::domain::PurgeStatus::None),
            state: live.then_some(ReferralState::Withdrawn),
            event: live.then(|| {
                ReferralEvent::new(
                    ReferralState::Withdrawn,
                    self.org_id.as_str(),
                    now,
                    EventDetail::default(),
                )
            }),
            purge_status: Some(crate::domain::PurgeStatus::Pending),
            // The sender's copy of the content goes now: the summary it sent,
            // the texts and outcome its recipient reported, the terms' free text.
            purge_summary: true,
            purge_terms: Some(crate::wire::consent::purged_terms(&r.terms)?),
            notices: vec![notice],
            audit: vec![
                by.about(
                    &format!("referral.withdraw.{}", cause.as_str()),
                    "referral",
                    &r.referral_id,
                )
                .consent(r.consent_id.as_deref())
                .with_peer(r.peer_org.as_str()),
            ],
            now_ms: self.now_ms(),
            ..Default::default()
        }))
    }

    /// The sender withdraws a referral; the recipient purges and signs a receipt.
    pub async fn withdraw(&self, p: &Principal, id: &str) -> Result<ReferralRecord> {
        id_check("referral_id", id)?;
        let r = self
            .store
            .get_referral(id)
            .await?
            .ok_or(Error::NotFound("referral"))?;
        self.audit
            .guard(
                || self.audit_entry(p, "referral.withdraw.sender", &r),
                write_access(p, &r),
            )
            .await?;
        if !r.outbound {
            return Err(Error::FailedPrecondition(
                "only the sending organisation withdraws a referral".into(),
            ));
        }
        let from = r.state;
        if !rules::sender_may_withdraw(from) {
            return Err(Error::FailedPrecondition(format!(
                "a referral that is {from} cannot be withdrawn"
            )));
        }
        let by = AuditEntry::caller(self.now_ms(), p, "", "", "");
        let Some(mut c) = self.withdrawal(&r, WithdrawalCause::SenderWithdrew, &by)? else {
            return Err(Error::FailedPrecondition("already withdrawn".into()));
        };
        if let Some(e) = c.event.as_mut() {
            e.actor = p.actor();
        }
        if !self.store.change_referral(id, &c).await? {
            return Err(Error::FailedPrecondition(
                "the referral changed meanwhile; read it and try again".into(),
            ));
        }
        self.outbox.wake();
        self.referral_changed(id);
        self.store
            .get_referral(id)
            .await?
            .ok_or(Error::NotFound("referral"))
    }

    /// Withdraws a consent and, with it, every referral resting on it, at every
    /// recipient. Returns how many recipients are sent a withdrawal.
    pub async fn withdraw_consent(
        &self,
        consent_id: &str,
        cause: WithdrawalCause,
        by: &str,
        who: &AuditEntry,
    ) -> Result<u32> {
        let referrals = self.store.referrals_under_consent(consent_id).await?;
        let mut changes = Vec::new();
        for r in &referrals {
            if let Some(mut c) = self.withdrawal(r, cause, who)? {
                if let Some(e) = c.event.as_mut() {
                    e.actor = by.to_owned();
                }
                changes.push((r.referral_id.clone(), c));
            }
        }
        if !self
            .store
            .withdraw_consent_with(
                consent_id,
                &changes,
                self.now_ms(),
                std::slice::from_ref(who),
            )
            .await?
        {
            return Err(Error::FailedPrecondition(
                "the consent is already withdrawn".into(),
            ));
        }
        self.outbox.wake();
        for (id, _) in &changes {
            self.referral_changed(id);
        }
        // The consent forgets its client reference at once (else at the next
        // scheduler round: the withdrawal itself is done).
        if let Err(e) = self.forget_consents().await {
            tracing::warn!(error = %e, "forgetting withdrawn consents' client references failed");
        }
        let mut recipients: Vec<&OrgId> = referrals.iter().map(|r| &r.peer_org).collect();
        recipients.sort();
        recipients.dedup();
        Ok(recipients.len() as u32)
    }

    /// A supervisor gives a referral to another case manager of this organisation.
    pub async fn reassign(
        &self,
        p: &Principal,
        id: &str,
        owner: &str,
        team: Option<String>,
    ) -> Result<ReferralRecord> {
        id_check("referral_id", id)?;
        if p.role != Role::Supervisor {
            return Err(Error::PermissionDenied(
                "only supervisors reassign referrals".into(),
            ));
        }
        if owner.trim().is_empty() {
            return Err(FieldError::new("owner", "required").into());
        }
        crate::domain::bounded_text("owner", owner, 200)?;
        if let Some(t) = &team {
            crate::domain::bounded_text("team", t, 200)?;
        }
        let r = self
            .store
            .get_referral(id)
            .await?
            .ok_or(Error::NotFound("referral"))?;
        let c = ReferralChange {
            expected_states: vec![r.state],
            owner: Some(owner.to_owned()),
            team: Some(team),
            audit: vec![self.audit_entry(p, "referral.reassign", &r)],
            now_ms: self.now_ms(),
            ..Default::default()
        };
        if !self.store.change_referral(id, &c).await? {
            return Err(Error::FailedPrecondition(
                "the referral changed meanwhile; read it and try again".into(),
            ));
        }
        tracing::info!(referral_id = %id, "referral reassigned");
        self.referral_changed(id);
        self.store
            .get_referral(id)
            .await?
            .ok_or(Error::NotFound("referral"))
    }
}
