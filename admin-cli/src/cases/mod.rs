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

mod consents;
mod referrals;
mod show;

pub use consents::*;
pub use referrals::*;
pub use show::*;

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

/// One item (an object) or a list (an array, and always a table).
enum Shown<T> {
    One(T),
    List(Vec<T>),
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
