//! Consent records: record, read, list, withdraw. No gRPC here.

use crate::access::{self, View};
use crate::audit::Audit;
use crate::audit::AuditEntry;
use crate::auth::{Principal, Role};
use crate::clock::Clock;
use crate::domain::CollectionMethod;
use crate::domain::consent::{Consent, ConsentTerms, subject_ref};
use crate::error::{Error, FieldError, Result};
use crate::referrals::Referrals;
use crate::store::ConsentStore;
use crate::store::Cursor;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::Arc;

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 500;

/// The consent service: consents recorded, read, listed and withdrawn.
#[derive(Clone)]
pub struct Consents {
    store: Arc<dyn ConsentStore>,
    clock: Arc<dyn Clock>,
    audit: Audit,
    /// Withdrawing a consent withdraws the referrals made under it.
    referrals: Referrals,
}

pub struct NewConsent {
    pub request_id: String,
    /// SHA-256 of the request as sent: a retry carries the same.
    pub request_digest: Vec<u8>,
    pub subject_ref: String,
    pub terms: ConsentTerms,
    pub collection_method: CollectionMethod,
    pub witness: String,
}

/// Who recorded a consent: the person, or the system and the person it acted for.
fn recorded_by(p: &Principal) -> String {
    match (&p.role, &p.on_behalf_of) {
        (Role::System, Some(who)) => format!("{} (system) for {who}", p.subject),
        _ => p.subject.clone(),
    }
}

impl Consents {
    pub fn new(
        store: Arc<dyn ConsentStore>,
        clock: Arc<dyn Clock>,
        audit: Audit,
        referrals: Referrals,
    ) -> Self {
        Self {
            store,
            clock,
            audit,
            referrals,
        }
    }

    /// The time by the node's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub async fn record(&self, p: &Principal, new: NewConsent) -> Result<Consent> {
        access::create(p)?;
        let owner = access::acting_owner(p)?.to_owned();
        let consent = Consent {
            consent_id: uuid::Uuid::new_v4().to_string(),
            subject_ref: new.subject_ref,
            terms: new.terms,
            collection_method: new.collection_method,
            witness: new.witness,
            team: if p.role == Role::CaseManager {
                p.team.clone()
            } else {
                None
            },
            owner,
            recorded_by: recorded_by(p),
            recorded_at_ms: self.now_ms(),
            withdrawn_at_ms: None,
        };
        let audit = AuditEntry::caller(
            self.now_ms(),
            p,
            "consent.record",
            "consent",
            &consent.consent_id,
        )
        .consent(Some(&consent.consent_id));
        self.store
            .insert_consent(&consent, &new.request_id, &new.request_digest, &[audit])
            .await
    }

    /// A consent the caller may read, with how much of it.
    pub async fn get(&self, p: &Principal, id: &str) -> Result<(Consent, View)> {
        crate::domain::id_check("consent_id", id)?;
        let c = self
            .store
            .get_consent(id)
            .await?
            .ok_or(Error::NotFound("consent"))?;
        let entry = || {
            AuditEntry::caller(self.now_ms(), p, "consent.read", "consent", id).consent(Some(id))
        };
        let view = self
            .audit
            .guard(entry, access::read(p, &c.owner, c.team.as_deref()))
            .await?;
        self.audit.record(&[entry()]).await;
        Ok((c, view))
    }

    pub async fn list(
        &self,
        p: &Principal,
        subject: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page> {
        let (scope, view) = access::list(p)?;
        let size = match page_size {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => n,
            _ => return Err(FieldError::new("page_size", format!("at most {MAX_PAGE}")).into()),
        };
        if !subject.is_empty() {
            if view == View::MetadataOnly {
                return Err(Error::PermissionDenied(
                    "auditors cannot look consents up by client".into(),
                ));
            }
            subject_ref("subject_ref", subject)?;
        }
        let cursor = decode_cursor(page_token)?;
        let mut consents = self
            .store
            .list_consents(
                &scope,
                Some(subject).filter(|s| !s.is_empty()),
                cursor.as_ref(),
                i64::from(size) + 1,
            )
            .await?;
        let next_page_token = if consents.len() > size as usize {
            consents.truncate(size as usize);
            consents.last().map(encode_cursor).unwrap_or_default()
        } else {
            String::new()
        };
        let reads: Vec<AuditEntry> = consents
            .iter()
            .map(|c| {
                AuditEntry::caller(self.now_ms(), p, "consent.list", "consent", &c.consent_id)
                    .consent(Some(&c.consent_id))
            })
            .collect();
        self.audit.record(&reads).await;
        Ok(Page {
            consents,
            view,
            next_page_token,
        })
    }

    /// Withdraws a consent; referrals under it are withdrawn at every recipient.
    pub async fn withdraw(&self, p: &Principal, id: &str) -> Result<(Consent, u32)> {
        crate::domain::id_check("consent_id", id)?;
        let c = self
            .store
            .get_consent(id)
            .await?
            .ok_or(Error::NotFound("consent"))?;
        let entry = AuditEntry::caller(self.now_ms(), p, "consent.withdraw", "consent", id)
            .consent(Some(id));
        self.audit
            .guard(
                || entry.clone(),
                access::write(p, &c.owner, c.team.as_deref()),
            )
            .await?;
        if c.withdrawn_at_ms.is_some() {
            return Err(Error::FailedPrecondition(
                "the consent is already withdrawn".into(),
            ));
        }
        // The consent and every referral under it, in one transaction; the
        // withdrawal notices go out through the outbox.
        let notified = self
            .referrals
            .withdraw_consent(
                id,
                crate::domain::WithdrawalCause::ConsentWithdrawn,
                &p.actor(),
                &entry,
            )
            .await?;
        let c = self
            .store
            .get_consent(id)
            .await?
            .ok_or(Error::NotFound("consent"))?;
        tracing::info!(consent_id = %c.consent_id, recipients = notified, "consent withdrawn");
        Ok((c, notified))
    }
}

pub struct Page {
    pub consents: Vec<Consent>,
    pub view: View,
    pub next_page_token: String,
}

fn encode_cursor(c: &Consent) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", c.recorded_at_ms, c.consent_id))
}

fn decode_cursor(token: &str) -> Result<Option<Cursor>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Error::from(FieldError::new(
            "page_token",
            "not a token from a previous response",
        ))
    };
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (at, id) = raw.split_once(':').ok_or_else(bad)?;
    Ok(Some((at.parse().map_err(|_| bad())?, id.to_owned())))
}
