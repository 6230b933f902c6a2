//! How consents and referrals are shown: JSON for scripts, text and tables
//! for people.

use super::*;

pub(super) fn need_areas(v: &[i32]) -> Vec<String> {
    enum_names(v, |e: pb::NeedArea| e.as_str_name(), "NEED_AREA_")
}

pub(super) fn terms_json(t: &pb::ConsentTerms) -> Value {
    let basis = t.legal_basis.clone().unwrap_or_default();
    json!({
        "recipients": t.recipients,
        "purposes": enum_names(&t.purposes, |e: pb::Purpose| e.as_str_name(), "PURPOSE_"),
        "purpose_text": t.purpose_text,
        "data_categories": enum_names(&t.data_categories, |e: pb::DataCategory| e.as_str_name(), "DATA_CATEGORY_"),
        "need_areas": need_areas(&t.need_areas),
        "legal_basis": enum_value(basis.kind, |e: pb::LegalBasisKind| e.as_str_name(), "LEGAL_BASIS_KIND_"),
        "statute": basis.statute,
        "restrictions": enum_names(&t.restrictions, |e: pb::Restriction| e.as_str_name(), "RESTRICTION_"),
        "valid_from": timestamp(t.valid_from.as_ref()),
        "valid_until": timestamp(t.valid_until.as_ref()),
    })
}

pub fn consent_json(c: &pb::Consent) -> Value {
    let mut v = terms_json(&c.terms.clone().unwrap_or_default());
    if let Value::Object(m) = &mut v {
        m.insert("consent_id".into(), json!(c.consent_id));
        m.insert("subject_ref".into(), json!(c.subject_ref));
        m.insert(
            "collection_method".into(),
            enum_value(
                c.collection_method,
                |e: pb::CollectionMethod| e.as_str_name(),
                "COLLECTION_METHOD_",
            ),
        );
        m.insert("witness".into(), json!(c.witness));
        m.insert("team".into(), json!(c.team));
        m.insert("recorded_by".into(), json!(c.recorded_by));
        m.insert("recorded_at".into(), timestamp(c.recorded_at.as_ref()));
        m.insert("withdrawn_at".into(), timestamp(c.withdrawn_at.as_ref()));
    }
    v
}

pub(super) fn state_name(v: i32) -> String {
    enum_name(v, |e: pb::ReferralState| e.as_str_name(), "REFERRAL_STATE_")
}

pub(super) fn progress_value(v: i32) -> Value {
    enum_value(v, |e: pb::Progress| e.as_str_name(), "PROGRESS_")
}

pub(super) fn outcome_json(o: &pb::Outcome) -> Value {
    json!({
        "service_delivered": o.service_delivered,
        "disengagement": progress_value(o.disengagement),
        "deradicalisation": progress_value(o.deradicalisation),
        "reintegration": progress_value(o.reintegration),
        "rehabilitation": progress_value(o.rehabilitation),
        "note": o.note,
    })
}

pub(super) fn summary_json(s: &pb::CaseSummary) -> Value {
    json!({
        "age_band": enum_value(s.age_band, |e: pb::AgeBand| e.as_str_name(), "AGE_BAND_"),
        "gender": enum_value(s.gender, |e: pb::Gender| e.as_str_name(), "GENDER_"),
        "languages": s.languages,
        "setting": enum_value(s.setting, |e: pb::Setting| e.as_str_name(), "SETTING_"),
        "ideological_context": enum_value(s.ideological_context, |e: pb::IdeologicalContext| e.as_str_name(), "IDEOLOGICAL_CONTEXT_"),
        "risk_level": enum_value(s.risk_level, |e: pb::RiskLevel| e.as_str_name(), "RISK_LEVEL_"),
        "security": s.security.as_ref().map(|x| json!({
            "retaliation_risk": enum_value(x.retaliation_risk, |e: pb::RiskLevel| e.as_str_name(), "RISK_LEVEL_"),
            "note": x.note,
        })),
        "needs_narrative": s.needs_narrative,
        "contact_route": enum_value(s.contact_route, |e: pb::ContactRoute| e.as_str_name(), "CONTACT_ROUTE_"),
    })
}

pub(super) fn change_json(h: &pb::StateChange) -> Value {
    json!({
        "state": state_name(h.state),
        "at": timestamp(h.at.as_ref()),
        "by_org": h.by_org,
        "actor": h.actor,
        "decline_reason": enum_value(h.decline_reason, |e: pb::DeclineReason| e.as_str_name(), "DECLINE_REASON_"),
        "failure_reason": enum_value(h.failure_reason, |e: pb::FailureReason| e.as_str_name(), "FAILURE_REASON_"),
        "text": h.text,
        "outcome": h.outcome.as_ref().map(outcome_json),
    })
}

/// The last change into `state`, if any.
pub(super) fn last_change(r: &pb::Referral, state: pb::ReferralState) -> Option<&pb::StateChange> {
    r.history.iter().rev().find(|h| h.state == state as i32)
}

pub fn referral_json(r: &pb::Referral) -> Value {
    let declined = last_change(r, pb::ReferralState::Declined);
    let failed = last_change(r, pb::ReferralState::Failed);
    let completed = last_change(r, pb::ReferralState::Completed);
    json!({
        "referral_id": r.referral_id,
        "direction": enum_name(r.direction, |e: pb::Direction| e.as_str_name(), "DIRECTION_"),
        "peer_org": r.peer_org,
        "consent_id": r.consent_id,
        "subject_pseudonym": r.subject_pseudonym,
        "owner": r.owner,
        "state": state_name(r.state),
        "need_areas": need_areas(&r.need_areas),
        "services": enum_names(&r.services, |e: pb::Service| e.as_str_name(), "SERVICE_"),
        "urgency": enum_value(r.urgency, |e: pb::Urgency| e.as_str_name(), "URGENCY_"),
        "summary": r.summary.as_ref().map(summary_json),
        "terms": r.terms.as_ref().map(terms_json),
        "outcome": completed.and_then(|h| h.outcome.as_ref()).map(outcome_json),
        "decline": declined.map(|h| json!({
            "reason": enum_value(h.decline_reason, |e: pb::DeclineReason| e.as_str_name(), "DECLINE_REASON_"),
            "text": h.text,
        })),
        "failure": failed.map(|h| json!({
            "reason": enum_value(h.failure_reason, |e: pb::FailureReason| e.as_str_name(), "FAILURE_REASON_"),
            "text": h.text,
        })),
        "purge_status": enum_name(r.purge_status, |e: pb::PurgeStatus| e.as_str_name(), "PURGE_STATUS_"),
        "purged_at": timestamp(r.purged_at.as_ref()),
        "created_at": timestamp(r.created_at.as_ref()),
        "updated_at": timestamp(r.updated_at.as_ref()),
        "history": r.history.iter().map(change_json).collect::<Vec<_>>(),
    })
}

pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => list_cell(
            &a.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>(),
        ),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    }
}

/// `referral show` for people: every field the API returned.
pub fn referral_text(r: &pb::Referral) -> String {
    let v = referral_json(r);
    let mut pairs: Vec<(&str, String)> = vec![
        ("referral", r.referral_id.clone()),
        ("direction", text(&v["direction"])),
        ("peer", r.peer_org.clone()),
        ("state", text(&v["state"])),
        ("owner", text(&v["owner"])),
    ];
    if !r.consent_id.is_empty() {
        pairs.push(("consent", r.consent_id.clone()));
    }
    if !r.subject_pseudonym.is_empty() {
        pairs.push(("client pseudonym", r.subject_pseudonym.clone()));
    }
    pairs.extend([
        ("need areas", text(&v["need_areas"])),
        ("services", text(&v["services"])),
        ("urgency", text(&v["urgency"])),
        ("created", text(&v["created_at"])),
        ("updated", text(&v["updated_at"])),
        ("purge", text(&v["purge_status"])),
    ]);
    if !v["purged_at"].is_null() {
        pairs.push(("purged at", text(&v["purged_at"])));
    }
    let s = &v["summary"];
    if s.is_null() {
        pairs.push((
            "summary",
            "(not shown: purged, or not for your role)".into(),
        ));
    } else {
        pairs.extend([
            ("age band", text(&s["age_band"])),
            ("gender", text(&s["gender"])),
            ("languages", text(&s["languages"])),
            ("setting", text(&s["setting"])),
            ("ideological context", text(&s["ideological_context"])),
            ("risk level", text(&s["risk_level"])),
            ("retaliation risk", text(&s["security"]["retaliation_risk"])),
            ("security note", text(&s["security"]["note"])),
            ("needs narrative", text(&s["needs_narrative"])),
            ("contact route", text(&s["contact_route"])),
        ]);
    }
    let t = &v["terms"];
    if !t.is_null() {
        let basis = match (text(&t["legal_basis"]), t["statute"].as_str()) {
            (k, Some(st)) if !st.is_empty() => format!("{k} ({st})"),
            (k, _) => k,
        };
        let purposes = match t["purpose_text"].as_str() {
            Some(p) if !p.is_empty() => format!("{} ({p})", text(&t["purposes"])),
            _ => text(&t["purposes"]),
        };
        pairs.extend([
            ("terms: recipients", text(&t["recipients"])),
            ("terms: purposes", purposes),
            ("terms: data categories", text(&t["data_categories"])),
            ("terms: need areas", text(&t["need_areas"])),
            ("terms: legal basis", basis),
            ("terms: restrictions", text(&t["restrictions"])),
            ("terms: valid from", text(&t["valid_from"])),
            ("terms: valid until", text(&t["valid_until"])),
        ]);
    }
    let o = &v["outcome"];
    if !o.is_null() {
        pairs.extend([
            ("outcome: service delivered", text(&o["service_delivered"])),
            ("outcome: disengagement", text(&o["disengagement"])),
            ("outcome: deradicalisation", text(&o["deradicalisation"])),
            ("outcome: reintegration", text(&o["reintegration"])),
            ("outcome: rehabilitation", text(&o["rehabilitation"])),
            ("outcome: note", text(&o["note"])),
        ]);
    }
    for (key, label) in [("decline", "declined"), ("failure", "failed")] {
        let x = &v[key];
        if !x.is_null() {
            let reason = text(&x["reason"]);
            let t = x["text"].as_str().unwrap_or_default();
            pairs.push((
                label,
                if t.is_empty() {
                    reason
                } else {
                    format!("{reason}: {t}")
                },
            ));
        }
    }
    let mut out = fields(&pairs);
    out.push_str("\nhistory\n");
    let rows: Vec<Vec<String>> = r
        .history
        .iter()
        .map(|h| {
            let c = change_json(h);
            let mut detail = Vec::new();
            for k in ["decline_reason", "failure_reason"] {
                if !c[k].is_null() {
                    detail.push(text(&c[k]));
                }
            }
            if !h.text.is_empty() {
                detail.push(h.text.clone());
            }
            if let Some(o) = &h.outcome {
                detail.push(format!(
                    "delivered: {}",
                    if o.service_delivered { "yes" } else { "no" }
                ));
            }
            vec![
                ts_cell(h.at.as_ref()),
                state_name(h.state),
                h.by_org.clone(),
                if h.actor.is_empty() {
                    "-".into()
                } else {
                    h.actor.clone()
                },
                if detail.is_empty() {
                    "-".into()
                } else {
                    detail.join("; ")
                },
            ]
        })
        .collect();
    out.push_str(&table(&["AT", "STATE", "BY", "ACTOR", "DETAIL"], &rows));
    out
}

pub(super) fn consent_text(c: &pb::Consent) -> String {
    let v = consent_json(c);
    let basis = match (text(&v["legal_basis"]), v["statute"].as_str()) {
        (k, Some(st)) if !st.is_empty() => format!("{k} ({st})"),
        (k, _) => k,
    };
    fields(&[
        ("consent", c.consent_id.clone()),
        ("subject", c.subject_ref.clone()),
        ("recipients", text(&v["recipients"])),
        ("purposes", text(&v["purposes"])),
        ("data categories", text(&v["data_categories"])),
        ("need areas", text(&v["need_areas"])),
        ("legal basis", basis),
        ("restrictions", text(&v["restrictions"])),
        ("valid from", text(&v["valid_from"])),
        ("valid until", text(&v["valid_until"])),
        ("collected", text(&v["collection_method"])),
        ("witness", text(&v["witness"])),
        ("recorded by", text(&v["recorded_by"])),
        ("recorded at", text(&v["recorded_at"])),
        ("withdrawn at", text(&v["withdrawn_at"])),
    ])
}

pub fn referral_table(list: &[pb::Referral]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let v = referral_json(r);
            vec![
                r.referral_id.clone(),
                text(&v["direction"]),
                r.peer_org.clone(),
                text(&v["state"]),
                text(&v["urgency"]),
                text(&v["need_areas"]),
                text(&v["updated_at"]),
                text(&v["purge_status"]),
            ]
        })
        .collect();
    table(
        &[
            "REFERRAL",
            "DIRECTION",
            "PEER",
            "STATE",
            "URGENCY",
            "NEED AREAS",
            "UPDATED AT",
            "PURGE",
        ],
        &rows,
    )
}
