//! A guided first start: `exitnet-node init`, `config check` (with and
//! without `--connect`) and what `run` refuses, through the real binary.
//! Every child gets its environment explicitly (nothing inherited).

use exitnet_tests::{binary, wait_until};
use std::path::Path;
use std::time::Duration;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `exitnet-node ARGS` in `dir` with exactly `env` (and stdin closed).
async fn node(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = tokio::process::Command::new(binary("exitnet-node").unwrap());
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("exitnet-node did not finish within 60 s")
        .unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Loopback ports chosen by the system, so tests run side by side.
const PORTS: [(&str, &str); 2] = [
    ("EXITNET_API__LISTEN", "127.0.0.1:0"),
    ("EXITNET_FEDERATION__LISTEN", "127.0.0.1:0"),
];

#[tokio::test]
async fn init_with_flags_writes_a_file_that_config_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exitnet.toml");
    let f = file.to_str().unwrap();
    let flags = [
        "init",
        "--config",
        f,
        "--org-id",
        "exit-nord",
        "--name",
        "Exit Nord e.V.",
        "--sector",
        "ngo",
        "--need-areas",
        "social_reintegration,cognitive",
        "--services",
        "mentoring,family_support",
        "--languages",
        "de,en",
        "--settings",
        "open",
        "--advertise",
        "exitnet.exit-nord.example:7710",
        "--issuer",
        "https://id.exit-nord.example/realms/exitnet",
        "--audience",
        "exitnet-node",
        "--yes",
    ];
    let out = node(dir.path(), &flags, &[]).await;
    assert!(out.ok, "{}", out.all());
    assert!(
        out.stdout.contains("config check --config"),
        "{}",
        out.all()
    );
    let written = std::fs::read_to_string(&file).unwrap();

    let check = node(dir.path(), &["config", "check", "--config", f], &[]).await;
    assert!(check.ok, "{}\n--- the file:\n{written}", check.all());
    for needle in [
        "id = \"exit-nord\"",
        "name = \"Exit Nord e.V.\"",
        "sector = \"ngo\"",
        "advertise = \"exitnet.exit-nord.example:7710\"",
        "issuer = \"https://id.exit-nord.example/realms/exitnet\"",
        "audience = \"exitnet-node\"",
        "\"family_support\"",
    ] {
        assert!(
            check.stdout.contains(needle),
            "{needle} missing:\n{}",
            check.stdout
        );
    }
    // Sign-in and the advertised address are set: nothing to warn about.
    assert!(!check.stderr.contains("warning"), "{}", check.stderr);

    // Never overwritten without --force.
    let again = node(dir.path(), &flags, &[]).await;
    assert!(!again.ok);
    assert!(again.stderr.contains("--force"), "{}", again.all());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
    let mut forced: Vec<&str> = flags
        .iter()
        .map(|f| if *f == "exit-nord" { "exit-sued" } else { f })
        .collect();
    forced.push("--force");
    let out = node(dir.path(), &forced, &[]).await;
    assert!(out.ok, "{}", out.all());
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("exit-sued")
    );

    // Only the ID given: sign-in and the address are left for later, and said so.
    let minimal = dir.path().join("minimal.toml");
    let m = minimal.to_str().unwrap();
    let out = node(
        dir.path(),
        &["init", "--config", m, "--org-id", "ngo-min"],
        &[],
    )
    .await;
    assert!(out.ok, "{}", out.all());
    assert!(
        out.stderr.contains("federation.advertise is not set"),
        "{}",
        out.all()
    );
    let check = node(dir.path(), &["config", "check", "--config", m], &[]).await;
    assert!(check.ok, "{}", check.all());
    assert!(
        check.stderr.contains("warning: sign-in is not configured"),
        "{}",
        check.all()
    );
    assert!(
        check
            .stderr
            .contains("invitations would carry 127.0.0.1:7710"),
        "{}",
        check.all()
    );
}

#[tokio::test]
async fn init_without_a_terminal_needs_the_org_id_and_checks_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = node(dir.path(), &["init", "--sector", "ngo"], &[]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("--org-id is required"), "{}", out.all());
    let out = node(
        dir.path(),
        &["init", "--org-id", "ngo-a", "--sector", "church"],
        &[],
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("church") && out.stderr.contains("prison_probation"),
        "{}",
        out.all()
    );
    let out = node(dir.path(), &["init", "--org-id", "Not Valid"], &[]).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("--org-id: expected 3 to 63 characters"),
        "{}",
        out.all()
    );
    assert!(!dir.path().join("exitnet.toml").exists());
}

#[tokio::test]
async fn run_without_an_org_id_refuses_and_says_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = node(dir.path(), &["run"], &PORTS).await;
    assert!(!out.ok, "{}", out.all());
    assert!(
        out.stderr.contains("exitnet-node init") && out.stderr.contains("EXITNET_ORG__ID"),
        "{}",
        out.all()
    );
    // Nothing was made: a later start with an ID is a first start.
    assert!(!dir.path().join("exitnet-data/exitnet.db").exists());
    let check = node(dir.path(), &["config", "check"], &PORTS).await;
    assert!(!check.ok);
    assert!(
        check.stderr.contains("exitnet-node init"),
        "{}",
        check.all()
    );

    // Started once with an ID, the database keeps it: later starts without one go on.
    // The first start listens for peers on every interface with no advertised address,
    // and says so in the log.
    let listening = dir.path().join("exitnet-data/listening.json");
    let everywhere = ("EXITNET_FEDERATION__LISTEN", "0.0.0.0:0");
    for (round, env) in [
        (
            "with EXITNET_ORG__ID",
            vec![PORTS[0], everywhere, ("EXITNET_ORG__ID", "ngo-kept")],
        ),
        ("without", PORTS.to_vec()),
    ] {
        let log_path = dir.path().join(format!("{}.log", round.len()));
        let mut cmd = tokio::process::Command::new(binary("exitnet-node").unwrap());
        cmd.arg("run")
            .current_dir(dir.path())
            .env_clear()
            .envs(env.clone())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        let info: serde_json::Value = wait_until(
            &format!("listening.json ({round})"),
            Duration::from_secs(30),
            || async {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&listening).ok()?).ok()?;
                (v["pid"] == pid).then_some(v)
            },
        )
        .await
        .unwrap();
        assert_eq!(info["org_id"], "ngo-kept", "{round}");
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{round}: {status}");
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert_eq!(
            log.contains("WARN") && log.contains("federation.advertise is not set"),
            env.contains(&everywhere),
            "{round}:\n{log}"
        );
    }
    // config check cannot tell without looking; --connect looks.
    let check = node(dir.path(), &["config", "check", "--connect"], &PORTS).await;
    assert!(check.ok, "{}", check.all());
    assert!(
        check.stderr.contains("records organisation ngo-kept"),
        "{}",
        check.all()
    );
}

/// A client-API certificate and a key that is not its own.
fn mismatched_pair(dir: &Path) -> (String, String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let w = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    (
        w("api.crt", cert.pem()),
        w("api.key", key.serialize_pem()),
        w("other.key", other.serialize_pem()),
    )
}

#[tokio::test]
async fn config_check_rejects_what_run_would_reject_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, other_key) = mismatched_pair(dir.path());
    let missing = dir.path().join("missing.pem").display().to_string();
    let org = ("EXITNET_ORG__ID", "ngo-check");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("EXITNET_MASTER_KEY", "abc")],
            "EXITNET_MASTER_KEY: expected base64 of 32 bytes",
        ),
        (
            vec![("EXITNET_DATABASE_URL", "mysql://x")],
            "EXITNET_DATABASE_URL: expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE, not a mysql URL",
        ),
        (
            vec![("EXITNET_API__LISEN", "127.0.0.1:7711")],
            "EXITNET_API__LISEN is not a known setting; did you mean EXITNET_API__LISTEN?",
        ),
        (
            vec![("EXITNET_LOG__FORMAT", "yaml")],
            "EXITNET_LOG__FORMAT: yaml is not one of text, json",
        ),
        (
            vec![
                ("EXITNET_API__TLS__CERT_FILE", &cert),
                ("EXITNET_API__TLS__KEY_FILE", &other_key),
            ],
            "is not the key of the certificate in EXITNET_API__TLS__CERT_FILE",
        ),
        (
            vec![
                ("EXITNET_API__TLS__CERT_FILE", &missing),
                ("EXITNET_API__TLS__KEY_FILE", &key),
            ],
            "EXITNET_API__TLS__CERT_FILE",
        ),
        (
            vec![("EXITNET_MASTER_KEY_FILE", &missing)],
            "EXITNET_MASTER_KEY_FILE",
        ),
    ];
    for (vars, expected) in &cases {
        let mut env = vec![org, PORTS[0], PORTS[1]];
        env.extend(vars.iter().copied());
        for cmd in [&["config", "check"][..], &["run"][..]] {
            let out = node(dir.path(), cmd, &env).await;
            assert!(!out.ok, "{cmd:?} {vars:?} passed:\n{}", out.all());
            assert!(
                out.stderr.contains(expected),
                "{cmd:?} {vars:?}: expected {expected:?} in:\n{}",
                out.all()
            );
        }
    }
    // The same pair, matching, passes.
    let out = node(
        dir.path(),
        &["config", "check"],
        &[
            org,
            ("EXITNET_API__TLS__CERT_FILE", &cert),
            ("EXITNET_API__TLS__KEY_FILE", &key),
        ],
    )
    .await;
    assert!(out.ok, "{}", out.all());
}

#[tokio::test]
async fn connect_names_the_database_and_provider_it_could_not_reach() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1 of loopback.
    let out = node(
        dir.path(),
        &["config", "check", "--connect"],
        &[
            ("EXITNET_ORG__ID", "ngo-connect"),
            (
                "EXITNET_DATABASE_URL",
                "postgres://exitnet:hunter2@127.0.0.1:1/exitnet",
            ),
            ("EXITNET_AUTH__ISSUER", "http://127.0.0.1:1/realms/exitnet"),
            ("EXITNET_AUTH__AUDIENCE", "exitnet-node"),
        ],
    )
    .await;
    assert!(!out.ok, "{}", out.all());
    let text = out.all();
    assert!(
        text.contains(
            "EXITNET_DATABASE_URL: cannot connect to PostgreSQL at 127.0.0.1:1 (database exitnet)"
        ),
        "{text}"
    );
    assert_eq!(
        text.matches("Connection refused").count(),
        2,
        "once each for database and provider:\n{text}"
    );
    assert!(
        text.contains("EXITNET_AUTH__ISSUER: cannot read the OpenID discovery document http://127.0.0.1:1/realms/exitnet/.well-known/openid-configuration"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");

    // `run` says the same of the database: where, and why, once.
    let out = node(
        dir.path(),
        &["run"],
        &[
            ("EXITNET_ORG__ID", "ngo-connect"),
            (
                "EXITNET_DATABASE_URL",
                "postgres://exitnet:hunter2@127.0.0.1:1/exitnet",
            ),
            PORTS[0],
            PORTS[1],
        ],
    )
    .await;
    assert!(!out.ok);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("EXITNET_DATABASE_URL"))
        .unwrap_or_default();
    assert!(
        line.contains("127.0.0.1:1 (database exitnet)"),
        "{}",
        out.all()
    );
    assert_eq!(line.matches("Connection refused").count(), 1, "{line}");
    assert!(!out.all().contains("hunter2"));
}

#[tokio::test]
async fn connect_reaches_a_real_provider_and_the_database() {
    use exitnet_tests::oidc::{OidcProvider, SigningKey};
    let key = SigningKey::generate("connect-1").unwrap();
    let provider = OidcProvider::start(&key, "exitnet-node").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("EXITNET_ORG__ID", "ngo-reach"),
        ("EXITNET_AUTH__ISSUER", provider.issuer.as_str()),
        ("EXITNET_AUTH__AUDIENCE", "exitnet-node"),
    ];
    let out = node(dir.path(), &["config", "check", "--connect"], &env).await;
    assert!(out.ok, "{}", out.all());
    assert!(
        out.stderr.contains(&format!(
            "ok: OpenID provider: {}/.well-known/openid-configuration answered; 1 signing key(s)",
            provider.issuer.trim_end_matches('/')
        )),
        "{}",
        out.all()
    );
    assert!(
        out.stderr.contains("the first start creates it"),
        "{}",
        out.all()
    );
    assert!(
        !out.stderr.contains("sign-in is not configured"),
        "{}",
        out.all()
    );
    // --connect did not create the database.
    assert!(!dir.path().join("exitnet-data").exists());
}

#[tokio::test]
async fn postgres_errors_say_the_cause_once_and_connect_reads_the_recorded_org() {
    use sqlx::Connection;
    let db = exitnet_tests::TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = db.url.rsplit_once('/').unwrap();
    let missing = format!("{base}/{}_missing", db.name);
    let out = node(
        dir.path(),
        &["run"],
        &[
            ("EXITNET_ORG__ID", "ngo-pg"),
            ("EXITNET_DATABASE_URL", missing.as_str()),
            PORTS[0],
            PORTS[1],
        ],
    )
    .await;
    assert!(!out.ok);
    let expected = format!("database \"{}_missing\" does not exist", db.name);
    assert_eq!(out.stderr.matches(&expected).count(), 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("EXITNET_DATABASE_URL: connecting to PostgreSQL at"),
        "{}",
        out.all()
    );
    assert!(!out.stderr.contains("at line"), "{}", out.all());

    // --connect reads the organisation the database records, and changes nothing.
    let env = |org: &'static str| {
        [
            ("EXITNET_ORG__ID", org),
            ("EXITNET_DATABASE_URL", db.url.as_str()),
        ]
    };
    let out = node(
        dir.path(),
        &["config", "check", "--connect"],
        &env("ngo-pg"),
    )
    .await;
    assert!(out.ok, "{}", out.all());
    assert!(
        out.stderr.contains("ok: database: connected to PostgreSQL"),
        "{}",
        out.all()
    );
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 0, "--connect created tables");
    sqlx::query("CREATE TABLE node_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO node_meta VALUES ('org_id', 'ngo-other')")
        .execute(&mut conn)
        .await
        .unwrap();
    let out = node(
        dir.path(),
        &["config", "check", "--connect"],
        &env("ngo-pg"),
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("EXITNET_ORG__ID is ngo-pg but this database belongs to ngo-other"),
        "{}",
        out.all()
    );
}
