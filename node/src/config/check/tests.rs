//! The offline and online checks, each finding named.

use super::*;
use std::collections::HashMap;

fn config(vars: &[(&str, &str)]) -> Config {
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load(None, &env).unwrap()
}

#[test]
fn postgres_targets_name_host_port_and_database_never_the_password() {
    for (url, host_port, db) in [
        (
            "postgres://u:pw@db.internal:6432/exitnet?sslmode=require",
            "db.internal:6432",
            "exitnet",
        ),
        ("postgres://u@db/x", "db:5432", "x"),
        ("postgresql://u:p@ss@[::1]:5433/y", "[::1]:5433", "y"),
        ("postgres://[::1]/z", "[::1]:5432", "z"),
        ("postgres:///local", "localhost:5432", "local"),
    ] {
        let (hp, d) = postgres_target(&DatabaseUrl::new(url));
        assert_eq!((hp.as_str(), d.as_str()), (host_port, db), "{url}");
    }
}

#[test]
fn causes_are_said_once() {
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error communicating with database: {}", self.0)
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let e = Outer(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "Connection refused (os error 111)",
    ));
    let text = cause_once(&e);
    assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
    let sqlx_io = sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "Connection refused (os error 111)",
    ));
    assert_eq!(cause_once(&sqlx_io), "Connection refused (os error 111)");
}

#[test]
fn simple_forms() {
    assert!(master_key_text(&base64::engine::general_purpose::STANDARD.encode([1u8; 32])).is_ok());
    for (bad, says) in [
        ("abc", "not base64"),
        ("YWJj", "this is 3 bytes"),
        ("", "this is 0 bytes"),
    ] {
        assert!(master_key_text(bad).unwrap_err().contains(says), "{bad}");
    }
    for (url, ok) in [
        ("https://id.example.org/realms/x", true),
        ("http://127.0.0.1:8080", true),
        ("https://", false),
        ("id.example.org", false),
        ("https://id example", false),
        ("ftp://id", false),
    ] {
        assert_eq!(is_http_url(url), ok, "{url}");
    }
}

#[test]
fn offline_findings() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (cert, key, other) = {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let w = |n: &str, t: String| {
            let p = dir.path().join(n);
            std::fs::write(&p, t).unwrap();
            p.display().to_string()
        };
        (
            w("c.pem", cert.pem()),
            w("k.pem", key.serialize_pem()),
            w("o.pem", other.serialize_pem()),
        )
    };
    let not_pem = dir.path().join("junk.pem");
    std::fs::write(&not_pem, "junk").unwrap();
    let junk = not_pem.to_str().unwrap();
    let bad_key_file = dir.path().join("master.key");
    std::fs::write(&bad_key_file, "abc").unwrap();
    let mk = bad_key_file.to_str().unwrap();
    let base = [
        ("EXITNET_DATA_DIR", d),
        ("EXITNET_ORG__ID", "ngo-a"),
        ("EXITNET_FEDERATION__LISTEN", "127.0.0.1:7710"),
    ];
    // (extra variables, for, expected errors, expected warnings)
    type Case<'a> = (&'a [(&'a str, &'a str)], For, &'a [&'a str], &'a [&'a str]);
    let cases: &[Case<'_>] = &[
        (&[], For::Check, &[], &["sign-in is not configured"]),
        (&[], For::Run, &[], &[]),
        (
            &[("EXITNET_FEDERATION__LISTEN", "0.0.0.0:7710")],
            For::Run,
            &[],
            &[
                "EXITNET_FEDERATION__LISTEN is 0.0.0.0:7710 (every interface) and federation.advertise is not set: invitations would carry 127.0.0.1:7710",
            ],
        ),
        (
            &[
                ("EXITNET_FEDERATION__LISTEN", "[::]:7710"),
                ("EXITNET_FEDERATION__ADVERTISE", "a.example:7710"),
            ],
            For::Run,
            &[],
            &[],
        ),
        (
            &[("EXITNET_AUTH__MODE", "dev")],
            For::Check,
            &[],
            &["EXITNET_AUTH__MODE = \"dev\""],
        ),
        (
            &[
                ("EXITNET_API__TLS__CERT_FILE", &cert),
                ("EXITNET_API__TLS__KEY_FILE", &key),
            ],
            For::Run,
            &[],
            &[],
        ),
        (
            &[
                ("EXITNET_API__TLS__CERT_FILE", &cert),
                ("EXITNET_API__TLS__KEY_FILE", &other),
            ],
            For::Run,
            &[
                "EXITNET_API__TLS__KEY_FILE",
                "is not the key of the certificate in EXITNET_API__TLS__CERT_FILE",
            ],
            &[],
        ),
        (
            &[
                ("EXITNET_API__TLS__CERT_FILE", junk),
                ("EXITNET_API__TLS__KEY_FILE", &key),
            ],
            For::Run,
            &["EXITNET_API__TLS__CERT_FILE", "expected a PEM"],
            &[],
        ),
        (
            &[
                ("EXITNET_API__TLS__CERT_FILE", &cert),
                ("EXITNET_API__TLS__KEY_FILE", &key),
                ("EXITNET_API__TLS__CLIENT_CA_FILE", junk),
            ],
            For::Run,
            &["EXITNET_API__TLS__CLIENT_CA_FILE"],
            &[],
        ),
        (
            &[("EXITNET_MASTER_KEY_FILE", mk)],
            For::Run,
            &["EXITNET_MASTER_KEY_FILE", "expected base64 of 32 bytes"],
            &[],
        ),
        (
            &[("EXITNET_MASTER_KEY_FILE", "/nonexistent/master.key")],
            For::Run,
            &["EXITNET_MASTER_KEY_FILE /nonexistent/master.key: cannot read it"],
            &[],
        ),
        // Checked where the secrets are not mounted: said, not refused.
        (
            &[
                ("EXITNET_MASTER_KEY_FILE", "/nonexistent/master.key"),
                ("EXITNET_API__TLS__CERT_FILE", "/nonexistent/api.crt"),
                ("EXITNET_API__TLS__KEY_FILE", "/nonexistent/api.key"),
            ],
            For::Check,
            &[],
            &[
                "sign-in",
                "EXITNET_MASTER_KEY_FILE /nonexistent/master.key: neither the file nor its directory /nonexistent",
                "EXITNET_API__TLS__CERT_FILE /nonexistent/api.crt: neither",
                "EXITNET_API__TLS__KEY_FILE /nonexistent/api.key: neither",
            ],
        ),
        (
            &[
                ("EXITNET_API__TLS__CERT_FILE", "/nonexistent/api.crt"),
                ("EXITNET_API__TLS__KEY_FILE", &key),
            ],
            For::Run,
            &["EXITNET_API__TLS__CERT_FILE /nonexistent/api.crt: cannot read it"],
            &[],
        ),
    ];
    for (extra, who, errors, warnings) in cases {
        let mut vars = base.to_vec();
        vars.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        vars.extend(extra.iter().copied());
        let f = offline(&config(&vars), *who);
        let all_errors = f.errors.join("\n");
        let all_warnings = f.warnings.join("\n");
        assert_eq!(
            f.errors.is_empty(),
            errors.is_empty(),
            "{extra:?}: {all_errors}"
        );
        for e in *errors {
            assert!(all_errors.contains(e), "{extra:?}: {e} not in {all_errors}");
        }
        assert_eq!(
            f.warnings.len(),
            warnings.len(),
            "{extra:?}: {all_warnings}"
        );
        for w in *warnings {
            assert!(
                all_warnings.contains(w),
                "{extra:?}: {w} not in {all_warnings}"
            );
        }
    }
    // No organisation ID and no database yet: the fix is named.
    let f = offline(&config(&[("EXITNET_DATA_DIR", d)]), For::Run);
    assert!(f.errors.join("").contains("exitnet-node init"), "{f:?}");
}

#[tokio::test]
async fn database_errors_name_the_place_and_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir/x.db");
    let url = format!("sqlite://{}", path.display());
    let c = config(&[("EXITNET_DATABASE_URL", url.as_str())]);
    let Err(err) = crate::store::open(&c.database_url()).await else {
        panic!("a database in a directory that does not exist was opened");
    };
    let text = database_error(&c, err).await.to_string();
    assert!(text.starts_with("EXITNET_DATABASE_URL: "), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    let c = config(&[("EXITNET_DATABASE_URL", "postgres://u:hunter2@127.0.0.1:1/x")]);
    let err = anyhow::Error::new(sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "Connection refused (os error 111)",
    )))
    .context("connecting to PostgreSQL");
    let text = database_error(&c, err).await.to_string();
    assert_eq!(
        text,
        "EXITNET_DATABASE_URL: connecting to PostgreSQL at 127.0.0.1:1 (database x): Connection refused (os error 111)"
    );
}
