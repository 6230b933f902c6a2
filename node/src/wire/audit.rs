//! The audit trail's query and records on the wire.

use crate::domain::audit::{AuditFilter, AuditPage, AuditQuery, AuditRecord};
use crate::error::FieldError;
use crate::wire::time::{checked_timestamp, to_timestamp};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use exitnet_proto::pb;

/// Page size when the caller names none, and the most it may ask for.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: u32 = 1000;

impl TryFrom<&pb::ListAuditRecordsRequest> for AuditQuery {
    type Error = FieldError;

    fn try_from(req: &pb::ListAuditRecordsRequest) -> Result<Self, FieldError> {
        let size = match req.page_size {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => i64::from(n),
            _ => return Err(FieldError::new("page_size", format!("at most {MAX_PAGE}"))),
        };
        let after_seq = if req.page_token.is_empty() {
            0
        } else {
            let bad = || FieldError::new("page_token", "not a token from a previous response");
            let raw = URL_SAFE_NO_PAD.decode(&req.page_token).map_err(|_| bad())?;
            String::from_utf8(raw)
                .ok()
                .and_then(|s| s.strip_prefix("a:").and_then(|n| n.parse::<i64>().ok()))
                .filter(|n| *n >= 0)
                .ok_or_else(bad)?
        };
        let text = |field: &str, v: &str| -> Result<Option<String>, FieldError> {
            if v.len() > 200 || v.chars().any(char::is_control) {
                return Err(FieldError::new(field, "at most 200 printable characters"));
            }
            Ok(Some(v.to_owned()).filter(|s| !s.is_empty()))
        };
        let time = |field: &str, t: &Option<exitnet_proto::Timestamp>| {
            t.as_ref().map(|t| checked_timestamp(field, t)).transpose()
        };
        let filter = AuditFilter {
            since_ms: time("since", &req.since)?,
            until_ms: time("until", &req.until)?,
            actor: text("actor", &req.actor)?,
            action: text("action", &req.action)?,
            object_id: text("object_id", &req.object_id)?,
        };
        if let (Some(s), Some(u)) = (filter.since_ms, filter.until_ms)
            && u < s
        {
            return Err(FieldError::new("until", "must not be before since"));
        }
        Ok(AuditQuery {
            filter,
            size,
            after_seq,
        })
    }
}

impl From<AuditPage> for pb::ListAuditRecordsResponse {
    fn from(page: AuditPage) -> Self {
        pb::ListAuditRecordsResponse {
            records: page.records.iter().map(to_pb).collect(),
            next_page_token: page
                .next_after_seq
                .map(|seq| URL_SAFE_NO_PAD.encode(format!("a:{seq}")))
                .unwrap_or_default(),
        }
    }
}

/// A stored record as the API shows it.
pub fn to_pb(r: &AuditRecord) -> pb::AuditRecord {
    let e = &r.entry;
    pb::AuditRecord {
        seq: r.seq as u64,
        at: Some(to_timestamp(e.at_ms)),
        actor_kind: e.actor_kind.clone(),
        actor: e.actor.clone(),
        role: e.role.clone(),
        on_behalf_of: e.on_behalf_of.clone(),
        action: e.action.clone(),
        object_type: e.object_type.clone(),
        object_id: e.object_id.clone(),
        consent_id: e.consent_id.clone(),
        peer_org: e.peer_org.clone(),
        result: e.result.clone(),
        prev_hash: r.prev_hash.clone(),
        hash: r.hash.clone(),
    }
}
