//! Who sees what: a referral read, listed or watched, as the caller's
//! access allows, each read audited.

use super::*;

impl Referrals {
    /// A referral the caller may see, with how much of it.
    pub async fn get(&self, p: &Principal, id: &str) -> Result<(ReferralRecord, View)> {
        id_check("referral_id", id)?;
        let r = self
            .store
            .get_referral(id)
            .await?
            .ok_or(Error::NotFound("referral"))?;
        let entry = || self.audit_entry(p, "referral.read", &r);
        let view = self.audit.guard(entry, read_access(p, &r)).await?;
        self.audit.record(&[entry()]).await;
        Ok((r, view))
    }

    /// The referral as the caller sees it right after acting on it. The action
    /// has its audit record already; handing back its result is not another read.
    pub async fn view_after_action(
        &self,
        p: &Principal,
        r: &ReferralRecord,
    ) -> Result<ReferralView> {
        let entry = || self.audit_entry(p, "referral.read", r);
        let v = self.audit.guard(entry, read_access(p, r)).await?;
        self.view(r, v).await
    }

    /// For a watcher: the referral if the caller may see it (a change to someone
    /// else's referral is skipped silently, not recorded as a refusal).
    pub async fn get_if_visible(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<Option<(ReferralRecord, View)>> {
        let Some(r) = self.store.get_referral(id).await? else {
            return Ok(None);
        };
        let Ok(view) = read_access(p, &r) else {
            return Ok(None);
        };
        self.audit
            .record(&[self.audit_entry(p, "referral.watch", &r)])
            .await;
        Ok(Some((r, view)))
    }

    /// An audit record of `p` acting on `r`.
    pub fn audit_entry(&self, p: &Principal, action: &str, r: &ReferralRecord) -> AuditEntry {
        AuditEntry::caller(self.now_ms(), p, action, "referral", &r.referral_id)
            .consent(r.consent_id.as_deref())
            .with_peer(r.peer_org.as_str())
    }

    /// A referral as the caller may see it (`v` from `get` or `list`).
    pub async fn view(&self, r: &ReferralRecord, v: View) -> Result<ReferralView> {
        let history = match v {
            View::Full => self.history(r).await?,
            View::MetadataOnly => self.store.referral_history(&r.referral_id).await?,
        };
        let summary = match v {
            View::Full => self.open_summary(r).await?,
            View::MetadataOnly => None,
        };
        Ok(assemble(r.clone(), v, history, summary))
    }

    pub async fn list(
        &self,
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
        let mut rows = self
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
            .map(|(r, _)| self.audit_entry(p, "referral.list", r))
            .collect();
        self.audit.record(&reads).await;
        Ok(Page {
            referrals,
            next_page_token,
        })
    }
}

pub(super) fn read_access(p: &Principal, r: &ReferralRecord) -> Result<View> {
    if !r.outbound && content::closed_here(r.state) {
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

/// A referral as one caller may see it: the record, how much of it, its
/// history and (in full) its summary. The client API shows it as its wire
/// `Referral`; the view decides what is left out.
#[derive(Debug, Clone)]
pub struct ReferralView {
    pub record: ReferralRecord,
    pub view: View,
    pub history: Vec<ReferralEvent>,
    pub summary: Option<CaseSummary>,
}

/// The view from a referral's parts; nothing of the summary without `Full`.
pub(super) fn assemble(
    record: ReferralRecord,
    view: View,
    history: Vec<ReferralEvent>,
    summary: Option<CaseSummary>,
) -> ReferralView {
    let summary = match view {
        View::Full => summary,
        View::MetadataOnly => None,
    };
    ReferralView {
        record,
        view,
        history,
        summary,
    }
}

pub struct Page {
    pub referrals: Vec<(ReferralRecord, View)>,
    pub next_page_token: String,
}
