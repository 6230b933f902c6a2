//! Sign-in against a real OpenID provider (npm `oidc-provider`): accepted and
//! refused tokens, roles, provider key rotation, and `exitnetctl login`.

use exitnet_proto::pb;
use exitnet_tests::oidc::{OidcProvider, SigningKey};
use exitnet_tests::{Backend, NodeProcess, NodeSpec, bearer, binary};
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::Code;

const AUDIENCE: &str = "urn:exitnet:test";

async fn node_for(provider: &OidcProvider) -> NodeProcess {
    let toml = format!(
        "[auth]\nmode = \"oidc\"\nissuer = {iss:?}\naudience = {AUDIENCE:?}\njwks_min_refetch_secs = 0\n\
         [auth.introspection]\nurl = \"{iss}/token/introspection\"\nclient_id = \"agency-system\"\nclient_secret = \"agency-secret\"\n\
         [auth.system_acts_for]\n\"agency-system\" = \"alice, bob\"\n",
        iss = provider.issuer
    );
    NodeProcess::start(NodeSpec::new("ngo-auth", Backend::Sqlite).with_toml(&toml))
        .await
        .unwrap()
}

async fn info(
    node: &NodeProcess,
    token: Option<&str>,
) -> Result<pb::GetNodeInfoResponse, tonic::Status> {
    let mut c = pb::node_service_client::NodeServiceClient::new(node.api_channel().await.unwrap());
    let req = match token {
        Some(t) => bearer(t, pb::GetNodeInfoRequest {}),
        None => tonic::Request::new(pb::GetNodeInfoRequest {}),
    };
    c.get_node_info(req).await.map(|r| r.into_inner())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn refused(r: Result<pb::GetNodeInfoResponse, tonic::Status>, code: Code, token: &str) -> String {
    let s = r.unwrap_err();
    assert_eq!(s.code(), code, "{s:?}");
    // The reason is named; the token never echoed.
    assert!(
        token.is_empty() || !s.message().contains(token),
        "message echoes the token"
    );
    s.message().to_owned()
}

#[tokio::test]
async fn tokens_from_a_real_provider() {
    let key = SigningKey::generate("k1").unwrap();
    let mut provider = OidcProvider::start(&key, AUDIENCE).await.unwrap();
    let node = node_for(&provider).await;

    // Accepted: a client-credentials token of an agency system.
    let system = provider
        .client_credentials("agency-system", "agency-secret")
        .await
        .unwrap();
    let ok = info(&node, Some(&system)).await.unwrap();
    assert_eq!(ok.profile.unwrap().org_id, "ngo-auth");

    // Refused, each for its reason.
    let msg = refused(info(&node, None).await, Code::Unauthenticated, "");
    assert!(msg.contains("no bearer token"), "{msg}");
    let claims = |over: serde_json::Value| {
        let mut c = json!({"iss": provider.issuer, "aud": AUDIENCE, "sub": "alice", "roles": ["case_manager"], "iat": now(), "exp": now() + 300});
        for (k, v) in over.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"});
    // A hand-signed token with the right key and claims is accepted (the crafting is sound).
    let good = key.sign(header.clone(), claims(json!({}))).unwrap();
    info(&node, Some(&good)).await.unwrap();
    let cases = [
        (
            "expired",
            key.sign(
                header.clone(),
                claims(json!({"exp": now() - 600, "iat": now() - 900})),
            )
            .unwrap(),
            Code::Unauthenticated,
            "expired",
        ),
        (
            "audience",
            key.sign(header.clone(), claims(json!({"aud": "urn:someone-else"})))
                .unwrap(),
            Code::Unauthenticated,
            "audience",
        ),
        (
            "issuer",
            key.sign(header.clone(), claims(json!({"iss": "http://127.0.0.1:1"})))
                .unwrap(),
            Code::Unauthenticated,
            "issuer",
        ),
    ];
    for (what, token, code, needle) in cases {
        let msg = refused(info(&node, Some(&token)).await, code, &token);
        assert!(msg.contains(needle), "{what}: {msg}");
    }
    // An altered signature: the payload changed after signing.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let forged_claims = claims(json!({"roles": ["supervisor"]}));
    parts[1] = base64_url(forged_claims.to_string().as_bytes());
    let altered = parts.join(".");
    let msg = refused(
        info(&node, Some(&altered)).await,
        Code::Unauthenticated,
        &altered,
    );
    assert!(msg.contains("signature"), "{msg}");
    // alg: none.
    let none = format!(
        "{}.{}.",
        base64_url(json!({"alg": "none"}).to_string().as_bytes()),
        base64_url(claims(json!({})).to_string().as_bytes())
    );
    let msg = refused(info(&node, Some(&none)).await, Code::Unauthenticated, &none);
    assert!(msg.contains("algorithm"), "{msg}");
    // HS256 signed with the issuer's public key as the HMAC secret.
    let input = format!(
        "{}.{}",
        base64_url(json!({"alg": "HS256", "kid": "k1"}).to_string().as_bytes()),
        base64_url(claims(json!({})).to_string().as_bytes())
    );
    let hmac_key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        key.public_jwk().to_string().as_bytes(),
    );
    let hs = format!(
        "{input}.{}",
        base64_url(ring::hmac::sign(&hmac_key, input.as_bytes()).as_ref())
    );
    let msg = refused(info(&node, Some(&hs)).await, Code::Unauthenticated, &hs);
    assert!(msg.contains("algorithm"), "{msg}");
    // A token from a second provider.
    let other_key = SigningKey::generate("other").unwrap();
    let other = OidcProvider::start(&other_key, AUDIENCE).await.unwrap();
    let foreign = other
        .client_credentials("agency-system", "agency-secret")
        .await
        .unwrap();
    refused(
        info(&node, Some(&foreign)).await,
        Code::Unauthenticated,
        &foreign,
    );
    // A valid token without a mapped role.
    let norole = provider
        .client_credentials("agency-norole", "norole-secret")
        .await
        .unwrap();
    let msg = refused(
        info(&node, Some(&norole)).await,
        Code::PermissionDenied,
        &norole,
    );
    assert!(msg.contains("no role"), "{msg}");
    // An opaque token goes to introspection, which says it is not active.
    let msg = refused(
        info(&node, Some("opaque-token-value")).await,
        Code::Unauthenticated,
        "opaque-token-value",
    );
    assert!(msg.contains("not active"), "{msg}");

    // A case manager reaching for another case manager's object is refused:
    // the agency system records a consent for alice, then asks for it as bob.
    let mut consents =
        pb::consent_service_client::ConsentServiceClient::new(node.api_channel().await.unwrap());
    let obo = |who: &str, token: &str, msg: pb::GetConsentRequest| {
        let mut r = bearer(token, msg);
        r.metadata_mut()
            .insert("x-exitnet-on-behalf-of", who.parse().unwrap());
        r
    };
    let mut rec = bearer(
        &system,
        pb::RecordConsentRequest {
            request_id: "crm-1".into(),
            subject_ref: "client-7".into(),
            terms: Some(pb::ConsentTerms {
                recipients: vec!["prison-b".into()],
                purposes: vec![pb::Purpose::ExitSupport as i32],
                need_areas: vec![pb::NeedArea::MentalHealth as i32],
                legal_basis: Some(pb::LegalBasis {
                    kind: pb::LegalBasisKind::Consent as i32,
                    statute: String::new(),
                }),
                valid_until: Some(exitnet_proto::Timestamp {
                    seconds: now() + 86400,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            collection_method: pb::CollectionMethod::Digital as i32,
            witness: String::new(),
        },
    );
    rec.metadata_mut()
        .insert("x-exitnet-on-behalf-of", "alice".parse().unwrap());
    let consent = consents
        .record_consent(rec)
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    let id = consent.consent_id.clone();
    consents
        .get_consent(obo(
            "alice",
            &system,
            pb::GetConsentRequest {
                consent_id: id.clone(),
            },
        ))
        .await
        .unwrap();
    let e = consents
        .get_consent(obo(
            "bob",
            &system,
            pb::GetConsentRequest { consent_id: id },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // The provider rotates its key: new tokens work without restarting the node.
    let key2 = SigningKey::generate("k2").unwrap();
    provider.rotate(&key2).await.unwrap();
    let after = provider
        .client_credentials("agency-system", "agency-secret")
        .await
        .unwrap();
    info(&node, Some(&after)).await.unwrap();
    // … and a token signed with the retired key is refused.
    refused(info(&node, Some(&good)).await, Code::Unauthenticated, &good);

    // Every refusal was recorded, without the token.
    let events = format!("{:?}", node.security_events().await.unwrap());
    for reason in [
        "token_missing",
        "token_expired",
        "token_audience",
        "token_issuer",
        "token_signature",
        "token_algorithm",
        "no_role",
        "token_inactive",
    ] {
        assert!(events.contains(reason), "{reason} not recorded: {events}");
    }
    assert!(!events.contains(&system) && !events.contains(&norole));
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[tokio::test]
async fn exitnetctl_login_with_the_device_flow() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncBufReadExt;
    let key = SigningKey::generate("k1").unwrap();
    let provider = OidcProvider::start(&key, AUDIENCE).await.unwrap();
    let node = node_for(&provider).await;
    let home = tempfile::tempdir().unwrap();
    let ctl = binary("exitnetctl").unwrap();

    let mut login = tokio::process::Command::new(&ctl)
        .args(["login", "--issuer", &provider.issuer])
        .env("XDG_CONFIG_HOME", home.path())
        .env_remove("EXITNET_CTL_TOKEN_FILE")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(login.stderr.take().unwrap()).lines();
    let (mut uri, mut code) = (None, None);
    while uri.is_none() || code.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(u) = line.strip_prefix("open: ") {
            uri = Some(u.to_owned());
        }
        if let Some(c) = line.strip_prefix("code: ") {
            code = Some(c.to_owned());
        }
    }
    provider
        .complete_device(&uri.unwrap(), &code.unwrap(), "alice")
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), login.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let token_file = home.path().join("exitnet/tokens.json");
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o077,
        0
    );

    // The signed-in case manager reaches the client API through exitnetctl.
    let api = |args: &[&str]| {
        let mut c = std::process::Command::new(&ctl);
        c.args(["api", "--api", &node.api_addr])
            .args(args)
            .env("XDG_CONFIG_HOME", home.path())
            .env_remove("EXITNET_CTL_TOKEN");
        c.output().unwrap()
    };
    let out = api(&["info", "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["org_id"], "ngo-auth");

    // An expired access token is refreshed with the refresh token.
    let mut stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
    let before = stored["access_token"].clone();
    stored["expires_at"] = json!(0);
    std::fs::write(&token_file, stored.to_string()).unwrap();
    let out = api(&["info"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
    assert_ne!(stored["access_token"], before);

    // Logout removes the tokens; the API is then out of reach.
    let out = std::process::Command::new(&ctl)
        .arg("logout")
        .env("XDG_CONFIG_HOME", home.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!token_file.exists());
    let out = api(&["info"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not signed in"));
}

#[tokio::test]
async fn dev_mode_tokens_and_roles() {
    let node = NodeProcess::start(NodeSpec::new("ngo-dev", Backend::Sqlite))
        .await
        .unwrap();
    let token = node.dev_token("auditor", "dpo").await.unwrap();
    info(&node, Some(&token)).await.unwrap();
    assert!(node.log().contains("DEVELOPMENT SIGN-IN"));
    let minted = node
        .admin()
        .await
        .unwrap()
        .mint_dev_token("x", "admin", "")
        .await
        .unwrap_err();
    assert!(minted.message().contains("role"), "{minted:?}");
    // A token minted by another node is refused.
    let other = NodeProcess::start(NodeSpec::new("ngo-other", Backend::Sqlite))
        .await
        .unwrap();
    let foreign = other.dev_token("case_manager", "eve").await.unwrap();
    refused(
        info(&node, Some(&foreign)).await,
        Code::Unauthenticated,
        &foreign,
    );
}

/// The payload of a JWT, unverified (to check a test's own premise).
fn payload(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// Issue 17, item 6: what a provider or an agency system says cannot widen
/// what a caller may do. Tokens from the real provider throughout.
#[tokio::test]
async fn roles_systems_and_token_types_cannot_be_widened() {
    let key = SigningKey::generate("k1").unwrap();
    let provider = OidcProvider::start(&key, AUDIENCE).await.unwrap();
    let system = provider
        .client_credentials("agency-system", "agency-secret")
        .await
        .unwrap();
    assert_eq!(payload(&system)["roles"], json!(["system"]));

    // A role map is an allow-list: the provider's role literally named
    // `system` is not in it, so it grants nothing.
    let mapped = NodeProcess::start(NodeSpec::new("ngo-mapped", Backend::Sqlite).with_toml(
        &format!(
            "[auth]\nmode = \"oidc\"\nissuer = {iss:?}\naudience = {AUDIENCE:?}\n\
             [auth.role_map]\n\"exitnet-case-managers\" = \"case_manager\"\n",
            iss = provider.issuer
        ),
    ))
    .await
    .unwrap();
    let msg = refused(
        info(&mapped, Some(&system)).await,
        Code::PermissionDenied,
        &system,
    );
    assert!(msg.contains("no role"), "{msg}");

    // Without a map, systems act only for the case managers configured for
    // their client ID; access tokens must be typed `at+jwt`.
    let node = NodeProcess::start(
        NodeSpec::new("ngo-auth", Backend::Sqlite).with_toml(&format!(
            "[auth]\nmode = \"oidc\"\nissuer = {iss:?}\naudience = {AUDIENCE:?}\n\
             access_token_typ = \"at+jwt\"\n\
             [auth.system_acts_for]\n\"agency-system\" = \"alice\"\n",
            iss = provider.issuer
        )),
    )
    .await
    .unwrap();
    let mut consents =
        pb::consent_service_client::ConsentServiceClient::new(node.api_channel().await.unwrap());
    let list_as = |who: &str| {
        let mut r = bearer(&system, pb::ListConsentsRequest::default());
        r.metadata_mut()
            .insert("x-exitnet-on-behalf-of", who.parse().unwrap());
        r
    };
    consents.list_consents(list_as("alice")).await.unwrap();
    for who in ["bob", "Alice", "alice,bob"] {
        let e = consents.list_consents(list_as(who)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{who}: {e:?}");
        assert!(
            e.message().contains("auth.system_acts_for") && !e.message().contains(who),
            "{who}: {e:?}"
        );
    }

    // An ID token for the very same audience (the provider's client whose
    // ID is the node's audience), signed by the same key: refused. The
    // access token of the same sign-in is accepted.
    let tokens = provider.device_tokens(AUDIENCE, "alice").await.unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(payload(id_token)["aud"], json!(AUDIENCE));
    assert_eq!(payload(access)["aud"], json!(AUDIENCE));
    info(&node, Some(access)).await.unwrap();
    let msg = refused(
        info(&node, Some(id_token)).await,
        Code::Unauthenticated,
        id_token,
    );
    assert!(msg.contains("not an access token"), "{msg}");
    // Even one that carries a role (signed with the provider's key, typed as
    // ID tokens are).
    let forged_id = key
        .sign(
            json!({"alg": "ES256", "typ": "JWT", "kid": "k1"}),
            json!({"iss": provider.issuer, "aud": AUDIENCE, "sub": "alice", "roles": ["supervisor"],
                   "nonce": "n", "iat": now(), "exp": now() + 300}),
        )
        .unwrap();
    let msg = refused(
        info(&node, Some(&forged_id)).await,
        Code::Unauthenticated,
        &forged_id,
    );
    assert!(msg.contains("not an access token"), "{msg}");

    // Each refusal is a security event with its reason, and no person's name.
    let events = format!("{:?}", node.security_events().await.unwrap());
    for reason in ["on_behalf_of_not_configured", "token_type"] {
        assert!(events.contains(reason), "{reason} not recorded: {events}");
    }
    assert!(!events.contains("bob") && !events.contains(id_token));
}

/// A string that is not a JWT goes nowhere when introspection is not
/// configured: refused without a single connection to the provider.
#[tokio::test]
async fn an_opaque_token_without_introspection_makes_no_call() {
    // A stand-in provider that counts the connections made to it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    let node = NodeProcess::start(NodeSpec::new("ngo-opaque", Backend::Sqlite).with_toml(
        &format!("[auth]\nmode = \"oidc\"\nissuer = {issuer:?}\naudience = {AUDIENCE:?}\n"),
    ))
    .await
    .unwrap();
    for opaque in ["opaque-token-value", "a.b", "2YotnFZFEjr1zCsicMWpAA"] {
        let msg = refused(
            info(&node, Some(opaque)).await,
            Code::Unauthenticated,
            opaque,
        );
        assert!(msg.contains("not a JWT"), "{msg}");
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    // The counter would have seen a call: a JWT makes the node discover.
    let key = SigningKey::generate("k1").unwrap();
    let jwt = key
        .sign(
            json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}),
            json!({"iss": issuer, "aud": AUDIENCE, "sub": "alice", "exp": now() + 300}),
        )
        .unwrap();
    assert!(info(&node, Some(&jwt)).await.is_err());
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) > 0);
}

/// A watch lasts no longer than the token it was opened with.
#[tokio::test]
async fn a_watch_ends_when_its_token_expires() {
    const TTL: u32 = 4;
    let key = SigningKey::generate("k1").unwrap();
    let provider = OidcProvider::start_with_ttl(&key, AUDIENCE, TTL)
        .await
        .unwrap();
    let node = NodeProcess::start(
        NodeSpec::new("ngo-watch", Backend::Sqlite).with_toml(&format!(
            "[auth]\nmode = \"oidc\"\nissuer = {iss:?}\naudience = {AUDIENCE:?}\nleeway_secs = 0\n\
             [auth.system_acts_for]\n\"agency-system\" = \"alice\"\n",
            iss = provider.issuer
        )),
    )
    .await
    .unwrap();
    let token = provider
        .client_credentials("agency-system", "agency-secret")
        .await
        .unwrap();
    let exp = payload(&token)["exp"].as_i64().unwrap();
    let mut r = bearer(&token, pb::WatchReferralsRequest {});
    r.metadata_mut()
        .insert("x-exitnet-on-behalf-of", "alice".parse().unwrap());
    let mut watch =
        pb::referral_service_client::ReferralServiceClient::new(node.api_channel().await.unwrap())
            .watch_referrals(r)
            .await
            .unwrap()
            .into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(30), watch.message())
        .await
        .expect("the watch outlived its token by more than 30 s")
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("expired"), "{ended:?}");
    // Not before the token's end (a second for clocks' rounding).
    assert!(now() >= exp - 1, "ended at {} before exp {exp}", now());
}
