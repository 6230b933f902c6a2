//! Organisations and the profile they show their peers.

use super::codes::{NeedArea, Sector, Service, Setting};
use crate::error::FieldError;

/// An organisation ID: 3 to 63 characters of `a-z`, `0-9` and `-`, starting
/// with a letter or digit. It names a node in the network and in audit records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct OrgId(String);

impl OrgId {
    pub fn parse(field: &str, s: &str) -> Result<Self, FieldError> {
        let ok_len = (3..=63).contains(&s.len());
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let ok_start = s
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok_len && ok_chars && ok_start {
            Ok(Self(s.to_owned()))
        } else {
            Err(FieldError::new(
                field,
                "must be 3 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OrgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_LANGUAGES: usize = 16;
pub const MAX_LANGUAGE_CHARS: usize = 35;
pub(crate) const MAX_LIST: usize = 64;

/// What an organisation tells its peers about itself. Public to approved
/// peers; nothing in it concerns a client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OrgProfile {
    pub org_id: OrgId,
    pub name: String,
    pub sector: Option<Sector>,
    pub need_areas: Vec<NeedArea>,
    pub services: Vec<Service>,
    pub languages: Vec<String>,
    pub settings: Vec<Setting>,
    pub accepting_referrals: bool,
    /// By the organisation's own clock, milliseconds since the epoch.
    pub updated_at_ms: i64,
}

/// Checks a bounded, printable, single-line text.
pub fn bounded_text(field: &str, s: &str, max_chars: usize) -> Result<(), FieldError> {
    if s.chars().count() > max_chars {
        return Err(FieldError::new(
            field,
            format!("at most {max_chars} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(FieldError::new(field, "control characters are not allowed"));
    }
    Ok(())
}

pub(crate) fn language_tag(field: &str, s: &str) -> Result<String, FieldError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_LANGUAGE_CHARS
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(FieldError::new(field, "must be a BCP 47 language tag"))
    }
}

pub(crate) fn dedup_sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v.dedup();
    v
}

impl OrgProfile {
    /// Whether the organisation offers a need area, directly or by a service in it.
    pub fn offers_need_area(&self, area: NeedArea) -> bool {
        self.need_areas.contains(&area) || self.services.iter().any(|s| s.need_area() == area)
    }
}

/// Checks an organisation's display name.
pub fn org_name_check(name: &str) -> Result<(), FieldError> {
    if name.trim().is_empty() {
        return Err(FieldError::new("name", "must not be empty"));
    }
    bounded_text("name", name, MAX_NAME_CHARS)
}

/// Checks a `host:port` endpoint.
pub fn endpoint_check(field: &str, s: &str) -> Result<(), FieldError> {
    let bad = || FieldError::new(field, "must be host:port");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    if port == 0 || !host_ok {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids() {
        assert!(OrgId::parse("f", "ngo-exit-1").is_ok());
        for bad in ["ab", "-abc", "ABC", "a b c", "ngo_exit", &"a".repeat(64)] {
            assert_eq!(OrgId::parse("org.id", bad).unwrap_err().field, "org.id");
        }
    }
}
