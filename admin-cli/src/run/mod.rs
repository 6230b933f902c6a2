//! Carries out a parsed command against the node's admin socket.

use crate::client;
use crate::codes::to_pb;
use crate::opts::{
    ApiCommand, ApiTarget, AuditCommand, Command, IdentityCommand, Opts, Output, PeerCommand,
    ReceiptCommand, SecurityCommand,
};
use crate::output::{self, fields, peer_json, short_fp, table, timestamp, ts_cell};
use exitnet_proto::pb;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

mod peers;

use peers::*;

/// The longest an invitation may live (the node's limit too).
pub const MAX_INVITATION_SECS: u64 = 30 * 86400;

/// Turns a gRPC status into one line for the administrator.
pub(crate) fn status_line(s: tonic::Status) -> anyhow::Error {
    if s.code() == tonic::Code::Unavailable && s.message().is_empty() {
        return anyhow::anyhow!("the node did not answer (Unavailable)");
    }
    anyhow::anyhow!("{} ({:?})", s.message(), s.code())
}

/// A refusal about the peer `org`, naming it as the user typed it.
fn peer_status(org: &str) -> impl Fn(tonic::Status) -> anyhow::Error {
    let org = org.to_owned();
    move |s| match s.code() {
        tonic::Code::NotFound => {
            anyhow::anyhow!("no peer {org} (`exitnetctl peer list` shows them)")
        }
        tonic::Code::InvalidArgument if s.message().starts_with("org_id") => anyhow::anyhow!(
            "no peer {org}: not an organisation ID (3 to 63 characters of a-z, 0-9 and '-')"
        ),
        _ => status_line(s),
    }
}

/// Whether an error is a closed standard output (`exitnetctl … | head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Refuses `-o table` for a command that writes only a machine format.
fn refuse_table(output: Option<Output>, what: &str) -> anyhow::Result<()> {
    if output == Some(Output::Table) {
        anyhow::bail!("-o table: {what}");
    }
    Ok(())
}

/// Runs one command, writing its result to `out`.
pub async fn run(opts: Opts, out: &mut impl Write) -> anyhow::Result<()> {
    let json_out = opts.output == Some(Output::Json);
    let wait = Duration::from_secs(opts.wait);
    match opts.command {
        Command::Completions { shell } => {
            if opts.output == Some(Output::Json) {
                anyhow::bail!("-o json: completions are shell code, not JSON");
            }
            use clap::CommandFactory;
            let mut cmd = Opts::command();
            // Generated into memory first: the generator panics on a write error.
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "exitnetctl", &mut buf);
            out.write_all(&buf)?;
            return Ok(());
        }
        Command::Login { issuer, client_id } => {
            let path = crate::login::login(&issuer, &client_id).await?;
            eprintln!("signed in; tokens kept in {}", path.display());
            return Ok(());
        }
        Command::Logout => {
            let removed = crate::login::logout()?;
            eprintln!(
                "{}",
                if removed {
                    "signed out"
                } else {
                    "was not signed in"
                }
            );
            return Ok(());
        }
        Command::Api { target, command } => {
            return api_call(&target, command, json_out, wait, out).await;
        }
        Command::Consent { target, command } => {
            return crate::cases::consent(target, command, json_out, wait, out).await;
        }
        Command::Referral { target, command } => {
            return crate::cases::referral(target, command, json_out, wait, out).await;
        }
        Command::Audit {
            command: AuditCommand::Subject { .. },
        } => refuse_table(
            opts.output,
            "audit subject writes JSON or, with --format markdown, a Markdown report",
        )?,
        Command::Receipt {
            command: ReceiptCommand::Export { .. },
        } => refuse_table(
            opts.output,
            "receipt export writes the signed receipts as JSON lines, the file `receipt verify` reads",
        )?,
        Command::Peer {
            command: PeerCommand::Invite { expires, .. },
        } if expires > MAX_INVITATION_SECS => {
            anyhow::bail!(
                "--expires: at most 30d (an invitation code lives at most 30 days), not {}",
                human_secs(expires)
            );
        }
        _ => {}
    }
    let mut admin = client::connect(&opts.socket, wait).await?;
    match opts.command {
        Command::Completions { .. }
        | Command::Login { .. }
        | Command::Logout
        | Command::Api { .. }
        | Command::Consent { .. }
        | Command::Referral { .. } => {}
        Command::DevToken {
            role,
            subject,
            team,
        } => {
            let r = admin
                .mint_dev_token(&subject, &role, &team)
                .await
                .map_err(status_line)?;
            if json_out {
                writeln!(
                    out,
                    "{}",
                    json!({"access_token": r.access_token, "expires_at": timestamp(r.expires_at.as_ref())})
                )?;
            } else {
                // The token alone, so that TOKEN=$(exitnetctl dev-token …) works.
                writeln!(out, "{}", r.access_token)?;
            }
        }
        Command::Identity {
            command: IdentityCommand::Show,
        } => {
            let r = admin.identity().await.map_err(status_line)?;
            let p = r.profile.clone().unwrap_or_default();
            if json_out {
                let mut v = output::profile_json(&p);
                if let Value::Object(m) = &mut v {
                    m.insert("key_fingerprint".into(), json!(r.key_fingerprint));
                    m.insert("endpoint".into(), json!(r.endpoint));
                    m.insert(
                        "keys".into(),
                        json!(
                            r.keys
                                .iter()
                                .map(|k| json!({
                                    "fingerprint": k.fingerprint,
                                    "created_at": timestamp(k.created_at.as_ref()),
                                    "valid_until": timestamp(k.valid_until.as_ref()),
                                }))
                                .collect::<Vec<_>>()
                        ),
                    );
                }
                writeln!(out, "{v}")?;
            } else {
                write!(
                    out,
                    "{}",
                    fields(&[
                        ("organisation", p.org_id.clone()),
                        ("name", p.name.clone()),
                        ("sector", output::sector(p.sector)),
                        ("endpoint", r.endpoint.clone()),
                        ("fingerprint", r.key_fingerprint.clone()),
                    ])
                )?;
                for k in r.keys.iter().skip(1) {
                    writeln!(
                        out,
                        "old key      {} accepted until {}",
                        k.fingerprint,
                        ts_cell(k.valid_until.as_ref())
                    )?;
                }
            }
        }
        Command::Identity {
            command: IdentityCommand::RotateMasterKey,
        } => {
            let r = admin.rotate_master_key().await.map_err(status_line)?;
            let held: Vec<_> = r
                .generations
                .iter()
                .map(|g| json!({"generation": g.number, "created_at": timestamp(g.created_at.as_ref())}))
                .collect();
            if json_out {
                writeln!(
                    out,
                    "{}",
                    json!({"generation": r.generation, "rewrapped": r.rewrapped, "generations": held})
                )?;
            } else {
                writeln!(
                    out,
                    "master key generation {} seals from now on; {} data key(s) and queued payload(s) rewrapped
                     generations held: {}",
                    r.generation,
                    r.rewrapped,
                    r.generations
                        .iter()
                        .map(|g| g.number.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
            }
        }
        Command::Identity {
            command: IdentityCommand::Rotate,
        } => {
            let r = admin.rotate_identity().await.map_err(status_line)?;
            let until = timestamp(r.old_key_valid_until.as_ref());
            if json_out {
                writeln!(
                    out,
                    "{}",
                    json!({
                        "new_fingerprint": r.new_fingerprint,
                        "old_fingerprint": r.old_fingerprint,
                        "old_key_valid_until": until,
                        "peers_notified": r.peers_notified,
                    })
                )?;
            } else {
                let until = until.as_str().unwrap_or("-").to_owned();
                writeln!(
                    out,
                    "new key {}\nold key {} stays valid until {until}\nannouncement queued for {} peer(s)",
                    r.new_fingerprint, r.old_fingerprint, r.peers_notified
                )?;
                writeln!(
                    out,
                    "\nThe verification code of every peering changes with the key (it is derived\n\
                     from both keys): `exitnetctl peer list` shows the new ones, the same on both\n\
                     sides once a peer has the announcement. Peers see the new fingerprint in their\n\
                     `peer show`, and accept the old key until {until}. A pending peering does not\n\
                     get the announcement: invite that organisation again."
                )?;
            }
        }
        Command::Peer { command } => peer(&mut admin, command, json_out, out).await?,
        Command::Audit { command } => {
            crate::audit::audit(&mut admin, command, opts.output, out).await?
        }
        Command::Receipt { command } => {
            crate::audit::receipt(&mut admin, command, json_out, out).await?
        }
        Command::Report { command } => {
            crate::report::report(&mut admin, command, json_out, out).await?
        }
        Command::Security {
            command: SecurityCommand::Events { limit },
        } => {
            let events = admin.security_events(limit).await.map_err(status_line)?;
            if json_out {
                let v: Vec<Value> = events
                    .iter()
                    .map(|e| {
                        json!({
                            "at": timestamp(e.at.as_ref()),
                            "surface": e.surface,
                            "reason": e.reason,
                            "key_fingerprint": e.key_fingerprint,
                            "org_id": e.org_id,
                            "remote_addr": e.remote_addr,
                            "method": e.method,
                            "count": e.count.max(1),
                        })
                    })
                    .collect();
                writeln!(out, "{}", Value::Array(v))?;
            } else {
                let dash = |s: &str| {
                    if s.is_empty() {
                        "-".to_owned()
                    } else {
                        s.to_owned()
                    }
                };
                let rows: Vec<Vec<String>> = events
                    .iter()
                    .map(|e| {
                        vec![
                            ts_cell(e.at.as_ref()),
                            e.surface.clone(),
                            e.reason.clone(),
                            dash(&e.org_id),
                            dash(&short_fp(&e.key_fingerprint)),
                            dash(&e.remote_addr),
                            dash(&e.method),
                            e.count.max(1).to_string(),
                        ]
                    })
                    .collect();
                write!(
                    out,
                    "{}",
                    table(
                        &[
                            "AT", "SURFACE", "REASON", "ORG", "KEY", "FROM", "METHOD", "COUNT"
                        ],
                        &rows
                    )
                )?;
            }
        }
    }
    Ok(())
}

/// `90d` for 7776000.
fn human_secs(s: u64) -> String {
    for (unit, n) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if s >= n && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// Asks on the terminal; `false` unless the answer is yes.
fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "{question} Standard input is not a terminal, so nobody can answer: add --yes to confirm"
        );
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// What a revoke left pending: withdrawals still on their way.
pub fn pending_purges_line(org: &str, pending: u32) -> String {
    if pending == 0 {
        format!("No purge is pending at {org}.")
    } else {
        format!(
            "{pending} purge(s) pending at {org}: their withdrawals are still delivered until {org}'s purge receipts come\n\
             (`exitnetctl report purges`), or until `exitnetctl peer abandon-purges {org}` gives them up."
        )
    }
}

/// What a revocation does to what is under way with the peer.
pub fn revoke_consequences(org: &str, queued: u32) -> String {
    format!(
        "Revoking ends this peering with {org}; every call in both directions is refused from now on\n\
         (it cannot be resumed: only a new invitation and join make a new peering, see below).\n\
         Referrals in flight with {org}:\n\
         - {queued} message(s) still queued for {org} are not delivered: referral offers not yet\n\
           delivered fail as undeliverable after federation.max_delivery_age_secs; status changes\n\
           wait until the two organisations peer again.\n\
         - Withdrawals still go: {org} keeps what it received until a withdrawal purges it, and\n\
           withdrawals (only they) are delivered while its key is pinned, until its purge receipts\n\
           come or you give up (`exitnetctl peer abandon-purges {org}`).\n\
         - What {org} sent you stays here; its status changes no longer arrive.\n\
         To peer again later: `exitnetctl peer invite` here and `exitnetctl peer join CODE` there\n\
         (or the other way round); the new peering replaces the revoked one."
    )
}

struct PolicyChange {
    org: String,
    need_areas: Option<Vec<String>>,
    field_names: Option<Vec<String>>,
    purposes: Option<Vec<String>>,
    retention_days: Option<u32>,
    allow_narrative: bool,
    deny_narrative: bool,
}

async fn set(
    admin: &mut client::AdminClient,
    org: &str,
    action: pb::PeerAction,
) -> anyhow::Result<Option<pb::PeerView>> {
    Ok(admin
        .set_peer_state(org, action)
        .await
        .map_err(peer_status(org))?
        .peer)
}

async fn api_call(
    target: &ApiTarget,
    command: ApiCommand,
    json_out: bool,
    wait: Duration,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (channel, auth) = crate::cases::connect(target, wait).await?;
    match command {
        ApiCommand::Info => {
            let mut c = pb::node_service_client::NodeServiceClient::with_interceptor(channel, auth);
            let r = c
                .get_node_info(pb::GetNodeInfoRequest {})
                .await
                .map_err(status_line)?
                .into_inner();
            let p = r.profile.unwrap_or_default();
            if json_out {
                let mut v = output::profile_json(&p);
                if let Value::Object(m) = &mut v {
                    m.insert("protocol_version".into(), json!(r.protocol_version));
                    m.insert("key_fingerprint".into(), json!(r.key_fingerprint));
                    m.insert("software_version".into(), json!(r.software_version));
                }
                writeln!(out, "{v}")?;
            } else {
                write!(
                    out,
                    "{}",
                    fields(&[
                        ("organisation", p.org_id.clone()),
                        ("name", p.name.clone()),
                        ("sector", output::sector(p.sector)),
                        ("protocol", r.protocol_version.to_string()),
                        ("fingerprint", r.key_fingerprint.clone()),
                        ("software", r.software_version.clone()),
                    ])
                )?;
            }
        }
        ApiCommand::Peers { need_area, service } => {
            let need_area = match need_area {
                Some(n) => to_pb(
                    "--need-area",
                    "NEED_AREA_",
                    &n,
                    pb::NeedArea::from_str_name,
                    |e| e as i32,
                )?,
                None => 0,
            };
            let service = match service {
                Some(s) => to_pb(
                    "--service",
                    "SERVICE_",
                    &s,
                    pb::Service::from_str_name,
                    |e| e as i32,
                )?,
                None => 0,
            };
            let mut c = pb::directory_service_client::DirectoryServiceClient::with_interceptor(
                channel, auth,
            );
            let r = c
                .list_peers(pb::ListPeersRequest {
                    need_area,
                    service,
                    accepting_only: false,
                })
                .await
                .map_err(status_line)?
                .into_inner();
            if json_out {
                writeln!(
                    out,
                    "{}",
                    Value::Array(r.peers.iter().map(output::profile_json).collect())
                )?;
            } else {
                let rows: Vec<Vec<String>> = r
                    .peers
                    .iter()
                    .map(|p| {
                        vec![
                            p.org_id.clone(),
                            p.name.clone(),
                            output::sector(p.sector),
                            output::list_cell(&output::enum_names(
                                &p.services,
                                |e: pb::Service| e.as_str_name(),
                                "SERVICE_",
                            )),
                            if p.accepting_referrals { "yes" } else { "no" }.into(),
                        ]
                    })
                    .collect();
                write!(
                    out,
                    "{}",
                    table(&["ORG", "NAME", "SECTOR", "SERVICES", "ACCEPTING"], &rows)
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back() {
        assert_eq!(human_secs(90 * 86400), "90d");
        assert_eq!(human_secs(7200), "2h");
        assert_eq!(human_secs(61), "61s");
    }

    #[test]
    fn a_missing_peer_is_named() {
        let e = peer_status("no-such-org")(tonic::Status::not_found("peer not found"));
        assert_eq!(
            e.to_string(),
            "no peer no-such-org (`exitnetctl peer list` shows them)"
        );
        let e = peer_status("No_Such")(tonic::Status::invalid_argument("org_id: must be …"));
        assert!(
            e.to_string()
                .starts_with("no peer No_Such: not an organisation ID")
        );
    }

    #[test]
    fn a_closed_pipe_is_recognised() {
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }

    #[test]
    fn revoking_says_what_becomes_of_referrals() {
        let t = revoke_consequences("prison-b", 3);
        assert!(t.contains("3 message(s)"));
        assert!(t.contains("undeliverable"));
        assert!(t.contains("peer join"));
        assert!(t.contains("abandon-purges prison-b"));
        assert!(pending_purges_line("prison-b", 2).starts_with("2 purge(s) pending at prison-b"));
    }
}
