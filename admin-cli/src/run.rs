//! Carries out a parsed command against the node's admin socket.

use crate::client;
use crate::opts::{
    ApiCommand, Command, IdentityCommand, Opts, Output, PeerCommand, SecurityCommand,
};
use crate::output::{self, fields, peer_json, short_fp, table, timestamp};
use exitnet_proto::pb;
use serde_json::{Value, json};
use std::io::Write;

/// Turns a gRPC status into one line for the administrator.
pub(crate) fn status_line(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", s.message(), s.code())
}

fn ts_text(v: Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| "-".into())
}

/// Runs one command, writing its result to `out`.
pub async fn run(opts: Opts, out: &mut impl Write) -> anyhow::Result<()> {
    let json_out = opts.output == Output::Json;
    if let Command::Completions { shell } = opts.command {
        use clap::CommandFactory;
        let mut cmd = Opts::command();
        clap_complete::generate(shell, &mut cmd, "exitnetctl", out);
        return Ok(());
    }
    match opts.command {
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
        Command::Api {
            api,
            token,
            command,
        } => return api_call(&api, token, command, json_out, out).await,
        Command::Consent { target, command } => {
            return crate::cases::consent(target, command, json_out, out).await;
        }
        Command::Referral { target, command } => {
            return crate::cases::referral(target, command, json_out, out).await;
        }
        _ => {}
    }
    let mut admin = client::connect(&opts.socket).await?;
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
                .mint_dev_token(pb::MintDevTokenRequest {
                    subject,
                    role,
                    team,
                })
                .await
                .map_err(status_line)?
                .into_inner();
            if json_out {
                writeln!(
                    out,
                    "{}",
                    json!({"access_token": r.access_token, "expires_at": timestamp(r.expires_at.as_ref())})
                )?;
            } else {
                writeln!(out, "{}", r.access_token)?;
            }
        }
        Command::Identity {
            command: IdentityCommand::Show,
        } => {
            let r = admin
                .get_identity(pb::GetIdentityRequest {})
                .await
                .map_err(status_line)?
                .into_inner();
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
                        ts_text(timestamp(k.valid_until.as_ref()))
                    )?;
                }
            }
        }
        Command::Identity {
            command: IdentityCommand::Rotate,
        } => {
            let r = admin
                .rotate_identity(pb::RotateIdentityRequest {})
                .await
                .map_err(status_line)?
                .into_inner();
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
                writeln!(
                    out,
                    "new key {}\nold key {} stays valid until {}\nannouncement queued for {} peer(s)",
                    r.new_fingerprint,
                    r.old_fingerprint,
                    ts_text(until),
                    r.peers_notified
                )?;
            }
        }
        Command::Peer { command } => peer(&mut admin, command, json_out, out).await?,
        Command::Audit { command } => {
            crate::audit::audit(&mut admin, command, json_out, out).await?
        }
        Command::Receipt { command } => {
            crate::audit::receipt(&mut admin, command, json_out, out).await?
        }
        Command::Security {
            command: SecurityCommand::Events { limit },
        } => {
            let r = admin
                .list_security_events(pb::ListSecurityEventsRequest { limit })
                .await
                .map_err(status_line)?
                .into_inner();
            if json_out {
                let v: Vec<Value> = r
                    .events
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
                        })
                    })
                    .collect();
                writeln!(out, "{}", Value::Array(v))?;
            } else {
                let rows: Vec<Vec<String>> = r
                    .events
                    .iter()
                    .map(|e| {
                        vec![
                            ts_text(timestamp(e.at.as_ref())),
                            e.surface.clone(),
                            e.reason.clone(),
                            if e.org_id.is_empty() {
                                "-".into()
                            } else {
                                e.org_id.clone()
                            },
                            if e.key_fingerprint.is_empty() {
                                "-".into()
                            } else {
                                short_fp(&e.key_fingerprint)
                            },
                            e.remote_addr.clone(),
                            e.method.clone(),
                        ]
                    })
                    .collect();
                write!(
                    out,
                    "{}",
                    table(
                        &["AT", "SURFACE", "REASON", "ORG", "KEY", "FROM", "METHOD"],
                        &rows
                    )
                )?;
            }
        }
    }
    Ok(())
}

async fn peer(
    admin: &mut client::AdminClient,
    command: PeerCommand,
    json_out: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let action = |org: String, action: pb::PeerAction| pb::SetPeerStateRequest {
        org_id: org,
        action: action as i32,
    };
    let view = match command {
        PeerCommand::Invite {
            expires,
            endpoint,
            note,
        } => {
            let r = admin
                .create_invitation(pb::CreateInvitationRequest {
                    expires_in_seconds: expires,
                    endpoint: endpoint.unwrap_or_default(),
                    note,
                })
                .await
                .map_err(status_line)?
                .into_inner();
            if json_out {
                writeln!(
                    out,
                    "{}",
                    json!({
                        "code": r.code,
                        "invitation_id": r.invitation_id,
                        "expires_at": timestamp(r.expires_at.as_ref()),
                    })
                )?;
            } else {
                // The code alone on stdout, so it can be piped or copied.
                writeln!(out, "{}", r.code)?;
                eprintln!(
                    "single use, expires {}; give it to the other administrator over a trusted channel",
                    ts_text(timestamp(r.expires_at.as_ref()))
                );
            }
            return Ok(());
        }
        PeerCommand::List => {
            let r = admin
                .list_peers(pb::AdminServiceListPeersRequest {})
                .await
                .map_err(status_line)?
                .into_inner();
            if json_out {
                writeln!(
                    out,
                    "{}",
                    Value::Array(r.peers.iter().map(peer_json).collect())
                )?;
            } else {
                let rows: Vec<Vec<String>> = r
                    .peers
                    .iter()
                    .map(|v| {
                        let p = v.profile.clone().unwrap_or_default();
                        let state = match output::awaiting(v.awaiting).as_str() {
                            "local" => format!("{} (your approval)", output::peer_state(v.state)),
                            "remote" => format!("{} (their approval)", output::peer_state(v.state)),
                            _ => output::peer_state(v.state),
                        };
                        vec![
                            p.org_id.clone(),
                            p.name.clone(),
                            output::sector(p.sector),
                            state,
                            if v.remote_state == 0 {
                                "-".into()
                            } else {
                                output::peer_state(v.remote_state)
                            },
                            v.verification_code.clone(),
                            ts_text(timestamp(v.last_seen_at.as_ref())),
                        ]
                    })
                    .collect();
                write!(
                    out,
                    "{}",
                    table(
                        &[
                            "ORG",
                            "NAME",
                            "SECTOR",
                            "STATE",
                            "THEIR VIEW",
                            "VERIFY",
                            "LAST SEEN"
                        ],
                        &rows
                    )
                )?;
            }
            return Ok(());
        }
        PeerCommand::Join { code } => {
            let code = if code == "-" {
                // From standard input, so the single-use secret stays out of `ps`.
                std::io::read_to_string(std::io::stdin())?.trim().to_owned()
            } else {
                code
            };
            admin
                .join_peer(pb::JoinPeerRequest { code })
                .await
                .map_err(status_line)?
                .into_inner()
                .peer
        }
        PeerCommand::Show { org } => {
            admin
                .get_peer(pb::GetPeerRequest { org_id: org })
                .await
                .map_err(status_line)?
                .into_inner()
                .peer
        }
        PeerCommand::Approve { org } => set(admin, action(org, pb::PeerAction::Approve)).await?,
        PeerCommand::Reject { org } => set(admin, action(org, pb::PeerAction::Reject)).await?,
        PeerCommand::Suspend { org } => set(admin, action(org, pb::PeerAction::Suspend)).await?,
        PeerCommand::Resume { org } => set(admin, action(org, pb::PeerAction::Resume)).await?,
        PeerCommand::Policy {
            org,
            need_areas,
            fields: field_names,
            purposes,
            retention_days,
            allow_narrative,
            deny_narrative,
        } => {
            let current = admin
                .get_peer_policy(pb::GetPeerPolicyRequest {
                    org_id: org.clone(),
                })
                .await
                .map_err(status_line)?
                .into_inner();
            let mut p = current.policy.unwrap_or_default();
            let before = p.clone();
            let parse_all = |names: &[String],
                             prefix: &str,
                             f: &dyn Fn(&str) -> Option<i32>|
             -> anyhow::Result<Vec<i32>> {
                names
                    .iter()
                    .map(|n| {
                        f(&format!("{prefix}{}", n.to_ascii_uppercase()))
                            .ok_or_else(|| anyhow::anyhow!("unknown value `{n}`"))
                    })
                    .collect()
            };
            if let Some(n) = need_areas {
                p.need_areas = parse_all(&n, "NEED_AREA_", &|s| {
                    pb::NeedArea::from_str_name(s).map(|e| e as i32)
                })?;
            }
            if let Some(f) = field_names {
                p.data_categories = parse_all(&f, "DATA_CATEGORY_", &|s| {
                    pb::DataCategory::from_str_name(s).map(|e| e as i32)
                })?;
            }
            if let Some(x) = purposes {
                p.purposes = parse_all(&x, "PURPOSE_", &|s| {
                    pb::Purpose::from_str_name(s).map(|e| e as i32)
                })?;
            }
            if let Some(d) = retention_days {
                p.retention_days = d;
            }
            let narrative = pb::DataCategory::NeedsNarrative as i32;
            if allow_narrative && !p.data_categories.contains(&narrative) {
                p.data_categories.push(narrative);
            }
            if deny_narrative {
                p.data_categories.retain(|c| *c != narrative);
            }
            let (p, customised) = if p != before {
                let set = admin
                    .set_peer_policy(pb::SetPeerPolicyRequest {
                        org_id: org.clone(),
                        policy: Some(p),
                    })
                    .await
                    .map_err(status_line)?
                    .into_inner();
                (set.policy.unwrap_or_default(), true)
            } else {
                (p, current.customised)
            };
            let names =
                |v: &[i32], f: &dyn Fn(i32) -> String| v.iter().map(|x| f(*x)).collect::<Vec<_>>();
            let na = names(&p.need_areas, &|v| {
                pb::NeedArea::try_from(v)
                    .map(|e| output::code_name(e.as_str_name(), "NEED_AREA_"))
                    .unwrap_or_default()
            });
            let dc = names(&p.data_categories, &|v| {
                pb::DataCategory::try_from(v)
                    .map(|e| output::code_name(e.as_str_name(), "DATA_CATEGORY_"))
                    .unwrap_or_default()
            });
            let pu = names(&p.purposes, &|v| {
                pb::Purpose::try_from(v)
                    .map(|e| output::code_name(e.as_str_name(), "PURPOSE_"))
                    .unwrap_or_default()
            });
            if json_out {
                writeln!(
                    out,
                    "{}",
                    json!({
                        "org_id": org, "need_areas": na, "fields": dc, "purposes": pu,
                        "retention_days": p.retention_days, "customised": customised,
                    })
                )?;
            } else {
                write!(
                    out,
                    "{}",
                    fields(&[
                        ("peer", org),
                        ("need areas", na.join(", ")),
                        ("fields", dc.join(", ")),
                        ("purposes", pu.join(", ")),
                        (
                            "retention",
                            if p.retention_days == 0 {
                                "until the consent ends".into()
                            } else {
                                format!("{} days after closing", p.retention_days)
                            }
                        ),
                        ("customised", customised.to_string()),
                    ])
                )?;
            }
            return Ok(());
        }
        PeerCommand::Revoke { org } => set(admin, action(org, pb::PeerAction::Revoke)).await?,
    };
    let v = view.ok_or_else(|| anyhow::anyhow!("the node answered without a peer"))?;
    if json_out {
        writeln!(out, "{}", peer_json(&v))?;
    } else {
        let p = v.profile.clone().unwrap_or_default();
        write!(
            out,
            "{}",
            fields(&[
                ("organisation", p.org_id.clone()),
                ("name", p.name.clone()),
                ("sector", output::sector(p.sector)),
                ("state", output::peer_state(v.state)),
                ("awaiting", output::awaiting(v.awaiting)),
                (
                    "their view",
                    if v.remote_state == 0 {
                        "-".into()
                    } else {
                        output::peer_state(v.remote_state)
                    }
                ),
                ("endpoint", v.endpoint.clone()),
                ("fingerprint", v.key_fingerprint.clone()),
                ("verification", v.verification_code.clone()),
                ("last seen", ts_text(timestamp(v.last_seen_at.as_ref()))),
                ("queued notices", v.pending_notices.to_string()),
            ])
        )?;
        if output::awaiting(v.awaiting) == "local" {
            writeln!(
                out,
                "\nRead the verification code to the other administrator; if it matches, run: exitnetctl peer approve {}",
                p.org_id
            )?;
        }
    }
    Ok(())
}

async fn set(
    admin: &mut client::AdminClient,
    req: pb::SetPeerStateRequest,
) -> anyhow::Result<Option<pb::PeerView>> {
    Ok(admin
        .set_peer_state(req)
        .await
        .map_err(status_line)?
        .into_inner()
        .peer)
}

/// Looks a code name up in a protobuf enum: `trauma_ptsd` → SERVICE_TRAUMA_PTSD.
fn code<E>(
    prefix: &str,
    name: &str,
    from_str: impl Fn(&str) -> Option<E>,
    to_i32: impl Fn(E) -> i32,
) -> anyhow::Result<i32> {
    from_str(&format!("{prefix}{}", name.to_ascii_uppercase()))
        .map(to_i32)
        .ok_or_else(|| anyhow::anyhow!("unknown value `{name}`"))
}

async fn api_call(
    api: &str,
    token: Option<String>,
    command: ApiCommand,
    json_out: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let token = match token {
        Some(t) => t,
        None => crate::login::access_token().await?,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{api}"))?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the client API at {api}: {e}"))?;
    let bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {token}")
        .parse()
        .map_err(|_| anyhow::anyhow!("the token is not valid header text"))?;
    let auth = move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    };
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
                Some(n) => code("NEED_AREA_", &n, pb::NeedArea::from_str_name, |e| e as i32)?,
                None => 0,
            };
            let service = match service {
                Some(s) => code("SERVICE_", &s, pb::Service::from_str_name, |e| e as i32)?,
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
                        let v = output::profile_json(p);
                        vec![
                            p.org_id.clone(),
                            p.name.clone(),
                            output::sector(p.sector),
                            v["services"].to_string(),
                        ]
                    })
                    .collect();
                write!(
                    out,
                    "{}",
                    table(&["ORG", "NAME", "SECTOR", "SERVICES"], &rows)
                )?;
            }
        }
    }
    Ok(())
}
