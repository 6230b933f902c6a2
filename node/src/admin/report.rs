//! The data protection officer's reports: what was shared with whom
//! (`exitnetctl report shared`) and where the purges stand (`exitnetctl
//! report purges`). Counts and codes only: never a summary or a client
//! reference.

use crate::domain::OrgId;
use crate::error::Result;
use crate::store::Store;
use crate::store::{ListScope, ReferralFilter, ReferralRecord};
use crate::wire::time::{from_timestamp, to_timestamp};
use exitnet_proto::pb;
use std::collections::BTreeMap;

const PAGE: i64 = 500;

/// `DATA_CATEGORY_AGE_BAND` → `age_band`.
fn code(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

/// Every outbound referral (to `peer`, if given) created in `[from, to)`,
/// newest first.
async fn sent(
    store: &dyn Store,
    peer: Option<&OrgId>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> Result<Vec<ReferralRecord>> {
    let filter = ReferralFilter {
        outbound: Some(true),
        state: None,
        peer_org: peer.map(|p| p.to_string()),
    };
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_referrals(&ListScope::All, &filter, cursor.as_ref(), PAGE)
            .await?;
        let n = page.len() as i64;
        cursor = page
            .last()
            .map(|r| (r.created_at_ms, r.referral_id.clone()));
        let mut older = false;
        for r in page {
            if from_ms.is_some_and(|f| r.created_at_ms < f) {
                older = true;
                break;
            }
            if to_ms.is_none_or(|t| r.created_at_ms < t) {
                all.push(r);
            }
        }
        if older || n < PAGE {
            break;
        }
    }
    Ok(all)
}

#[derive(Default)]
struct Tally {
    referrals: u32,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    data_categories: BTreeMap<String, u32>,
    purposes: BTreeMap<String, u32>,
    legal_bases: BTreeMap<String, u32>,
    need_areas: BTreeMap<String, u32>,
    purge_pending: u32,
    purged: u32,
}

fn counts(m: BTreeMap<String, u32>) -> Vec<pb::CodeCount> {
    m.into_iter()
        .map(|(code, referrals)| pb::CodeCount { code, referrals })
        .collect()
}

fn add_all(m: &mut BTreeMap<String, u32>, codes: impl IntoIterator<Item = String>) {
    let mut seen: Vec<String> = codes.into_iter().collect();
    seen.sort();
    seen.dedup();
    for c in seen {
        *m.entry(c).or_default() += 1;
    }
}

pub async fn shared(
    store: &dyn Store,
    req: pb::ReportSharedRequest,
) -> Result<pb::ReportSharedResponse> {
    let peer = if req.peer_org.is_empty() {
        None
    } else {
        Some(OrgId::parse("peer_org", &req.peer_org)?)
    };
    let from_ms = req.from.as_ref().map(from_timestamp);
    let to_ms = req.to.as_ref().map(from_timestamp);
    if let (Some(f), Some(t)) = (from_ms, to_ms)
        && f >= t
    {
        return Err(crate::error::FieldError::new("to", "must be after `from`").into());
    }
    let mut by_peer: BTreeMap<String, Tally> = BTreeMap::new();
    for r in sent(store, peer.as_ref(), from_ms, to_ms).await? {
        let t = by_peer.entry(r.peer_org.to_string()).or_default();
        t.referrals += 1;
        t.first_ms = Some(
            t.first_ms
                .map_or(r.created_at_ms, |x| x.min(r.created_at_ms)),
        );
        t.last_ms = Some(
            t.last_ms
                .map_or(r.created_at_ms, |x| x.max(r.created_at_ms)),
        );
        match r.purge_status.as_str() {
            "pending" => t.purge_pending += 1,
            "done" => t.purged += 1,
            _ => {}
        }
        add_all(
            &mut t.need_areas,
            r.need_areas.iter().map(|n| n.as_str().to_owned()),
        );
        let terms = crate::wire::consent::terms_from_stored(&r.terms)?;
        add_all(
            &mut t.data_categories,
            terms.data_categories.iter().filter_map(|v| {
                pb::DataCategory::try_from(*v)
                    .ok()
                    .map(|e| code(e.as_str_name(), "DATA_CATEGORY_"))
            }),
        );
        add_all(
            &mut t.purposes,
            terms.purposes.iter().filter_map(|v| {
                pb::Purpose::try_from(*v)
                    .ok()
                    .map(|e| code(e.as_str_name(), "PURPOSE_"))
            }),
        );
        let basis = terms.legal_basis.unwrap_or_default();
        let kind = pb::LegalBasisKind::try_from(basis.kind)
            .map(|e| code(e.as_str_name(), "LEGAL_BASIS_KIND_"))
            .unwrap_or_else(|_| "unspecified".into());
        let named = if basis.statute.is_empty() {
            kind
        } else {
            format!("{kind}: {}", basis.statute)
        };
        add_all(&mut t.legal_bases, [named]);
    }
    Ok(pb::ReportSharedResponse {
        peers: by_peer
            .into_iter()
            .map(|(peer_org, t)| pb::SharedWithPeer {
                peer_org,
                referrals: t.referrals,
                first_at: t.first_ms.map(to_timestamp),
                last_at: t.last_ms.map(to_timestamp),
                data_categories: counts(t.data_categories),
                purposes: counts(t.purposes),
                legal_bases: counts(t.legal_bases),
                need_areas: counts(t.need_areas),
                purge_pending: t.purge_pending,
                purged: t.purged,
            })
            .collect(),
    })
}

pub async fn purges(store: &dyn Store) -> Result<pb::ReportPurgesResponse> {
    let mut entries = Vec::new();
    for r in sent(store, None, None, None).await? {
        let status = match r.purge_status.as_str() {
            "pending" => pb::PurgeStatus::Pending,
            "done" => pb::PurgeStatus::Done,
            "abandoned" => pb::PurgeStatus::Abandoned,
            _ => continue,
        };
        // When and why it was withdrawn: the audit record of the withdrawal.
        let withdrawal = store
            .audit_for_objects(std::slice::from_ref(&r.referral_id))
            .await?
            .into_iter()
            .find(|a| a.entry.action.starts_with("referral.withdraw."));
        let (cause, at_ms) = match &withdrawal {
            Some(a) => (
                a.entry
                    .action
                    .trim_start_matches("referral.withdraw.")
                    .to_owned(),
                Some(a.entry.at_ms),
            ),
            None => ("unknown".to_owned(), None),
        };
        entries.push(pb::PurgeEntry {
            referral_id: r.referral_id.clone(),
            peer_org: r.peer_org.to_string(),
            cause,
            withdrawn_at: at_ms.map(to_timestamp),
            status: status as i32,
            purged_at: r.purged_at_ms.map(to_timestamp),
        });
    }
    // Pending first, the oldest withdrawal first; then done, the newest first.
    let key = |e: &pb::PurgeEntry| e.withdrawn_at.as_ref().map(from_timestamp).unwrap_or(0);
    entries.sort_by(|a, b| {
        let pa = a.status == pb::PurgeStatus::Pending as i32;
        let pb_ = b.status == pb::PurgeStatus::Pending as i32;
        pb_.cmp(&pa).then_with(|| {
            if pa {
                key(a).cmp(&key(b))
            } else {
                key(b).cmp(&key(a))
            }
        })
    });
    Ok(pb::ReportPurgesResponse { purges: entries })
}
