//! The admin socket's typed client (`exitnet-client`), and the channel to
//! the client API.

use crate::opts::ApiTarget;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

pub use exitnet_client::AdminClient;

/// How often a `--wait` polls.
const POLL: Duration = Duration::from_millis(100);

/// Connects to the admin socket at `path`, waiting up to `wait` for the node
/// to listen on it.
pub async fn connect(path: &Path, wait: Duration) -> anyhow::Result<AdminClient> {
    AdminClient::connect(path, wait).await
}

/// `HOST:PORT` split, with whether the host is loopback (127.0.0.0/8, ::1 or
/// `localhost`).
pub fn parse_api(addr: &str) -> anyhow::Result<(String, bool)> {
    let bad = || {
        anyhow::anyhow!(
            "--api {addr}: expected HOST:PORT such as 127.0.0.1:7711 or api.example.org:7711"
        )
    };
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.ip().is_loopback()));
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() || host.contains(['/', '@', ' ']) {
        return Err(bad());
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    Ok((host.to_owned(), loopback))
}

/// The endpoint for the client API: plaintext on loopback without `--ca`,
/// TLS checked against `--ca` otherwise; refused off loopback without it, so
/// a token never travels in plaintext.
pub fn api_endpoint(t: &ApiTarget) -> anyhow::Result<Endpoint> {
    let (host, loopback) = parse_api(&t.api)?;
    if t.cert.is_some() && t.ca.is_none() {
        anyhow::bail!("--cert: a client certificate is presented only over TLS; give --ca too");
    }
    let endpoint = match &t.ca {
        None if !loopback => anyhow::bail!(
            "--api {}: not on loopback, so exitnetctl talks to it only over TLS and never sends a token in plaintext; give the CA of the API's certificate with --ca FILE (or EXITNET_CTL_CA)",
            t.api
        ),
        None => Endpoint::from_shared(format!("http://{}", t.api)).map_err(|_| {
            anyhow::anyhow!("--api {}: expected HOST:PORT such as 127.0.0.1:7711", t.api)
        })?,
        Some(ca) => {
            let pem =
                std::fs::read(ca).map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?;
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                .domain_name(host);
            if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
                let read = |flag: &str, p: &Path| {
                    std::fs::read(p).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", p.display()))
                };
                tls = tls.identity(tonic::transport::Identity::from_pem(
                    read("--cert", cert)?,
                    read("--key", key)?,
                ));
            }
            Endpoint::from_shared(format!("https://{}", t.api))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "--api {}: expected HOST:PORT such as api.example.org:7711",
                        t.api
                    )
                })?
                .tls_config(tls)
                .map_err(|e| anyhow::anyhow!("--ca {}: {}", ca.display(), chain(&e)))?
        }
    };
    Ok(endpoint.connect_timeout(Duration::from_secs(10)))
}

/// An error and its causes on one line: `transport error: tcp connect error: Connection refused`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Connects to the client API, waiting up to `wait` for it to accept.
pub async fn api_channel(t: &ApiTarget, wait: Duration) -> anyhow::Result<Channel> {
    let endpoint = api_endpoint(t)?;
    let deadline = Instant::now() + wait;
    loop {
        match endpoint.connect().await {
            Ok(c) => return Ok(c),
            Err(e) => {
                if Instant::now() >= deadline {
                    let waited = if wait.is_zero() {
                        String::new()
                    } else {
                        format!(" (waited {wait:?})")
                    };
                    anyhow::bail!(
                        "cannot reach the client API at {}: {}{waited}",
                        t.api,
                        chain(&e)
                    );
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(api: &str) -> ApiTarget {
        ApiTarget {
            api: api.into(),
            ..Default::default()
        }
    }

    #[test]
    fn loopback_or_not() {
        assert_eq!(
            parse_api("127.0.0.1:7711").unwrap(),
            ("127.0.0.1".into(), true)
        );
        assert_eq!(parse_api("[::1]:7711").unwrap(), ("::1".into(), true));
        assert_eq!(
            parse_api("localhost:7711").unwrap(),
            ("localhost".into(), true)
        );
        assert_eq!(
            parse_api("10.0.0.5:7711").unwrap(),
            ("10.0.0.5".into(), false)
        );
        assert_eq!(
            parse_api("api.example.org:7711").unwrap(),
            ("api.example.org".into(), false)
        );
        let e = parse_api("localhost").unwrap_err().to_string();
        assert!(e.starts_with("--api localhost: expected HOST:PORT"), "{e}");
        assert!(parse_api("http://x:1").is_err());
    }

    #[test]
    fn no_plaintext_off_loopback() {
        let e = api_endpoint(&target("10.0.0.5:7711"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--api 10.0.0.5:7711") && e.contains("--ca"),
            "{e}"
        );
        assert!(api_endpoint(&target("127.0.0.1:7711")).is_ok());
        let mut t = target("10.0.0.5:7711");
        t.ca = Some("/nonexistent/ca.pem".into());
        let e = api_endpoint(&t).unwrap_err().to_string();
        assert!(e.starts_with("--ca /nonexistent/ca.pem"), "{e}");
        let mut t = target("127.0.0.1:7711");
        t.cert = Some("client.pem".into());
        t.key = Some("client.key".into());
        let e = api_endpoint(&t).unwrap_err().to_string();
        assert!(
            e.starts_with("--cert: a client certificate is presented only over TLS"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_stale_socket_says_the_node_is_not_running() {
        let dir = std::env::temp_dir().join(format!("exitnetctl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin.sock");
        let _ = std::fs::remove_file(&path);
        let e = connect(&path, Duration::ZERO)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("no admin socket at"), "{e}");
        // A socket file nobody listens on: bound, then the listener dropped.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let e = connect(&path, Duration::ZERO)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the node is not running"), "{e}");
        // --wait waits, then says how long.
        let started = Instant::now();
        let e = format!(
            "{:#}",
            connect(&path, Duration::from_millis(300))
                .await
                .unwrap_err()
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(e.contains("not running"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
