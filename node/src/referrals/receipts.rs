//! What comes back for our messages: a peer's receipt checked and stored
//! with the change it implies, or a refusal for good.

use super::*;
use crate::domain::FailureReason;
use crate::domain::referral::EventDetail;
use crate::protocol::messages::Acknowledgement;
use crate::store::{NoticeKind, Route};

impl Referrals {
    /// The outbox delivered one of our messages and the peer's receipt for it
    /// checked out: the receipt with what it implies, to store together.
    pub fn delivery_receipt(
        &self,
        org: &OrgId,
        notice_row: i64,
        ack: Acknowledgement,
    ) -> AcceptedReceipt {
        let Acknowledgement {
            referral_id,
            message,
            nothing_held,
            record,
        } = ack;
        let change = match message {
            NoticeKind::Offer => Some(ReferralChange {
                expected_states: vec![ReferralState::Requested],
                state: Some(ReferralState::Received),
                event: Some(ReferralEvent::new(
                    ReferralState::Received,
                    org.as_str(),
                    record.at_ms,
                    EventDetail::default(),
                )),
                now_ms: self.now_ms(),
                ..Default::default()
            }),
            NoticeKind::Withdrawal => Some(ReferralChange {
                purge_status: Some(crate::domain::PurgeStatus::Done),
                purged_at_ms: Some(record.at_ms),
                // Anything the recipient reported after the withdrawal was
                // queued goes too.
                purge_summary: true,
                now_ms: self.now_ms(),
                ..Default::default()
            }),
            _ => None,
        };
        let action = match message {
            NoticeKind::Withdrawal if nothing_held => {
                // The recipient never held it: nothing was purged there.
                "receipt.purge.nothing_held"
            }
            NoticeKind::Withdrawal => "receipt.purge",
            _ => "receipt.delivery",
        };
        let audit = AuditEntry::peer(
            self.now_ms(),
            org.as_str(),
            action,
            "referral",
            &referral_id,
        );
        AcceptedReceipt {
            notice_row,
            receipt: record,
            change: change.map(|c| (referral_id, c)),
            audit: vec![audit],
        }
    }

    /// Stores checked receipts for our messages together (one transaction) and
    /// tells watchers of the referrals they changed.
    pub async fn on_delivered(&self, items: &[AcceptedReceipt]) -> Result<()> {
        self.store.accept_receipts(items, self.now_ms()).await?;
        let mut purged = false;
        for (id, c) in items.iter().filter_map(|i| i.change.as_ref()) {
            purged |= c.purge_summary;
            self.referral_changed(id);
        }
        if purged {
            // The content the purge deleted must not linger in the database's
            // files. The receipts are stored: a failure here is not a delivery's.
            if let Err(e) = self.store.after_purge().await {
                tracing::warn!(error = %e, "cleaning up after purges failed");
            }
        }
        Ok(())
    }

    /// The peer refused one of our messages for good (or it could not be
    /// delivered in time): the referral fails, with the reason.
    pub async fn on_refused(
        &self,
        route: Option<&Route>,
        reason: FailureReason,
        text: &str,
    ) -> Result<()> {
        let Some(route) = route else {
            return Ok(());
        };
        let (NoticeKind::Offer, Some(referral_id)) = (route.kind, &route.referral_id) else {
            if matches!(route.kind, NoticeKind::Status | NoticeKind::Withdrawal) {
                tracing::warn!(
                    kind = route.kind.as_str(),
                    "a peer refused a referral message"
                );
            }
            return Ok(());
        };
        let mut text: String = text
            .chars()
            .filter(|c| !c.is_control())
            .take(rules::MAX_NOTE_CHARS)
            .collect();
        text.truncate(rules::MAX_NOTE_CHARS);
        let detail = EventDetail {
            failure_reason: Some(reason),
            text,
            ..Default::default()
        };
        let mut ev = ReferralEvent::new(
            ReferralState::Failed,
            self.org_id.as_str(),
            self.now_ms(),
            detail,
        );
        let Some(r) = self.store.get_referral(referral_id).await? else {
            return Ok(());
        };
        self.seal_event(&r, &mut ev).await?;
        let c = ReferralChange {
            expected_states: vec![ReferralState::Requested],
            state: Some(ReferralState::Failed),
            event: Some(ev),
            audit: vec![
                AuditEntry::node(
                    self.now_ms(),
                    self.org_id.as_str(),
                    "referral.failed_delivery",
                    "referral",
                    referral_id,
                )
                .with_peer(r.peer_org.as_str()),
            ],
            now_ms: self.now_ms(),
            ..Default::default()
        };
        self.store.change_referral(referral_id, &c).await?;
        self.referral_changed(referral_id);
        Ok(())
    }
}
