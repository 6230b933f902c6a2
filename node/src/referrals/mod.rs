//! Consent-scoped referrals and the closed loop. The sender commits a
//! referral and its signed message in one transaction; the outbox delivers
//! it; the receiver checks it against the consent's terms that travel with
//! it, stores it once and signs a receipt; every state change travels back
//! the same way. Withdrawal reaches every recipient, which purges and signs a
//! purge receipt. No gRPC here.

pub mod content;
use crate::protocol::messages;
pub mod receive;
pub mod reconcile;

use crate::access::{self, View};
use crate::audit::{self, AuditEntry};
use crate::auth::{Principal, Role};
use crate::domain::code_list;
use crate::domain::consent::{Consent, OutOfScope};
use crate::domain::id_check;
use crate::domain::referral::{self as rules, CaseSummary};
use crate::domain::time::to_timestamp;
use crate::domain::{NeedArea, OrgId, ReferralState, Service, Urgency};
use crate::error::{Error, FieldError, Result};
use crate::state::NodeState;
use crate::store::{
    AcceptedReceipt, ReferralChange, ReferralEvent, ReferralFilter, ReferralRecord,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use exitnet_proto::pb;
use prost::Message;

pub struct NewReferral {
    pub request_id: String,
    pub request_digest: Vec<u8>,
    pub consent_id: String,
    pub recipient: OrgId,
    pub need_areas: Vec<NeedArea>,
    pub services: Vec<Service>,
    pub urgency: Urgency,
    pub summary: CaseSummary,
}

impl NewReferral {
    pub fn from_pb(r: pb::CreateReferralRequest) -> Result<Self, FieldError> {
        let request_digest = crate::crypto::sha256(&r.encode_to_vec());
        let pb::CreateReferralRequest {
            request_id,
            consent_id,
            recipient_org,
            need_areas,
            services,
            urgency,
            summary,
        } = r;
        crate::domain::request_id_check(&request_id)?;
        id_check("consent_id", &consent_id)?;
        let need_areas = code_list("need_areas", need_areas, NeedArea::from_pb)?;
        if need_areas.is_empty() {
            return Err(FieldError::new("need_areas", "at least one need area"));
        }
        Ok(Self {
            request_id,
            request_digest,
            consent_id,
            recipient: OrgId::parse("recipient_org", &recipient_org)?,
            need_areas,
            services: code_list("services", services, Service::from_pb)?,
            urgency: Urgency::from_pb("urgency", urgency)?,
            summary: CaseSummary::from_pb(
                "summary",
                summary.ok_or_else(|| FieldError::new("summary", "required"))?,
            )?,
        })
    }
}

fn join<T: Copy>(v: &[T], name: impl Fn(T) -> &'static str) -> String {
    v.iter().map(|x| name(*x)).collect::<Vec<_>>().join(",")
}

fn split<T>(s: &str, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .filter_map(parse)
        .collect()
}

/// Everything the consent and this node's rules say about sending `new`.
/// Refusals are PERMISSION_DENIED naming the field or term.
pub fn check_scope(consent: &Consent, new: &NewReferral, now: i64) -> Result<()> {
    let deny = |m: String| Err(Error::PermissionDenied(m));
    if consent.withdrawn_at_ms.is_some() {
        return deny("consent_id: the consent has been withdrawn".into());
    }
    let scope = consent.terms.scope(
        &new.recipient,
        &new.need_areas,
        &new.services,
        &new.summary,
        now,
    );
    match scope {
        Ok(()) => Ok(()),
        Err(OutOfScope::NotInForce) => {
            deny("consent_id: the consent is not in force (expired or not yet valid)".into())
        }
        Err(OutOfScope::NotARecipient) => deny(format!(
            "recipient_org: {} is not among the consent's recipients",
            new.recipient
        )),
        Err(other) => deny(other.content_refusal("").unwrap_or_default()),
    }
}

/// The pseudonym a peer receives for a client: a keyed hash of the local
/// reference and the peer's ID. Stable per peer, unlinkable across peers.
pub fn pseudonym(state: &NodeState, subject_ref: &str, peer: &OrgId) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &state.pseudonym_key);
    let tag = ring::hmac::sign(&key, format!("subject\0{subject_ref}\0{peer}").as_bytes());
    crate::identity::hex(&tag.as_ref()[..16])
}

fn consent_ref(state: &NodeState, consent_id: &str, peer: &OrgId) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &state.pseudonym_key);
    let tag = ring::hmac::sign(&key, format!("consent\0{consent_id}\0{peer}").as_bytes());
    crate::identity::hex(&tag.as_ref()[..16])
}

/// The data key of a client's content at the sending node.
fn outbound_key_id(state: &NodeState, subject_ref: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &state.pseudonym_key);
    let tag = ring::hmac::sign(&key, format!("local\0{subject_ref}").as_bytes());
    format!(
        "{}{}",
        crate::store::SHARED_KEY_PREFIX,
        crate::identity::hex(&tag.as_ref()[..16])
    )
}

/// Seals under `key_id`, whose wrapped key the caller looked up (`found`):
/// the sealed bytes and the wrapped key they were sealed under.
async fn seal_summary_with(
    state: &NodeState,
    key_id: &str,
    found: Option<Vec<u8>>,
    referral_id: &str,
    plain: &[u8],
) -> Result<(Vec<u8>, Vec<u8>)> {
    // Most subjects already have a key: a read, not a write transaction.
    let wrapped = match found {
        Some(w) => w,
        None => {
            let fresh = state.master_key.new_wrapped_data_key(key_id)?;
            state.store.data_key(key_id, &fresh, state.now_ms()).await?
        }
    };
    let sealed = state
        .master_key
        .seal(key_id, &wrapped, referral_id, plain)?;
    Ok((sealed, wrapped))
}

/// The summary, if it is still held and its data key still exists.
pub async fn open_summary(state: &NodeState, r: &ReferralRecord) -> Option<pb::CaseSummary> {
    let sealed = r.summary.as_ref()?;
    let wrapped = state.store.find_data_key(&r.key_id).await.ok()??;
    let plain = state
        .master_key
        .open(&r.key_id, &wrapped, &r.referral_id, sealed)
        .ok()?;
    pb::CaseSummary::decode(plain.as_slice()).ok()
}

/// Who a principal is, as a referral's history records it locally.
fn event(state: ReferralState, by: &str, change: &pb::StateChange, at_ms: i64) -> ReferralEvent {
    ReferralEvent {
        actor: String::new(),
        state: state.as_str().to_owned(),
        at_ms,
        by_org: by.to_owned(),
        detail: change.encode_to_vec(),
        content: None,
    }
}

fn bare_change(s: ReferralState, at_ms: i64) -> pb::StateChange {
    pb::StateChange {
        state: s.to_pb(),
        at: Some(to_timestamp(at_ms)),
        ..Default::default()
    }
}

pub async fn create(state: &NodeState, p: &Principal, new: NewReferral) -> Result<ReferralRecord> {
    Ok(create_record(state, p, new).await?.0)
}

/// Creates a referral and returns it as its creator sees it. A new referral's
/// view is put together from what was just written, not read back.
pub async fn create_and_view(
    state: &NodeState,
    p: &Principal,
    new: NewReferral,
) -> Result<pb::Referral> {
    let summary = new.summary.to_pb();
    let (r, fresh) = create_record(state, p, new).await?;
    match fresh {
        Some(ev) => {
            let entry = || audit_entry(state, p, "referral.read", &r);
            let v = audit::guard(state, entry, read_access(p, &r)).await?;
            assemble(&r, v, &[ev], Some(summary))
        }
        // A repeated request: the referral as it is now.
        None => view_after_action(state, p, &r).await,
    }
}

/// Creates a referral; with its first event if it is new (not a repeat).
/// A retry of a create that succeeded gets the referral it made even when
/// the checks would refuse it now (the consent was withdrawn, the peering
/// suspended since): it is looked up only when they refuse, so the usual
/// create pays nothing for it.
async fn create_record(
    state: &NodeState,
    p: &Principal,
    new: NewReferral,
) -> Result<(ReferralRecord, Option<ReferralEvent>)> {
    access::create(p)?;
    let (request_id, digest) = (new.request_id.clone(), new.request_digest.clone());
    match create_checked(state, p, new).await {
        Ok(done) => Ok(done),
        Err(e) => {
            let owner = access::acting_owner(p)?;
            match state.store.referral_by_request(owner, &request_id).await? {
                Some((r, d)) if d == digest => Ok((r, None)),
                _ => Err(e),
            }
        }
    }
}

async fn create_checked(
    state: &NodeState,
    p: &Principal,
    new: NewReferral,
) -> Result<(ReferralRecord, Option<ReferralEvent>)> {
    let owner = access::acting_owner(p)?.to_owned();
    let consent = state
        .store
        .get_consent(&new.consent_id)
        .await?
        .ok_or(Error::NotFound("consent"))?;
    audit::guard(
        state,
        || {
            AuditEntry::caller(
                state.now_ms(),
                p,
                "referral.create",
                "consent",
                &consent.consent_id,
            )
            .consent(Some(&consent.consent_id))
        },
        access::write(p, &consent.owner, consent.team.as_deref()),
    )
    .await?;
    let now = state.now_ms();
    check_scope(&consent, &new, now)?;
    let key_id = outbound_key_id(state, &consent.subject_ref);
    // Three independent lookups, at once (the peer and its policy are
    // usually answered from memory, see store/cache.rs).
    let ((policy, _), peer, data_key) = tokio::try_join!(
        crate::policy::for_peer(state.store.as_ref(), &new.recipient),
        state.store.peer_for_exchange(&new.recipient),
        state.store.find_data_key(&key_id),
    )?;
    policy.check(
        new.recipient.as_str(),
        "",
        &new.need_areas,
        &new.services,
        &new.summary,
        &consent.terms,
    )?;
    let peer = peer.ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "recipient_org: {} is not a peer of this node",
            new.recipient
        ))
    })?;
    if !peer.exchange_allowed() {
        return Err(Error::FailedPrecondition(format!(
            "recipient_org: the peering with {} is not active on both sides",
            new.recipient
        )));
    }
    // This recipient's own copy: itself as the only recipient, codes and
    // whole days only, so that two recipients' copies cannot be joined.
    let terms = consent.terms.for_recipient(&new.recipient);
    if !terms.in_force(now) {
        return Err(Error::PermissionDenied(
            "consent_id: recipients receive the consent's dates as whole days (UTC) and \
             its end rounded down, so a consent ending today can no longer be used; \
             record one that runs past midnight UTC"
                .into(),
        ));
    }
    let referral_id = uuid::Uuid::new_v4().to_string();
    let pseudonym = pseudonym(state, &consent.subject_ref, &new.recipient);
    let offer = pb::ReferralOffer {
        referral_id: referral_id.clone(),
        subject_pseudonym: pseudonym.clone(),
        need_areas: new.need_areas.iter().map(|v| v.to_pb()).collect(),
        services: new.services.iter().map(|v| v.to_pb()).collect(),
        urgency: new.urgency.to_pb(),
        summary: Some(new.summary.to_pb()),
        terms: Some(terms.to_pb()),
        consent_ref: consent_ref(state, &consent.consent_id, &new.recipient),
    };
    let notice = messages::notice_for(
        state,
        &new.recipient,
        pb::federation_message::Body::Offer(offer),
    )?;
    let (sealed, wrapped_key) = seal_summary_with(
        state,
        &key_id,
        data_key,
        &referral_id,
        &new.summary.to_pb().encode_to_vec(),
    )
    .await?;
    let record = ReferralRecord {
        key_id,
        referral_id: referral_id.clone(),
        outbound: true,
        peer_org: new.recipient.clone(),
        owner: owner.clone(),
        team: if p.role == Role::CaseManager {
            p.team.clone()
        } else {
            consent.team.clone()
        },
        consent_id: Some(consent.consent_id.clone()),
        pseudonym,
        need_areas: join(&new.need_areas, NeedArea::as_str),
        services: join(&new.services, Service::as_str),
        urgency: new.urgency.as_str().to_owned(),
        summary: Some(sealed),
        terms: terms.to_pb().encode_to_vec(),
        state: ReferralState::Requested.as_str().to_owned(),
        purge_status: "none".into(),
        purged_at_ms: None,
        created_at_ms: now,
        updated_at_ms: now,
        expires_at_ms: Some(consent.terms.valid_until_ms),
    };
    let mut ev = event(
        ReferralState::Requested,
        state.org_id.as_str(),
        &bare_change(ReferralState::Requested, now),
        now,
    );
    ev.actor = p.actor();
    let audit = AuditEntry::caller(
        state.now_ms(),
        p,
        "referral.create",
        "referral",
        &referral_id,
    )
    .consent(Some(&consent.consent_id))
    .with_peer(new.recipient.as_str());
    let stored = state
        .intake
        .create(crate::store::NewCreate {
            record,
            request_key: new.request_id.clone(),
            request_digest: new.request_digest.clone(),
            event: ev.clone(),
            notice,
            audit: vec![audit],
            wrapped_key,
        })
        .await?;
    state.queued_for(&stored.peer_org);
    state.referral_changed(&stored.referral_id);
    let fresh = (stored.referral_id == referral_id).then_some(ev);
    Ok((stored, fresh))
}

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

fn read_access(p: &Principal, r: &ReferralRecord) -> Result<View> {
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

fn write_access(p: &Principal, r: &ReferralRecord) -> Result<()> {
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
fn assemble(
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

/// A state change by the receiver (accept, decline, start, hold, complete, fail).
pub async fn act(
    state: &NodeState,
    p: &Principal,
    id: &str,
    to: ReferralState,
    mut change: pb::StateChange,
) -> Result<ReferralRecord> {
    id_check("referral_id", id)?;
    let r = state
        .store
        .get_referral(id)
        .await?
        .ok_or(Error::NotFound("referral"))?;
    let action = format!("referral.{}", to.as_str());
    audit::guard(
        state,
        || audit_entry(state, p, &action, &r),
        write_access(p, &r),
    )
    .await?;
    if r.outbound {
        return Err(Error::FailedPrecondition(
            "only the receiving organisation sets that state".into(),
        ));
    }
    let from = r.current_state()?;
    if !rules::receiver_may(from, to) {
        return Err(Error::FailedPrecondition(format!(
            "a referral that is {from} cannot become {to}"
        )));
    }
    let now = state.now_ms();
    change.state = to.to_pb();
    change.at = Some(to_timestamp(now));
    change.by_org = state.org_id.to_string();
    let notice = messages::notice_for(
        state,
        &r.peer_org,
        pb::federation_message::Body::Status(pb::ReferralStatus {
            referral_id: r.referral_id.clone(),
            change: Some(change.clone()),
        }),
    )?;
    let mut ev = ReferralEvent {
        actor: p.actor(),
        ..event(to, state.org_id.as_str(), &change, now)
    };
    content::seal_event(state, &r, &mut ev).await?;
    let mut c = ReferralChange {
        expected_states: vec![from.as_str().to_owned()],
        state: Some(to.as_str().to_owned()),
        event: Some(ev),
        notices: vec![notice],
        audit: vec![audit_entry(state, p, &action, &r)],
        now_ms: state.now_ms(),
        ..Default::default()
    };
    // Who accepts takes it on; who declines it from the intake queue keeps
    // it (only they and supervisors see its content from now on).
    if matches!(to, ReferralState::Accepted | ReferralState::Declined) && r.owner.is_empty() {
        c.owner = Some(access::acting_owner(p)?.to_owned());
        c.team = Some(if p.role == Role::CaseManager {
            p.team.clone()
        } else {
            None
        });
    }
    if !state.store.change_referral(id, &c).await? {
        return Err(Error::FailedPrecondition(
            "the referral changed meanwhile; read it and try again".into(),
        ));
    }
    state.outbox_wake.notify_one();
    state.referral_changed(id);
    state
        .store
        .get_referral(id)
        .await?
        .ok_or(Error::NotFound("referral"))
}

/// The change and message that withdraw one outbound referral.
fn withdrawal(
    state: &NodeState,
    r: &ReferralRecord,
    cause: pb::WithdrawalCause,
    by: &AuditEntry,
) -> Result<Option<ReferralChange>> {
    if r.purge_status != "none" {
        return Ok(None);
    }
    let from = r.current_state()?;
    let notice = messages::notice_for(
        state,
        &r.peer_org,
        pb::federation_message::Body::Withdrawal(pb::ReferralWithdrawal {
            referral_id: r.referral_id.clone(),
            cause: cause as i32,
        }),
    )?;
    let live = rules::sender_may_withdraw(from);
    let now = state.now_ms();
    Ok(Some(ReferralChange {
        expected_states: vec![from.as_str().to_owned()],
        expected_purge_status: Some("none".into()),
        state: live.then(|| ReferralState::Withdrawn.as_str().to_owned()),
        event: live.then(|| {
            event(
                ReferralState::Withdrawn,
                state.org_id.as_str(),
                &bare_change(ReferralState::Withdrawn, now),
                now,
            )
        }),
        purge_status: Some("pending".into()),
        // The sender's copy of the content goes now: the summary it sent,
        // the texts and outcome its recipient reported, the terms' free text.
        purge_summary: true,
        purge_terms: Some(content::purged_terms(&r.terms)),
        notices: vec![notice],
        audit: vec![
            by.about(
                &format!("referral.withdraw.{}", cause_name(cause)),
                "referral",
                &r.referral_id,
            )
            .consent(r.consent_id.as_deref())
            .with_peer(r.peer_org.as_str()),
        ],
        now_ms: state.now_ms(),
        ..Default::default()
    }))
}

fn cause_name(cause: pb::WithdrawalCause) -> &'static str {
    match cause {
        pb::WithdrawalCause::SenderWithdrew => "sender",
        pb::WithdrawalCause::ConsentWithdrawn => "consent_withdrawn",
        pb::WithdrawalCause::ConsentExpired => "consent_expired",
        pb::WithdrawalCause::Retention => "retention",
        pb::WithdrawalCause::Unspecified => "unspecified",
    }
}

/// The sender withdraws a referral; the recipient purges and signs a receipt.
pub async fn withdraw(state: &NodeState, p: &Principal, id: &str) -> Result<ReferralRecord> {
    id_check("referral_id", id)?;
    let r = state
        .store
        .get_referral(id)
        .await?
        .ok_or(Error::NotFound("referral"))?;
    audit::guard(
        state,
        || audit_entry(state, p, "referral.withdraw.sender", &r),
        write_access(p, &r),
    )
    .await?;
    if !r.outbound {
        return Err(Error::FailedPrecondition(
            "only the sending organisation withdraws a referral".into(),
        ));
    }
    let from = r.current_state()?;
    if !rules::sender_may_withdraw(from) {
        return Err(Error::FailedPrecondition(format!(
            "a referral that is {from} cannot be withdrawn"
        )));
    }
    let by = AuditEntry::caller(state.now_ms(), p, "", "", "");
    let Some(mut c) = withdrawal(state, &r, pb::WithdrawalCause::SenderWithdrew, &by)? else {
        return Err(Error::FailedPrecondition("already withdrawn".into()));
    };
    if let Some(e) = c.event.as_mut() {
        e.actor = p.actor();
    }
    if !state.store.change_referral(id, &c).await? {
        return Err(Error::FailedPrecondition(
            "the referral changed meanwhile; read it and try again".into(),
        ));
    }
    state.outbox_wake.notify_one();
    state.referral_changed(id);
    state
        .store
        .get_referral(id)
        .await?
        .ok_or(Error::NotFound("referral"))
}

/// Withdraws a consent and, with it, every referral resting on it, at every
/// recipient. Returns how many recipients are sent a withdrawal.
pub async fn withdraw_consent(
    state: &NodeState,
    consent_id: &str,
    cause: pb::WithdrawalCause,
    by: &str,
    who: &AuditEntry,
) -> Result<u32> {
    let referrals = state.store.referrals_under_consent(consent_id).await?;
    let mut changes = Vec::new();
    for r in &referrals {
        if let Some(mut c) = withdrawal(state, r, cause, who)? {
            if let Some(e) = c.event.as_mut() {
                e.actor = by.to_owned();
            }
            changes.push((r.referral_id.clone(), c));
        }
    }
    if !state
        .store
        .withdraw_consent_with(
            consent_id,
            &changes,
            state.now_ms(),
            std::slice::from_ref(who),
        )
        .await?
    {
        return Err(Error::FailedPrecondition(
            "the consent is already withdrawn".into(),
        ));
    }
    state.outbox_wake.notify_one();
    for (id, _) in &changes {
        state.referral_changed(id);
    }
    // The consent forgets its client reference at once (else at the next
    // scheduler round: the withdrawal itself is done).
    if let Err(e) = content::forget_consents(state).await {
        tracing::warn!(error = %e, "forgetting withdrawn consents' client references failed");
    }
    let mut recipients: Vec<&OrgId> = referrals.iter().map(|r| &r.peer_org).collect();
    recipients.sort();
    recipients.dedup();
    Ok(recipients.len() as u32)
}

/// The outbox delivered one of our messages and the peer answered: its
/// receipt checked against the peer's pinned `keys`, with what it implies
/// (`None` for a notice that is not a referral message).
pub fn delivery_receipt(
    state: &NodeState,
    org: &OrgId,
    keys: &[crate::store::PeerKey],
    notice_row: i64,
    req: &pb::NotifyRequest,
    resp: &pb::NotifyResponse,
) -> Result<Option<AcceptedReceipt>> {
    let Some(pb::notify_request::Notice::Message(sent)) = &req.notice else {
        return Ok(None);
    };
    let sent_msg = pb::FederationMessage::decode(sent.payload.as_slice())
        .map_err(|e| Error::Internal(e.into()))?;
    let receipt = resp
        .receipt
        .as_ref()
        .ok_or_else(|| Error::Unavailable("the peer sent no receipt".into()))?;
    let (r, record) = messages::verify_receipt(state, org, keys, sent, &sent_msg, receipt)?;
    let change = match &sent_msg.body {
        Some(pb::federation_message::Body::Offer(o)) => Some((
            o.referral_id.clone(),
            ReferralChange {
                expected_states: vec![ReferralState::Requested.as_str().to_owned()],
                state: Some(ReferralState::Received.as_str().to_owned()),
                event: Some(ReferralEvent {
                    actor: String::new(),
                    state: ReferralState::Received.as_str().to_owned(),
                    at_ms: record.at_ms,
                    by_org: org.to_string(),
                    detail: bare_change(ReferralState::Received, record.at_ms).encode_to_vec(),
                    content: None,
                }),
                now_ms: state.now_ms(),
                ..Default::default()
            },
        )),
        Some(pb::federation_message::Body::Withdrawal(w))
            if r.kind == pb::ReceiptKind::Purge as i32 =>
        {
            Some((
                w.referral_id.clone(),
                ReferralChange {
                    purge_status: Some("done".into()),
                    purged_at_ms: Some(record.at_ms),
                    // Anything the recipient reported after the withdrawal
                    // was queued goes too.
                    purge_summary: true,
                    now_ms: state.now_ms(),
                    ..Default::default()
                },
            ))
        }
        _ => None,
    };
    let audit = AuditEntry::peer(
        state.now_ms(),
        org.as_str(),
        &format!(
            "receipt.{}",
            if r.kind != pb::ReceiptKind::Purge as i32 {
                "delivery"
            } else if r.purge_outcome() == pb::PurgeOutcome::NothingHeld {
                // The recipient never held it: nothing was purged there.
                "purge.nothing_held"
            } else {
                "purge"
            }
        ),
        "referral",
        &r.referral_id,
    );
    Ok(Some(AcceptedReceipt {
        notice_row,
        receipt: record,
        change,
        audit: vec![audit],
    }))
}

/// Stores checked receipts for our messages together (one transaction) and
/// tells watchers of the referrals they changed.
pub async fn on_delivered(state: &NodeState, items: &[AcceptedReceipt]) -> Result<()> {
    state.store.accept_receipts(items, state.now_ms()).await?;
    let mut purged = false;
    for (id, c) in items.iter().filter_map(|i| i.change.as_ref()) {
        purged |= c.purge_summary;
        state.referral_changed(id);
    }
    if purged {
        // The content the purge deleted must not linger in the database's
        // files. The receipts are stored: a failure here is not a delivery's.
        if let Err(e) = state.store.after_purge().await {
            tracing::warn!(error = %e, "cleaning up after purges failed");
        }
    }
    Ok(())
}

/// The peer refused one of our messages for good (or it could not be
/// delivered in time): the referral fails, with the reason.
pub async fn on_refused(
    state: &NodeState,
    req: &pb::NotifyRequest,
    reason: pb::FailureReason,
    text: &str,
) -> Result<()> {
    let Some(pb::notify_request::Notice::Message(sent)) = &req.notice else {
        return Ok(());
    };
    let Ok(msg) = pb::FederationMessage::decode(sent.payload.as_slice()) else {
        return Ok(());
    };
    let Some(pb::federation_message::Body::Offer(o)) = msg.body else {
        tracing::warn!(message_id = %msg.message_id, "a peer refused a status or withdrawal message");
        return Ok(());
    };
    let mut text: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(rules::MAX_NOTE_CHARS)
        .collect();
    text.truncate(rules::MAX_NOTE_CHARS);
    let change = pb::StateChange {
        state: ReferralState::Failed.to_pb(),
        failure_reason: reason as i32,
        text,
        ..Default::default()
    };
    let mut ev = event(
        ReferralState::Failed,
        state.org_id.as_str(),
        &change,
        state.now_ms(),
    );
    match state.store.get_referral(&o.referral_id).await? {
        Some(r) => content::seal_event(state, &r, &mut ev).await?,
        None => return Ok(()),
    }
    let c = ReferralChange {
        expected_states: vec![ReferralState::Requested.as_str().to_owned()],
        state: Some(ReferralState::Failed.as_str().to_owned()),
        event: Some(ev),
        audit: vec![
            AuditEntry::node(
                state.now_ms(),
                state.org_id.as_str(),
                "referral.failed_delivery",
                "referral",
                &o.referral_id,
            )
            .with_peer(&msg.recipient_org),
        ],
        now_ms: state.now_ms(),
        ..Default::default()
    };
    state.store.change_referral(&o.referral_id, &c).await?;
    state.referral_changed(&o.referral_id);
    Ok(())
}

/// Sends a withdrawal for each referral (the consent expired, or the
/// retention period passed). Each is conditional, so several replicas
/// running this at once queue each withdrawal once.
pub async fn purge_referrals(
    state: &NodeState,
    referrals: &[ReferralRecord],
    cause: pb::WithdrawalCause,
) -> Result<u32> {
    let mut n = 0;
    let by = AuditEntry::node(state.now_ms(), state.org_id.as_str(), "", "", "");
    for r in referrals {
        if let Some(c) = withdrawal(state, r, cause, &by)?
            && state.store.change_referral(&r.referral_id, &c).await?
        {
            state.referral_changed(&r.referral_id);
            n += 1;
        }
    }
    if n > 0 {
        state.outbox_wake.notify_one();
    }
    Ok(n)
}

/// One round of the scheduler: expired consents and retention periods.
pub async fn scheduled_purges(state: &NodeState) -> Result<u32> {
    let now = state.now_ms();
    let expired = state.store.referrals_with_expired_consent(now).await?;
    let mut n = purge_referrals(state, &expired, pb::WithdrawalCause::ConsentExpired).await?;
    for peer in state.store.list_peers().await? {
        let (policy, _) = crate::policy::for_peer(state.store.as_ref(), &peer.org_id).await?;
        if policy.retention_days == 0 {
            continue;
        }
        let before = now - i64::from(policy.retention_days) * 86_400_000;
        let closed = state
            .store
            .closed_referrals_before(&peer.org_id, before)
            .await?;
        n += purge_referrals(state, &closed, pb::WithdrawalCause::Retention).await?;
    }
    // A recipient purges by itself what it may no longer hold.
    n += content::purge_inbound(state).await?;
    content::forget_consents(state).await?;
    if n > 0 {
        tracing::info!(withdrawals = n, "scheduled purges queued");
    }
    Ok(n)
}

/// Runs `scheduled_purges` every `interval` until stopped, and prunes
/// refused calls beyond `limits.security_events_kept_days` and
/// `limits.security_events_max_rows`.
pub async fn run_scheduler(
    state: std::sync::Arc<NodeState>,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            break;
        }
        if let Err(e) = scheduled_purges(&state).await {
            tracing::warn!(error = %e, "scheduled purges failed");
        }
        // Refusals are kept for a while and in bounded number.
        let limits = &state.config.limits;
        let before = state.now_ms() - i64::from(limits.security_events_kept_days) * 86_400_000;
        let rows = i64::try_from(limits.security_events_max_rows).unwrap_or(i64::MAX);
        if let Err(e) = state.store.prune_security_events(before, rows).await {
            tracing::warn!(error = %e, "pruning security events failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
    }
}

/// A supervisor gives a referral to another case manager of this organisation.
pub async fn reassign(
    state: &NodeState,
    p: &Principal,
    id: &str,
    owner: &str,
    team: Option<String>,
) -> Result<ReferralRecord> {
    id_check("referral_id", id)?;
    if p.role != Role::Supervisor {
        return Err(Error::PermissionDenied(
            "only supervisors reassign referrals".into(),
        ));
    }
    if owner.trim().is_empty() {
        return Err(FieldError::new("owner", "required").into());
    }
    crate::domain::bounded_text("owner", owner, 200)?;
    if let Some(t) = &team {
        crate::domain::bounded_text("team", t, 200)?;
    }
    let r = state
        .store
        .get_referral(id)
        .await?
        .ok_or(Error::NotFound("referral"))?;
    let c = ReferralChange {
        expected_states: vec![r.state.clone()],
        owner: Some(owner.to_owned()),
        team: Some(team),
        audit: vec![audit_entry(state, p, "referral.reassign", &r)],
        now_ms: state.now_ms(),
        ..Default::default()
    };
    if !state.store.change_referral(id, &c).await? {
        return Err(Error::FailedPrecondition(
            "the referral changed meanwhile; read it and try again".into(),
        ));
    }
    tracing::info!(referral_id = %id, "referral reassigned");
    state.referral_changed(id);
    state
        .store
        .get_referral(id)
        .await?
        .ok_or(Error::NotFound("referral"))
}
