//! What `config check` looks at beyond the values themselves, and what `run`
//! checks before it starts anything: the files the configuration names (the
//! master key, the client API's certificate and key), the organisation ID,
//! the address in invitations, sign-in; with `--connect`, the database and
//! the OpenID provider. Every problem names the setting as the user wrote it.

use super::{AuthMode, Config, DatabaseUrl};
use base64::Engine;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `--connect` waits for the database or the OpenID provider.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a check found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// `run` would refuse to start (or fail at once).
    pub errors: Vec<String>,
    /// It would start, but something is likely not what was meant.
    pub warnings: Vec<String>,
    /// What was reached (`--connect`).
    pub reached: Vec<String>,
}

impl Findings {
    pub fn extend(&mut self, other: Findings) {
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
        self.reached.extend(other.reached);
    }
}

/// Who asks: `run` logs what `config check` prints; the warnings the node
/// logs itself at start (sign-in) are not repeated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum For {
    Run,
    Check,
}

/// The fix for a node with no organisation ID, said the same everywhere.
pub fn missing_org_id() -> String {
    "org.id is not set and this node has never started: an organisation needs an ID, which peers \
     pin and which can never change. Write a configuration file with `exitnet-node init`, or set \
     EXITNET_ORG__ID (3 to 63 characters a-z, 0-9 and -, such as exit-nord)"
        .to_owned()
}

/// `master_key`: base64 of 32 bytes. The value itself is never repeated.
pub fn master_key_text(s: &str) -> Result<(), String> {
    let expected = "expected base64 of 32 bytes (make one with `openssl rand -base64 32`)";
    match base64::engine::general_purpose::STANDARD.decode(s.trim()) {
        Err(_) => Err(format!("{expected}; this is not base64")),
        Ok(b) if b.len() != 32 => Err(format!("{expected}; this is {} bytes", b.len())),
        Ok(_) => Ok(()),
    }
}

/// An `http://` or `https://` URL with a host.
pub fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(r) => {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// The SQLite database file the configuration names, if it names one.
fn sqlite_file(url: &DatabaseUrl) -> Option<PathBuf> {
    use std::str::FromStr;
    let u = url.expose();
    if !u.starts_with("sqlite:") {
        return None;
    }
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(u).ok()?;
    let f = opts.get_filename();
    (f != Path::new(":memory:")).then(|| f.to_path_buf())
}

/// Host and port of a PostgreSQL URL (never its password), and the database.
pub fn postgres_target(url: &DatabaseUrl) -> (String, String) {
    let u = url.expose();
    let rest = u.split_once("://").map(|(_, r)| r).unwrap_or(u);
    let rest = rest.split('?').next().unwrap_or(rest);
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let host_port = if host_port.is_empty() {
        "localhost:5432".to_owned()
    } else if host_port.ends_with(']') || !host_port.contains(':') {
        format!("{host_port}:5432")
    } else {
        host_port.to_owned()
    };
    (host_port, db.to_owned())
}

/// The cause of an error, each distinct message once (error types that
/// print their source as well as returning it would say it twice).
pub fn cause_once(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = describe(e);
        if !text.is_empty() && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cur = e.source();
        if let Some(sqlx::Error::Database(_)) = e.downcast_ref::<sqlx::Error>() {
            break; // its message says it all
        }
    }
    out
}

fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    match e.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Database(db)) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_owned(),
        },
        Some(sqlx::Error::Io(io)) => io.to_string(),
        Some(sqlx::Error::Tls(t)) => format!("TLS: {t}"),
        Some(sqlx::Error::Configuration(c)) => format!("in the URL: {c}"),
        Some(sqlx::Error::PoolTimedOut) => "no connection within 10 s".to_owned(),
        _ => e.to_string(),
    }
}

/// Says what the database is, where, and why it could not be used, once.
pub async fn database_error(config: &Config, err: anyhow::Error) -> anyhow::Error {
    let url = config.database_url();
    let name = config.name("database_url");
    let mut chain = err.chain();
    let first = chain.next().map(|e| e.to_string()).unwrap_or_default();
    // `stage` is the step that failed ("connecting to PostgreSQL"), when the
    // error says it; `cause` the reason, each message once.
    let (stage, mut cause) = match chain.next() {
        Some(source) => (Some(first), cause_once(source)),
        None => (None, err.chain().next().map(cause_once).unwrap_or(first)),
    };
    let stage = stage.map(|s| format!("{s} ")).unwrap_or_default();
    if url.expose().starts_with("sqlite:") {
        let place = sqlite_file(&url)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| url.redacted());
        return anyhow::anyhow!("{name}: {stage}{place}: {cause}");
    }
    let (host_port, db) = postgres_target(&url);
    // The pool only says it timed out; one plain connection says why.
    if matches!(
        err.chain().find_map(|e| e.downcast_ref::<sqlx::Error>()),
        Some(sqlx::Error::PoolTimedOut)
    ) && let Err(direct) = connect_postgres(&url).await
    {
        cause = direct;
    }
    anyhow::anyhow!("{name}: {stage}at {host_port} (database {db}): {cause}")
}

async fn connect_postgres(url: &DatabaseUrl) -> Result<sqlx::PgConnection, String> {
    use sqlx::Connection;
    match tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect(url.expose())).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(cause_once(&e)),
        Err(_) => Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// Checks that need no network: files, the organisation ID, what peers and
/// callers would be told.
pub fn offline(config: &Config, who: For) -> Findings {
    let mut f = Findings::default();
    let n = |key: &str| config.name(key);

    if config.data_dir.exists() && !config.data_dir.is_dir() {
        f.errors.push(format!(
            "{}: {} is a file, not a directory",
            n("data_dir"),
            config.data_dir.display()
        ));
    }

    // The master key: a file named, or the one a first start made.
    if config.master_key.is_none() {
        let (name, path, must_exist) = match &config.master_key_file {
            Some(p) => (n("master_key_file"), p.clone(), true),
            None => (
                "the master key".to_owned(),
                config.data_dir.join("identity").join("master.key"),
                false,
            ),
        };
        match std::fs::read_to_string(&path) {
            Err(_) if must_exist && not_on_this_machine(who, &name, &path, &mut f) => {}
            Ok(text) => {
                if let Err(e) = master_key_text(&text) {
                    f.errors.push(format!("{name} {}: {e}", path.display()));
                }
                if let Some(problem) = crate::keydir::too_open(&path) {
                    f.errors.push(format!("{name}: {problem}"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {}
            Err(e) => f
                .errors
                .push(format!("{name} {}: cannot read it: {e}", path.display())),
        }
    }

    // The key directory and its generations: the node's alone.
    let key_dir = config.key_dir();
    let generations = std::fs::read_dir(&key_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "key"));
    for path in std::iter::once(key_dir.clone()).chain(generations) {
        if let Some(problem) = crate::keydir::too_open(&path) {
            f.errors.push(format!("{}: {problem}", n("keys.dir")));
        }
    }

    check_tls(config, who, &mut f);

    if config.org.id.is_none() {
        match sqlite_file(&config.database_url()) {
            Some(db) if !db.exists() => f.errors.push(missing_org_id()),
            _ if who == For::Check => f.warnings.push(
                "org.id is not set: `run` goes on with the organisation ID the database recorded \
                 at an earlier start and refuses to start if it holds none (`config check \
                 --connect` looks); set it (exitnet-node init, EXITNET_ORG__ID)"
                    .to_owned(),
            ),
            _ => {}
        }
    }

    let listen = config.federation.listen;
    if listen.ip().is_unspecified() && config.federation.advertise.is_none() {
        f.warnings.push(format!(
            "{} is {listen} (every interface) and federation.advertise is not set: invitations \
             would carry 127.0.0.1:{}, which peers cannot reach. Set federation.advertise \
             (EXITNET_FEDERATION__ADVERTISE) to the host:port peers use, such as exitnet.example.org:{}",
            n("federation.listen"),
            listen.port(),
            listen.port()
        ));
    }

    if who == For::Check {
        match config.auth.mode {
            AuthMode::Oidc if config.auth.issuer.is_none() => f.warnings.push(
                "sign-in is not configured (auth.issuer, auth.audience): the client API will \
                 refuse every call but health and reflection until it is"
                    .to_owned(),
            ),
            AuthMode::Dev => f.warnings.push(format!(
                "{} = \"dev\": the node accepts tokens it mints itself; never use it with real data",
                n("auth.mode")
            )),
            AuthMode::Oidc => {}
        }
    }
    f
}

/// `config check` run elsewhere than on the node's machine (a CI job checking
/// a deployment's file) cannot see its secrets: a file that is missing along
/// with its directory is a warning there. `run` always refuses it.
fn not_on_this_machine(who: For, name: &str, path: &Path, f: &mut Findings) -> bool {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return false;
    };
    if who == For::Check && !path.exists() && !dir.exists() {
        f.warnings.push(format!(
            "{name} {}: neither the file nor its directory {} is on this machine; `run` refuses \
             to start without it (expected only where the node does not run)",
            path.display(),
            dir.display()
        ));
        true
    } else {
        false
    }
}

fn check_tls(config: &Config, who: For, f: &mut Findings) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some(tls) = &config.api.tls else {
        return;
    };
    let cert_name = config.name("api.tls.cert_file");
    let key_name = config.name("api.tls.key_file");
    let pem_error = |name: &str, path: &Path, e: rustls::pki_types::pem::Error| match e {
        rustls::pki_types::pem::Error::Io(io) => {
            format!("{name} {}: cannot read it: {io}", path.display())
        }
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!(
                "{name} {}: expected a PEM file, found nothing in it",
                path.display()
            )
        }
        other => format!("{name} {}: not a valid PEM file: {other}", path.display()),
    };
    let certs = match CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
    {
        Err(_) if not_on_this_machine(who, &cert_name, &tls.cert_file, f) => None,
        Ok(c) if c.is_empty() => {
            f.errors.push(format!(
                "{cert_name} {}: expected a PEM certificate (-----BEGIN CERTIFICATE-----), found none",
                tls.cert_file.display()
            ));
            None
        }
        Ok(c) => Some(c),
        Err(e) => {
            f.errors.push(pem_error(&cert_name, &tls.cert_file, e));
            None
        }
    };
    let key = match PrivateKeyDer::from_pem_file(&tls.key_file) {
        Err(_) if not_on_this_machine(who, &key_name, &tls.key_file, f) => None,
        Ok(k) => Some(k),
        Err(e) => {
            f.errors.push(pem_error(&key_name, &tls.key_file, e));
            None
        }
    };
    if let (Some(certs), Some(key)) = (certs, key) {
        if let Some(first) = certs.first()
            && let Ok((_, cert)) = x509_parser::parse_x509_certificate(first)
        {
            let now = crate::domain::time::now_ms() / 1000;
            if cert.validity().not_after.timestamp() < now {
                f.warnings.push(format!(
                    "{cert_name} {}: the certificate expired on {}; clients will refuse it",
                    tls.cert_file.display(),
                    cert.validity().not_after
                ));
            }
        }
        match rustls::sign::CertifiedKey::from_der(certs, key, &crate::tls::provider()) {
            Ok(_) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                f.errors.push(format!(
                    "{key_name} {} is not the key of the certificate in {cert_name} {}: \
                     they must be a pair",
                    tls.key_file.display(),
                    tls.cert_file.display()
                ))
            }
            Err(e) => f.errors.push(format!(
                "{key_name} {}: the key cannot be used with the certificate in {}: {e}",
                tls.key_file.display(),
                tls.cert_file.display()
            )),
        }
    }
    if let Some(ca) = &tls.client_ca_file {
        let ca_name = config.name("api.tls.client_ca_file");
        match CertificateDer::pem_file_iter(ca).and_then(|i| i.collect::<Result<Vec<_>, _>>()) {
            Err(_) if not_on_this_machine(who, &ca_name, ca, f) => {}
            Ok(c) if c.is_empty() => f.errors.push(format!(
                "{ca_name} {}: expected PEM CA certificates, found none",
                ca.display()
            )),
            Ok(c) => {
                let mut roots = rustls::RootCertStore::empty();
                let (_, bad) = roots.add_parsable_certificates(c);
                if bad > 0 {
                    f.errors.push(format!(
                        "{ca_name} {}: {bad} certificate(s) in it cannot be used",
                        ca.display()
                    ));
                }
            }
            Err(e) => f.errors.push(pem_error(&ca_name, ca, e)),
        }
    }
}

/// `--connect`: reaches the database (without changing it) and the OpenID
/// provider (its discovery document and keys).
pub async fn connect(config: &Config) -> Findings {
    let mut f = Findings::default();
    check_database(config, &mut f).await;
    check_provider(config, &mut f).await;
    f
}

async fn check_database(config: &Config, f: &mut Findings) {
    use sqlx::Connection;
    let url = config.database_url();
    let name = config.name("database_url");
    let query = "SELECT value FROM node_meta WHERE key = 'org_id'";
    let recorded: Option<String> = if let Some(path) = sqlite_file(&url) {
        if !path.exists() {
            f.reached.push(format!(
                "database: {} does not exist yet; the first start creates it",
                path.display()
            ));
            None
        } else {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .read_only(true);
            match sqlx::SqliteConnection::connect_with(&opts).await {
                Ok(mut c) => {
                    let v = sqlx::query_scalar::<_, String>(query)
                        .fetch_optional(&mut c)
                        .await
                        .ok()
                        .flatten();
                    let _ = c.close().await;
                    f.reached
                        .push(format!("database: opened SQLite {}", path.display()));
                    v
                }
                Err(e) => {
                    f.errors.push(format!(
                        "{name}: cannot open the SQLite database {}: {}",
                        path.display(),
                        cause_once(&e)
                    ));
                    return;
                }
            }
        }
    } else {
        let (host_port, db) = postgres_target(&url);
        match connect_postgres(&url).await {
            Ok(mut c) => {
                let v = sqlx::query_scalar::<_, String>(query)
                    .fetch_optional(&mut c)
                    .await
                    .ok()
                    .flatten();
                let _ = c.close().await;
                f.reached.push(format!(
                    "database: connected to PostgreSQL at {host_port} (database {db})"
                ));
                v
            }
            Err(cause) => {
                f.errors.push(format!(
                    "{name}: cannot connect to PostgreSQL at {host_port} (database {db}): {cause}"
                ));
                return;
            }
        }
    };
    match (&config.org.id, recorded) {
        (Some(configured), Some(stored)) if configured != &stored => f.errors.push(format!(
            "{} is {configured} but this database belongs to {stored}; an organisation ID \
             cannot change (peers pin it)",
            config.name("org.id")
        )),
        (None, None) => f.errors.push(missing_org_id()),
        (None, Some(stored)) => f
            .reached
            .push(format!("database: records organisation {stored}")),
        _ => {}
    }
}

async fn check_provider(config: &Config, f: &mut Findings) {
    use openidconnect::core::CoreProviderMetadata;
    if config.auth.mode != AuthMode::Oidc {
        return;
    }
    let Some(issuer) = &config.auth.issuer else {
        return;
    };
    let name = config.name("auth.issuer");
    let Ok(url) = openidconnect::IssuerUrl::new(issuer.clone()) else {
        return; // named by the offline checks
    };
    let http = match openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .timeout(CONNECT_TIMEOUT)
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            f.errors
                .push(format!("building an HTTP client: {}", cause_once(&e)));
            return;
        }
    };
    let discovery = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    match CoreProviderMetadata::discover_async(url, &http).await {
        Ok(meta) => f.reached.push(format!(
            "OpenID provider: {discovery} answered; {} signing key(s) at {}",
            meta.jwks().keys().len(),
            meta.jwks_uri().as_str()
        )),
        Err(e) => f.errors.push(format!(
            "{name}: cannot read the OpenID discovery document {discovery}: {}",
            cause_once(&e)
        )),
    }
}

#[cfg(test)]
mod tests;
