//! Layered configuration: built-in defaults, then an optional TOML file, then
//! `EXITNET_…` environment variables (`__` separates nested keys). Unknown
//! keys are errors. The environment is passed in, so tests never touch the
//! process environment.

use crate::domain::{NeedArea, OrgId, Sector, Service, Setting};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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
    /// Or a file holding it; default `<data_dir>/identity/master.key`, created on first start.
    pub master_key_file: Option<PathBuf>,
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
    /// Organisation ID; generated and kept on first start when unset.
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
    /// Per remote address, before sign-in (client API and joins).
    pub address_calls_per_sec: u32,
    pub address_burst: u32,
    /// Connections older than this are closed gracefully (clients reconnect);
    /// HTTP/2 keepalive pings close dead ones sooner.
    pub max_connection_age_secs: u64,
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

[log]
format = "text"

[metrics]

[traces]
sample_ratio = 1.0

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
"#;
    config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .unwrap_or_default()
}

impl Config {
    /// The defaults overlaid with one TOML text (no environment): what
    /// `config check` does with a file, for the fuzz target.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let raw = config::Config::builder()
            .add_source(defaults())
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .context("reading configuration")?;
        let cfg: Config = raw
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads the configuration from the defaults, `file` and `env`.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let mut builder = config::Config::builder().add_source(defaults());
        if let Some(path) = file {
            if !path.exists() {
                bail!("configuration file {} does not exist", path.display());
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let node_env: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("EXITNET_"))
            .filter(|(k, _)| !FOREIGN_VARIABLES.contains(&k.as_str()))
            .filter(|(k, _)| !FOREIGN_PREFIXES.iter().any(|p| k.starts_with(p)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("EXITNET")
                .prefix_separator("_")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("org.need_areas")
                .with_list_parse_key("org.services")
                .with_list_parse_key("org.languages")
                .with_list_parse_key("org.settings")
                .try_parsing(true)
                .source(Some(node_env)),
        );
        let raw = builder.build().context("reading configuration")?;
        let cfg: Config = raw
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rules that span fields, checked before anything starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.traces.sample_ratio) {
            bail!("invalid configuration: traces.sample_ratio: between 0.0 and 1.0");
        }
        if let Some(e) = &self.traces.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            bail!("invalid configuration: traces.otlp_endpoint: an http:// or https:// URL");
        }
        if let Some(id) = &self.org.id {
            OrgId::parse("org.id", id)
                .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        }
        if let Some(name) = &self.org.name {
            crate::domain::org_name_check(name)
                .map_err(|e| anyhow::anyhow!("invalid configuration: org.{e}"))?;
        }
        for lang in &self.org.languages {
            if lang.is_empty()
                || lang.len() > 35
                || !lang.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                bail!(
                    "invalid configuration: org.languages: `{lang}` is not a BCP 47 language tag"
                );
            }
        }
        if self.api.tls.is_none() && !self.api.listen.ip().is_loopback() {
            bail!(
                "invalid configuration: api.listen is {} but api.tls is not set; \
                 the client API may be plaintext only on a loopback address",
                self.api.listen
            );
        }
        if self.auth.mode == AuthMode::Dev && !self.api.listen.ip().is_loopback() {
            bail!(
                "invalid configuration: auth.mode = \"dev\" accepts tokens the node mints itself; \
                 it is refused unless api.listen is a loopback address (it is {})",
                self.api.listen
            );
        }
        if self.auth.issuer.is_some() && self.auth.audience.is_none() {
            bail!("invalid configuration: auth.audience is required with auth.issuer");
        }
        for (from, to) in &self.auth.role_map {
            if crate::auth::Role::parse(to).is_none() {
                bail!(
                    "invalid configuration: auth.role_map.{from}: `{to}` is not one of case_manager, supervisor, auditor, system"
                );
            }
        }
        if let Some(adv) = &self.federation.advertise {
            crate::domain::endpoint_check("federation.advertise", adv)
                .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        }
        if self.federation.retry_initial_ms == 0
            || self.federation.retry_max_ms < self.federation.retry_initial_ms
        {
            bail!(
                "invalid configuration: federation.retry_initial_ms must be > 0 and <= federation.retry_max_ms"
            );
        }
        Ok(())
    }

    pub fn database_url(&self) -> DatabaseUrl {
        self.database_url.clone().unwrap_or_else(|| {
            DatabaseUrl::new(format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("exitnet.db").display()
            ))
        })
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
        assert!(e.contains("lisen"), "{e}");
        let e = Config::load(None, &env(&[("EXITNET_BOGUS", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
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
        assert!(e.contains("auth.mode"), "{e}");
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
        assert!(e.contains("org.id"), "{e}");
    }
}
