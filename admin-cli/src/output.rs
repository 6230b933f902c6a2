//! Rendering for people (aligned tables) and scripts (JSON).

use exitnet_proto::pb;
use serde_json::{Value, json};

/// `SECTOR_PRISON_PROBATION` → `prison_probation`.
pub fn code_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

pub fn enum_name<E: TryFrom<i32>>(
    v: i32,
    name: impl Fn(E) -> &'static str,
    prefix: &str,
) -> String {
    match E::try_from(v) {
        Ok(e) => code_name(name(e), prefix),
        Err(_) => format!("unknown({v})"),
    }
}

pub fn sector(v: i32) -> String {
    enum_name(v, |e: pb::Sector| e.as_str_name(), "SECTOR_")
}

pub fn peer_state(v: i32) -> String {
    enum_name(v, |e: pb::PeerState| e.as_str_name(), "PEER_STATE_")
}

pub fn awaiting(v: i32) -> String {
    enum_name(v, |e: pb::Awaiting| e.as_str_name(), "AWAITING_")
}

/// RFC 3339 in UTC with milliseconds, the one form of every time exitnetctl
/// prints: `2026-11-25T10:00:00.000Z`.
pub fn rfc3339_ms(t: time::OffsetDateTime) -> Option<String> {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.to_offset(time::UtcOffset::UTC).format(&f).ok()
}

/// A protobuf timestamp as `rfc3339_ms`, or null when unset.
pub fn timestamp(ts: Option<&exitnet_proto::Timestamp>) -> Value {
    match ts {
        Some(t) => {
            let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
            time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
                .ok()
                .and_then(rfc3339_ms)
                .map(Value::String)
                .unwrap_or(Value::Null)
        }
        None => Value::Null,
    }
}

/// A timestamp for a table cell (`-` when unset).
pub fn ts_cell(ts: Option<&exitnet_proto::Timestamp>) -> String {
    timestamp(ts)
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| "-".into())
}

/// `a, b, c`, or `-` for none.
pub fn list_cell(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// The names of a repeated enum field.
pub fn enum_names<E: TryFrom<i32>>(
    v: &[i32],
    name: impl Fn(E) -> &'static str,
    prefix: &str,
) -> Vec<String> {
    v.iter().map(|x| enum_name(*x, &name, prefix)).collect()
}

/// The name of one enum value, or null when unset (0).
pub fn enum_value<E: TryFrom<i32>>(
    v: i32,
    name: impl Fn(E) -> &'static str,
    prefix: &str,
) -> Value {
    if v == 0 {
        Value::Null
    } else {
        Value::String(enum_name(v, name, prefix))
    }
}

pub fn profile_json(p: &pb::OrgProfile) -> Value {
    json!({
        "org_id": p.org_id,
        "name": p.name,
        "sector": sector(p.sector),
        "need_areas": p.need_areas.iter().map(|v| enum_name(*v, |e: pb::NeedArea| e.as_str_name(), "NEED_AREA_")).collect::<Vec<_>>(),
        "services": p.services.iter().map(|v| enum_name(*v, |e: pb::Service| e.as_str_name(), "SERVICE_")).collect::<Vec<_>>(),
        "languages": p.languages,
        "settings": p.settings.iter().map(|v| enum_name(*v, |e: pb::Setting| e.as_str_name(), "SETTING_")).collect::<Vec<_>>(),
        "accepting_referrals": p.accepting_referrals,
    })
}

pub fn peer_json(v: &pb::PeerView) -> Value {
    let profile = v.profile.clone().unwrap_or_default();
    let mut obj = profile_json(&profile);
    if let Value::Object(m) = &mut obj {
        m.insert("state".into(), json!(peer_state(v.state)));
        m.insert("awaiting".into(), json!(awaiting(v.awaiting)));
        m.insert(
            "remote_state".into(),
            if v.remote_state == 0 {
                Value::Null
            } else {
                json!(peer_state(v.remote_state))
            },
        );
        m.insert("endpoint".into(), json!(v.endpoint));
        m.insert("key_fingerprint".into(), json!(v.key_fingerprint));
        m.insert("verification_code".into(), json!(v.verification_code));
        m.insert("created_at".into(), timestamp(v.created_at.as_ref()));
        m.insert("updated_at".into(), timestamp(v.updated_at.as_ref()));
        m.insert("last_seen_at".into(), timestamp(v.last_seen_at.as_ref()));
        m.insert("pending_notices".into(), json!(v.pending_notices));
    }
    obj
}

/// An aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    out
}

/// `key: value` lines for one object.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<w$}  {v}\n", w = w + 1))
        .collect()
}

pub fn short_fp(fp: &str) -> String {
    fp.chars().take(16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_milliseconds_always() {
        let t = exitnet_proto::Timestamp {
            seconds: 1_764_756_000,
            nanos: 0,
        };
        assert_eq!(timestamp(Some(&t)), json!("2025-12-03T10:00:00.000Z"));
        let t = exitnet_proto::Timestamp {
            seconds: 1_764_756_000,
            nanos: 123_456_789,
        };
        assert_eq!(timestamp(Some(&t)), json!("2025-12-03T10:00:00.123Z"));
        assert_eq!(timestamp(None), Value::Null);
        assert_eq!(ts_cell(None), "-");
    }

    #[test]
    fn a_table_of_one_row_is_a_table() {
        let t = table(&["A", "BB"], &[vec!["x".into(), "y".into()]]);
        assert_eq!(t, "A  BB\nx  y\n");
    }
}
