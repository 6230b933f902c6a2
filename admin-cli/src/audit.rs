//! `exitnetctl audit …` and `exitnetctl receipt …`.

use crate::client::AdminClient;
use crate::opts::{AuditCommand, Output, ReceiptCommand, SubjectFormat};
use crate::output::{table, timestamp, ts_cell};
use crate::run::status_line;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use exitnet_proto::pb;
use prost::Message;
use serde_json::{Value, json};
use std::io::Write;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ts(t: Option<time::OffsetDateTime>) -> Option<exitnet_proto::Timestamp> {
    t.map(|t| exitnet_proto::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    })
}

/// One audit record as a JSON line.
pub fn record_json(r: &pb::AuditRecord) -> Value {
    json!({
        "seq": r.seq,
        "at": timestamp(r.at.as_ref()),
        "actor_kind": r.actor_kind,
        "actor": r.actor,
        "role": r.role,
        "on_behalf_of": r.on_behalf_of,
        "action": r.action,
        "object_type": r.object_type,
        "object_id": r.object_id,
        "consent_id": r.consent_id,
        "peer_org": r.peer_org,
        "result": r.result,
        "prev_hash": hex(&r.prev_hash),
        "hash": hex(&r.hash),
    })
}

pub async fn audit(
    admin: &mut AdminClient,
    command: AuditCommand,
    output: Option<Output>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let json_out = output == Some(Output::Json);
    match command {
        AuditCommand::Verify { local_only } => {
            let r = admin.verify_audit(local_only).await.map_err(status_line)?;
            if json_out {
                let v = json!({
                    "ok": r.ok,
                    "records": r.records,
                    "head_sha256": hex(&r.head_sha256),
                    "checkpoints": r.checkpoints,
                    "witnesses": r.witnesses,
                    "peers": r.peers.iter().map(|p| json!({
                        "org_id": p.org_id, "held": p.held, "agreeing": p.agreeing, "error": p.error,
                    })).collect::<Vec<_>>(),
                    "failures": r.failures.iter().map(|f| json!({"seq": f.seq, "reason": f.reason})).collect::<Vec<_>>(),
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "records      {}\nhead         {}\ncheckpoints  {} signed, {} countersignatures held",
                    r.records,
                    hex(&r.head_sha256),
                    r.checkpoints,
                    r.witnesses
                )?;
                for p in &r.peers {
                    if p.error.is_empty() {
                        writeln!(
                            out,
                            "witness      {}: holds {} checkpoint(s), {} agree",
                            p.org_id, p.held, p.agreeing
                        )?;
                    } else {
                        writeln!(out, "witness      {}: not reached ({})", p.org_id, p.error)?;
                    }
                }
                for f in &r.failures {
                    writeln!(out, "FAIL         record {}: {}", f.seq, f.reason)?;
                }
                if r.ok {
                    writeln!(out, "the audit trail verifies")?;
                }
            }
            if let Some(first) = r.failures.first() {
                anyhow::bail!(
                    "the audit trail does not verify: record {}: {}",
                    first.seq,
                    first.reason
                );
            }
        }
        AuditCommand::Export {
            since,
            until,
            actor,
            action,
            object_id,
        } => {
            // JSON lines unless a table is asked for.
            let as_table = output == Some(Output::Table);
            let mut rows: Vec<Vec<String>> = Vec::new();
            let mut token = String::new();
            loop {
                let page = admin
                    .export_audit(pb::ListAuditRecordsRequest {
                        since: ts(since),
                        until: ts(until),
                        actor: actor.clone().unwrap_or_default(),
                        action: action.clone().unwrap_or_default(),
                        object_id: object_id.clone().unwrap_or_default(),
                        page_size: 1000,
                        page_token: token.clone(),
                    })
                    .await
                    .map_err(status_line)?;
                for r in &page.records {
                    if as_table {
                        let dash = |s: &str| {
                            if s.is_empty() {
                                "-".to_owned()
                            } else {
                                s.to_owned()
                            }
                        };
                        rows.push(vec![
                            r.seq.to_string(),
                            ts_cell(r.at.as_ref()),
                            format!("{}:{}", r.actor_kind, dash(&r.actor)),
                            r.action.clone(),
                            format!("{} {}", r.object_type, dash(&r.object_id)),
                            dash(&r.peer_org),
                            r.result.clone(),
                        ]);
                    } else {
                        writeln!(out, "{}", record_json(r))?;
                    }
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            if as_table {
                write!(
                    out,
                    "{}",
                    table(
                        &["SEQ", "AT", "ACTOR", "ACTION", "OBJECT", "PEER", "RESULT"],
                        &rows
                    )
                )?;
            }
        }
        AuditCommand::Subject { local_ref, format } => {
            let json = admin
                .subject_access(&local_ref)
                .await
                .map_err(status_line)?;
            match format {
                SubjectFormat::Json => writeln!(out, "{json}")?,
                SubjectFormat::Markdown => {
                    let doc: Value = serde_json::from_str(&json).map_err(|e| {
                        anyhow::anyhow!("the node sent a document that is not JSON: {e}")
                    })?;
                    write!(out, "{}", crate::report::subject_markdown(&doc))?;
                }
            }
        }
        AuditCommand::Checkpoint => {
            let r = admin.create_checkpoint().await.map_err(status_line)?;
            if json_out {
                writeln!(
                    out,
                    "{}",
                    json!({"seq": r.seq, "head_sha256": hex(&r.head_sha256), "sent_to": r.sent_to})
                )?;
            } else {
                writeln!(
                    out,
                    "checkpoint at record {} ({}), sent to {} peer(s)",
                    r.seq,
                    hex(&r.head_sha256),
                    r.sent_to
                )?;
            }
        }
    }
    Ok(())
}

/// The file format of an exported receipt: one JSON object per line.
fn receipt_json(r: &pb::ExportedReceipt) -> Value {
    let mut v = json!({
        "issued_by": r.issued_by,
        "payload": B64.encode(&r.payload),
        "signature": B64.encode(&r.signature),
    });
    // A receipt signed in a batch: its inclusion proof, an encoded
    // exitnet.v1.BatchProof.
    if let Some(b) = &r.batch {
        v["batch"] = json!(B64.encode(b.encode_to_vec()));
    }
    v
}

fn parse_receipt(line: &str) -> anyhow::Result<pb::ExportedReceipt> {
    let v: Value = serde_json::from_str(line)?;
    let field = |name: &str| -> anyhow::Result<String> {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("`{name}` is missing"))
    };
    Ok(pb::ExportedReceipt {
        issued_by: field("issued_by")?,
        payload: B64.decode(field("payload")?)?,
        signature: B64.decode(field("signature")?)?,
        batch: match v.get("batch") {
            None | Some(Value::Null) => None,
            Some(_) => Some(pb::BatchProof::decode(
                B64.decode(field("batch")?)?.as_slice(),
            )?),
        },
    })
}

pub async fn receipt(
    admin: &mut AdminClient,
    command: ReceiptCommand,
    json_out: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        ReceiptCommand::Export { referral_id } => {
            let receipts = admin.receipts(&referral_id).await.map_err(status_line)?;
            for x in &receipts {
                writeln!(out, "{}", receipt_json(x))?;
            }
        }
        ReceiptCommand::Verify { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            let mut bad = 0;
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let receipt = parse_receipt(line)
                    .map_err(|e| anyhow::anyhow!("{} line {}: {e}", file.display(), i + 1))?;
                let r = admin.verify_receipt(receipt).await.map_err(status_line)?;
                if !r.valid {
                    bad += 1;
                }
                if json_out {
                    writeln!(
                        out,
                        "{}",
                        json!({
                            "valid": r.valid, "reason": r.reason, "kind": r.kind,
                            "message_id": r.message_id, "referral_id": r.referral_id,
                            "sender_org": r.sender_org, "receiver_org": r.receiver_org,
                            "at": timestamp(r.at.as_ref()), "key_fingerprint": r.key_fingerprint,
                            "purge_outcome": r.purge_outcome,
                        })
                    )?;
                } else if r.valid {
                    // What a purge receipt says was done, in the issuer's signed words.
                    let said = match r.purge_outcome.as_str() {
                        "purged" => " (the issuer purged the referral)",
                        "nothing_held" => " (the issuer held nothing of the referral)",
                        _ => "",
                    };
                    writeln!(
                        out,
                        "VALID  {} receipt{said} by {} for message {} of referral {} (from {}), signed {} with key {}",
                        r.kind.trim_start_matches("RECEIPT_KIND_").to_lowercase(),
                        r.receiver_org,
                        r.message_id,
                        r.referral_id,
                        r.sender_org,
                        timestamp(r.at.as_ref()).as_str().unwrap_or("-"),
                        r.key_fingerprint
                    )?;
                } else {
                    writeln!(out, "INVALID line {}: {}", i + 1, r.reason)?;
                }
            }
            if bad > 0 {
                anyhow::bail!("{bad} receipt(s) did not verify");
            }
        }
    }
    Ok(())
}
