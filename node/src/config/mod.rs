//! Layered configuration: built-in defaults, then an optional TOML file, then
//! `EXITNET_…` environment variables (`__` separates nested keys). Unknown
//! keys are errors. The environment is passed in, so tests never touch the
//! process environment.

pub mod check;
mod load;
pub mod schema;

use crate::domain::{NeedArea, OrgId, Sector, Service, Setting};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Variables with the `EXITNET_` prefix that belong to other programs
/// (`exitnetctl`, the test harness) and are not node settings.
const FOREIGN_VARIABLES: &[&str] = &["EXITNET_ADMIN_SOCKET", "EXITNET_OUTPUT", "EXITNET_CONFIG"];
const FOREIGN_PREFIXES: &[&str] = &["EXITNET_TEST_", "EXITNET_CTL_"];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the node keeps its identity, SQLite database and admin socket.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite in the data directory.
    pub database_url: Option<DatabaseUrl>,
    pub api: ApiConfig,
    pub federation: FederationConfig,
    pub admin: AdminConfig,
    pub org: OrgConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub traces: TracesConfig,
    pub audit: AuditConfig,
    pub limits: LimitsConfig,
    /// Master key for case content at rest: base64 of 32 bytes (use the
    /// environment variable `EXITNET_MASTER_KEY`, not a file in version control).
    pub master_key: Option<Secret>,
    /// Or a file holding it. Both are from before master-key generations
    /// (`keys`): at the first start with an empty key directory the key
    /// becomes generation 0 (so is `<data_dir>/identity/master.key`, which
    /// is then moved out of the data directory); remove them afterwards.
    pub master_key_file: Option<PathBuf>,
    pub keys: KeysConfig,
    pub dev: DevConfig,
    /// Where each setting that was given came from, as the user wrote it:
    /// `api.listen` (the file) or `EXITNET_API__LISTEN` (the environment).
    #[serde(skip)]
    pub origins: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Tokens from the organisation's OpenID Connect provider (the default).
    Oidc,
    /// Tokens the node mints itself; only with the client API on loopback.
    Dev,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The provider's issuer URL (OpenID Connect discovery starts there).
    pub issuer: Option<String>,
    /// The audience access tokens must name (this node's API).
    pub audience: Option<String>,
    /// Claim holding roles: a name or a dotted path (`realm_access.roles`).
    pub roles_claim: String,
    /// Claim holding the caller's team, if teams are used.
    pub team_claim: Option<String>,
    /// Provider role or group names mapped to Exitnet roles
    /// (`case_manager`, `supervisor`, `auditor`, `system`).
    pub role_map: std::collections::BTreeMap<String, String>,
    /// Signature algorithms accepted; `none` and HMAC never are.
    pub algorithms: Vec<String>,
    pub leeway_secs: u64,
    /// Least time between two JWKS refetches triggered by unknown key IDs.
    pub jwks_min_refetch_secs: u64,
    /// RFC 7662 introspection for opaque tokens.
    pub introspection: Option<IntrospectionConfig>,
    /// The JWT `typ` the provider gives its access tokens (`at+jwt`, RFC
    /// 9068); when set, a token of another type (an ID token) is refused.
    pub access_token_typ: Option<String>,
    /// Agency system (client ID) → the case managers it may act for, comma
    /// separated. A system not listed acts for no one.
    pub system_acts_for: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    pub url: String,
    pub client_id: String,
    pub client_secret: Secret,
}

/// A secret value: never shown by `Debug` or `config check`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Client API for agency systems.
    pub listen: SocketAddr,
    /// TLS for the client API; required unless `listen` is a loopback address.
    pub tls: Option<ApiTlsConfig>,
    /// A plaintext listener serving only `grpc.health.v1`, for orchestrators'
    /// probes (Kubernetes `grpc:` probes speak no TLS); unset: none.
    pub health_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, agency systems must present a certificate issued by this CA.
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Listener for peers (mutual TLS with pinned keys).
    pub listen: SocketAddr,
    /// `host:port` written into invitations; default: the listen address
    /// (with 127.0.0.1 for an unspecified address).
    pub advertise: Option<String>,
    /// How long peers keep accepting the old key after a rotation.
    pub key_overlap_secs: u64,
    /// TLS handshake deadline for incoming connections.
    pub handshake_timeout_ms: u64,
    /// Deadline for one call to a peer.
    pub call_timeout_ms: u64,
    /// Retry backoff for notices to peers: first delay and cap.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// A referral message not delivered within this time fails as undeliverable.
    pub max_delivery_age_secs: u64,
    /// How often expired consents and retention periods are checked.
    pub scheduler_interval_secs: u64,
    /// Days an inbound referral declined or failed here keeps its content
    /// (seen only by the case manager who closed it and supervisors); then
    /// it is purged here, without waiting for the sender. 0: at the next
    /// scheduler round.
    pub closed_inbound_retention_days: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Unix socket for `exitnetctl`; default `<data_dir>/admin.sock`.
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    /// Organisation ID; required at the first start (`exitnet-node init` writes it),
    /// kept in the database and never changed after.
    pub id: Option<String>,
    /// Display name; default: the organisation ID.
    pub name: Option<String>,
    pub sector: Option<Sector>,
    pub need_areas: Vec<NeedArea>,
    pub services: Vec<Service>,
    pub languages: Vec<String>,
    pub settings: Vec<Setting>,
    pub accepting_referrals: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// Export of the per-call spans to an OpenTelemetry collector (OTLP over
/// gRPC). Spans carry what the logs carry: surface, method, peer or caller,
/// status, duration; never a field of a message.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// The collector's OTLP/gRPC address (`http://collector:4317`); unset: no export.
    pub otlp_endpoint: Option<String>,
    /// Share of calls whose spans are exported, 0.0 to 1.0.
    pub sample_ratio: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint (`GET /metrics`); unset: no endpoint.
    pub listen: Option<SocketAddr>,
}

/// Bounds on what callers and peers may ask of the node. Above a rate or a
/// concurrency limit a call gets RESOURCE_EXHAUSTED; above the message size,
/// RESOURCE_EXHAUSTED from the gRPC layer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest gRPC message accepted on the client API and from peers.
    pub max_message_bytes: usize,
    /// HTTP/2 streams one connection may have open at once (every listener).
    pub max_concurrent_streams: u32,
    /// Per signed-in caller (token subject) on the client API.
    pub caller_calls_per_sec: u32,
    pub caller_burst: u32,
    /// Calls (and watch streams) one caller may have in flight.
    pub caller_max_in_flight: u32,
    /// Per peer organisation on the federation listener.
    pub peer_calls_per_sec: u32,
    pub peer_burst: u32,
    pub peer_max_in_flight: u32,
    /// Per remote address, before sign-in (client API and joins), and for
    /// strangers on the federation listener: their calls and every new
    /// connection from the address.
    pub address_calls_per_sec: u32,
    pub address_burst: u32,
    /// Connections older than this are closed gracefully (clients reconnect);
    /// HTTP/2 keepalive pings close dead ones sooner.
    pub max_connection_age_secs: u64,
    /// Refused calls (security events) are kept this many days…
    pub security_events_kept_days: u32,
    /// …and at most this many rows (each counts the refusals of one kind,
    /// key and address in one minute); the oldest go first.
    pub security_events_max_rows: u64,
    /// Quotas on what one approved peer can make this node store: referrals
    /// received from it and not yet accepted, declined or withdrawn…
    pub peer_max_pending_intake: u32,
    /// …and audit checkpoints of its own witnessed in 24 hours.
    pub peer_checkpoints_per_day: u32,
}

/// Master-key generations: the data keys of case content are wrapped under
/// the newest; a new one is made every `rotation_days` and the live data
/// keys rewrapped under it; a generation is destroyed `backup_retention_days`
/// after it was replaced. So a backup older than that can be read with no
/// key that still exists, and a purged referral is unreadable in every backup
/// at most `rotation_days + backup_retention_days` after its purge.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The key directory (one file per generation, the node's alone); never
    /// inside the data directory, never in the backups of it. Default: beside
    /// the data directory, its name with `-keys` added (`/var/lib/exitnet-keys`).
    pub dir: Option<PathBuf>,
    pub rotation_days: u64,
    /// How long the organisation keeps backups of the database.
    pub backup_retention_days: u64,
}

/// For tests only; refused unless `auth.mode = "dev"` (loopback only).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DevConfig {
    /// Moves the clock of the master-key generations this many seconds ahead.
    pub clock_offset_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// A checkpoint is signed after this many new audit records…
    pub checkpoint_every_records: u64,
    /// …or after this many seconds with at least one new record.
    pub checkpoint_interval_secs: u64,
}

/// A database URL. Its password never appears in `Debug` or in `config check`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        let Some(scheme_end) = s.find("://") else {
            return s.clone();
        };
        let (head, query) = match s.find('?') {
            Some(q) => (&s[..q], Some(&s[q + 1..])),
            None => (s.as_str(), None),
        };
        let rest = &head[scheme_end + 3..];
        // The last '@' ends the user information (a password may contain '@').
        let mut out = match rest.rfind('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                match userinfo.find(':') {
                    Some(colon) => format!(
                        "{}://{}:***{}",
                        &s[..scheme_end],
                        &userinfo[..colon],
                        &rest[at..]
                    ),
                    None => head.to_owned(),
                }
            }
            None => head.to_owned(),
        };
        if let Some(q) = query {
            let params: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _))
                        if k.eq_ignore_ascii_case("password")
                            || k.eq_ignore_ascii_case("sslpassword") =>
                    {
                        format!("{k}=***")
                    }
                    _ => kv.to_owned(),
                })
                .collect();
            out.push('?');
            out.push_str(&params.join("&"));
        }
        out
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// `<data_dir>-keys`: a sibling, so backing up the data directory does not
/// take the keys along.
pub fn default_key_dir(data_dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    match absolute.file_name() {
        Some(name) => absolute.with_file_name(format!("{}-keys", name.to_string_lossy())),
        None => absolute.join("..").join("exitnet-keys"),
    }
}

/// What is wrong with a configuration: every problem found, each naming the
/// setting as the user wrote it and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration ({} problems):", many.len())?;
                for p in many {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Problems {}

#[cfg(test)]
mod tests;
