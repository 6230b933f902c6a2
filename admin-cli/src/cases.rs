//! `exitnetctl consent …` and `exitnetctl referral …`: the case manager's
//! calls on the client API, with the signed-in user's token.

use crate::client;
use crate::codes::to_pb;
use crate::opts::{ApiTarget, ConsentCommand, ReferralCommand};
use crate::output::{
    enum_name, enum_names, enum_value, fields, list_cell, table, timestamp, ts_cell,
};
use exitnet_proto::pb;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// A channel to the client API and the interceptor that signs calls in.
pub async fn connect(
    t: &ApiTarget,
    wait: Duration,
) -> anyhow::Result<(
    Channel,
    impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone,
)> {
    // The address is checked (and TLS required off loopback) before a token is read.
    client::api_endpoint(t)?;
    let token = match &t.token {
        Some(tok) => tok.clone(),
        None => crate::login::access_token().await?,
    };
    let bearer: MetadataValue<Ascii> = format!("Bearer {token}")
        .parse()
        .map_err(|_| anyhow::anyhow!("the token is not valid header text"))?;
    let obo: Option<MetadataValue<Ascii>> = match &t.on_behalf_of {
        Some(w) => Some(
            w.parse()
                .map_err(|_| anyhow::anyhow!("--on-behalf-of is not valid header text"))?,
        ),
        None => None,
    };
    let channel = client::api_channel(t, wait).await?;
    let f = move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        if let Some(o) = &obo {
            req.metadata_mut()
                .insert("x-exitnet-on-behalf-of", o.clone());
        }
        Ok(req)
    };
    Ok((channel, f))
}

/// A refusal of the client API in one line; NOT_FOUND names what was asked for.
fn status_for(what: &str, id: &str) -> impl Fn(tonic::Status) -> anyhow::Error {
    let (what, id) = (what.to_owned(), id.to_owned());
    move |s| {
        if s.code() == tonic::Code::NotFound && !id.is_empty() {
            anyhow::anyhow!("no {what} {id}")
        } else {
            crate::run::status_line(s)
        }
    }
}

fn status(s: tonic::Status) -> anyhow::Error {
    crate::run::status_line(s)
}

fn codes<E>(
    flag: &str,
    prefix: &str,
    names: &[String],
    from: impl Fn(&str) -> Option<E>,
    to: impl Fn(E) -> i32 + Copy,
) -> anyhow::Result<Vec<i32>> {
    names
        .iter()
        .map(|n| to_pb(flag, prefix, n, &from, to))
        .collect()
}

fn opt_code<E>(
    flag: &str,
    prefix: &str,
    name: Option<String>,
    from: impl Fn(&str) -> Option<E>,
    to: impl Fn(E) -> i32,
) -> anyhow::Result<i32> {
    match name {
        Some(n) => to_pb(flag, prefix, &n, from, to),
        None => Ok(0),
    }
}

fn request_id(given: Option<String>) -> String {
    given.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("ctl-{t:x}-{}", std::process::id())
    })
}

fn need_areas(v: &[i32]) -> Vec<String> {
    enum_names(v, |e: pb::NeedArea| e.as_str_name(), "NEED_AREA_")
}

fn terms_json(t: &pb::ConsentTerms) -> Value {
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

fn state_name(v: i32) -> String {
    enum_name(v, |e: pb::ReferralState| e.as_str_name(), "REFERRAL_STATE_")
}

fn progress_value(v: i32) -> Value {
    enum_value(v, |e: pb::Progress| e.as_str_name(), "PROGRESS_")
}

fn outcome_json(o: &pb::Outcome) -> Value {
    json!({
        "service_delivered": o.service_delivered,
        "disengagement": progress_value(o.disengagement),
        "deradicalisation": progress_value(o.deradicalisation),
        "reintegration": progress_value(o.reintegration),
        "rehabilitation": progress_value(o.rehabilitation),
        "note": o.note,
    })
}

fn summary_json(s: &pb::CaseSummary) -> Value {
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

fn change_json(h: &pb::StateChange) -> Value {
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
fn last_change(r: &pb::Referral, state: pb::ReferralState) -> Option<&pb::StateChange> {
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

fn text(v: &Value) -> String {
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

fn consent_text(c: &pb::Consent) -> String {
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

/// One item (an object) or a list (an array, and always a table).
enum Shown<T> {
    One(T),
    List(Vec<T>),
}

pub async fn consent(
    t: ApiTarget,
    cmd: ConsentCommand,
    json_out: bool,
    wait: Duration,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (channel, auth) = connect(&t, wait).await?;
    let mut c = pb::consent_service_client::ConsentServiceClient::with_interceptor(channel, auth);
    let shown = match cmd {
        ConsentCommand::Record {
            subject,
            recipients,
            purposes,
            need_areas,
            fields: cats,
            valid_for,
            method,
            witness,
            statute,
            restrictions,
            request_id: rid,
        } => {
            let until = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()
                + valid_for;
            let terms = pb::ConsentTerms {
                recipients,
                purposes: codes(
                    "--purpose",
                    "PURPOSE_",
                    &purposes,
                    pb::Purpose::from_str_name,
                    |e| e as i32,
                )?,
                data_categories: codes(
                    "--field",
                    "DATA_CATEGORY_",
                    &cats,
                    pb::DataCategory::from_str_name,
                    |e| e as i32,
                )?,
                need_areas: codes(
                    "--need-area",
                    "NEED_AREA_",
                    &need_areas,
                    pb::NeedArea::from_str_name,
                    |e| e as i32,
                )?,
                legal_basis: Some(match statute {
                    Some(s) => pb::LegalBasis {
                        kind: pb::LegalBasisKind::Statute as i32,
                        statute: s,
                    },
                    None => pb::LegalBasis {
                        kind: pb::LegalBasisKind::Consent as i32,
                        statute: String::new(),
                    },
                }),
                restrictions: codes(
                    "--restriction",
                    "RESTRICTION_",
                    &restrictions,
                    pb::Restriction::from_str_name,
                    |e| e as i32,
                )?,
                valid_until: Some(exitnet_proto::Timestamp {
                    seconds: i64::try_from(until)?,
                    nanos: 0,
                }),
                ..Default::default()
            };
            let req = pb::RecordConsentRequest {
                request_id: request_id(rid),
                subject_ref: subject,
                terms: Some(terms),
                collection_method: to_pb(
                    "--method",
                    "COLLECTION_METHOD_",
                    &method,
                    pb::CollectionMethod::from_str_name,
                    |e| e as i32,
                )?,
                witness,
            };
            Shown::One(
                c.record_consent(req)
                    .await
                    .map_err(status)?
                    .into_inner()
                    .consent
                    .unwrap_or_default(),
            )
        }
        ConsentCommand::List { subject } => Shown::List(
            c.list_consents(pb::ListConsentsRequest {
                subject_ref: subject,
                page_size: 500,
                page_token: String::new(),
            })
            .await
            .map_err(status)?
            .into_inner()
            .consents,
        ),
        ConsentCommand::Show { consent_id } => Shown::One(
            c.get_consent(pb::GetConsentRequest {
                consent_id: consent_id.clone(),
            })
            .await
            .map_err(status_for("consent", &consent_id))?
            .into_inner()
            .consent
            .unwrap_or_default(),
        ),
        ConsentCommand::Withdraw { consent_id } => {
            let r = c
                .withdraw_consent(pb::WithdrawConsentRequest {
                    consent_id: consent_id.clone(),
                })
                .await
                .map_err(status_for("consent", &consent_id))?
                .into_inner();
            eprintln!(
                "withdrawn; {} recipient(s) are told to purge (`exitnetctl report purges` shows the receipts)",
                r.recipients_notified
            );
            Shown::One(r.consent.unwrap_or_default())
        }
    };
    match (shown, json_out) {
        (Shown::One(c), true) => writeln!(out, "{}", consent_json(&c))?,
        (Shown::One(c), false) => write!(out, "{}", consent_text(&c))?,
        (Shown::List(list), true) => writeln!(
            out,
            "{}",
            Value::Array(list.iter().map(consent_json).collect())
        )?,
        (Shown::List(list), false) => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    let v = consent_json(c);
                    vec![
                        c.consent_id.clone(),
                        c.subject_ref.clone(),
                        text(&v["recipients"]),
                        text(&v["recorded_at"]),
                        text(&v["valid_until"]),
                        text(&v["withdrawn_at"]),
                    ]
                })
                .collect();
            write!(
                out,
                "{}",
                table(
                    &[
                        "CONSENT",
                        "SUBJECT",
                        "RECIPIENTS",
                        "RECORDED AT",
                        "VALID UNTIL",
                        "WITHDRAWN AT"
                    ],
                    &rows
                )
            )?;
        }
    }
    Ok(())
}

fn progress(flag: &str, name: Option<String>) -> anyhow::Result<i32> {
    opt_code(flag, "PROGRESS_", name, pb::Progress::from_str_name, |e| {
        e as i32
    })
}

pub async fn referral(
    t: ApiTarget,
    cmd: ReferralCommand,
    json_out: bool,
    wait: Duration,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (channel, auth) = connect(&t, wait).await?;
    let mut c = pb::referral_service_client::ReferralServiceClient::with_interceptor(channel, auth);
    let one = |r: Option<pb::Referral>| Shown::One(r.unwrap_or_default());
    let shown = match cmd {
        ReferralCommand::Create {
            consent,
            to,
            need_areas,
            services,
            urgency,
            age_band,
            gender,
            languages,
            setting,
            ideological_context,
            risk_level,
            retaliation_risk,
            security_note,
            narrative,
            request_id: rid,
        } => {
            let security = match (retaliation_risk, security_note) {
                (None, None) => None,
                (risk, note) => Some(pb::SecurityConsiderations {
                    retaliation_risk: opt_code(
                        "--retaliation-risk",
                        "RISK_LEVEL_",
                        risk,
                        pb::RiskLevel::from_str_name,
                        |e| e as i32,
                    )?,
                    note: note.unwrap_or_default(),
                }),
            };
            let summary = pb::CaseSummary {
                age_band: opt_code(
                    "--age-band",
                    "AGE_BAND_",
                    age_band,
                    pb::AgeBand::from_str_name,
                    |e| e as i32,
                )?,
                gender: opt_code(
                    "--gender",
                    "GENDER_",
                    gender,
                    pb::Gender::from_str_name,
                    |e| e as i32,
                )?,
                languages,
                setting: opt_code(
                    "--setting",
                    "SETTING_",
                    setting,
                    pb::Setting::from_str_name,
                    |e| e as i32,
                )?,
                ideological_context: opt_code(
                    "--ideological-context",
                    "IDEOLOGICAL_CONTEXT_",
                    ideological_context,
                    pb::IdeologicalContext::from_str_name,
                    |e| e as i32,
                )?,
                risk_level: opt_code(
                    "--risk-level",
                    "RISK_LEVEL_",
                    risk_level,
                    pb::RiskLevel::from_str_name,
                    |e| e as i32,
                )?,
                security,
                needs_narrative: match narrative.as_deref() {
                    // From standard input, so the text stays out of `ps` and shell history.
                    Some("-") => std::io::read_to_string(std::io::stdin())?
                        .trim_end()
                        .to_owned(),
                    Some(t) => t.to_owned(),
                    None => String::new(),
                },
                contact_route: pb::ContactRoute::ReferringCaseManager as i32,
            };
            let req = pb::CreateReferralRequest {
                request_id: request_id(rid),
                consent_id: consent,
                recipient_org: to,
                need_areas: codes(
                    "--need-area",
                    "NEED_AREA_",
                    &need_areas,
                    pb::NeedArea::from_str_name,
                    |e| e as i32,
                )?,
                services: codes(
                    "--service",
                    "SERVICE_",
                    &services,
                    pb::Service::from_str_name,
                    |e| e as i32,
                )?,
                urgency: to_pb(
                    "--urgency",
                    "URGENCY_",
                    &urgency,
                    pb::Urgency::from_str_name,
                    |e| e as i32,
                )?,
                summary: Some(summary),
            };
            one(c
                .create_referral(req)
                .await
                .map_err(status)?
                .into_inner()
                .referral)
        }
        ReferralCommand::List {
            inbound,
            outbound,
            state,
            peer,
        } => {
            let direction = if inbound {
                pb::Direction::Inbound
            } else if outbound {
                pb::Direction::Outbound
            } else {
                pb::Direction::Unspecified
            } as i32;
            let state = opt_code(
                "--state",
                "REFERRAL_STATE_",
                state,
                pb::ReferralState::from_str_name,
                |e| e as i32,
            )?;
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = c
                    .list_referrals(pb::ListReferralsRequest {
                        direction,
                        state,
                        peer_org: peer.clone().unwrap_or_default(),
                        page_size: 500,
                        page_token: token.clone(),
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                all.extend(page.referrals);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            Shown::List(all)
        }
        ReferralCommand::Show { referral_id } => one(c
            .get_referral(pb::GetReferralRequest {
                referral_id: referral_id.clone(),
            })
            .await
            .map_err(status_for("referral", &referral_id))?
            .into_inner()
            .referral),
        ReferralCommand::Accept { referral_id } => one(c
            .accept_referral(pb::AcceptReferralRequest {
                referral_id: referral_id.clone(),
            })
            .await
            .map_err(status_for("referral", &referral_id))?
            .into_inner()
            .referral),
        ReferralCommand::Start { referral_id } => one(c
            .start_referral(pb::StartReferralRequest {
                referral_id: referral_id.clone(),
            })
            .await
            .map_err(status_for("referral", &referral_id))?
            .into_inner()
            .referral),
        ReferralCommand::Hold { referral_id, text } => one(c
            .hold_referral(pb::HoldReferralRequest {
                referral_id: referral_id.clone(),
                text,
            })
            .await
            .map_err(status_for("referral", &referral_id))?
            .into_inner()
            .referral),
        ReferralCommand::Decline {
            referral_id,
            reason,
            text,
        } => {
            let reason = to_pb(
                "--reason",
                "DECLINE_REASON_",
                &reason,
                pb::DeclineReason::from_str_name,
                |e| e as i32,
            )?;
            one(c
                .decline_referral(pb::DeclineReferralRequest {
                    referral_id: referral_id.clone(),
                    reason,
                    text,
                })
                .await
                .map_err(status_for("referral", &referral_id))?
                .into_inner()
                .referral)
        }
        ReferralCommand::Fail {
            referral_id,
            reason,
            text,
        } => {
            let reason = to_pb(
                "--reason",
                "FAILURE_REASON_",
                &reason,
                pb::FailureReason::from_str_name,
                |e| e as i32,
            )?;
            one(c
                .fail_referral(pb::FailReferralRequest {
                    referral_id: referral_id.clone(),
                    reason,
                    text,
                })
                .await
                .map_err(status_for("referral", &referral_id))?
                .into_inner()
                .referral)
        }
        ReferralCommand::Complete {
            referral_id,
            disengagement,
            deradicalisation,
            reintegration,
            rehabilitation,
            delivered,
            note,
        } => {
            let outcome = pb::Outcome {
                disengagement: progress("--disengagement", disengagement)?,
                deradicalisation: progress("--deradicalisation", deradicalisation)?,
                reintegration: progress("--reintegration", reintegration)?,
                rehabilitation: progress("--rehabilitation", rehabilitation)?,
                service_delivered: delivered,
                note,
            };
            one(c
                .complete_referral(pb::CompleteReferralRequest {
                    referral_id: referral_id.clone(),
                    outcome: Some(outcome),
                })
                .await
                .map_err(status_for("referral", &referral_id))?
                .into_inner()
                .referral)
        }
        ReferralCommand::Withdraw { referral_id } => one(c
            .withdraw_referral(pb::WithdrawReferralRequest {
                referral_id: referral_id.clone(),
            })
            .await
            .map_err(status_for("referral", &referral_id))?
            .into_inner()
            .referral),
    };
    match (shown, json_out) {
        (Shown::One(r), true) => writeln!(out, "{}", referral_json(&r))?,
        (Shown::One(r), false) => write!(out, "{}", referral_text(&r))?,
        (Shown::List(list), true) => writeln!(
            out,
            "{}",
            Value::Array(list.iter().map(referral_json).collect())
        )?,
        (Shown::List(list), false) => write!(out, "{}", referral_table(&list))?,
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Option<exitnet_proto::Timestamp> {
        Some(exitnet_proto::Timestamp {
            seconds: s,
            nanos: 0,
        })
    }

    fn completed() -> pb::Referral {
        let outcome = pb::Outcome {
            disengagement: pb::Progress::Some as i32,
            reintegration: pb::Progress::Substantial as i32,
            service_delivered: true,
            note: "Flat found.".into(),
            ..Default::default()
        };
        pb::Referral {
            referral_id: "r-1".into(),
            direction: pb::Direction::Outbound as i32,
            peer_org: "prison-b".into(),
            consent_id: "c-1".into(),
            owner: "alice".into(),
            need_areas: vec![pb::NeedArea::FunctionalReintegration as i32],
            services: vec![pb::Service::Housing as i32],
            urgency: pb::Urgency::Soon as i32,
            state: pb::ReferralState::Completed as i32,
            summary: Some(pb::CaseSummary {
                age_band: pb::AgeBand::from_str_name("AGE_BAND_25_34").unwrap() as i32,
                languages: vec!["de".into(), "ar".into()],
                security: Some(pb::SecurityConsiderations {
                    retaliation_risk: pb::RiskLevel::High as i32,
                    note: "Threats by former comrades.".into(),
                }),
                needs_narrative: "Housing after release.".into(),
                contact_route: pb::ContactRoute::ReferringCaseManager as i32,
                ..Default::default()
            }),
            terms: Some(pb::ConsentTerms {
                recipients: vec!["prison-b".into()],
                purposes: vec![pb::Purpose::ExitSupport as i32],
                data_categories: vec![pb::DataCategory::AgeBand as i32],
                legal_basis: Some(pb::LegalBasis {
                    kind: pb::LegalBasisKind::Statute as i32,
                    statute: "§ 68 StGB".into(),
                }),
                valid_until: ts(1_800_000_000),
                ..Default::default()
            }),
            history: vec![
                pb::StateChange {
                    state: pb::ReferralState::Requested as i32,
                    at: ts(1_764_756_000),
                    by_org: "ngo-a".into(),
                    actor: "alice".into(),
                    ..Default::default()
                },
                pb::StateChange {
                    state: pb::ReferralState::Completed as i32,
                    at: ts(1_764_759_600),
                    by_org: "prison-b".into(),
                    outcome: Some(outcome),
                    ..Default::default()
                },
            ],
            purge_status: pb::PurgeStatus::None as i32,
            created_at: ts(1_764_756_000),
            updated_at: ts(1_764_759_600),
            ..Default::default()
        }
    }

    #[test]
    fn show_tells_how_the_case_ended() {
        let r = completed();
        let v = referral_json(&r);
        assert_eq!(v["outcome"]["reintegration"], "substantial");
        assert_eq!(v["outcome"]["disengagement"], "some");
        assert_eq!(v["outcome"]["deradicalisation"], Value::Null);
        assert_eq!(v["outcome"]["service_delivered"], true);
        assert_eq!(v["summary"]["age_band"], "25_34");
        assert_eq!(v["summary"]["security"]["retaliation_risk"], "high");
        assert_eq!(v["terms"]["legal_basis"], "statute");
        assert_eq!(v["terms"]["valid_until"], "2027-01-15T08:00:00.000Z");
        assert_eq!(v["history"][0]["at"], "2025-12-03T10:00:00.000Z");
        assert_eq!(v["history"][0]["actor"], "alice");
        assert_eq!(v["urgency"], "soon");
        let shown = referral_text(&r);
        for expected in [
            "Flat found.",
            "substantial",
            "Housing after release.",
            "Threats by former comrades.",
            "statute (§ 68 StGB)",
            "de, ar",
            "2025-12-03T11:00:00.000Z",
            "functional_reintegration",
            "housing",
            "alice",
        ] {
            assert!(shown.contains(expected), "{expected} missing:\n{shown}");
        }
    }

    #[test]
    fn reasons_come_with_their_texts() {
        let mut r = completed();
        r.state = pb::ReferralState::Declined as i32;
        r.history.push(pb::StateChange {
            state: pb::ReferralState::Declined as i32,
            at: ts(1_764_760_000),
            by_org: "prison-b".into(),
            decline_reason: pb::DeclineReason::NoCapacity as i32,
            text: "Waiting list until March.".into(),
            ..Default::default()
        });
        let v = referral_json(&r);
        assert_eq!(v["decline"]["reason"], "no_capacity");
        assert_eq!(v["decline"]["text"], "Waiting list until March.");
        assert_eq!(v["failure"], Value::Null);
        assert!(referral_text(&r).contains("no_capacity: Waiting list until March."));
    }

    #[test]
    fn a_list_of_one_is_a_table() {
        let t = referral_table(&[completed()]);
        assert!(t.starts_with("REFERRAL"), "{t}");
        assert_eq!(t.lines().count(), 2);
    }
}
