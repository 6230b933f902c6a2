//! Every setting the node knows: its dotted key and the form its value takes.
//! Values from the file and from the environment are checked against this
//! table before the configuration is put together, so that an error names
//! the setting as the user wrote it (`EXITNET_API__LISTEN` or `api.listen`),
//! says what was expected, and suggests the nearest known setting for a
//! misspelt one.

use crate::domain::{NeedArea, Sector, Service, Setting as WorkSetting};

/// The form of a setting's value.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `IP:port`; the example is shown in errors.
    Addr(&'static str),
    /// One of a closed list.
    OneOf(fn() -> Vec<&'static str>),
    /// A list whose every item is one of a closed list.
    ListOf(fn() -> Vec<&'static str>),
    /// Free text (a path, a URL, a name).
    Text,
    /// A list of free text.
    TextList,
    /// A whole number from 0 to the bound.
    Int(u64),
    /// A number (integer or decimal).
    Number,
    Bool,
    /// A table of text values with keys of the user's choosing.
    Map,
}

#[derive(Debug, Clone, Copy)]
pub struct SettingSpec {
    pub key: &'static str,
    pub kind: Kind,
    /// Its value is never repeated in an error.
    pub secret: bool,
}

const fn s(key: &'static str, kind: Kind) -> SettingSpec {
    SettingSpec {
        key,
        kind,
        secret: false,
    }
}

const fn secret(key: &'static str) -> SettingSpec {
    SettingSpec {
        key,
        kind: Kind::Text,
        secret: true,
    }
}

const U32: u64 = u32::MAX as u64;
const U64: u64 = u64::MAX;

pub fn sectors() -> Vec<&'static str> {
    Sector::ALL.iter().map(|v| v.as_str()).collect()
}
pub fn need_areas() -> Vec<&'static str> {
    NeedArea::ALL.iter().map(|v| v.as_str()).collect()
}
pub fn services() -> Vec<&'static str> {
    Service::ALL.iter().map(|v| v.as_str()).collect()
}
pub fn work_settings() -> Vec<&'static str> {
    WorkSetting::ALL.iter().map(|v| v.as_str()).collect()
}
fn auth_modes() -> Vec<&'static str> {
    vec!["oidc", "dev"]
}
fn log_formats() -> Vec<&'static str> {
    vec!["text", "json"]
}

/// Every setting; a unit test checks this against the `Config` structure.
pub const SETTINGS: &[SettingSpec] = &[
    s("data_dir", Kind::Text),
    secret("database_url"),
    s("api.listen", Kind::Addr("127.0.0.1:7711")),
    s("api.tls.cert_file", Kind::Text),
    s("api.tls.key_file", Kind::Text),
    s("api.tls.client_ca_file", Kind::Text),
    s("api.health_listen", Kind::Addr("0.0.0.0:7712")),
    s("federation.listen", Kind::Addr("0.0.0.0:7710")),
    s("federation.advertise", Kind::Text),
    s("federation.key_overlap_secs", Kind::Int(U64)),
    s("federation.handshake_timeout_ms", Kind::Int(U64)),
    s("federation.call_timeout_ms", Kind::Int(U64)),
    s("federation.retry_initial_ms", Kind::Int(U64)),
    s("federation.retry_max_ms", Kind::Int(U64)),
    s("federation.max_delivery_age_secs", Kind::Int(U64)),
    s("federation.scheduler_interval_secs", Kind::Int(U64)),
    s("federation.closed_inbound_retention_days", Kind::Int(U64)),
    s("admin.socket", Kind::Text),
    s("org.id", Kind::Text),
    s("org.name", Kind::Text),
    s("org.sector", Kind::OneOf(sectors)),
    s("org.need_areas", Kind::ListOf(need_areas)),
    s("org.services", Kind::ListOf(services)),
    s("org.languages", Kind::TextList),
    s("org.settings", Kind::ListOf(work_settings)),
    s("org.accepting_referrals", Kind::Bool),
    s("auth.mode", Kind::OneOf(auth_modes)),
    s("auth.issuer", Kind::Text),
    s("auth.audience", Kind::Text),
    s("auth.roles_claim", Kind::Text),
    s("auth.team_claim", Kind::Text),
    s("auth.role_map", Kind::Map),
    s("auth.system_acts_for", Kind::Map),
    s("auth.access_token_typ", Kind::Text),
    s("auth.algorithms", Kind::TextList),
    s("auth.leeway_secs", Kind::Int(U64)),
    s("auth.jwks_min_refetch_secs", Kind::Int(U64)),
    s("auth.introspection.url", Kind::Text),
    s("auth.introspection.client_id", Kind::Text),
    secret("auth.introspection.client_secret"),
    s("log.format", Kind::OneOf(log_formats)),
    s("metrics.listen", Kind::Addr("127.0.0.1:9711")),
    s("traces.otlp_endpoint", Kind::Text),
    s("traces.sample_ratio", Kind::Number),
    s("audit.checkpoint_every_records", Kind::Int(U64)),
    s("audit.checkpoint_interval_secs", Kind::Int(U64)),
    s("limits.max_message_bytes", Kind::Int(U32)),
    s("limits.max_concurrent_streams", Kind::Int(U32)),
    s("limits.caller_calls_per_sec", Kind::Int(U32)),
    s("limits.caller_burst", Kind::Int(U32)),
    s("limits.caller_max_in_flight", Kind::Int(U32)),
    s("limits.peer_calls_per_sec", Kind::Int(U32)),
    s("limits.peer_burst", Kind::Int(U32)),
    s("limits.peer_max_in_flight", Kind::Int(U32)),
    s("limits.address_calls_per_sec", Kind::Int(U32)),
    s("limits.address_burst", Kind::Int(U32)),
    s("limits.max_connection_age_secs", Kind::Int(U64)),
    s("limits.security_events_kept_days", Kind::Int(U32)),
    s("limits.security_events_max_rows", Kind::Int(U64)),
    s("limits.peer_max_pending_intake", Kind::Int(U32)),
    s("limits.peer_checkpoints_per_day", Kind::Int(U32)),
    secret("master_key"),
    s("master_key_file", Kind::Text),
    s("keys.dir", Kind::Text),
    s("keys.rotation_days", Kind::Int(3650)),
    s("keys.backup_retention_days", Kind::Int(3650)),
    s("dev.clock_offset_secs", Kind::Int(U64)),
];

pub fn find(key: &str) -> Option<&'static SettingSpec> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// A table that holds settings (`api`, `api.tls`, …).
pub fn is_table(key: &str) -> bool {
    SETTINGS.iter().any(|s| {
        s.key.len() > key.len() && s.key.starts_with(key) && s.key[key.len()..].starts_with('.')
    })
}

/// The environment variable for a dotted key: `api.listen` → `EXITNET_API__LISTEN`.
pub fn env_name(key: &str) -> String {
    format!("EXITNET_{}", key.to_ascii_uppercase().replace('.', "__"))
}

/// The dotted key an environment variable sets: `EXITNET_API__LISTEN` → `api.listen`.
pub fn key_of_env(var: &str) -> Option<String> {
    let rest = var.strip_prefix("EXITNET_")?;
    if rest.is_empty() {
        return None;
    }
    Some(rest.to_ascii_lowercase().replace("__", "."))
}

/// The known key nearest to a misspelt one, if one is near enough.
pub fn suggest(key: &str) -> Option<&'static str> {
    let tables = SETTINGS.iter().flat_map(|s| {
        s.key
            .match_indices('.')
            .map(move |(i, _)| &s.key[..i])
            .chain(std::iter::once(s.key))
    });
    let (best, distance) = tables
        .map(|k| (k, strsim::damerau_levenshtein(key, k)))
        .min_by_key(|(_, d)| *d)?;
    let allowed = (key.chars().count() / 3).clamp(1, 3);
    (distance <= allowed).then_some(best)
}

/// A value as it was given: from the file (TOML) or the environment (text).
#[derive(Debug, Clone, Copy)]
pub enum Given<'a> {
    Toml(&'a toml::Value),
    Env(&'a str),
}

fn shown(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Checks one value against its setting; the error starts with `name`, the
/// setting as the user wrote it.
pub fn check_value(spec: &SettingSpec, name: &str, given: Given<'_>) -> Result<(), String> {
    let got = |text: String| -> String {
        if spec.secret {
            String::new()
        } else {
            format!(", not `{text}`")
        }
    };
    let type_error = |what: &str, v: &toml::Value| -> String {
        format!("{name}: expected {what}{}", got(shown(v)))
    };
    match spec.kind {
        Kind::Addr(example) => {
            let text = match given {
                Given::Toml(toml::Value::String(s)) => s.as_str(),
                Given::Env(s) => s,
                Given::Toml(v) => return Err(type_error(&format!("IP:port such as {example}"), v)),
            };
            text.trim()
                .parse::<std::net::SocketAddr>()
                .map(|_| ())
                .map_err(|_| {
                    format!(
                        "{name}: expected IP:port such as {example}{}",
                        got(text.into())
                    )
                })
        }
        Kind::OneOf(values) => {
            let text = match given {
                Given::Toml(toml::Value::String(s)) => s.as_str(),
                Given::Env(s) => s,
                Given::Toml(v) => {
                    return Err(type_error(&format!("one of {}", values().join(", ")), v));
                }
            };
            one_of(name, text, &values())
        }
        Kind::ListOf(values) => {
            let allowed = values();
            match given {
                Given::Env(s) => list_items(s).try_for_each(|item| one_of(name, item, &allowed)),
                Given::Toml(toml::Value::Array(items)) => items.iter().try_for_each(|v| match v {
                    toml::Value::String(s) => one_of(name, s, &allowed),
                    other => Err(type_error(
                        &format!("a list of {}", allowed.join(", ")),
                        other,
                    )),
                }),
                Given::Toml(v) => Err(type_error(
                    &format!(
                        "a list such as [\"{}\"] of {}",
                        allowed.first().copied().unwrap_or(""),
                        allowed.join(", ")
                    ),
                    v,
                )),
            }
        }
        Kind::Text => match given {
            Given::Env(_) | Given::Toml(toml::Value::String(_)) => Ok(()),
            Given::Toml(v) => Err(type_error("text (in quotes)", v)),
        },
        Kind::TextList => match given {
            Given::Env(_) => Ok(()),
            Given::Toml(toml::Value::Array(items)) => items.iter().try_for_each(|v| match v {
                toml::Value::String(_) => Ok(()),
                other => Err(type_error("a list of text", other)),
            }),
            Given::Toml(v) => Err(type_error("a list such as [\"a\", \"b\"]", v)),
        },
        Kind::Int(max) => {
            let what = format!("a whole number from 0 to {max}");
            let ok = match given {
                Given::Env(s) => s.trim().parse::<u64>().is_ok_and(|n| n <= max),
                Given::Toml(toml::Value::Integer(n)) => u64::try_from(*n).is_ok_and(|n| n <= max),
                Given::Toml(_) => false,
            };
            if ok {
                Ok(())
            } else {
                Err(match given {
                    Given::Env(s) => format!("{name}: expected {what}{}", got(s.into())),
                    Given::Toml(v) => type_error(&what, v),
                })
            }
        }
        Kind::Number => {
            let ok = match given {
                Given::Env(s) => s.trim().parse::<f64>().is_ok_and(f64::is_finite),
                Given::Toml(toml::Value::Integer(_)) => true,
                Given::Toml(toml::Value::Float(f)) => f.is_finite(),
                Given::Toml(_) => false,
            };
            if ok {
                Ok(())
            } else {
                Err(match given {
                    Given::Env(s) => {
                        format!("{name}: expected a number such as 0.5{}", got(s.into()))
                    }
                    Given::Toml(v) => type_error("a number such as 0.5", v),
                })
            }
        }
        Kind::Bool => {
            let ok = match given {
                Given::Env(s) => s.trim().to_ascii_lowercase().parse::<bool>().is_ok(),
                Given::Toml(v) => v.is_bool(),
            };
            if ok {
                Ok(())
            } else {
                Err(match given {
                    Given::Env(s) => format!("{name}: expected true or false{}", got(s.into())),
                    Given::Toml(v) => type_error("true or false", v),
                })
            }
        }
        Kind::Map => match given {
            Given::Toml(toml::Value::Table(t)) => t.iter().try_for_each(|(k, v)| match v {
                toml::Value::String(_) => Ok(()),
                other => Err(format!(
                    "{name}.{k}: expected text (in quotes){}",
                    got(shown(other))
                )),
            }),
            Given::Toml(v) => Err(type_error(
                "a table such as { \"exit-staff\" = \"case_manager\" }",
                v,
            )),
            Given::Env(_) => Ok(()),
        },
    }
}

fn list_items(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|i| !i.is_empty())
}

fn one_of(name: &str, value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{name}: {value} is not one of {}",
            allowed.join(", ")
        ))
    }
}
