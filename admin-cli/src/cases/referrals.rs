//! `exitnetctl referral …`.

use super::*;

pub(super) fn progress(flag: &str, name: Option<String>) -> anyhow::Result<i32> {
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
