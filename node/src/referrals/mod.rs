//! Consent-scoped referrals and the closed loop. The sender commits a
//! referral and its message in one transaction (here: creating one);
//! `delivery` sends it; the receiver checks it against the consent's terms
//! that travel with it, stores it once and signs a receipt (`receive`);
//! every state change travels back the same way (`lifecycle`, `receipts`).
//! Withdrawal reaches every recipient, which purges and signs a purge
//! receipt (`content`, `schedule`). Who sees what is `view`. Neither gRPC
//! nor protobuf here: messages are domain values, signed and opened by the
//! `Protocol` this service holds.

pub mod content;
mod lifecycle;
mod pseudonyms;
mod receipts;
pub mod receive;
pub mod reconcile;
mod schedule;
mod view;

pub use pseudonyms::Pseudonyms;
pub use schedule::*;
pub use view::*;

use crate::access::{self, View};
use crate::audit::Audit;
use crate::audit::AuditEntry;
use crate::auth::{Principal, Role};
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::MasterKey;
use crate::domain::consent::{Consent, ConsentTerms, OutOfScope};
use crate::domain::id_check;
use crate::domain::message::{Offer, ReferralMessage};
use crate::domain::referral::{self as rules, CaseSummary, Transition};
use crate::domain::{NeedArea, OrgId, ReferralState, Service, Urgency};
use crate::error::{Error, FieldError, Result};
use crate::metrics::Metrics;
use crate::protocol::Protocol;
use crate::security::Quotas;
use crate::signals::{ChangeFeed, OutboxSignal};
use crate::store::Store;
use crate::store::intake::Intake;
use crate::store::{
    AcceptedReceipt, ReferralChange, ReferralEvent, ReferralFilter, ReferralRecord,
};
use crate::wire::consent::terms_to_stored;
use crate::wire::referral::summary_to_stored;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::Arc;

/// The referral service: creating and acting on referrals, receiving them
/// from peers, their receipts, purges and who sees what.
#[derive(Clone)]
pub struct Referrals {
    org_id: OrgId,
    config: Arc<Config>,
    store: Arc<dyn Store>,
    /// Stores received offers and created referrals in batched writes.
    intake: Intake,
    clock: Arc<dyn Clock>,
    /// Seals case content (summaries, history text) at rest.
    master_key: Arc<MasterKey>,
    pseudonyms: Pseudonyms,
    audit: Audit,
    protocol: Protocol,
    /// Referral IDs that changed, for watchers.
    changes: Arc<ChangeFeed>,
    /// Wakes the notice sender.
    outbox: Arc<OutboxSignal>,
    metrics: Arc<Metrics>,
    /// What a peer may make us store.
    quotas: Quotas,
}

/// What the referral service is built from.
pub struct ReferralParts {
    pub org_id: OrgId,
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub intake: Intake,
    pub clock: Arc<dyn Clock>,
    pub master_key: Arc<MasterKey>,
    pub pseudonyms: Pseudonyms,
    pub audit: Audit,
    pub protocol: Protocol,
    pub changes: Arc<ChangeFeed>,
    pub outbox: Arc<OutboxSignal>,
    pub metrics: Arc<Metrics>,
    pub quotas: Quotas,
}

impl Referrals {
    pub fn new(p: ReferralParts) -> Self {
        Self {
            org_id: p.org_id,
            config: p.config,
            store: p.store,
            intake: p.intake,
            clock: p.clock,
            master_key: p.master_key,
            pseudonyms: p.pseudonyms,
            audit: p.audit,
            protocol: p.protocol,
            changes: p.changes,
            outbox: p.outbox,
            metrics: p.metrics,
            quotas: p.quotas,
        }
    }

    pub fn pseudonyms(&self) -> &Pseudonyms {
        &self.pseudonyms
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Wakes the sender for a notice just queued for `org`.
    fn queued_for(&self, org: &OrgId) {
        self.outbox.queued_for(org);
    }

    /// Tells watchers that a referral changed (no content, just the ID).
    fn referral_changed(&self, referral_id: &str) {
        self.changes.changed(referral_id);
    }
}

pub struct NewReferral {
    pub request_id: String,
    pub request_digest: Vec<u8>,
    pub consent_id: String,
    pub recipient: OrgId,
    pub need_areas: Vec<NeedArea>,
    pub services: Vec<Service>,
    pub urgency: Urgency,
    pub summary: CaseSummary,
}

/// A referral cleared for sending, with what the checks found.
struct Sending {
    consent: Consent,
    /// The recipient's own copy of the terms.
    terms: ConsentTerms,
    /// The data key of the client's content here, and its wrapped key if it exists.
    key_id: String,
    data_key: Option<Vec<u8>>,
    now: i64,
}

/// Everything the consent and this node's rules say about sending `new`.
/// Refusals are PERMISSION_DENIED naming the field or term.
pub fn check_scope(consent: &Consent, new: &NewReferral, now: i64) -> Result<()> {
    let deny = |m: String| Err(Error::PermissionDenied(m));
    if consent.withdrawn_at_ms.is_some() {
        return deny("consent_id: the consent has been withdrawn".into());
    }
    let scope = consent.terms.scope(
        &new.recipient,
        &new.need_areas,
        &new.services,
        &new.summary,
        now,
    );
    match scope {
        Ok(()) => Ok(()),
        Err(OutOfScope::NotInForce) => {
            deny("consent_id: the consent is not in force (expired or not yet valid)".into())
        }
        Err(OutOfScope::NotARecipient) => deny(format!(
            "recipient_org: {} is not among the consent's recipients",
            new.recipient
        )),
        Err(other) => deny(other.content_refusal("").unwrap_or_default()),
    }
}

impl Referrals {
    /// Seals under `key_id`, whose wrapped key the caller looked up (`found`):
    /// the sealed bytes and the wrapped key they were sealed under.
    pub(crate) async fn seal_summary_with(
        &self,
        key_id: &str,
        found: Option<Vec<u8>>,
        referral_id: &str,
        plain: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        // Most subjects already have a key: a read, not a write transaction.
        let wrapped = match found {
            Some(w) => w,
            None => {
                let fresh = self.master_key.new_wrapped_data_key(key_id)?;
                self.store.data_key(key_id, &fresh, self.now_ms()).await?
            }
        };
        let sealed = self.master_key.seal(key_id, &wrapped, referral_id, plain)?;
        Ok((sealed, wrapped))
    }

    /// The summary, if it is still held and its data key still exists.
    /// A store that cannot be read is an error; content whose key was
    /// destroyed (purged, or its master key generation gone) is not shown.
    pub async fn open_summary(&self, r: &ReferralRecord) -> Result<Option<CaseSummary>> {
        let Some(sealed) = r.summary.as_ref() else {
            return Ok(None);
        };
        let Some(wrapped) = self.store.find_data_key(&r.key_id).await? else {
            return Ok(None);
        };
        Ok(self
            .master_key
            .open(&r.key_id, &wrapped, &r.referral_id, sealed)
            .ok()
            .and_then(|plain| crate::wire::referral::summary_from_stored(&plain)))
    }

    pub async fn create(&self, p: &Principal, new: NewReferral) -> Result<ReferralRecord> {
        Ok(self.create_record(p, new).await?.0)
    }

    /// Creates a referral and returns it as its creator sees it. A new referral's
    /// view is put together from what was just written, not read back.
    pub async fn create_and_view(&self, p: &Principal, new: NewReferral) -> Result<ReferralView> {
        let summary = new.summary.clone();
        let (r, fresh) = self.create_record(p, new).await?;
        match fresh {
            Some(ev) => {
                let entry = || self.audit_entry(p, "referral.read", &r);
                let v = self.audit.guard(entry, read_access(p, &r)).await?;
                Ok(assemble(r, v, vec![ev], Some(summary)))
            }
            // A repeated request: the referral as it is now.
            None => self.view_after_action(p, &r).await,
        }
    }

    /// Creates a referral; with its first event if it is new (not a repeat).
    /// A retry of a create that succeeded gets the referral it made even when
    /// the checks would refuse it now (the consent was withdrawn, the peering
    /// suspended since): it is looked up only when they refuse, so the usual
    /// create pays nothing for it.
    pub(crate) async fn create_record(
        &self,
        p: &Principal,
        new: NewReferral,
    ) -> Result<(ReferralRecord, Option<ReferralEvent>)> {
        access::create(p)?;
        let (request_id, digest) = (new.request_id.clone(), new.request_digest.clone());
        match self.create_checked(p, new).await {
            Ok(done) => Ok(done),
            Err(e) => {
                let owner = access::acting_owner(p)?;
                match self.store.referral_by_request(owner, &request_id).await? {
                    Some((r, d)) if d == digest => Ok((r, None)),
                    _ => Err(e),
                }
            }
        }
    }

    /// Everything that must hold before `new` is sent: the caller may write
    /// under the consent, the consent covers it, this node's policy for the
    /// recipient allows it, and the peering is active on both sides.
    async fn check_sending(&self, p: &Principal, new: &NewReferral) -> Result<Sending> {
        let consent = self
            .store
            .get_consent(&new.consent_id)
            .await?
            .ok_or(Error::NotFound("consent"))?;
        self.audit
            .guard(
                || {
                    AuditEntry::caller(
                        self.now_ms(),
                        p,
                        "referral.create",
                        "consent",
                        &consent.consent_id,
                    )
                    .consent(Some(&consent.consent_id))
                },
                access::write(p, &consent.owner, consent.team.as_deref()),
            )
            .await?;
        let now = self.now_ms();
        check_scope(&consent, new, now)?;
        let key_id = self.pseudonyms.outbound_key_id(&consent.subject_ref);
        // Three independent lookups, at once (the peer and its policy are
        // usually answered from memory, see store/cache.rs).
        let ((policy, _), peer, data_key) = tokio::try_join!(
            crate::policy::for_peer(self.store.as_ref(), &new.recipient),
            self.store.peer_for_exchange(&new.recipient),
            self.store.find_data_key(&key_id),
        )?;
        policy.check(
            new.recipient.as_str(),
            "",
            &new.need_areas,
            &new.services,
            &new.summary,
            &consent.terms,
        )?;
        let peer = peer.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "recipient_org: {} is not a peer of this node",
                new.recipient
            ))
        })?;
        if !peer.exchange_allowed() {
            return Err(Error::FailedPrecondition(format!(
                "recipient_org: the peering with {} is not active on both sides",
                new.recipient
            )));
        }
        // This recipient's own copy: itself as the only recipient, codes and
        // whole days only, so that two recipients' copies cannot be joined.
        let terms = consent.terms.for_recipient(&new.recipient);
        if !terms.in_force(now) {
            return Err(Error::PermissionDenied(
                "consent_id: recipients receive the consent's dates as whole days (UTC) and \
             its end rounded down, so a consent ending today can no longer be used; \
             record one that runs past midnight UTC"
                    .into(),
            ));
        }
        Ok(Sending {
            consent,
            terms,
            key_id,
            data_key,
            now,
        })
    }

    pub(crate) async fn create_checked(
        &self,
        p: &Principal,
        new: NewReferral,
    ) -> Result<(ReferralRecord, Option<ReferralEvent>)> {
        let owner = access::acting_owner(p)?.to_owned();
        let Sending {
            consent,
            terms,
            key_id,
            data_key,
            now,
        } = self.check_sending(p, &new).await?;
        let referral_id = uuid::Uuid::new_v4().to_string();
        let pseudonym = self
            .pseudonyms
            .subject(&consent.subject_ref, &new.recipient);
        let offer = Offer {
            referral_id: referral_id.clone(),
            subject_pseudonym: pseudonym.clone(),
            need_areas: new.need_areas.clone(),
            services: new.services.clone(),
            urgency: new.urgency,
            summary: new.summary.clone(),
            terms: terms.clone(),
            consent_ref: self
                .pseudonyms
                .consent_ref(&consent.consent_id, &new.recipient),
        };
        let notice = self
            .protocol
            .notice_for(&new.recipient, &ReferralMessage::Offer(Box::new(offer)))?;
        let (sealed, wrapped_key) = self
            .seal_summary_with(
                &key_id,
                data_key,
                &referral_id,
                &summary_to_stored(&new.summary),
            )
            .await?;
        let record = ReferralRecord {
            key_id,
            referral_id: referral_id.clone(),
            outbound: true,
            peer_org: new.recipient.clone(),
            owner: owner.clone(),
            team: if p.role == Role::CaseManager {
                p.team.clone()
            } else {
                consent.team.clone()
            },
            consent_id: Some(consent.consent_id.clone()),
            pseudonym,
            need_areas: new.need_areas.clone(),
            services: new.services.clone(),
            urgency: new.urgency,
            summary: Some(sealed),
            terms: terms_to_stored(&terms),
            state: ReferralState::Requested,
            purge_status: crate::domain::PurgeStatus::None,
            purged_at_ms: None,
            created_at_ms: now,
            updated_at_ms: now,
            expires_at_ms: Some(consent.terms.valid_until_ms),
        };
        let mut ev = ReferralEvent::new(
            ReferralState::Requested,
            self.org_id.as_str(),
            now,
            Default::default(),
        );
        ev.actor = p.actor();
        let audit = AuditEntry::caller(
            self.now_ms(),
            p,
            "referral.create",
            "referral",
            &referral_id,
        )
        .consent(Some(&consent.consent_id))
        .with_peer(new.recipient.as_str());
        let stored = self
            .intake
            .create(crate::store::NewCreate {
                record,
                request_key: new.request_id.clone(),
                request_digest: new.request_digest.clone(),
                event: ev.clone(),
                notice,
                audit: vec![audit],
                wrapped_key,
            })
            .await?;
        self.queued_for(&stored.peer_org);
        self.referral_changed(&stored.referral_id);
        let fresh = (stored.referral_id == referral_id).then_some(ev);
        Ok((stored, fresh))
    }
}
