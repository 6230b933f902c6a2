//! Subject access (GDPR Art. 15): everything this node holds and has shared
//! about one client, gathered into one JSON document — the consents under the
//! client's local reference, the referrals resting on them (and those a peer
//! sent under a pseudonym, when that is what the administrator looks up),
//! their summaries while not purged, histories, receipts and purges, and the
//! audit records about all of these.

use crate::clock::Clock;
use crate::domain::OrgId;
use crate::domain::referral::CaseSummary;
use crate::domain::{
    AgeBand, DataCategory, DeclineReason, FailureReason, Gender, IdeologicalContext,
    LegalBasisKind, NeedArea, Progress, Purpose, Restriction, RiskLevel, Setting,
};
use crate::error::Result;
use crate::referrals::Referrals;
use crate::store::Store;
use crate::store::{ListScope, ReferralRecord};
use serde_json::{Value, json};
use std::sync::Arc;

/// RFC 3339 in UTC with milliseconds, as `exitnetctl` prints every time.
fn time(ms: i64) -> Value {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&f).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// An audit record in the same shape as `exitnetctl audit export` writes it
/// (`at`, not `at_ms`).
fn audit_json(a: &crate::audit::AuditRecord) -> Value {
    let e = &a.entry;
    json!({
        "seq": a.seq,
        "at": time(e.at_ms),
        "actor_kind": e.actor_kind,
        "actor": e.actor,
        "role": e.role,
        "on_behalf_of": e.on_behalf_of,
        "action": e.action,
        "object_type": e.object_type,
        "object_id": e.object_id,
        "consent_id": e.consent_id,
        "peer_org": e.peer_org,
        "result": e.result,
        "prev_hash": crate::identity::hex(&a.prev_hash),
        "hash": crate::identity::hex(&a.hash),
    })
}

fn summary_json(s: &CaseSummary) -> Value {
    json!({
        "age_band": s.age_band.map(AgeBand::as_str),
        "gender": s.gender.map(Gender::as_str),
        "languages": s.languages,
        "setting": s.setting.map(Setting::as_str),
        "ideological_context": s.ideological_context.map(IdeologicalContext::as_str),
        "risk_level": s.risk_level.map(RiskLevel::as_str),
        "security": (s.retaliation_risk.is_some() || !s.security_note.is_empty()).then(|| json!({
            "retaliation_risk": s.retaliation_risk.map(RiskLevel::as_str),
            "note": s.security_note,
        })),
        "needs_narrative": s.needs_narrative,
        // Contact always runs through the referring case manager.
        "contact_route": "CONTACT_ROUTE_REFERRING_CASE_MANAGER",
    })
}

/// Everything this node holds about one client, for a subject access request.
#[derive(Clone)]
pub struct SubjectAccess {
    org_id: OrgId,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Opens summaries; knows what a forgotten consent kept.
    referrals: Referrals,
}

impl SubjectAccess {
    pub fn new(
        org_id: OrgId,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        referrals: Referrals,
    ) -> Self {
        Self {
            org_id,
            store,
            clock,
            referrals,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    async fn referral_json(&self, r: &ReferralRecord) -> Result<Value> {
        let history: Vec<Value> = self
            .referrals
            .history(r)
            .await?
            .iter()
            .map(|e| {
                let d = &e.detail;
                json!({
                    "state": e.state,
                    "at": time(e.at_ms),
                    "by_org": e.by_org,
                    "actor": e.actor,
                    "decline_reason": d.decline_reason.map(DeclineReason::as_str),
                    "failure_reason": d.failure_reason.map(FailureReason::as_str),
                    "text": d.text,
                    "outcome": d.outcome.as_ref().map(|o| json!({
                        "service_delivered": o.service_delivered,
                        "disengagement": o.disengagement.map(Progress::as_str),
                        "deradicalisation": o.deradicalisation.map(Progress::as_str),
                        "reintegration": o.reintegration.map(Progress::as_str),
                        "rehabilitation": o.rehabilitation.map(Progress::as_str),
                        "note": o.note,
                    })),
                })
            })
            .collect();
        let receipts: Vec<Value> = self
            .store
            .receipts_for(&r.referral_id)
            .await?
            .iter()
            .map(|x| {
                json!({
                    "kind": x.kind,
                    "message_id": x.message_id,
                    "issued_by": x.issued_by,
                    "at": time(x.at_ms),
                })
            })
            .collect();
        let summary = self.referrals.open_summary(r).await?;
        Ok(json!({
            "referral_id": r.referral_id,
            "direction": if r.outbound { "outbound" } else { "inbound" },
            "peer_org": r.peer_org.as_str(),
            "consent_id": r.consent_id,
            "subject_pseudonym": r.pseudonym,
            "need_areas": r.need_areas,
            "services": r.services,
            "urgency": r.urgency,
            "state": r.state,
            "owner": r.owner,
            "created_at": time(r.created_at_ms),
            "updated_at": time(r.updated_at_ms),
            "purge_status": r.purge_status,
            "purged_at": r.purged_at_ms.map(time),
            "summary": summary.as_ref().map(summary_json),
            "history": history,
            "receipts": receipts,
        }))
    }

    /// The document for one client reference.
    pub async fn gather(&self, subject_ref: &str) -> Result<Value> {
        let mut consents = Vec::new();
        // Its consents, and those withdrawn or ended, which keep only a digest
        // of the reference.
        let forgotten = self.referrals.pseudonyms().forgotten_ref(subject_ref);
        for reference in [subject_ref, forgotten.as_str()] {
            let mut cursor = None;
            loop {
                let page = self
                    .store
                    .list_consents(&ListScope::All, Some(reference), cursor.as_ref(), 100)
                    .await?;
                let n = page.len();
                cursor = page
                    .last()
                    .map(|c| (c.recorded_at_ms, c.consent_id.clone()));
                consents.extend(page);
                if n < 100 {
                    break;
                }
            }
        }
        let mut ids: Vec<String> = Vec::new();
        let mut consent_docs = Vec::new();
        let mut referral_docs = Vec::new();
        for c in &consents {
            ids.push(c.consent_id.clone());
            let t = &c.terms;
            consent_docs.push(json!({
            "consent_id": c.consent_id,
            "subject_ref": subject_ref,
            "recipients": t.recipients.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "purposes": t.purposes.iter().map(|p| Purpose::as_str(*p)).collect::<Vec<_>>(),
            "purpose_text": t.purpose_text,
            "data_categories": t.data_categories.iter().map(|d| DataCategory::as_str(*d)).collect::<Vec<_>>(),
            "need_areas": t.need_areas.iter().map(|n| NeedArea::as_str(*n)).collect::<Vec<_>>(),
            "legal_basis": LegalBasisKind::as_str(t.legal_basis),
            "statute": t.statute,
            "restrictions": t.restrictions.iter().map(|r| Restriction::as_str(*r)).collect::<Vec<_>>(),
            "valid_from": time(t.valid_from_ms),
            "valid_until": time(t.valid_until_ms),
            "collection_method": c.collection_method.as_str(),
            "witness": c.witness,
            "owner": c.owner,
            "recorded_by": c.recorded_by,
            "recorded_at": time(c.recorded_at_ms),
            "withdrawn_at": c.withdrawn_at_ms.map(time),
        }));
            for r in self.store.referrals_under_consent(&c.consent_id).await? {
                ids.push(r.referral_id.clone());
                referral_docs.push(self.referral_json(&r).await?);
            }
        }
        for r in self.store.referrals_by_pseudonym(subject_ref).await? {
            ids.push(r.referral_id.clone());
            referral_docs.push(self.referral_json(&r).await?);
        }
        let audit: Vec<Value> = self
            .store
            .audit_for_objects(&ids)
            .await?
            .iter()
            .map(audit_json)
            .collect();
        Ok(json!({
            "subject_ref": subject_ref,
            "organisation": self.org_id.as_str(),
            "generated_at": time(self.now_ms()),
            "consents": consent_docs,
            "referrals": referral_docs,
            "audit": audit,
        }))
    }
}
