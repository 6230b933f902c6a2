//! `exitnetctl report …` for the data protection officer, and the Markdown
//! form of a subject access document (`audit subject --format markdown`).

use crate::client::AdminClient;
use crate::opts::ReportCommand;
use crate::output::{enum_name, table, timestamp, ts_cell};
use crate::run::status_line;
use exitnet_proto::pb;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::Write;

fn to_pb_time(t: Option<time::OffsetDateTime>) -> Option<exitnet_proto::Timestamp> {
    t.map(|t| exitnet_proto::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    })
}

fn counts_json(c: &[pb::CodeCount]) -> Value {
    Value::Array(
        c.iter()
            .map(|x| json!({"code": x.code, "referrals": x.referrals}))
            .collect(),
    )
}

/// `age_band (3), gender (1)`.
fn counts_cell(c: &[pb::CodeCount]) -> String {
    if c.is_empty() {
        return "-".into();
    }
    c.iter()
        .map(|x| format!("{} ({})", x.code, x.referrals))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn report(
    admin: &mut AdminClient,
    command: ReportCommand,
    json_out: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        ReportCommand::Shared { peer, from, to } => {
            if let (Some(f), Some(t)) = (from, to)
                && f >= t
            {
                anyhow::bail!("--to must be after --from");
            }
            let r = admin
                .report_shared(pb::ReportSharedRequest {
                    peer_org: peer.clone().unwrap_or_default(),
                    from: to_pb_time(from),
                    to: to_pb_time(to),
                })
                .await
                .map_err(|s| match (&peer, s.code()) {
                    (Some(p), tonic::Code::InvalidArgument)
                        if s.message().starts_with("peer_org") =>
                    {
                        anyhow::anyhow!("--peer {p}: not an organisation ID")
                    }
                    _ => status_line(s),
                })?;
            if json_out {
                let v: Vec<Value> = r
                    .peers
                    .iter()
                    .map(|p| {
                        json!({
                            "peer_org": p.peer_org,
                            "referrals": p.referrals,
                            "first_at": timestamp(p.first_at.as_ref()),
                            "last_at": timestamp(p.last_at.as_ref()),
                            "data_categories": counts_json(&p.data_categories),
                            "purposes": counts_json(&p.purposes),
                            "legal_bases": counts_json(&p.legal_bases),
                            "need_areas": counts_json(&p.need_areas),
                            "purge_pending": p.purge_pending,
                            "purged": p.purged,
                        })
                    })
                    .collect();
                writeln!(out, "{}", Value::Array(v))?;
            } else {
                let period = format!(
                    "referrals sent {} to {}",
                    from.and_then(crate::output::rfc3339_ms)
                        .unwrap_or_else(|| "from the first".into()),
                    to.and_then(crate::output::rfc3339_ms)
                        .unwrap_or_else(|| "now".into())
                );
                writeln!(out, "{period}; counts are referrals; no client content\n")?;
                let rows: Vec<Vec<String>> = r
                    .peers
                    .iter()
                    .map(|p| {
                        vec![
                            p.peer_org.clone(),
                            p.referrals.to_string(),
                            ts_cell(p.first_at.as_ref()),
                            ts_cell(p.last_at.as_ref()),
                            counts_cell(&p.data_categories),
                            counts_cell(&p.purposes),
                            counts_cell(&p.legal_bases),
                            format!("{} pending, {} done", p.purge_pending, p.purged),
                        ]
                    })
                    .collect();
                write!(
                    out,
                    "{}",
                    table(
                        &[
                            "PEER",
                            "REFERRALS",
                            "FIRST AT",
                            "LAST AT",
                            "DATA CATEGORIES",
                            "PURPOSES",
                            "LEGAL BASES",
                            "PURGES"
                        ],
                        &rows
                    )
                )?;
            }
        }
        ReportCommand::Purges => {
            let purges = admin.report_purges().await.map_err(status_line)?;
            let status =
                |v: i32| enum_name(v, |e: pb::PurgeStatus| e.as_str_name(), "PURGE_STATUS_");
            if json_out {
                let v: Vec<Value> = purges
                    .iter()
                    .map(|p| {
                        json!({
                            "referral_id": p.referral_id,
                            "peer_org": p.peer_org,
                            "cause": p.cause,
                            "withdrawn_at": timestamp(p.withdrawn_at.as_ref()),
                            "purge_status": status(p.status),
                            "purged_at": timestamp(p.purged_at.as_ref()),
                        })
                    })
                    .collect();
                writeln!(out, "{}", Value::Array(v))?;
            } else {
                let rows: Vec<Vec<String>> = purges
                    .iter()
                    .map(|p| {
                        vec![
                            p.peer_org.clone(),
                            p.referral_id.clone(),
                            p.cause.clone(),
                            ts_cell(p.withdrawn_at.as_ref()),
                            status(p.status),
                            ts_cell(p.purged_at.as_ref()),
                        ]
                    })
                    .collect();
                write!(
                    out,
                    "{}",
                    table(
                        &[
                            "RECIPIENT",
                            "REFERRAL",
                            "CAUSE",
                            "WITHDRAWN AT",
                            "PURGE",
                            "PURGED AT"
                        ],
                        &rows
                    )
                )?;
            }
        }
    }
    Ok(())
}

/// A JSON value as Markdown table text (`-` for nothing; `|` escaped).
fn md(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect::<Vec<_>>()
            .join(", "),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    };
    if s.is_empty() {
        "-".into()
    } else {
        s.replace('|', "\\|").replace('\n', " ")
    }
}

fn md_table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", headers.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        headers.iter().map(|_| " --- |").collect::<String>()
    );
    for r in rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out.push('\n');
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The subject access document as a report for the person: what the
/// organisation holds, what it shared with whom and when, what was purged.
pub fn subject_markdown(doc: &Value) -> String {
    let mut o = String::new();
    let org = md(&doc["organisation"]);
    let subject = md(&doc["subject_ref"]);
    let consents = arr(&doc["consents"]);
    let referrals = arr(&doc["referrals"]);
    let _ = writeln!(o, "# Subject access report: {subject}\n");
    let _ = writeln!(
        o,
        "Organisation **{org}**, generated {} (GDPR Art. 15). It lists what {org} holds about the \
         person with the reference `{subject}`: the consents they gave, the referrals made with \
         them (what was shared, with whom and when), what was purged, and the audit records \
         about all of these.\n",
        md(&doc["generated_at"])
    );
    let _ = writeln!(o, "## Consents ({})\n", consents.len());
    if consents.is_empty() {
        o.push_str("None recorded.\n\n");
    }
    for c in consents {
        let basis = match c["statute"].as_str() {
            Some(s) if !s.is_empty() => format!("{} ({s})", md(&c["legal_basis"])),
            _ => md(&c["legal_basis"]),
        };
        let _ = writeln!(o, "### Consent {}\n", md(&c["consent_id"]));
        for (k, v) in [
            (
                "Recorded",
                format!("{} by {}", md(&c["recorded_at"]), md(&c["recorded_by"])),
            ),
            (
                "Collected",
                format!(
                    "{} (witness: {})",
                    md(&c["collection_method"]),
                    md(&c["witness"])
                ),
            ),
            ("Recipients", md(&c["recipients"])),
            ("Purposes", md(&c["purposes"])),
            ("Data categories", md(&c["data_categories"])),
            ("Need areas", md(&c["need_areas"])),
            ("Legal basis", basis),
            ("Restrictions", md(&c["restrictions"])),
            (
                "Valid",
                format!("{} to {}", md(&c["valid_from"]), md(&c["valid_until"])),
            ),
            (
                "Withdrawn",
                if c["withdrawn_at"].is_null() {
                    "no".into()
                } else {
                    md(&c["withdrawn_at"])
                },
            ),
        ] {
            let _ = writeln!(o, "- **{k}:** {v}");
        }
        o.push('\n');
    }
    let _ = writeln!(
        o,
        "## What was shared, with whom and when ({} referrals)\n",
        referrals.len()
    );
    if referrals.is_empty() {
        o.push_str("No referrals.\n\n");
    } else {
        let rows: Vec<Vec<String>> = referrals
            .iter()
            .map(|r| {
                vec![
                    md(&r["referral_id"]),
                    if r["direction"] == "outbound" {
                        format!("sent to {}", md(&r["peer_org"]))
                    } else {
                        format!("received from {}", md(&r["peer_org"]))
                    },
                    md(&r["created_at"]),
                    md(&r["state"]),
                    md(&r["purge_status"]),
                    md(&r["purged_at"]),
                ]
            })
            .collect();
        md_table(
            &mut o,
            &["Referral", "With", "At", "State", "Purge", "Purged at"],
            &rows,
        );
    }
    for r in referrals {
        let _ = writeln!(o, "### Referral {}\n", md(&r["referral_id"]));
        for (k, v) in [
            ("Need areas", md(&r["need_areas"])),
            ("Services", md(&r["services"])),
            ("Urgency", md(&r["urgency"])),
            ("Case manager", md(&r["owner"])),
        ] {
            let _ = writeln!(o, "- **{k}:** {v}");
        }
        let s = &r["summary"];
        if s.is_null() {
            o.push_str("- **Summary held:** none (purged, or never held)\n\n");
        } else {
            o.push_str("- **Summary held:**\n");
            for (k, v) in [
                ("age band", md(&s["age_band"])),
                ("gender", md(&s["gender"])),
                ("languages", md(&s["languages"])),
                ("setting", md(&s["setting"])),
                ("ideological context", md(&s["ideological_context"])),
                ("risk level", md(&s["risk_level"])),
                ("retaliation risk", md(&s["security"]["retaliation_risk"])),
                ("security note", md(&s["security"]["note"])),
                ("needs", md(&s["needs_narrative"])),
            ] {
                let _ = writeln!(o, "  - {k}: {v}");
            }
            o.push('\n');
        }
        let history: Vec<Vec<String>> = arr(&r["history"])
            .iter()
            .map(|h| {
                let reason = [&h["decline_reason"], &h["failure_reason"]]
                    .into_iter()
                    .find(|r| !r.is_null())
                    .map(|r| format!("{}: ", md(r)))
                    .unwrap_or_default();
                let note = match (h["text"].as_str(), h["outcome"]["note"].as_str()) {
                    (Some(t), _) if !t.is_empty() => md(&h["text"]),
                    (_, Some(n)) if !n.is_empty() => md(&h["outcome"]["note"]),
                    _ => "-".into(),
                };
                vec![
                    md(&h["at"]),
                    md(&h["state"]),
                    md(&h["by_org"]),
                    md(&h["actor"]),
                    format!("{reason}{note}"),
                ]
            })
            .collect();
        if !history.is_empty() {
            md_table(&mut o, &["When", "State", "By", "Who", "Note"], &history);
        }
        let receipts: Vec<Vec<String>> = arr(&r["receipts"])
            .iter()
            .map(|x| vec![md(&x["at"]), md(&x["kind"]), md(&x["issued_by"])])
            .collect();
        if !receipts.is_empty() {
            o.push_str("Signed receipts:\n\n");
            md_table(&mut o, &["When", "Kind", "Signed by"], &receipts);
        }
    }
    let purged: Vec<Vec<String>> = referrals
        .iter()
        .filter(|r| r["purge_status"] != "none")
        .map(|r| {
            vec![
                md(&r["referral_id"]),
                md(&r["peer_org"]),
                md(&r["purge_status"]),
                md(&r["purged_at"]),
            ]
        })
        .collect();
    let _ = writeln!(o, "## Purges ({})\n", purged.len());
    if purged.is_empty() {
        o.push_str("Nothing was purged.\n\n");
    } else {
        md_table(
            &mut o,
            &["Referral", "Recipient", "Status", "Purged at"],
            &purged,
        );
    }
    let audit = arr(&doc["audit"]);
    let _ = writeln!(o, "## Audit records ({})\n", audit.len());
    let rows: Vec<Vec<String>> = audit
        .iter()
        .map(|a| {
            vec![
                md(&a["seq"]),
                md(&a["at"]),
                format!("{}: {}", md(&a["actor_kind"]), md(&a["actor"])),
                md(&a["action"]),
                md(&a["object_id"]),
                md(&a["result"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        md_table(
            &mut o,
            &["Seq", "When", "Actor", "Action", "Object", "Result"],
            &rows,
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_markdown_report_covers_consents_sharing_and_purges() {
        let doc = json!({
            "subject_ref": "client-1",
            "organisation": "ngo-a",
            "generated_at": "2026-12-03T10:00:00.000Z",
            "consents": [{
                "consent_id": "c-1", "recipients": ["prison-b"], "purposes": ["exit_support"],
                "data_categories": ["age_band"], "need_areas": ["cognitive"],
                "legal_basis": "statute", "statute": "§ 68 | StGB", "restrictions": [],
                "valid_from": "2026-01-01T00:00:00.000Z", "valid_until": "2027-01-01T00:00:00.000Z",
                "recorded_at": "2026-01-01T00:00:00.000Z", "recorded_by": "alice",
                "withdrawn_at": "2026-02-01T00:00:00.000Z"
            }],
            "referrals": [{
                "referral_id": "r-1", "direction": "outbound", "peer_org": "prison-b",
                "created_at": "2026-01-02T00:00:00.000Z", "state": "completed",
                "purge_status": "done", "purged_at": "2026-02-01T00:00:05.000Z",
                "summary": null,
                "history": [{"at": "2026-01-02T00:00:00.000Z", "state": "requested", "by_org": "ngo-a", "actor": "alice", "text": ""}],
                "receipts": [{"at": "2026-02-01T00:00:05.000Z", "kind": "purge", "issued_by": "prison-b"}]
            }],
            "audit": [{"seq": 7, "at": "2026-01-02T00:00:00.000Z", "actor_kind": "staff", "actor": "alice", "action": "referral.create", "object_id": "r-1", "result": "ok"}]
        });
        let md = subject_markdown(&doc);
        for expected in [
            "# Subject access report: client-1",
            "### Consent c-1",
            "statute (§ 68 | StGB)",
            "| r-1 | sent to prison-b | 2026-01-02T00:00:00.000Z | completed | done |",
            "## Purges (1)",
            "| 2026-02-01T00:00:05.000Z | purge | prison-b |",
            "referral.create",
            "none (purged, or never held)",
        ] {
            assert!(md.contains(expected), "{expected} missing:\n{md}");
        }
    }
}
