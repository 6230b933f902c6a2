//! Case content at rest and its purge. A referral's content — its summary,
//! the free text of every change in its history (decline, failure and hold
//! texts), the outcome of its completion (note and progress values) — is
//! sealed under the referral's data key; its history's `detail` keeps only
//! codes (state, reasons). A purge deletes the content (the summary, every
//! event's content, the free text of the stored terms) and, at a recipient,
//! destroys the data key, so no copy left in the database's files or an
//! older backup can be opened either. What stays is IDs, times, states and
//! codes.
//!
//! A recipient purges by itself, without waiting for the sender, when the
//! terms it holds end, and when a referral it declined or failed has been
//! closed for `federation.closed_inbound_retention_days`. A sender's
//! consent, once withdrawn or ended, forgets the client reference.

use super::Referrals;
use crate::audit::AuditEntry;
use crate::domain::ReferralState;
use crate::error::{Error, Result};
use crate::store::{ReferralChange, ReferralEvent, ReferralRecord};
use crate::wire::change::{detail_from_stored, detail_to_stored};
use crate::wire::consent::{purged_terms, terms_end, terms_to_stored};

/// The meta key set once the history written before content was sealed has
/// been split (codes kept, content sealed or, where purged, deleted).
const HISTORY_SEALED: &str = "history_sealed";

/// What the content of an event of `referral_id` at `at_ms` is bound to:
/// moved to another row it does not open.
fn aad(referral_id: &str, at_ms: i64) -> String {
    format!("{referral_id}\0event\0{at_ms}")
}

impl Referrals {
    /// The wrapped data key content of `r` may be sealed under: none once `r` is
    /// purged or being purged (its content is not kept), nor when a recipient's
    /// key is gone. A sender's subject key is made if it is missing.
    pub(crate) async fn sealing_key(&self, r: &ReferralRecord) -> Result<Option<Vec<u8>>> {
        if r.purge_status != crate::domain::PurgeStatus::None {
            return Ok(None);
        }
        match self.store.find_data_key(&r.key_id).await? {
            Some(w) => Ok(Some(w)),
            None if r.outbound => {
                let fresh = self.master_key.new_wrapped_data_key(&r.key_id)?;
                Ok(Some(
                    self.store
                        .data_key(&r.key_id, &fresh, self.now_ms())
                        .await?,
                ))
            }
            None => Ok(None),
        }
    }

    /// Seals an event's content: its `detail` keeps its codes, its content (a
    /// text, the outcome) is sealed under `r`'s data key into `content` (or
    /// dropped where `r`'s content is no longer kept).
    pub async fn seal_event(&self, r: &ReferralRecord, ev: &mut ReferralEvent) -> Result<()> {
        let (codes, content) = std::mem::take(&mut ev.detail).split();
        ev.detail = codes;
        ev.content = match content {
            None => None,
            Some(c) => match self.sealing_key(r).await? {
                Some(wrapped) => Some(self.master_key.seal(
                    &r.key_id,
                    &wrapped,
                    &aad(&r.referral_id, ev.at_ms),
                    &detail_to_stored(&c),
                )?),
                None => None,
            },
        };
        Ok(())
    }

    /// `r`'s history as the node shows it: each event's `detail` is whole again
    /// (its content opened while `r`'s data key exists; codes only once
    /// purged), `content` none.
    pub async fn history(&self, r: &ReferralRecord) -> Result<Vec<ReferralEvent>> {
        let mut events = self.store.referral_history(&r.referral_id).await?;
        let wrapped = if events.iter().any(|e| e.content.is_some()) {
            self.store.find_data_key(&r.key_id).await?
        } else {
            None
        };
        for e in &mut events {
            if r.purge_status == crate::domain::PurgeStatus::Done {
                // Written before content was sealed and not split yet: shown as purged.
                e.detail = std::mem::take(&mut e.detail).split().0;
            }
            if let (Some(sealed), Some(w)) = (e.content.take(), wrapped.as_ref())
                && let Ok(plain) =
                    self.master_key
                        .open(&r.key_id, w, &aad(&r.referral_id, e.at_ms), &sealed)
            {
                // Sealed by this node under this event's binding: what opens
                // is what it wrote, and a value it cannot read is an error.
                let content = detail_from_stored(&plain).map_err(|e| {
                    Error::Internal(anyhow::anyhow!("sealed content of an event: {e}"))
                })?;
                e.detail = std::mem::take(&mut e.detail).with_content(content);
            }
        }
        Ok(events)
    }

    /// One round of the recipient's own purges: referrals whose terms ended
    /// (`referral.purge.expired`) and referrals declined or failed here longer
    /// ago than the retention (`referral.purge.closed`). How many were purged.
    pub async fn purge_inbound(&self) -> Result<u32> {
        let now = self.now_ms();
        let days = i64::try_from(self.config.federation.closed_inbound_retention_days)
            .unwrap_or(i64::MAX / 86_400_000);
        let closed_before = now.saturating_sub(days.saturating_mul(86_400_000));
        let by = AuditEntry::node(self.now_ms(), self.org_id.as_str(), "", "", "");
        let mut n = 0;
        loop {
            let due = self.store.inbound_to_purge(now, closed_before, 500).await?;
            let mut round = 0;
            for r in &due {
                let expired = r.expires_at_ms.is_some_and(|t| t <= now);
                let action = if expired {
                    "referral.purge.expired"
                } else {
                    "referral.purge.closed"
                };
                if self
                    .store
                    .change_referral(&r.referral_id, &local_purge(r, action, &by, self.now_ms())?)
                    .await?
                {
                    self.referral_changed(&r.referral_id);
                    round += 1;
                }
            }
            n += round;
            if due.len() < 500 || round == 0 {
                break;
            }
        }
        if n > 0 {
            self.store.after_purge().await?;
            tracing::info!(
                referrals = n,
                "inbound referrals purged (terms ended or closed)"
            );
        }
        Ok(n)
    }

    /// Consents withdrawn or ended forget their client reference (kept only as
    /// `forgotten_ref`) and the free text of their terms: the record of what
    /// was consented to, by whom and until when stays. How many.
    pub async fn forget_consents(&self) -> Result<u32> {
        let mut n = 0;
        loop {
            let due = self.store.consents_to_forget(self.now_ms(), 500).await?;
            let mut round = 0;
            for c in &due {
                let terms = purged_terms(&terms_to_stored(&c.terms))?;
                let audit = AuditEntry::node(
                    self.now_ms(),
                    self.org_id.as_str(),
                    "consent.forget_subject",
                    "consent",
                    &c.consent_id,
                )
                .consent(Some(&c.consent_id));
                let kept = self.pseudonyms.forgotten_ref(&c.subject_ref);
                if self
                    .store
                    .forget_consent(&c.consent_id, &kept, &terms, &[audit])
                    .await?
                {
                    round += 1;
                }
            }
            n += round;
            if due.len() < 500 || round == 0 {
                break;
            }
        }
        // The forgotten references must not stay in old pages of the database
        // or its write-ahead log (debounced, like every purge's).
        if n > 0 {
            self.store.after_purge().await?;
        }
        Ok(n)
    }

    /// At start: history written before content was sealed is split (content
    /// sealed under the referral's key while it exists, deleted where the
    /// referral is purged), once; referrals stored before their expiry was kept
    /// get it.
    pub async fn upgrade(&self) -> Result<()> {
        loop {
            let rows = self.store.referrals_without_expiry(500).await?;
            let items = rows
                .iter()
                .map(|r| {
                    Ok((
                        r.referral_id.clone(),
                        terms_end(&r.terms)?.unwrap_or(i64::MAX),
                    ))
                })
                .collect::<Result<Vec<(String, i64)>>>()?;
            self.store.set_expiry(&items).await?;
            if rows.len() < 500 {
                break;
            }
        }
        // A sender's copy of what it withdrew, kept by releases before purges
        // deleted it.
        let by = AuditEntry::node(self.now_ms(), self.org_id.as_str(), "", "", "");
        let mut purged = 0;
        loop {
            let rows = self.store.withdrawn_with_summary(500).await?;
            let mut round = 0;
            for r in &rows {
                let c = ReferralChange {
                    expected_states: vec![r.state],
                    expected_purge_status: Some(r.purge_status),
                    purge_summary: true,
                    purge_terms: Some(purged_terms(&r.terms)?),
                    audit: vec![
                        by.about("referral.purge.content", "referral", &r.referral_id)
                            .with_peer(r.peer_org.as_str()),
                    ],
                    now_ms: self.now_ms(),
                    ..Default::default()
                };
                if self.store.change_referral(&r.referral_id, &c).await? {
                    round += 1;
                }
            }
            purged += round;
            if rows.len() < 500 || round == 0 {
                break;
            }
        }
        if purged > 0 {
            self.store.after_purge().await?;
            tracing::info!(referrals = purged, "content of withdrawn referrals deleted");
        }
        if self.store.meta_get(HISTORY_SEALED).await?.is_some() {
            return Ok(());
        }
        let mut after: Option<(String, i64)> = None;
        let mut split_count = 0usize;
        loop {
            let rows = self.store.unsealed_history(after.as_ref(), 500).await?;
            let Some((id, seq, _, _)) = rows.last() else {
                break;
            };
            after = Some((id.clone(), *seq));
            let mut rewrites = Vec::new();
            let mut referral: Option<ReferralRecord> = None;
            for (id, seq, at_ms, detail) in &rows {
                if !detail.has_content() {
                    continue;
                }
                if referral.as_ref().is_none_or(|r| &r.referral_id != id) {
                    referral = self.store.get_referral(id).await?;
                }
                let Some(r) = referral.as_ref() else { continue };
                // Only its detail and content are rewritten; the state is not.
                let mut ev = ReferralEvent {
                    state: r.state,
                    at_ms: *at_ms,
                    by_org: String::new(),
                    actor: String::new(),
                    detail: detail.clone(),
                    content: None,
                };
                self.seal_event(r, &mut ev).await?;
                rewrites.push((id.clone(), *seq, ev.detail, ev.content));
            }
            split_count += rewrites.len();
            self.store.rewrite_history(&rewrites).await?;
            if rows.len() < 500 {
                break;
            }
        }
        self.store.meta_set(HISTORY_SEALED, "1").await?;
        if split_count > 0 {
            self.store.after_purge().await?;
            tracing::info!(
                events = split_count,
                "history written before content was sealed: content sealed or, where purged, deleted"
            );
        }
        Ok(())
    }
}

/// A recipient's purge of `r`, by itself: content and data key go; the
/// state stays (the sender did not withdraw it), the purge is done.
fn local_purge(
    r: &ReferralRecord,
    action: &str,
    by: &AuditEntry,
    now: i64,
) -> Result<ReferralChange> {
    Ok(ReferralChange {
        expected_states: vec![r.state],
        expected_purge_status: Some(crate::domain::PurgeStatus::None),
        purge_status: Some(crate::domain::PurgeStatus::Done),
        purged_at_ms: Some(now),
        purge_summary: true,
        purge_terms: Some(purged_terms(&r.terms)?),
        destroy_key: Some(r.key_id.clone()),
        audit: vec![
            by.about(action, "referral", &r.referral_id)
                .with_peer(r.peer_org.as_str()),
        ],
        now_ms: now,
        ..Default::default()
    })
}

/// Whether a state leaves an inbound referral's content with only the one
/// who closed it and supervisors.
pub fn closed_here(s: ReferralState) -> bool {
    matches!(s, ReferralState::Declined | ReferralState::Failed)
}
