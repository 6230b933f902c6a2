//! Who sees what: a referral read, listed or watched, as the caller's
//! access allows, each read audited.

use super::*;

/// A referral the caller may see, with how much of it.
pub async fn get(state: &NodeState, p: &Principal, id: &str) -> Result<(ReferralRecord, View)> {
    id_check("referral_id", id)?;
    let r = state
        .store
        .get_referral(id)
        .await?
        .ok_or(Error::NotFound("referral"))?;
    let entry = || audit_entry(state, p, "referral.read", &r);
    let view = audit::guard(state, entry, read_access(p, &r)).await?;
    audit::record(state, &[entry()]).await;
    Ok((r, view))
}

/// The referral as the caller sees it right after acting on it. The action
/// has its audit record already; handing back its result is not another read.
pub async fn view_after_action(
    state: &NodeState,
    p: &Principal,
    r: &ReferralRecord,
) -> Result<pb::Referral> {
    let entry = || audit_entry(state, p, "referral.read", r);
    let v = audit::guard(state, entry, read_access(p, r)).await?;
    view(state, r, v).await
}

/// For a watcher: the referral if the caller may see it (a change to someone
/// else's referral is skipped silently, not recorded as a refusal).
pub async fn get_if_visible(
    state: &NodeState,
    p: &Principal,
    id: &str,
) -> Result<Option<(ReferralRecord, View)>> {
    let Some(r) = state.store.get_referral(id).await? else {
        return Ok(None);
    };
    let Ok(view) = read_access(p, &r) else {
        return Ok(None);
    };
    audit::record(state, &[audit_entry(state, p, "referral.watch", &r)]).await;
    Ok(Some((r, view)))
}

/// An audit record of `p` acting on `r`.
pub fn audit_entry(
    state: &NodeState,
    p: &Principal,
    action: &str,
    r: &ReferralRecord,
) -> AuditEntry {
    AuditEntry::caller(state.now_ms(), p, action, "referral", &r.referral_id)
        .consent(r.consent_id.as_deref())
        .with_peer(r.peer_org.as_str())
}

pub(super) fn read_access(p: &Principal, r: &ReferralRecord) -> Result<View> {
    if !r.outbound && content::closed_here(r.current_state()?) {
        // Declined or failed here: its content is for the case manager who
        // closed it and supervisors; the rest of the organisation (the
        // team, auditors) sees metadata only, until it is purged.
        return match p.role {
            Role::Supervisor => Ok(View::Full),
            Role::Auditor => Ok(View::MetadataOnly),
            Role::CaseManager | Role::System => {
                let me = access::acting_owner(p)?;
                if !r.owner.is_empty() && me == r.owner {
                    Ok(View::Full)
                } else {
                    access::read(p, &r.owner, r.team.as_deref()).map(|_| View::MetadataOnly)
                }
            }
        };
    }
    if !r.outbound && r.owner.is_empty() {
        // The intake queue: any case manager or supervisor of this organisation.
        return match p.role {
            Role::Auditor => Ok(View::MetadataOnly),
            _ => access::acting_owner(p).map(|_| View::Full),
        };
    }
    access::read(p, &r.owner, r.team.as_deref())
}

pub(super) fn write_access(p: &Principal, r: &ReferralRecord) -> Result<()> {
    if !r.outbound && r.owner.is_empty() {
        return match p.role {
            Role::Auditor => Err(Error::PermissionDenied(
                "auditors read; they do not change case objects".into(),
            )),
            _ => access::acting_owner(p).map(|_| ()),
        };
    }
    access::write(p, &r.owner, r.team.as_deref())
}

/// The wire view of a referral.
pub async fn view(state: &NodeState, r: &ReferralRecord, v: View) -> Result<pb::Referral> {
    let history = match v {
        View::Full => content::history(state, r).await?,
        View::MetadataOnly => state.store.referral_history(&r.referral_id).await?,
    };
    let summary = match v {
        View::Full => open_summary(state, r).await,
        View::MetadataOnly => None,
    };
    assemble(r, v, &history, summary)
}

/// The wire view from a referral's parts.
pub(super) fn assemble(
    r: &ReferralRecord,
    v: View,
    history: &[ReferralEvent],
    summary: Option<pb::CaseSummary>,
) -> Result<pb::Referral> {
    let summary = match v {
        View::Full => summary,
        View::MetadataOnly => None,
    };
    let history = history
        .iter()
        .map(|e| {
            let mut c = pb::StateChange::decode(e.detail.as_slice()).unwrap_or_default();
            c.by_org = e.by_org.clone();
            c.at = Some(to_timestamp(e.at_ms));
            c.actor = e.actor.clone();
            if v == View::MetadataOnly {
                c.text.clear();
                if let Some(o) = &mut c.outcome {
                    o.note.clear();
                }
            }
            c
        })
        .collect();
    let terms = pb::ConsentTerms::decode(r.terms.as_slice()).ok();
    Ok(pb::Referral {
        referral_id: r.referral_id.clone(),
        direction: if r.outbound {
            pb::Direction::Outbound
        } else {
            pb::Direction::Inbound
        } as i32,
        peer_org: r.peer_org.to_string(),
        consent_id: r.consent_id.clone().unwrap_or_default(),
        subject_pseudonym: if r.outbound || v == View::MetadataOnly {
            String::new()
        } else {
            r.pseudonym.clone()
        },
        need_areas: split(&r.need_areas, NeedArea::parse)
            .into_iter()
            .map(|x| x.to_pb())
            .collect(),
        services: split(&r.services, Service::parse)
            .into_iter()
            .map(|x| x.to_pb())
            .collect(),
        urgency: Urgency::parse(&r.urgency).map(Urgency::to_pb).unwrap_or(0),
        summary,
        state: r.current_state()?.to_pb(),
        history,
        purge_status: match r.purge_status.as_str() {
            "pending" => pb::PurgeStatus::Pending,
            "done" => pb::PurgeStatus::Done,
            "abandoned" => pb::PurgeStatus::Abandoned,
            _ => pb::PurgeStatus::None,
        } as i32,
        purged_at: r.purged_at_ms.map(to_timestamp),
        terms,
        owner: r.owner.clone(),
        created_at: Some(to_timestamp(r.created_at_ms)),
        updated_at: Some(to_timestamp(r.updated_at_ms)),
    })
}

pub struct Page {
    pub referrals: Vec<(ReferralRecord, View)>,
    pub next_page_token: String,
}

pub async fn list(
    state: &NodeState,
    p: &Principal,
    filter: ReferralFilter,
    page_size: u32,
    page_token: &str,
) -> Result<Page> {
    let (scope, _) = access::list(p)?;
    let size = match page_size {
        0 => 50,
        n if n <= 500 => n,
        _ => return Err(FieldError::new("page_size", "at most 500").into()),
    };
    let cursor = if page_token.is_empty() {
        None
    } else {
        let bad = || {
            Error::from(FieldError::new(
                "page_token",
                "not a token from a previous response",
            ))
        };
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(page_token).map_err(|_| bad())?)
            .map_err(|_| bad())?;
        let (at, id) = raw.split_once(':').ok_or_else(bad)?;
        Some((at.parse().map_err(|_| bad())?, id.to_owned()))
    };
    let mut rows = state
        .store
        .list_referrals(&scope, &filter, cursor.as_ref(), i64::from(size) + 1)
        .await?;
    let next_page_token = if rows.len() > size as usize {
        rows.truncate(size as usize);
        rows.last()
            .map(|r| URL_SAFE_NO_PAD.encode(format!("{}:{}", r.created_at_ms, r.referral_id)))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let referrals: Vec<(ReferralRecord, View)> = rows
        .into_iter()
        .filter_map(|r| read_access(p, &r).ok().map(|v| (r, v)))
        .collect();
    let reads: Vec<AuditEntry> = referrals
        .iter()
        .map(|(r, _)| audit_entry(state, p, "referral.list", r))
        .collect();
    audit::record(state, &reads).await;
    Ok(Page {
        referrals,
        next_page_token,
    })
}
