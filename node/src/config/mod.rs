//! Layered configuration: built-in defaults, then an optional TOML file, then
//! `EXITNET_…` environment variables (`__` separates nested keys). Unknown
//! keys are errors. The environment is passed in, so tests never touch the
//! process environment.

pub mod check;
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

fn defaults() -> config::Config {
    // Built-in defaults; every key here can be overridden by the file or environment.
    let toml = r#"
data_dir = "./exitnet-data"

[api]
listen = "127.0.0.1:7711"

[federation]
listen = "0.0.0.0:7710"
key_overlap_secs = 604800
handshake_timeout_ms = 10000
call_timeout_ms = 10000
retry_initial_ms = 500
retry_max_ms = 300000
max_delivery_age_secs = 604800
scheduler_interval_secs = 60
closed_inbound_retention_days = 7

[admin]

[org]
need_areas = []
services = []
languages = []
settings = []
accepting_referrals = true

[auth]
mode = "oidc"
roles_claim = "roles"
algorithms = ["RS256", "PS256", "ES256", "EdDSA"]
leeway_secs = 60
jwks_min_refetch_secs = 30

[auth.role_map]

[auth.system_acts_for]

[log]
format = "text"

[metrics]

[traces]
sample_ratio = 1.0

[keys]
rotation_days = 30
backup_retention_days = 30

[dev]
clock_offset_secs = 0

[audit]
checkpoint_every_records = 1000
checkpoint_interval_secs = 300

[limits]
max_message_bytes = 1048576
max_concurrent_streams = 128
caller_calls_per_sec = 100
caller_burst = 200
caller_max_in_flight = 32
peer_calls_per_sec = 500
peer_burst = 1000
peer_max_in_flight = 64
address_calls_per_sec = 200
address_burst = 400
max_connection_age_secs = 3600
security_events_kept_days = 90
security_events_max_rows = 100000
peer_max_pending_intake = 10000
peer_checkpoints_per_day = 2880
"#;
    config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .unwrap_or_default()
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

/// The variables of `env` that are node settings.
fn node_variables(env: &HashMap<String, String>) -> BTreeMap<String, String> {
    env.iter()
        .filter(|(k, _)| k.starts_with("EXITNET_"))
        .filter(|(k, _)| !FOREIGN_VARIABLES.contains(&k.as_str()))
        .filter(|(k, _)| !FOREIGN_PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `auth.role_map.<provider role>`: keys of the user's choosing.
const ROLE_MAP: &str = "auth.role_map";
/// `auth.system_acts_for.<client ID>`: keys of the user's choosing.
const SYSTEM_ACTS_FOR: &str = "auth.system_acts_for";

/// Checks every key and value of a file against the known settings,
/// recording where each came from.
fn check_table(
    prefix: &str,
    table: &toml::Table,
    origins: &mut BTreeMap<String, String>,
    problems: &mut Vec<String>,
) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let Some(spec) = schema::find(&key) {
            if let Err(e) = schema::check_value(spec, &key, schema::Given::Toml(v)) {
                problems.push(e);
            }
            origins.insert(key.clone(), key);
        } else if schema::is_table(&key) {
            match v {
                toml::Value::Table(t) => check_table(&key, t, origins, problems),
                other => problems.push(format!("{key}: expected a table ([{key}]), not `{other}`")),
            }
        } else {
            problems.push(match schema::suggest(&key) {
                Some(near) => format!("{key} is not a known setting; did you mean {near}?"),
                None => format!("{key} is not a known setting"),
            });
        }
    }
}

/// Checks every node variable of the environment against the known settings.
fn check_env(
    vars: &BTreeMap<String, String>,
    origins: &mut BTreeMap<String, String>,
    problems: &mut Vec<String>,
) {
    for (var, value) in vars {
        let Some(key) = schema::key_of_env(var) else {
            problems.push(format!("{var} is not a known setting"));
            continue;
        };
        if let Some(spec) = schema::find(&key) {
            if let Err(e) = schema::check_value(spec, var, schema::Given::Env(value)) {
                problems.push(e);
            }
            origins.insert(key, var.clone());
        } else if key.starts_with(&format!("{ROLE_MAP}."))
            || key.starts_with(&format!("{SYSTEM_ACTS_FOR}."))
        {
            origins.insert(key, var.clone());
        } else {
            problems.push(match schema::suggest(&key) {
                Some(near) if schema::find(near).is_some() => format!(
                    "{var} is not a known setting; did you mean {}?",
                    schema::env_name(near)
                ),
                _ => format!("{var} is not a known setting"),
            });
        }
    }
}

impl Config {
    /// The defaults overlaid with one TOML text (no environment): what
    /// `config check` does with a file, for the fuzz target.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Self::build(Some(("the configuration", text)), &HashMap::new())
    }

    /// Loads the configuration from the defaults, `file` and `env`.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let text = match file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow::anyhow!("configuration file {} does not exist", path.display())
                } else {
                    anyhow::anyhow!("reading configuration file {}: {e}", path.display())
                }
            })?),
            None => None,
        };
        let name = file.map(|p| p.display().to_string()).unwrap_or_default();
        Self::build(text.as_deref().map(|t| (name.as_str(), t)), env)
    }

    fn build(file: Option<(&str, &str)>, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let mut problems = Vec::new();
        let mut origins = BTreeMap::new();
        let mut builder = config::Config::builder().add_source(defaults());
        if let Some((name, text)) = file {
            let table: toml::Table = toml::from_str(text).map_err(|e| {
                anyhow::anyhow!("{name} is not valid TOML: {}", e.to_string().trim_end())
            })?;
            check_table("", &table, &mut origins, &mut problems);
            builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
        }
        let node_env = node_variables(env);
        check_env(&node_env, &mut origins, &mut problems);
        if !problems.is_empty() {
            return Err(Problems(problems).into());
        }
        builder = builder.add_source(
            config::Environment::with_prefix("EXITNET")
                .prefix_separator("_")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("org.need_areas")
                .with_list_parse_key("org.services")
                .with_list_parse_key("org.languages")
                .with_list_parse_key("org.settings")
                .with_list_parse_key("auth.algorithms")
                .try_parsing(true)
                .source(Some(node_env.into_iter().collect())),
        );
        let raw = builder.build().context("reading configuration")?;
        let mut cfg: Config = raw
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        cfg.origins = origins;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The setting `key` as the user wrote it: the environment variable when
    /// it came from there, else the dotted key.
    pub fn name(&self, key: &str) -> String {
        self.origins
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_owned())
    }

    /// Rules that span fields, checked before anything starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(problems).into())
        }
    }

    /// Every rule the values break, checked without touching files or the network.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let n = |key: &str| self.name(key);
        if !(0.0..=1.0).contains(&self.traces.sample_ratio) {
            p.push(format!(
                "{}: expected a number from 0.0 to 1.0, not {}",
                n("traces.sample_ratio"),
                self.traces.sample_ratio
            ));
        }
        if let Some(e) = &self.traces.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            p.push(format!(
                "{}: expected an http:// or https:// URL such as http://collector:4317, not `{e}`",
                n("traces.otlp_endpoint")
            ));
        }
        if let Some(id) = &self.org.id
            && OrgId::parse("org.id", id).is_err()
        {
            p.push(format!(
                "{}: expected 3 to 63 characters a-z, 0-9 and -, starting with a letter or digit, such as exit-nord, not `{id}`",
                n("org.id")
            ));
        }
        if let Some(name) = &self.org.name
            && let Err(e) = crate::domain::org_name_check(name)
        {
            p.push(format!("{}: {}", n("org.name"), e.rule));
        }
        for lang in &self.org.languages {
            if lang.is_empty()
                || lang.len() > 35
                || !lang.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                p.push(format!(
                    "{}: `{lang}` is not a BCP 47 language tag such as de or pt-BR",
                    n("org.languages")
                ));
            }
        }
        if let Some(url) = &self.database_url {
            let u = url.expose();
            if !(u.starts_with("sqlite:")
                || u.starts_with("postgres:")
                || u.starts_with("postgresql:"))
            {
                let scheme = u.split_once(':').map(|(s, _)| s).unwrap_or(u);
                p.push(format!(
                    "{}: expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE, not a {scheme} URL",
                    n("database_url")
                ));
            }
        }
        if let Some(key) = &self.master_key
            && let Err(e) = check::master_key_text(key.expose())
        {
            p.push(format!("{}: {e}", n("master_key")));
        }
        for (key, v) in [
            ("keys.rotation_days", self.keys.rotation_days),
            (
                "keys.backup_retention_days",
                self.keys.backup_retention_days,
            ),
        ] {
            if !(1..=3650).contains(&v) {
                p.push(format!("{}: expected 1 to 3650 days, not {v}", n(key)));
            }
        }
        if let (Ok(keys), Ok(data)) = (
            std::path::absolute(self.key_dir()),
            std::path::absolute(&self.data_dir),
        ) && keys.starts_with(&data)
        {
            p.push(format!(
                "{}: {} is inside the data directory {}; the master key must stay out of the \
                 data and its backups (the default is {})",
                n("keys.dir"),
                keys.display(),
                data.display(),
                default_key_dir(&self.data_dir).display()
            ));
        }
        if self.dev.clock_offset_secs != 0 && self.auth.mode != AuthMode::Dev {
            p.push(format!(
                "{} moves the node's key clock for tests; it is refused unless auth.mode = \"dev\"",
                n("dev.clock_offset_secs")
            ));
        }
        if self.api.tls.is_none() && !self.api.listen.ip().is_loopback() {
            p.push(format!(
                "{} is {} but api.tls is not set; the client API may be plaintext only on a \
                 loopback address (set api.tls.cert_file and api.tls.key_file, or listen on 127.0.0.1)",
                n("api.listen"),
                self.api.listen
            ));
        }
        if self.auth.mode == AuthMode::Dev && !self.api.listen.ip().is_loopback() {
            p.push(format!(
                "{} = \"dev\" accepts tokens the node mints itself; it is refused unless {} \
                 is a loopback address (it is {})",
                n("auth.mode"),
                n("api.listen"),
                self.api.listen
            ));
        }
        if let Some(issuer) = &self.auth.issuer {
            if self.auth.audience.is_none() {
                p.push(format!(
                    "auth.audience is required with {} (the audience your provider writes into access tokens for this node)",
                    n("auth.issuer")
                ));
            }
            if !check::is_http_url(issuer) {
                p.push(format!(
                    "{}: expected an https:// URL such as https://id.example.org/realms/exitnet, not `{issuer}`",
                    n("auth.issuer")
                ));
            }
        }
        if let Some(i) = &self.auth.introspection
            && !check::is_http_url(&i.url)
        {
            p.push(format!(
                "{}: expected an https:// URL, not `{}`",
                n("auth.introspection.url"),
                i.url
            ));
        }
        for alg in &self.auth.algorithms {
            if !crate::auth::jwt::algorithm_allowed(alg, std::slice::from_ref(alg)) {
                p.push(format!(
                    "{}: {alg} is never accepted (no `none`, no HMAC); use RS256, PS256, ES256 or EdDSA",
                    n("auth.algorithms")
                ));
            }
        }
        for (client, names) in &self.auth.system_acts_for {
            if let Err(e) = crate::auth::acts_for_list(names) {
                p.push(format!("{SYSTEM_ACTS_FOR}.{client}: {e}"));
            }
        }
        if let Some(typ) = &self.auth.access_token_typ
            && (typ.trim().is_empty() || typ.len() > 100)
        {
            p.push(format!(
                "{}: expected a JWT type such as at+jwt",
                n("auth.access_token_typ")
            ));
        }
        for (from, to) in &self.auth.role_map {
            if crate::auth::Role::parse(to).is_none() {
                p.push(format!(
                    "auth.role_map.{from}: {to} is not one of case_manager, supervisor, auditor, system"
                ));
            }
        }
        if let Some(adv) = &self.federation.advertise
            && crate::domain::endpoint_check("federation.advertise", adv).is_err()
        {
            p.push(format!(
                "{}: expected host:port such as exitnet.example.org:7710, not `{adv}`",
                n("federation.advertise")
            ));
        }
        if self.federation.retry_initial_ms == 0
            || self.federation.retry_max_ms < self.federation.retry_initial_ms
        {
            p.push(format!(
                "{} must be more than 0 and at most {} ({} and {} now)",
                n("federation.retry_initial_ms"),
                n("federation.retry_max_ms"),
                self.federation.retry_initial_ms,
                self.federation.retry_max_ms
            ));
        }
        // Zero would keep nothing (retention) or refuse everything (quotas).
        let at_least = [
            (
                "limits.security_events_kept_days",
                u64::from(self.limits.security_events_kept_days),
                1,
            ),
            (
                "limits.security_events_max_rows",
                self.limits.security_events_max_rows,
                1000,
            ),
            (
                "limits.peer_max_pending_intake",
                u64::from(self.limits.peer_max_pending_intake),
                1,
            ),
            (
                "limits.peer_checkpoints_per_day",
                u64::from(self.limits.peer_checkpoints_per_day),
                1,
            ),
        ];
        for (key, value, min) in at_least {
            if value < min {
                p.push(format!("{}: expected at least {min}, not {value}", n(key)));
            }
        }
        p
    }

    pub fn database_url(&self) -> DatabaseUrl {
        self.database_url.clone().unwrap_or_else(|| {
            DatabaseUrl::new(format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("exitnet.db").display()
            ))
        })
    }

    /// `keys.dir`, or beside the data directory: `<data_dir>-keys`.
    pub fn key_dir(&self) -> PathBuf {
        self.keys
            .dir
            .clone()
            .unwrap_or_else(|| default_key_dir(&self.data_dir))
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.admin
            .socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.sock"))
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> anyhow::Result<String> {
        let mut shown = self.clone();
        shown.database_url = Some(self.database_url());
        Ok(toml::to_string_pretty(&shown)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_run_without_any_configuration() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:7711");
        assert_eq!(c.federation.listen.to_string(), "0.0.0.0:7710");
        assert_eq!(c.data_dir, PathBuf::from("./exitnet-data"));
        assert!(c.database_url().expose().starts_with("sqlite://"));
    }

    #[test]
    fn environment_overrides_with_double_underscore_nesting() {
        let c = Config::load(
            None,
            &env(&[
                ("EXITNET_DATABASE_URL", "postgres://u:pw@db/x"),
                ("EXITNET_API__LISTEN", "127.0.0.1:9000"),
                ("EXITNET_ORG__ID", "ngo-a"),
                ("EXITNET_ORG__NEED_AREAS", "mental_health,security"),
                ("EXITNET_ADMIN_SOCKET", "/ignored/by/the/node"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.api.listen.port(), 9000);
        assert_eq!(c.org.id.as_deref(), Some("ngo-a"));
        assert_eq!(
            c.org.need_areas,
            vec![NeedArea::MentalHealth, NeedArea::Security]
        );
        let shown = c.to_redacted_toml().unwrap();
        assert!(shown.contains("postgres://u:***@db/x"), "{shown}");
        assert!(!shown.contains("pw"));
        assert!(!format!("{c:?}").contains("pw"));
    }

    #[test]
    fn database_passwords_are_redacted_everywhere() {
        for (url, hidden) in [
            ("postgres://u:p@ss@db/x", "p@ss"),
            (
                "postgres://u@db/x?password=hunter2&sslmode=require",
                "hunter2",
            ),
            ("postgres://u:s3cret@db:5432/x?application_name=n", "s3cret"),
        ] {
            let shown = DatabaseUrl::new(url).redacted();
            assert!(!shown.contains(hidden), "{shown}");
            assert!(shown.contains("db"), "{shown}");
        }
        assert_eq!(
            DatabaseUrl::new("sqlite://./x.db?mode=rwc").redacted(),
            "sqlite://./x.db?mode=rwc"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[api]\nlisen = \"127.0.0.1:1\"\n").unwrap();
        let e = Config::load(Some(&f), &env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("api.lisen is not a known setting; did you mean api.listen?"),
            "{e}"
        );
        let e = Config::load(None, &env(&[("EXITNET_BOGUS", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("EXITNET_BOGUS is not a known setting"), "{e}");
        assert!(!e.contains("did you mean"), "{e}");
    }

    fn problem(file: Option<&str>, vars: &[(&str, &str)]) -> String {
        let r = match file {
            Some(text) => {
                let dir = tempfile::tempdir().unwrap();
                let f = dir.path().join("c.toml");
                std::fs::write(&f, text).unwrap();
                Config::load(Some(&f), &env(vars))
            }
            None => Config::load(None, &env(vars)),
        };
        match r {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    /// Retention and quotas are settings, checked: zero is refused naming them.
    #[test]
    fn retention_and_quotas_are_settings() {
        let c = Config::load(
            None,
            &env(&[
                ("EXITNET_LIMITS__SECURITY_EVENTS_KEPT_DAYS", "7"),
                ("EXITNET_LIMITS__PEER_MAX_PENDING_INTAKE", "50"),
            ]),
        )
        .unwrap();
        assert_eq!(c.limits.security_events_kept_days, 7);
        assert_eq!(c.limits.security_events_max_rows, 100_000);
        assert_eq!(c.limits.peer_max_pending_intake, 50);
        assert_eq!(c.limits.peer_checkpoints_per_day, 2880);
        let e = problem(
            Some("[limits]\nsecurity_events_max_rows = 10\npeer_checkpoints_per_day = 0\n"),
            &[],
        );
        assert!(
            e.contains("limits.security_events_max_rows: expected at least 1000, not 10"),
            "{e}"
        );
        assert!(
            e.contains("limits.peer_checkpoints_per_day: expected at least 1, not 0"),
            "{e}"
        );
        let e = problem(None, &[("EXITNET_LIMITS__SECURITY_EVENTS_KEPT_DAYS", "0")]);
        assert!(
            e.contains("EXITNET_LIMITS__SECURITY_EVENTS_KEPT_DAYS: expected at least 1, not 0"),
            "{e}"
        );
    }

    /// Whom each agency system acts for, and the access-token type, are checked.
    #[test]
    fn systems_and_token_types_are_checked() {
        let c = Config::from_toml(
            "[auth]\naccess_token_typ = \"at+jwt\"\n[auth.system_acts_for]\n\"crm\" = \"alice, bob\"\n",
        )
        .unwrap();
        assert_eq!(c.auth.system_acts_for["crm"], "alice, bob");
        assert_eq!(c.auth.access_token_typ.as_deref(), Some("at+jwt"));
        let e = problem(
            Some("[auth]\naccess_token_typ = \" \"\n[auth.system_acts_for]\n\"crm\" = \" , \"\n"),
            &[],
        );
        assert!(
            e.contains("auth.system_acts_for.crm: expected the case managers"),
            "{e}"
        );
        assert!(
            e.contains("auth.access_token_typ: expected a JWT type"),
            "{e}"
        );
    }

    /// Each error names the setting as written and what was expected.
    #[test]
    fn errors_name_the_setting_as_written_and_what_was_expected() {
        type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            (
                None,
                &[("EXITNET_API__LISEN", "127.0.0.1:1")],
                "EXITNET_API__LISEN is not a known setting; did you mean EXITNET_API__LISTEN?",
            ),
            (
                None,
                &[("EXITNET_FEDERATON__LISTEN", "127.0.0.1:1")],
                "EXITNET_FEDERATON__LISTEN is not a known setting; did you mean EXITNET_FEDERATION__LISTEN?",
            ),
            (
                None,
                &[("EXITNET_API_LISTEN", "127.0.0.1:1")],
                "did you mean EXITNET_API__LISTEN?",
            ),
            (
                Some("[federaton]\nlisten = \"127.0.0.1:1\"\n"),
                &[],
                "federaton is not a known setting; did you mean federation?",
            ),
            (
                None,
                &[("EXITNET_LOG__FORMAT", "yaml")],
                "EXITNET_LOG__FORMAT: yaml is not one of text, json",
            ),
            (
                Some("[log]\nformat = \"yaml\"\n"),
                &[],
                "log.format: yaml is not one of text, json",
            ),
            (
                Some("[api]\nlisten = \"localhost:7711\"\n"),
                &[],
                "api.listen: expected IP:port such as 127.0.0.1:7711, not `localhost:7711`",
            ),
            (
                None,
                &[("EXITNET_API__LISTEN", "7711")],
                "EXITNET_API__LISTEN: expected IP:port such as 127.0.0.1:7711",
            ),
            (
                Some("[api]\nlisten = 7711\n"),
                &[],
                "api.listen: expected IP:port such as 127.0.0.1:7711, not `7711`",
            ),
            (
                None,
                &[("EXITNET_ORG__SECTOR", "church")],
                "EXITNET_ORG__SECTOR: church is not one of ngo, prison_probation, police",
            ),
            (
                None,
                &[("EXITNET_ORG__NEED_AREAS", "cognitive,banana")],
                "EXITNET_ORG__NEED_AREAS: banana is not one of functional_reintegration",
            ),
            (
                Some("[org]\nservices = \"housing\"\n"),
                &[],
                "org.services: expected a list such as",
            ),
            (
                None,
                &[("EXITNET_LIMITS__CALLER_BURST", "-1")],
                "EXITNET_LIMITS__CALLER_BURST: expected a whole number from 0 to 4294967295, not `-1`",
            ),
            (
                None,
                &[("EXITNET_ORG__ACCEPTING_REFERRALS", "yes")],
                "EXITNET_ORG__ACCEPTING_REFERRALS: expected true or false, not `yes`",
            ),
            (
                None,
                &[("EXITNET_TRACES__SAMPLE_RATIO", "2")],
                "EXITNET_TRACES__SAMPLE_RATIO: expected a number from 0.0 to 1.0",
            ),
            (
                None,
                &[("EXITNET_ORG__ID", "Bad Id")],
                "EXITNET_ORG__ID: expected 3 to 63 characters",
            ),
            (
                Some("[org]\nid = \"Bad Id\"\n"),
                &[],
                "org.id: expected 3 to 63 characters",
            ),
            (
                None,
                &[("EXITNET_DATABASE_URL", "mysql://u:hunter2@db/x")],
                "EXITNET_DATABASE_URL: expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE, not a mysql URL",
            ),
            (
                None,
                &[("EXITNET_MASTER_KEY", "abc")],
                "EXITNET_MASTER_KEY: expected base64 of 32 bytes (make one with `openssl rand -base64 32`); this is not base64",
            ),
            (
                None,
                &[("EXITNET_MASTER_KEY", "YWJj")],
                "EXITNET_MASTER_KEY: expected base64 of 32 bytes (make one with `openssl rand -base64 32`); this is 3 bytes",
            ),
            (
                None,
                &[
                    ("EXITNET_AUTH__ISSUER", "idp.example"),
                    ("EXITNET_AUTH__AUDIENCE", "x"),
                ],
                "EXITNET_AUTH__ISSUER: expected an https:// URL",
            ),
            (
                None,
                &[("EXITNET_AUTH__ALGORITHMS", "HS256")],
                "EXITNET_AUTH__ALGORITHMS: HS256 is never accepted",
            ),
            (
                None,
                &[("EXITNET_FEDERATION__ADVERTISE", "nope")],
                "EXITNET_FEDERATION__ADVERTISE: expected host:port such as exitnet.example.org:7710",
            ),
            (
                None,
                &[("EXITNET_API__LISTEN", "0.0.0.0:7711")],
                "EXITNET_API__LISTEN is 0.0.0.0:7711 but api.tls is not set",
            ),
        ];
        for (file, vars, expected) in cases {
            let e = problem(*file, vars);
            assert!(
                e.contains(expected),
                "{file:?} {vars:?}:\n  got      {e}\n  expected {expected}"
            );
        }
        // Secrets are never repeated in an error.
        let e = problem(None, &[("EXITNET_DATABASE_URL", "mysql://u:hunter2@db/x")]);
        assert!(!e.contains("hunter2"), "{e}");
        let e = problem(None, &[("EXITNET_MASTER_KEY", "c2VjcmV0")]);
        assert!(!e.contains("c2VjcmV0"), "{e}");
        // Every problem at once, one to a line.
        let e = problem(
            None,
            &[("EXITNET_LOG__FORMAT", "yaml"), ("EXITNET_API__LISEN", "x")],
        );
        assert!(e.starts_with("invalid configuration (2 problems):"), "{e}");
        assert_eq!(e.lines().count(), 3, "{e}");
    }

    #[test]
    fn suggestions_only_when_near() {
        for (typed, expected) in [
            ("api.lisen", Some("api.listen")),
            ("federaton", Some("federation")),
            ("org.need_area", Some("org.need_areas")),
            ("master_keyfile", Some("master_key_file")),
            ("bogus", None),
            ("colour", None),
        ] {
            assert_eq!(schema::suggest(typed), expected, "{typed}");
        }
        assert_eq!(
            schema::env_name("api.tls.cert_file"),
            "EXITNET_API__TLS__CERT_FILE"
        );
        assert_eq!(
            schema::key_of_env("EXITNET_API__TLS__CERT_FILE").as_deref(),
            Some("api.tls.cert_file")
        );
    }

    /// The table of settings is the `Config` structure, key for key.
    #[test]
    fn the_settings_table_matches_the_structure() {
        fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m)
                    if prefix != "auth.role_map" && prefix != SYSTEM_ACTS_FOR =>
                {
                    for (k, v) in m {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        leaves(&key, v, out);
                    }
                }
                _ => out.push(prefix.to_owned()),
            }
        }
        // Every optional setting given, so that each appears.
        let c = Config::from_toml(
            "database_url = \"sqlite://x.db\"\nmaster_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nmaster_key_file = \"k\"\n\
             [api]\nhealth_listen = \"127.0.0.1:1\"\n[api.tls]\ncert_file = \"c\"\nkey_file = \"k\"\nclient_ca_file = \"ca\"\n\
             [federation]\nadvertise = \"a.example:1\"\n[admin]\nsocket = \"s\"\n\
             [org]\nid = \"ngo-a\"\nname = \"A\"\nsector = \"ngo\"\n\
             [auth]\nissuer = \"https://idp\"\naudience = \"a\"\nteam_claim = \"t\"\n\
             [auth.introspection]\nurl = \"https://idp/i\"\nclient_id = \"n\"\nclient_secret = \"s\"\n\
             [metrics]\nlisten = \"127.0.0.1:2\"\n[traces]\notlp_endpoint = \"http://c:4317\"\n",
        )
        .unwrap();
        let mut found = Vec::new();
        leaves("", &serde_json::to_value(&c).unwrap(), &mut found);
        found.sort();
        let mut known: Vec<String> = schema::SETTINGS.iter().map(|s| s.key.to_owned()).collect();
        known.sort();
        assert_eq!(found, known);
    }

    #[test]
    fn origins_follow_the_environment_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[api]\nlisten = \"127.0.0.1:1\"\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), &env(&[("EXITNET_API__LISTEN", "127.0.0.1:2")])).unwrap();
        assert_eq!(c.name("api.listen"), "EXITNET_API__LISTEN");
        assert_eq!(c.name("log.format"), "log.format");
        assert_eq!(c.name("org.id"), "org.id");
        assert_eq!(c.api.listen.port(), 2);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn plaintext_client_api_only_on_loopback() {
        let e = Config::load(None, &env(&[("EXITNET_API__LISTEN", "0.0.0.0:7711")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("api.tls"), "{e}");
    }

    #[test]
    fn dev_auth_only_on_loopback_and_secrets_hidden() {
        let e = Config::load(
            None,
            &env(&[
                ("EXITNET_AUTH__MODE", "dev"),
                ("EXITNET_API__LISTEN", "0.0.0.0:7711"),
                ("EXITNET_API__TLS__CERT_FILE", "c"),
                ("EXITNET_API__TLS__KEY_FILE", "k"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("EXITNET_AUTH__MODE"), "{e}");
        let c = Config::load(
            None,
            &env(&[
                ("EXITNET_AUTH__ISSUER", "https://idp"),
                ("EXITNET_AUTH__AUDIENCE", "urn:x"),
                ("EXITNET_AUTH__INTROSPECTION__URL", "https://idp/introspect"),
                ("EXITNET_AUTH__INTROSPECTION__CLIENT_ID", "node"),
                ("EXITNET_AUTH__INTROSPECTION__CLIENT_SECRET", "hunter2"),
            ]),
        )
        .unwrap();
        assert!(!c.to_redacted_toml().unwrap().contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = Config::load(None, &env(&[("EXITNET_AUTH__ISSUER", "https://idp")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.audience"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::load(None, &env(&[("EXITNET_ORG__SECTOR", "church")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("church"), "{e}");
        let e = Config::load(None, &env(&[("EXITNET_ORG__ID", "Bad Id")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("EXITNET_ORG__ID"), "{e}");
    }
}
