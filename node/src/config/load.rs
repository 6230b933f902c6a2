//! Loading: the defaults, the file and the environment layered, unknown
//! keys and foreign variables refused, every problem reported at once.

use super::*;

pub(super) fn defaults() -> config::Config {
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

/// The variables of `env` that are node settings.
pub(super) fn node_variables(env: &HashMap<String, String>) -> BTreeMap<String, String> {
    env.iter()
        .filter(|(k, _)| k.starts_with("EXITNET_"))
        .filter(|(k, _)| !FOREIGN_VARIABLES.contains(&k.as_str()))
        .filter(|(k, _)| !FOREIGN_PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `auth.role_map.<provider role>`: keys of the user's choosing.
pub(super) const ROLE_MAP: &str = "auth.role_map";

/// `auth.system_acts_for.<client ID>`: keys of the user's choosing.
pub(super) const SYSTEM_ACTS_FOR: &str = "auth.system_acts_for";

/// Checks every key and value of a file against the known settings,
/// recording where each came from.
pub(super) fn check_table(
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
pub(super) fn check_env(
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
