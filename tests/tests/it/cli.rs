//! `exitnetctl` as its users meet it: what `referral show` and the reports
//! tell, the forms of its output, errors that name what was typed, a closed
//! pipe, a node that is not running (yet), TLS to a client API.

use exitnet_tests::fixtures::{peer_with, start};
use exitnet_tests::{Backend, CtlOutput, NodeProcess, NodeSpec, binary, wait_until};
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `exitnetctl ARGS` with nothing taken from the environment.
fn command(args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(binary("exitnetctl").unwrap());
    c.args(args)
        .env_remove("EXITNET_OUTPUT")
        .env_remove("EXITNET_CTL_API")
        .env_remove("EXITNET_CTL_TOKEN")
        .env_remove("EXITNET_CTL_CA")
        .env_remove("EXITNET_ADMIN_SOCKET")
        .stdin(Stdio::null());
    c
}

async fn run(args: &[&str]) -> CtlOutput {
    let out = command(args).output().await.unwrap();
    CtlOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A client-API command on `node` as the holder of `token`.
async fn api(node: &NodeProcess, token: &str, args: &[&str]) -> CtlOutput {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--api", node.api_addr.as_str(), "--token", token]);
    run(&all).await
}

/// The same, `--output json`, which must succeed.
async fn api_json(node: &NodeProcess, token: &str, args: &[&str]) -> Value {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--output", "json"]);
    let out = api(node, token, &all).await;
    assert!(out.success, "{args:?}: {}", out.stderr);
    out.json().unwrap()
}

/// RFC 3339 in UTC with milliseconds: `2026-12-03T10:00:00.123Z`.
fn is_time_ms(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let pattern = b"dddd-dd-ddTdd:dd:dd.dddZ";
    s.len() == pattern.len()
        && s.bytes().zip(pattern.iter()).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            other => c == *other,
        })
}

async fn wait_referral(
    node: &NodeProcess,
    token: &str,
    id: &str,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(what, Duration::from_secs(30), || async {
        let out = api(node, token, &["referral", "show", id, "-o", "json"]).await;
        let v = out.json().ok()?;
        f(&v).then_some(v)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_sender_sees_how_a_case_ended_and_the_dpo_what_was_shared() {
    let a = start("ngo-a", Backend::Sqlite).await;
    let mut b = start("prison-b", Backend::Sqlite).await;
    peer_with(&a, &b).await;
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let bob = b.dev_token("case_manager", "bob").await.unwrap();

    // `show -o json` is an object, also for what `record` returns.
    let consent = api_json(
        &a,
        &alice,
        &[
            "consent",
            "record",
            "--subject",
            "client-cli",
            "--recipient",
            "prison-b",
            "--need-areas",
            "functional_reintegration,mental_health",
            "--field",
            "age_band,needs_narrative",
            "--purpose",
            "exit_support,service_provision",
        ],
    )
    .await;
    assert!(consent.is_object(), "{consent}");
    assert_eq!(consent["legal_basis"], "consent");
    assert!(is_time_ms(&consent["recorded_at"]), "{consent}");
    let consent_id = consent["consent_id"].as_str().unwrap().to_owned();
    let listed = api_json(&a, &alice, &["consent", "list"]).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    let create = || {
        let (a, alice, consent_id) = (&a, &alice, &consent_id);
        async move {
            api_json(
                a,
                alice,
                &[
                    "referral",
                    "create",
                    "--consent",
                    consent_id,
                    "--to",
                    "prison-b",
                    "--need-area",
                    "functional_reintegration",
                    "--service",
                    "housing",
                    "--urgency",
                    "soon",
                    "--age-band",
                    "25_34",
                    "--narrative",
                    "Housing after release.",
                ],
            )
            .await
        }
    };
    let made = create().await;
    assert!(made.is_object(), "{made}");
    let id = made["referral_id"].as_str().unwrap().to_owned();
    let other = create().await["referral_id"].as_str().unwrap().to_owned();
    for r in [&id, &other] {
        wait_referral(&a, &alice, r, "delivery", |v| v["state"] == "received").await;
    }

    // A list is always a table, also of one; `-o json` an array.
    let out = api(
        &b,
        &bob,
        &["referral", "list", "--inbound", "--state", "received"],
    )
    .await;
    assert!(out.success, "{}", out.stderr);
    assert!(out.stdout.starts_with("REFERRAL"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    for step in ["accept", "start"] {
        assert!(api(&b, &bob, &["referral", step, &id]).await.success);
    }
    let one = api(
        &b,
        &bob,
        &["referral", "list", "--inbound", "--state", "in_progress"],
    )
    .await;
    assert!(one.stdout.starts_with("REFERRAL"), "{}", one.stdout);
    assert_eq!(one.stdout.lines().count(), 2, "{}", one.stdout);
    let inbox = api_json(&b, &bob, &["referral", "list", "--inbound"]).await;
    assert_eq!(inbox.as_array().map(Vec::len), Some(2), "{inbox}");
    assert_eq!(
        inbox[0]["summary"]["needs_narrative"],
        "Housing after release."
    );

    let out = api(
        &b,
        &bob,
        &[
            "referral",
            "complete",
            &id,
            "--reintegration",
            "substantial",
            "--disengagement",
            "some",
            "--delivered",
            "--note",
            "Flat found.",
        ],
    )
    .await;
    assert!(out.success, "{}", out.stderr);
    let out = api(
        &b,
        &bob,
        &[
            "referral",
            "decline",
            &other,
            "--reason",
            "no_capacity",
            "--text",
            "Waiting list until March.",
        ],
    )
    .await;
    assert!(out.success, "{}", out.stderr);

    // The sender sees how each case ended: outcome per goal, reasons with
    // their texts, who acted and when.
    let shown = wait_referral(&a, &alice, &id, "completion", |v| v["state"] == "completed").await;
    assert_eq!(shown["outcome"]["reintegration"], "substantial");
    assert_eq!(shown["outcome"]["disengagement"], "some");
    assert_eq!(shown["outcome"]["deradicalisation"], Value::Null);
    assert_eq!(shown["outcome"]["service_delivered"], true);
    assert_eq!(shown["outcome"]["note"], "Flat found.");
    assert_eq!(shown["urgency"], "soon");
    assert_eq!(shown["services"], serde_json::json!(["housing"]));
    assert_eq!(shown["summary"]["age_band"], "25_34");
    assert_eq!(
        shown["terms"]["purposes"],
        serde_json::json!(["exit_support", "service_provision"])
    );
    assert_eq!(shown["owner"], "alice");
    let history = shown["history"].as_array().unwrap();
    let states: Vec<&str> = history
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "requested",
            "received",
            "accepted",
            "in_progress",
            "completed"
        ]
    );
    assert!(
        history[0]["actor"].as_str().unwrap().starts_with("alice"),
        "{shown}"
    );
    assert_eq!(history[4]["by_org"], "prison-b");
    assert!(history.iter().all(|h| is_time_ms(&h["at"])), "{shown}");
    let declined = wait_referral(&a, &alice, &other, "the decline", |v| {
        v["state"] == "declined"
    })
    .await;
    assert_eq!(declined["decline"]["reason"], "no_capacity");
    assert_eq!(declined["decline"]["text"], "Waiting list until March.");
    let text = api(&a, &alice, &["referral", "show", &id]).await.stdout;
    for expected in [
        "outcome: reintegration",
        "substantial",
        "Flat found.",
        "Housing after release.",
        "terms: purposes",
        "exit_support, service_provision",
        "AT",
        "alice",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    let text = api(&a, &alice, &["referral", "show", &other]).await.stdout;
    assert!(
        text.contains("no_capacity: Waiting list until March."),
        "{text}"
    );
    let out = api(&a, &alice, &["referral", "show", "0193-no-such"]).await;
    assert!(
        !out.success && out.stderr.contains("no referral 0193-no-such"),
        "{}",
        out.stderr
    );

    // What was shared with whom: counts and codes, never content.
    let socket = a.admin_socket.display().to_string();
    let admin = |args: &'static [&'static str]| {
        let socket = socket.clone();
        async move {
            let mut all = vec!["--socket", socket.as_str()];
            all.extend_from_slice(args);
            run(&all).await
        }
    };
    let shared = admin(&["report", "shared", "--peer", "prison-b", "-o", "json"]).await;
    assert!(shared.success, "{}", shared.stderr);
    let shared = shared.json().unwrap();
    let p = &shared[0];
    assert_eq!(shared.as_array().map(Vec::len), Some(1), "{shared}");
    assert_eq!(p["peer_org"], "prison-b");
    assert_eq!(p["referrals"], 2);
    assert!(
        is_time_ms(&p["first_at"]) && is_time_ms(&p["last_at"]),
        "{p}"
    );
    let count = |list: &str, code: &str| {
        p[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["code"] == code)
            .map(|c| c["referrals"].clone())
    };
    assert_eq!(count("data_categories", "age_band"), Some(2.into()));
    assert_eq!(count("data_categories", "needs_narrative"), Some(2.into()));
    assert_eq!(count("purposes", "service_provision"), Some(2.into()));
    assert_eq!(count("legal_bases", "consent"), Some(2.into()));
    assert_eq!(
        count("need_areas", "functional_reintegration"),
        Some(2.into())
    );
    assert!(!shared.to_string().contains("Housing after release"));
    assert!(!shared.to_string().contains("client-cli"));
    // The period bounds what is counted.
    let later = admin(&["report", "shared", "--from", "2999-01-01", "-o", "json"]).await;
    assert_eq!(later.json().unwrap(), serde_json::json!([]));
    let earlier = admin(&["report", "shared", "--to", "2000-01-01", "-o", "json"]).await;
    assert_eq!(earlier.json().unwrap(), serde_json::json!([]));
    let table = admin(&["report", "shared"]).await;
    assert!(
        table.success && table.stdout.contains("PEER") && table.stdout.contains("prison-b"),
        "{} {}",
        table.stdout,
        table.stderr
    );
    let bad = admin(&[
        "report",
        "shared",
        "--from",
        "2026-02-01",
        "--to",
        "2026-01-01",
    ])
    .await;
    assert!(
        !bad.success && bad.stderr.contains("--to must be after --from"),
        "{}",
        bad.stderr
    );

    // Purges: with the recipient down the withdrawal waits (pending, oldest
    // first); back up, each recipient's purge receipt makes it done. (A
    // suspension no longer holds withdrawals: it-withdrawals.)
    b.stop().await.unwrap();
    let out = api(&a, &alice, &["consent", "withdraw", &consent_id]).await;
    assert!(out.success, "{}", out.stderr);
    let purges = admin(&["report", "purges", "-o", "json"])
        .await
        .json()
        .unwrap();
    let purges = purges.as_array().unwrap().clone();
    assert_eq!(purges.len(), 2, "{purges:?}");
    for p in &purges {
        assert_eq!(p["purge_status"], "pending");
        assert_eq!(p["peer_org"], "prison-b");
        assert_eq!(p["cause"], "consent_withdrawn");
        assert!(is_time_ms(&p["withdrawn_at"]), "{p}");
        assert_eq!(p["purged_at"], Value::Null);
    }
    assert!(purges[0]["withdrawn_at"].as_str() <= purges[1]["withdrawn_at"].as_str());
    let table = admin(&["report", "purges"]).await.stdout;
    assert!(table.starts_with("RECIPIENT"), "{table}");
    b.restart().await.unwrap();
    wait_until("both purge receipts", Duration::from_secs(30), || async {
        let v = admin(&["report", "purges", "-o", "json"])
            .await
            .json()
            .ok()?;
        let all = v.as_array()?;
        (all.len() == 2
            && all
                .iter()
                .all(|p| p["purge_status"] == "done" && is_time_ms(&p["purged_at"])))
        .then_some(())
    })
    .await
    .unwrap();

    // Subject access: JSON with `at` like every other command, and Markdown.
    let doc = admin(&["audit", "subject", "client-cli"]).await;
    assert!(doc.success, "{}", doc.stderr);
    let doc = doc.json().unwrap();
    let audit = doc["audit"].as_array().unwrap();
    assert!(!audit.is_empty());
    assert!(
        audit
            .iter()
            .all(|r| is_time_ms(&r["at"]) && r.get("at_ms").is_none())
    );
    assert!(is_time_ms(&doc["generated_at"]));
    let md = admin(&["audit", "subject", "client-cli", "--format", "markdown"]).await;
    assert!(md.success, "{}", md.stderr);
    for expected in [
        "# Subject access report: client-cli",
        &format!("### Consent {consent_id}"),
        "sent to prison-b",
        "## Purges (2)",
        "referral.create",
    ] {
        assert!(
            md.stdout.contains(expected),
            "{expected} missing:\n{}",
            md.stdout
        );
    }
    let refused = admin(&["audit", "subject", "client-cli", "-o", "table"]).await;
    assert!(
        !refused.success && refused.stderr.contains("--format markdown"),
        "{}",
        refused.stderr
    );
    // The audit trail as a table when asked.
    let t = admin(&[
        "audit",
        "export",
        "-o",
        "table",
        "--action",
        "referral.create",
    ])
    .await;
    assert!(t.success, "{}", t.stderr);
    assert!(t.stdout.starts_with("SEQ"), "{}", t.stdout);
    assert_eq!(t.stdout.lines().count(), 3, "{}", t.stdout);
}

/// Runs `exitnetctl ARGS` with a standard output whose reader is already gone.
async fn with_closed_stdout(args: &[&str]) -> (std::process::ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = command(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn errors_name_what_was_typed_and_a_closed_pipe_is_quiet() {
    let mut n = start("ngo-a", Backend::Sqlite).await;
    let socket = n.admin_socket.display().to_string();
    let s = socket.as_str();

    let out = run(&["--socket", s, "peer", "invite", "--expires", "90d"]).await;
    assert!(
        !out.success && out.stderr.contains("--expires: at most 30d") && out.stderr.contains("90d"),
        "{}",
        out.stderr
    );
    let out = run(&[
        "--socket",
        s,
        "peer",
        "policy",
        "prison-b",
        "--need-areas",
        "cognitive,banana",
    ])
    .await;
    assert!(!out.success, "{}", out.stdout);
    for expected in [
        "--need-areas",
        "banana",
        "functional_reintegration",
        "security",
    ] {
        assert!(out.stderr.contains(expected), "{expected}: {}", out.stderr);
    }
    let out = run(&["referral", "list", "--api", "127.0.0.1:1", "--token", "t"]).await;
    assert!(
        !out.success
            && out
                .stderr
                .contains("cannot reach the client API at 127.0.0.1:1")
            && out.stderr.contains("refused"),
        "{}",
        out.stderr
    );
    let out = run(&["referral", "list", "--api", "api-host", "--token", "t"]).await;
    assert!(
        !out.success && out.stderr.contains("--api api-host: expected HOST:PORT"),
        "{}",
        out.stderr
    );
    // Off loopback only TLS: refused before anything is sent.
    let started = Instant::now();
    let out = run(&[
        "referral",
        "list",
        "--api",
        "192.0.2.1:7711",
        "--token",
        "t",
    ])
    .await;
    assert!(
        !out.success && out.stderr.contains("--api 192.0.2.1:7711") && out.stderr.contains("--ca"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // -o is honoured or refused.
    let out = run(&["--socket", s, "receipt", "export", "r-1", "-o", "table"]).await;
    assert!(
        !out.success && out.stderr.contains("-o table: receipt export writes"),
        "{}",
        out.stderr
    );
    let out = run(&["completions", "bash", "-o", "json"]).await;
    assert!(
        !out.success && out.stderr.contains("-o json"),
        "{}",
        out.stderr
    );
    let ev = run(&["--socket", s, "security", "events", "-o", "table"]).await;
    assert!(ev.success && ev.stdout.starts_with("AT"), "{}", ev.stdout);
    let ev = run(&["--socket", s, "security", "events", "-o", "json"]).await;
    assert!(ev.json().unwrap().is_array());

    // A reader that went away ends the output quietly, with status 0.
    let (status, stderr) = with_closed_stdout(&["completions", "bash"]).await;
    assert!(status.success() && stderr.is_empty(), "{status}: {stderr}");
    let (status, stderr) = with_closed_stdout(&["--socket", s, "audit", "export"]).await;
    assert!(status.success() && stderr.is_empty(), "{status}: {stderr}");

    // A node that is not running: the stale socket says so; --wait waits
    // for it to come back.
    n.kill().await.unwrap();
    let out = run(&["--socket", s, "identity", "show"]).await;
    assert!(
        !out.success && out.stderr.contains("the node is not running"),
        "{}",
        out.stderr
    );
    let started = Instant::now();
    let out = run(&["--socket", s, "--wait", "1", "identity", "show"]).await;
    assert!(
        !out.success && out.stderr.contains("waited 1s"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    let waiting = command(&[
        "--socket", s, "--wait", "120", "identity", "show", "-o", "json",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    n.restart().await.unwrap();
    let out = waiting.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["org_id"], "ngo-a");
    let missing = n.dir.path().join("nowhere.sock").display().to_string();
    let out = run(&["--socket", &missing, "identity", "show"]).await;
    assert!(
        !out.success && out.stderr.contains("no admin socket at") && out.stderr.contains("--wait"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_client_api_is_reached_over_tls_with_the_ca() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let w = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["agency-crm".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let (ca_file, cert_file, key_file) = (
        w("ca.pem", ca_cert.pem()),
        w("server.pem", server.pem()),
        w("server.key", server_key.serialize_pem()),
    );
    let (client_cert, client_key) = (
        w("client.pem", client.pem()),
        w("client.key", client_key.serialize_pem()),
    );
    let other_key = KeyPair::generate().unwrap();
    let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_ca = w(
        "other-ca.pem",
        other_params.self_signed(&other_key).unwrap().pem(),
    );
    let toml = format!(
        "[api.tls]\ncert_file = {cert_file:?}\nkey_file = {key_file:?}\nclient_ca_file = {ca_file:?}\n"
    );
    let node = NodeProcess::start(NodeSpec::new("ngo-tls", Backend::Sqlite).with_toml(&toml))
        .await
        .unwrap();
    let token = node.dev_token("case_manager", "alice").await.unwrap();
    // The node asks for a client certificate: without one, refused.
    let out = run(&[
        "api",
        "info",
        "--api",
        &node.api_addr,
        "--ca",
        &ca_file,
        "--token",
        &token,
    ])
    .await;
    assert!(!out.success, "{}", out.stdout);
    let info = run(&[
        "api",
        "info",
        "--api",
        &node.api_addr,
        "--ca",
        &ca_file,
        "--cert",
        &client_cert,
        "--key",
        &client_key,
        "--token",
        &token,
        "-o",
        "json",
    ])
    .await;
    assert!(info.success, "{}", info.stderr);
    assert_eq!(info.json().unwrap()["org_id"], "ngo-tls");
    // A certificate from another CA is refused, naming the address.
    let out = run(&[
        "api",
        "info",
        "--api",
        &node.api_addr,
        "--ca",
        &other_ca,
        "--token",
        &token,
    ])
    .await;
    assert!(
        !out.success
            && out
                .stderr
                .contains(&format!("cannot reach the client API at {}", node.api_addr)),
        "{}",
        out.stderr
    );
    let out = run(&[
        "api",
        "info",
        "--api",
        &node.api_addr,
        "--ca",
        "/nonexistent.pem",
        "--token",
        &token,
    ])
    .await;
    assert!(
        !out.success && out.stderr.contains("--ca /nonexistent.pem"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_withdrawal_after_a_revoke_reaches_the_peer_and_the_two_can_peer_again() {
    let a = start("ngo-a", Backend::Sqlite).await;
    let b = start("prison-b", Backend::Sqlite).await;
    peer_with(&a, &b).await;
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let consent = api_json(
        &a,
        &alice,
        &[
            "consent",
            "record",
            "--subject",
            "client-rp",
            "--recipient",
            "prison-b",
            "--need-area",
            "functional_reintegration",
            "--field",
            "age_band",
        ],
    )
    .await;
    let consent_id = consent["consent_id"].as_str().unwrap().to_owned();
    let made = api_json(
        &a,
        &alice,
        &[
            "referral",
            "create",
            "--consent",
            &consent_id,
            "--to",
            "prison-b",
            "--need-area",
            "functional_reintegration",
            "--age-band",
            "18_24",
        ],
    )
    .await;
    let id = made["referral_id"].as_str().unwrap().to_owned();
    wait_referral(&a, &alice, &id, "delivery", |v| v["state"] == "received").await;

    // A revokes; B learns of it. The consent is withdrawn meanwhile: the
    // withdrawal still reaches B (withdrawals pass while B's key is pinned).
    let out = a
        .ctl(&["peer", "revoke", "prison-b", "--yes"])
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    b.wait_peer_state("ngo-a", "active", Some("revoked"))
        .await
        .unwrap();
    let out = api(&a, &alice, &["consent", "withdraw", &consent_id]).await;
    assert!(out.success, "{}", out.stderr);
    wait_until(
        "the purge receipt while revoked",
        Duration::from_secs(60),
        || async {
            let v = a.ctl_json(&["report", "purges"]).await.ok()?;
            (v[0]["referral_id"] == id.as_str() && v[0]["purge_status"] == "done").then_some(())
        },
    )
    .await
    .unwrap();
    a.wait_peer_state("prison-b", "revoked", None)
        .await
        .unwrap();

    // Peering again: B invites this time, A joins (A's record is revoked, B's
    // has their view revoked: both give way), both approve.
    let code = b.ctl_json(&["peer", "invite"]).await.unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = a.ctl(&["peer", "join", &code]).await.unwrap();
    assert!(out.success, "{}", out.stderr);
    let out = b.ctl(&["peer", "approve", "ngo-a"]).await.unwrap();
    assert!(out.success, "{}", out.stderr);
    a.wait_peer_state("prison-b", "active", Some("active"))
        .await
        .unwrap();
    b.wait_peer_state("ngo-a", "active", Some("active"))
        .await
        .unwrap();
    // B purged while revoked, and stays purged in the new peering.
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let at_b = api_json(&b, &bob, &["referral", "show", &id]).await;
    assert_eq!(at_b["summary"], Value::Null, "{at_b}");
    assert_eq!(at_b["purge_status"], "done");
}
