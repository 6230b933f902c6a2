//! The configuration's layers, checks and errors.

use super::load::SYSTEM_ACTS_FOR;
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
