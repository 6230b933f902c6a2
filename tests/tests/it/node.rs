//! One node's life, on SQLite and on PostgreSQL.

use exitnet_tests::{Backend, NodeProcess, NodeSpec, binary, wait_until};
use std::time::Duration;

async fn reflection_services(addr: &str, v1alpha: bool) -> Vec<String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    if v1alpha {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut c = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = c
            .server_reflection_info(tokio_stream_once(req))
            .await
            .unwrap()
            .into_inner();
        match stream
            .message()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap()
        {
            MessageResponse::ListServicesResponse(l) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected {other:?}"),
        }
    } else {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut c = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = c
            .server_reflection_info(tokio_stream_once(req))
            .await
            .unwrap()
            .into_inner();
        match stream
            .message()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap()
        {
            MessageResponse::ListServicesResponse(l) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A one-message client stream.
fn tokio_stream_once<T: Send + 'static>(item: T) -> impl tokio_stream::Stream<Item = T> {
    tokio_stream::iter(vec![item])
}

async fn node_lifecycle(backend: Backend) {
    let mut node = NodeProcess::start(NodeSpec::new("ngo-life", backend))
        .await
        .unwrap();
    // Health and reflection on the client API.
    assert!(
        exitnet_tests::node::health_serving(&node.api_addr)
            .await
            .unwrap()
    );
    for v1alpha in [false, true] {
        let services = reflection_services(&node.api_addr, v1alpha).await;
        for expected in [
            "exitnet.v1.NodeService",
            "exitnet.v1.DirectoryService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} missing from {services:?}"
            );
        }
    }
    // The identity is created private and kept across a restart.
    let fp = node.fingerprint().await.unwrap();
    assert_eq!(fp.len(), 64);
    node.restart().await.unwrap();
    assert_eq!(node.fingerprint().await.unwrap(), fp);
    let out = tokio::process::Command::new(binary("exitnet-node").unwrap())
        .args(["identity", "--config"])
        .arg(&node.config_path)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ngo-life") && text.contains(&fp), "{text}");
    // SIGTERM: exit 0 within 5 s, the admin socket removed.
    let (status, took) = node.stop().await.unwrap();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        node.log()
    );
    // The log says whether the drain ran out of time (a task that did not
    // stop) or something after it was slow.
    let log = node.log();
    let end = (log.len().saturating_sub(3000)..=log.len())
        .find(|&i| log.is_char_boundary(i))
        .unwrap_or(0);
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}; the log's end:\n{}",
        &log[end..]
    );
    assert!(!node.admin_socket.exists());
    assert!(log.contains("stopped"));
}

#[tokio::test]
async fn lifecycle_on_sqlite() {
    node_lifecycle(Backend::Sqlite).await;
}

#[tokio::test]
async fn lifecycle_on_postgres() {
    node_lifecycle(Backend::Postgres).await;
}

#[tokio::test]
async fn runs_with_no_configuration_file_in_an_empty_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(binary("exitnet-node").unwrap())
        .arg("run")
        .current_dir(dir.path())
        // Only the ports are moved off their defaults, so tests can run side
        // by side; the organisation ID is the one thing a node must be given.
        .env("EXITNET_ORG__ID", "ngo-empty")
        .env("EXITNET_API__LISTEN", "127.0.0.1:0")
        .env("EXITNET_FEDERATION__LISTEN", "127.0.0.1:0")
        .env_remove("EXITNET_CONFIG")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let data = dir.path().join("exitnet-data");
    let listening = data.join("listening.json");
    let info: serde_json::Value = wait_until("listening.json", Duration::from_secs(30), || async {
        serde_json::from_str(&std::fs::read_to_string(&listening).ok()?).ok()
    })
    .await
    .unwrap();
    let api = info["api"].as_str().unwrap().to_owned();
    wait_until("SERVING", Duration::from_secs(30), || async {
        exitnet_tests::node::health_serving(&api)
            .await
            .ok()
            .filter(|s| *s)
    })
    .await
    .unwrap();
    // The organisation ID given, the database and a private identity.
    assert_eq!(info["org_id"], "ngo-empty");
    assert!(data.join("exitnet.db").exists());
    for f in ["exitnet.db", "identity", "admin.sock"] {
        let mode = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} must be private, mode {mode:o}");
    }
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o077,
        0
    );
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// SIGTERM the moment the admin socket appears (as a script that waits for
/// it and then stops the node does): the node stops gracefully, exit 0 and
/// its socket removed, never killed by the signal's default action.
#[tokio::test]
async fn stopped_as_soon_as_it_answers_it_stops_gracefully() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(binary("exitnet-node").unwrap())
            .arg("run")
            .current_dir(dir.path())
            .env("EXITNET_ORG__ID", "ngo-quick")
            .env("EXITNET_API__LISTEN", "127.0.0.1:0")
            .env("EXITNET_FEDERATION__LISTEN", "127.0.0.1:0")
            .env_remove("EXITNET_CONFIG")
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let socket = dir.path().join("exitnet-data").join("admin.sock");
        // Polled, not slept on; as soon as it is there, the signal.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !socket.exists() {
            assert!(std::time::Instant::now() < deadline, "no admin socket");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().unwrap().to_string()])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(
            status.success(),
            "round {round}: {status} (killed by the signal, not stopped)"
        );
        assert!(!socket.exists(), "round {round}: the admin socket was left");
    }
}

async fn node_cmd(args: &[&str], config: Option<&str>, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(binary("exitnet-node").unwrap());
    cmd.args(args)
        .current_dir(dir.path())
        .env_remove("EXITNET_CONFIG");
    if let Some(text) = config {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .unwrap()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_misspelt_key_fails_check_and_run_naming_the_key() {
    let bad = "[federation]\nlisen = \"127.0.0.1:0\"\n";
    for cmd in [&["config", "check"][..], &["run"][..]] {
        let (ok, text) = node_cmd(cmd, Some(bad), &[]).await;
        assert!(!ok, "{cmd:?} should fail");
        assert!(text.contains("lisen"), "{cmd:?}: {text}");
        assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    }
    let (ok, text) = node_cmd(
        &["config", "check"],
        None,
        &[("EXITNET_FEDERATON__LISTEN", "127.0.0.1:1")],
    )
    .await;
    assert!(!ok);
    assert!(
        text.contains(
            "EXITNET_FEDERATON__LISTEN is not a known setting; did you mean EXITNET_FEDERATION__LISTEN?"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn config_check_prints_the_effective_configuration_without_secrets() {
    let (ok, text) = node_cmd(
        &["config", "check"],
        Some("[org]\nid = \"ngo-a\"\nsector = \"ngo\"\n"),
        &[
            (
                "EXITNET_DATABASE_URL",
                "postgres://exitnet:s3cret@db.internal/exitnet",
            ),
            ("EXITNET_API__LISTEN", "127.0.0.1:9999"),
        ],
    )
    .await;
    assert!(ok, "{text}");
    assert!(
        text.contains("ngo-a") && text.contains("127.0.0.1:9999"),
        "{text}"
    );
    assert!(
        text.contains("postgres://exitnet:***@db.internal/exitnet"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test]
async fn plaintext_client_api_off_loopback_is_refused() {
    let (ok, text) = node_cmd(&["run"], None, &[("EXITNET_API__LISTEN", "0.0.0.0:0")]).await;
    assert!(!ok);
    assert!(text.contains("api.tls"), "{text}");
}

#[tokio::test]
async fn client_api_over_tls_with_client_certificates() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["agency-crm".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let w = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (ca_file, cert_file, key_file) = (
        w("ca.pem", ca_cert.pem()),
        w("server.pem", server.pem()),
        w("server.key", server_key.serialize_pem()),
    );
    let toml = format!(
        "[api.tls]\ncert_file = {cert_file:?}\nkey_file = {key_file:?}\nclient_ca_file = {ca_file:?}\n"
    );
    let node = NodeProcess::start(NodeSpec::new("ngo-tls", Backend::Sqlite).with_toml(&toml))
        .await
        .unwrap();
    let token = node.dev_token("case_manager", "alice").await.unwrap();

    let endpoint = |with_client_cert: bool| {
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca_cert.pem()))
            .domain_name("localhost");
        if with_client_cert {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                client.pem(),
                client_key.serialize_pem(),
            ));
        }
        tonic::transport::Endpoint::from_shared(format!("https://{}", node.api_addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
    };
    // With a certificate from the agency CA: served over TLS.
    let channel = endpoint(true).connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let mut info = exitnet_proto::pb::node_service_client::NodeServiceClient::new(channel);
    let r = info
        .get_node_info(exitnet_tests::bearer(
            &token,
            exitnet_proto::pb::GetNodeInfoRequest {},
        ))
        .await
        .unwrap();
    assert_eq!(r.into_inner().profile.unwrap().org_id, "ngo-tls");
    // Without a client certificate the handshake fails.
    let refused = match endpoint(false).connect().await {
        Err(_) => true,
        Ok(ch) => {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            h.check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_err()
        }
    };
    assert!(refused, "a client without a certificate was served");
    // Plaintext is not served on the TLS port.
    assert!(
        exitnet_tests::node::health_serving(&node.api_addr)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_demo_tells_the_story_and_exits_0() {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(binary("exitnet-demo").unwrap())
            .env_remove("RUST_LOG")
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "verification code",
        "trauma clinic: requested (exit-ngo) → received (trauma-clinic) → accepted (trauma-clinic) → in progress (trauma-clinic) → completed (trauma-clinic)",
        "they cannot link the two",
        "summary gone",
        "purge status: done",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}
