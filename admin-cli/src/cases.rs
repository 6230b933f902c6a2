//! `exitnetctl consent …` and `exitnetctl referral …`: the demo-sized happy
//! path on the client API, with the signed-in user's token.

use crate::opts::{ApiTarget, ConsentCommand, ReferralCommand};
use crate::output::{code_name, fields, table, timestamp};
use exitnet_proto::pb;
use serde_json::{Value, json};
use std::io::Write;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

async fn connect(
    t: &ApiTarget,
) -> anyhow::Result<(
    Channel,
    impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone,
)> {
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
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", t.api))?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the client API at {}: {e}", t.api))?;
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

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", s.message(), s.code())
}

fn code<E>(
    prefix: &str,
    name: &str,
    from: impl Fn(&str) -> Option<E>,
    to: impl Fn(E) -> i32,
) -> anyhow::Result<i32> {
    from(&format!("{prefix}{}", name.to_ascii_uppercase()))
        .map(to)
        .ok_or_else(|| anyhow::anyhow!("unknown value `{name}`"))
}

fn codes<E>(
    prefix: &str,
    names: &[String],
    from: impl Fn(&str) -> Option<E>,
    to: impl Fn(E) -> i32 + Copy,
) -> anyhow::Result<Vec<i32>> {
    names.iter().map(|n| code(prefix, n, &from, to)).collect()
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

fn consent_json(c: &pb::Consent) -> Value {
    let t = c.terms.clone().unwrap_or_default();
    json!({
        "consent_id": c.consent_id,
        "subject_ref": c.subject_ref,
        "recipients": t.recipients,
        "need_areas": t.need_areas.iter().map(|v| pb::NeedArea::try_from(*v).map(|e| code_name(e.as_str_name(), "NEED_AREA_")).unwrap_or_default()).collect::<Vec<_>>(),
        "fields": t.data_categories.iter().map(|v| pb::DataCategory::try_from(*v).map(|e| code_name(e.as_str_name(), "DATA_CATEGORY_")).unwrap_or_default()).collect::<Vec<_>>(),
        "valid_until": timestamp(t.valid_until.as_ref()),
        "recorded_by": c.recorded_by,
        "recorded_at": timestamp(c.recorded_at.as_ref()),
        "withdrawn_at": timestamp(c.withdrawn_at.as_ref()),
    })
}

fn state_name(v: i32) -> String {
    pb::ReferralState::try_from(v)
        .map(|e| code_name(e.as_str_name(), "REFERRAL_STATE_"))
        .unwrap_or_default()
}

fn referral_json(r: &pb::Referral) -> Value {
    json!({
        "referral_id": r.referral_id,
        "direction": pb::Direction::try_from(r.direction).map(|e| code_name(e.as_str_name(), "DIRECTION_")).unwrap_or_default(),
        "peer_org": r.peer_org,
        "state": state_name(r.state),
        "purge_status": pb::PurgeStatus::try_from(r.purge_status).map(|e| code_name(e.as_str_name(), "PURGE_STATUS_")).unwrap_or_default(),
        "subject_pseudonym": r.subject_pseudonym,
        "needs_narrative": r.summary.as_ref().map(|s| s.needs_narrative.clone()),
        "history": r.history.iter().map(|h| json!({"state": state_name(h.state), "by": h.by_org, "at": timestamp(h.at.as_ref())})).collect::<Vec<_>>(),
        "created_at": timestamp(r.created_at.as_ref()),
    })
}

pub async fn consent(
    t: ApiTarget,
    cmd: ConsentCommand,
    json_out: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (channel, auth) = connect(&t).await?;
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
                purposes: codes("PURPOSE_", &purposes, pb::Purpose::from_str_name, |e| {
                    e as i32
                })?,
                data_categories: codes(
                    "DATA_CATEGORY_",
                    &cats,
                    pb::DataCategory::from_str_name,
                    |e| e as i32,
                )?,
                need_areas: codes(
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
                collection_method: code(
                    "COLLECTION_METHOD_",
                    &method,
                    pb::CollectionMethod::from_str_name,
                    |e| e as i32,
                )?,
                witness,
            };
            vec![
                c.record_consent(req)
                    .await
                    .map_err(status)?
                    .into_inner()
                    .consent
                    .unwrap_or_default(),
            ]
        }
        ConsentCommand::List { subject } => {
            c.list_consents(pb::ListConsentsRequest {
                subject_ref: subject,
                page_size: 500,
                page_token: String::new(),
            })
            .await
            .map_err(status)?
            .into_inner()
            .consents
        }
        ConsentCommand::Show { consent_id } => vec![
            c.get_consent(pb::GetConsentRequest { consent_id })
                .await
                .map_err(status)?
                .into_inner()
                .consent
                .unwrap_or_default(),
        ],
        ConsentCommand::Withdraw { consent_id } => {
            let r = c
                .withdraw_consent(pb::WithdrawConsentRequest { consent_id })
                .await
                .map_err(status)?
                .into_inner();
            eprintln!(
                "withdrawn; {} recipient(s) are told to purge",
                r.recipients_notified
            );
            vec![r.consent.unwrap_or_default()]
        }
    };
    if json_out {
        writeln!(
            out,
            "{}",
            Value::Array(shown.iter().map(consent_json).collect())
        )?;
    } else {
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|c| {
                let v = consent_json(c);
                vec![
                    c.consent_id.clone(),
                    c.subject_ref.clone(),
                    v["recipients"].to_string(),
                    v["valid_until"].as_str().unwrap_or("-").to_owned(),
                    v["withdrawn_at"].as_str().unwrap_or("-").to_owned(),
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
                    "VALID UNTIL",
                    "WITHDRAWN"
                ],
                &rows
            )
        )?;
    }
    Ok(())
}

fn progress(name: Option<String>) -> anyhow::Result<i32> {
    match name {
        Some(n) => code("PROGRESS_", &n, pb::Progress::from_str_name, |e| e as i32),
        None => Ok(0),
    }
}

pub async fn referral(
    t: ApiTarget,
    cmd: ReferralCommand,
    json_out: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (channel, auth) = connect(&t).await?;
    let mut c = pb::referral_service_client::ReferralServiceClient::with_interceptor(channel, auth);
    let one = |r: Option<pb::Referral>| vec![r.unwrap_or_default()];
    let shown = match cmd {
        ReferralCommand::Create {
            consent,
            to,
            need_areas,
            services,
            urgency,
            age_band,
            risk_level,
            narrative,
            request_id: rid,
        } => {
            let summary = pb::CaseSummary {
                age_band: match age_band {
                    Some(a) => code("AGE_BAND_", &a, pb::AgeBand::from_str_name, |e| e as i32)
                        .or_else(|_| code("", &a, pb::AgeBand::from_str_name, |e| e as i32))?,
                    None => 0,
                },
                risk_level: match risk_level {
                    Some(r) => code("RISK_LEVEL_", &r, pb::RiskLevel::from_str_name, |e| {
                        e as i32
                    })?,
                    None => 0,
                },
                needs_narrative: match narrative.as_deref() {
                    // From standard input, so the text stays out of `ps` and shell history.
                    Some("-") => std::io::read_to_string(std::io::stdin())?
                        .trim_end()
                        .to_owned(),
                    Some(t) => t.to_owned(),
                    None => String::new(),
                },
                contact_route: pb::ContactRoute::ReferringCaseManager as i32,
                ..Default::default()
            };
            let req = pb::CreateReferralRequest {
                request_id: request_id(rid),
                consent_id: consent,
                recipient_org: to,
                need_areas: codes(
                    "NEED_AREA_",
                    &need_areas,
                    pb::NeedArea::from_str_name,
                    |e| e as i32,
                )?,
                services: codes("SERVICE_", &services, pb::Service::from_str_name, |e| {
                    e as i32
                })?,
                urgency: code("URGENCY_", &urgency, pb::Urgency::from_str_name, |e| {
                    e as i32
                })?,
                summary: Some(summary),
            };
            one(c
                .create_referral(req)
                .await
                .map_err(status)?
                .into_inner()
                .referral)
        }
        ReferralCommand::List { inbound, outbound } => {
            let direction = if inbound {
                pb::Direction::Inbound
            } else if outbound {
                pb::Direction::Outbound
            } else {
                pb::Direction::Unspecified
            } as i32;
            c.list_referrals(pb::ListReferralsRequest {
                direction,
                page_size: 500,
                ..Default::default()
            })
            .await
            .map_err(status)?
            .into_inner()
            .referrals
        }
        ReferralCommand::Show { referral_id } => one(c
            .get_referral(pb::GetReferralRequest { referral_id })
            .await
            .map_err(status)?
            .into_inner()
            .referral),
        ReferralCommand::Accept { referral_id } => one(c
            .accept_referral(pb::AcceptReferralRequest { referral_id })
            .await
            .map_err(status)?
            .into_inner()
            .referral),
        ReferralCommand::Start { referral_id } => one(c
            .start_referral(pb::StartReferralRequest { referral_id })
            .await
            .map_err(status)?
            .into_inner()
            .referral),
        ReferralCommand::Hold { referral_id, text } => one(c
            .hold_referral(pb::HoldReferralRequest { referral_id, text })
            .await
            .map_err(status)?
            .into_inner()
            .referral),
        ReferralCommand::Decline {
            referral_id,
            reason,
            text,
        } => {
            let reason = code(
                "DECLINE_REASON_",
                &reason,
                pb::DeclineReason::from_str_name,
                |e| e as i32,
            )?;
            one(c
                .decline_referral(pb::DeclineReferralRequest {
                    referral_id,
                    reason,
                    text,
                })
                .await
                .map_err(status)?
                .into_inner()
                .referral)
        }
        ReferralCommand::Fail {
            referral_id,
            reason,
            text,
        } => {
            let reason = code(
                "FAILURE_REASON_",
                &reason,
                pb::FailureReason::from_str_name,
                |e| e as i32,
            )?;
            one(c
                .fail_referral(pb::FailReferralRequest {
                    referral_id,
                    reason,
                    text,
                })
                .await
                .map_err(status)?
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
                disengagement: progress(disengagement)?,
                deradicalisation: progress(deradicalisation)?,
                reintegration: progress(reintegration)?,
                rehabilitation: progress(rehabilitation)?,
                service_delivered: delivered,
                note,
            };
            one(c
                .complete_referral(pb::CompleteReferralRequest {
                    referral_id,
                    outcome: Some(outcome),
                })
                .await
                .map_err(status)?
                .into_inner()
                .referral)
        }
        ReferralCommand::Withdraw { referral_id } => one(c
            .withdraw_referral(pb::WithdrawReferralRequest { referral_id })
            .await
            .map_err(status)?
            .into_inner()
            .referral),
    };
    if json_out {
        writeln!(
            out,
            "{}",
            Value::Array(shown.iter().map(referral_json).collect())
        )?;
    } else if shown.len() == 1 {
        let r = &shown[0];
        let v = referral_json(r);
        write!(
            out,
            "{}",
            fields(&[
                ("referral", r.referral_id.clone()),
                (
                    "direction",
                    v["direction"].as_str().unwrap_or("").to_owned()
                ),
                ("peer", r.peer_org.clone()),
                ("state", v["state"].as_str().unwrap_or("").to_owned()),
                ("purge", v["purge_status"].as_str().unwrap_or("").to_owned()),
                (
                    "history",
                    r.history
                        .iter()
                        .map(|h| format!("{} ({})", state_name(h.state), h.by_org))
                        .collect::<Vec<_>>()
                        .join(" → ")
                ),
            ])
        )?;
    } else {
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|r| {
                let v = referral_json(r);
                vec![
                    r.referral_id.clone(),
                    v["direction"].as_str().unwrap_or("").to_owned(),
                    r.peer_org.clone(),
                    v["state"].as_str().unwrap_or("").to_owned(),
                    v["purge_status"].as_str().unwrap_or("").to_owned(),
                ]
            })
            .collect();
        write!(
            out,
            "{}",
            table(&["REFERRAL", "DIRECTION", "PEER", "STATE", "PURGE"], &rows)
        )?;
    }
    Ok(())
}
