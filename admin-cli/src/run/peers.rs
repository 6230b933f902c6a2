//! `exitnetctl peer …` and `exitnetctl policy …` against the admin socket.

use super::*;

pub(super) async fn peer(
    admin: &mut client::AdminClient,
    command: PeerCommand,
    json_out: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let view = match command {
        PeerCommand::Invite {
            expires,
            endpoint,
            note,
        } => {
            let r = admin
                .invite(expires, &endpoint.unwrap_or_default(), &note)
                .await
                .map_err(status_line)?;
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
                    ts_cell(r.expires_at.as_ref())
                );
            }
            return Ok(());
        }
        PeerCommand::List => {
            let peers = admin.peers().await.map_err(status_line)?;
            if json_out {
                writeln!(
                    out,
                    "{}",
                    Value::Array(peers.iter().map(peer_json).collect())
                )?;
            } else {
                let rows: Vec<Vec<String>> = peers
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
                            ts_cell(v.last_seen_at.as_ref()),
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
            Some(admin.join(&code).await.map_err(status_line)?)
        }
        PeerCommand::Show { org } => Some(admin.peer(&org).await.map_err(peer_status(&org))?),
        PeerCommand::Approve { org } => set(admin, &org, pb::PeerAction::Approve).await?,
        PeerCommand::Reject { org } => set(admin, &org, pb::PeerAction::Reject).await?,
        PeerCommand::Suspend { org } => set(admin, &org, pb::PeerAction::Suspend).await?,
        PeerCommand::Resume { org } => set(admin, &org, pb::PeerAction::Resume).await?,
        PeerCommand::Policy {
            org,
            need_areas,
            fields: field_names,
            purposes,
            retention_days,
            allow_narrative,
            deny_narrative,
        } => {
            return policy(
                admin,
                PolicyChange {
                    org,
                    need_areas,
                    field_names,
                    purposes,
                    retention_days,
                    allow_narrative,
                    deny_narrative,
                },
                json_out,
                out,
            )
            .await;
        }
        PeerCommand::Revoke { org, yes } => {
            let current = admin.peer(&org).await.map_err(peer_status(&org))?;
            let consequences = revoke_consequences(&org, current.pending_notices);
            if !yes {
                eprintln!("{consequences}");
                if !confirm(&format!("Revoke the peering with {org}?"))? {
                    anyhow::bail!("not revoked: the peering with {org} is unchanged");
                }
            }
            let resp = admin
                .set_peer_state(&org, pb::PeerAction::Revoke)
                .await
                .map_err(peer_status(&org))?;
            if yes {
                eprintln!("{consequences}");
            }
            eprintln!("{}", pending_purges_line(&org, resp.pending_purges));
            resp.peer
        }
        PeerCommand::AbandonPurges { org, yes } => {
            if !yes
                && !confirm(&format!(
                    "Give up the purges pending at {org}? Its withdrawals will no longer be delivered."
                ))?
            {
                anyhow::bail!("nothing given up: withdrawals to {org} are still delivered");
            }
            let r = admin
                .abandon_purges(&org)
                .await
                .map_err(peer_status(&org))?;
            if json_out {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({
                        "org_id": org,
                        "abandoned": r.abandoned,
                        "withdrawals_dropped": r.withdrawals_dropped,
                    })
                )?;
            } else {
                writeln!(
                    out,
                    "gave up {} purge(s) pending at {org}; {} queued withdrawal(s) will not be delivered (recorded in the audit trail)",
                    r.abandoned, r.withdrawals_dropped
                )?;
            }
            return Ok(());
        }
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
                ("created at", ts_cell(v.created_at.as_ref())),
                ("updated at", ts_cell(v.updated_at.as_ref())),
                ("last seen", ts_cell(v.last_seen_at.as_ref())),
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

pub(super) async fn policy(
    admin: &mut client::AdminClient,
    c: PolicyChange,
    json_out: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let org = c.org;
    let current = admin.peer_policy(&org).await.map_err(peer_status(&org))?;
    let mut p = current.policy.unwrap_or_default();
    let before = p.clone();
    let all = |flag: &str,
               prefix: &str,
               names: &[String],
               f: &dyn Fn(&str) -> Option<i32>|
     -> anyhow::Result<Vec<i32>> {
        names
            .iter()
            .map(|n| to_pb(flag, prefix, n, f, |x| x))
            .collect()
    };
    if let Some(n) = c.need_areas {
        p.need_areas = all("--need-areas", "NEED_AREA_", &n, &|s| {
            pb::NeedArea::from_str_name(s).map(|e| e as i32)
        })?;
    }
    if let Some(f) = c.field_names {
        p.data_categories = all("--fields", "DATA_CATEGORY_", &f, &|s| {
            pb::DataCategory::from_str_name(s).map(|e| e as i32)
        })?;
    }
    if let Some(x) = c.purposes {
        p.purposes = all("--purposes", "PURPOSE_", &x, &|s| {
            pb::Purpose::from_str_name(s).map(|e| e as i32)
        })?;
    }
    if let Some(d) = c.retention_days {
        p.retention_days = d;
    }
    let narrative = pb::DataCategory::NeedsNarrative as i32;
    if c.allow_narrative && !p.data_categories.contains(&narrative) {
        p.data_categories.push(narrative);
    }
    if c.deny_narrative {
        p.data_categories.retain(|c| *c != narrative);
    }
    let (p, customised) = if p != before {
        let set = admin
            .set_peer_policy(&org, p)
            .await
            .map_err(peer_status(&org))?;
        (set, true)
    } else {
        (p, current.customised)
    };
    let na = output::enum_names(
        &p.need_areas,
        |e: pb::NeedArea| e.as_str_name(),
        "NEED_AREA_",
    );
    let dc = output::enum_names(
        &p.data_categories,
        |e: pb::DataCategory| e.as_str_name(),
        "DATA_CATEGORY_",
    );
    let pu = output::enum_names(&p.purposes, |e: pb::Purpose| e.as_str_name(), "PURPOSE_");
    if json_out {
        writeln!(
            out,
            "{}",
            json!({
                "org_id": org, "need_areas": na, "data_categories": dc, "purposes": pu,
                "retention_days": p.retention_days, "customised": customised,
            })
        )?;
    } else {
        write!(
            out,
            "{}",
            fields(&[
                ("peer", org),
                ("need areas", output::list_cell(&na)),
                ("data categories", output::list_cell(&dc)),
                ("purposes", output::list_cell(&pu)),
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
    Ok(())
}
