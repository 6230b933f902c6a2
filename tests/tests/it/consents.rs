//! ConsentService through the client API: validation, idempotency, and who
//! may see and change what.

use exitnet_proto::pb;
use exitnet_proto::pb::consent_service_client::ConsentServiceClient;
use exitnet_tests::{Backend, NodeProcess, NodeSpec, bearer};
use tonic::Code;

fn terms() -> pb::ConsentTerms {
    let in_a_year = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 365 * 86400;
    pb::ConsentTerms {
        recipients: vec!["prison-b".into(), "health-c".into()],
        purposes: vec![
            pb::Purpose::ExitSupport as i32,
            pb::Purpose::ServiceProvision as i32,
        ],
        data_categories: vec![
            pb::DataCategory::AgeBand as i32,
            pb::DataCategory::RiskLevel as i32,
        ],
        need_areas: vec![
            pb::NeedArea::MentalHealth as i32,
            pb::NeedArea::FunctionalReintegration as i32,
        ],
        legal_basis: Some(pb::LegalBasis {
            kind: pb::LegalBasisKind::Consent as i32,
            statute: String::new(),
        }),
        restrictions: vec![pb::Restriction::NotForCriminalInvestigation as i32],
        valid_until: Some(exitnet_proto::Timestamp {
            seconds: in_a_year,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn record(request_id: &str, subject: &str) -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        request_id: request_id.into(),
        subject_ref: subject.into(),
        terms: Some(terms()),
        collection_method: pb::CollectionMethod::Written as i32,
        witness: String::new(),
    }
}

fn with_obo<T>(token: &str, who: &str, msg: T) -> tonic::Request<T> {
    let mut r = bearer(token, msg);
    r.metadata_mut()
        .insert("x-exitnet-on-behalf-of", who.parse().unwrap());
    r
}

async fn consent_rules(backend: Backend) {
    let node = NodeProcess::start(NodeSpec::new("ngo-a", backend))
        .await
        .unwrap();
    let mut c = ConsentServiceClient::new(node.api_channel().await.unwrap());
    let alice = node.dev_token("case_manager", "alice").await.unwrap();
    let bob = node.dev_token("case_manager", "bob").await.unwrap();
    let sue = node.dev_token("supervisor", "sue").await.unwrap();
    let dpo = node.dev_token("auditor", "dpo").await.unwrap();
    let sys = node.dev_token("system", "agency-crm").await.unwrap();

    // Built once: a retry is the very same request (its terms hold times,
    // and a request rebuilt a second later is another request).
    let first = record("r-1", "client-0001");
    let made = c
        .record_consent(bearer(&alice, first.clone()))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    assert_eq!(made.subject_ref, "client-0001");
    assert_eq!(made.recorded_by, "alice");
    assert_eq!(
        made.terms.as_ref().unwrap().recipients,
        ["health-c", "prison-b"]
    );
    // A retry after a timeout: the same consent, not a second one.
    let again = c
        .record_consent(bearer(&alice, first))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    assert_eq!(again.consent_id, made.consent_id);
    let id = made.consent_id.clone();
    let get = |t: &str| {
        bearer(
            t,
            pb::GetConsentRequest {
                consent_id: id.clone(),
            },
        )
    };

    // Bob reaches for Alice's consent: refused.
    let e = c.get_consent(get(&bob)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .withdraw_consent(bearer(
            &bob,
            pb::WithdrawConsentRequest {
                consent_id: id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        c.list_consents(bearer(&bob, pb::ListConsentsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .consents
            .is_empty()
    );
    // The supervisor sees it; the auditor sees it without the client reference.
    assert_eq!(
        c.get_consent(get(&sue))
            .await
            .unwrap()
            .into_inner()
            .consent
            .unwrap()
            .subject_ref,
        "client-0001"
    );
    let seen = c
        .get_consent(get(&dpo))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    assert_eq!(
        (seen.consent_id.as_str(), seen.subject_ref.as_str()),
        (id.as_str(), "")
    );
    let e = c
        .record_consent(bearer(&dpo, record("r-9", "client-x")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // A system acts for the case manager it names, and must name one.
    c.get_consent(with_obo(
        &sys,
        "alice",
        pb::GetConsentRequest {
            consent_id: id.clone(),
        },
    ))
    .await
    .unwrap();
    let e = c
        .get_consent(with_obo(
            &sys,
            "bob",
            pb::GetConsentRequest {
                consent_id: id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .record_consent(bearer(&sys, record("r-2", "client-0002")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("x-exitnet-on-behalf-of"),
        "{}",
        e.message()
    );
    let by_sys = c
        .record_consent(with_obo(&sys, "alice", record("r-2", "client-0002")))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    assert_eq!(by_sys.recorded_by, "agency-crm (system) for alice");
    // A case manager may not speak for someone else.
    let e = c
        .get_consent(with_obo(
            &bob,
            "alice",
            pb::GetConsentRequest {
                consent_id: id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Listing pages through Alice's consents, newest first.
    for i in 3..8 {
        c.record_consent(bearer(
            &alice,
            record(&format!("r-{i}"), &format!("client-000{i}")),
        ))
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_consents(bearer(
                &alice,
                pb::ListConsentsRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.consents.into_iter().map(|c| c.subject_ref));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(seen.first().map(String::as_str), Some("client-0007"));
    let by_client = c
        .list_consents(bearer(
            &alice,
            pb::ListConsentsRequest {
                subject_ref: "client-0001".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_client.consents.len(), 1);
    let e = c
        .list_consents(bearer(
            &alice,
            pb::ListConsentsRequest {
                page_token: "garbage!".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("page_token"));

    // Withdrawal: once.
    let w = c
        .withdraw_consent(bearer(
            &alice,
            pb::WithdrawConsentRequest {
                consent_id: id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(w.consent.unwrap().withdrawn_at.is_some());
    let e = c
        .withdraw_consent(bearer(
            &alice,
            pb::WithdrawConsentRequest {
                consent_id: id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .get_consent(bearer(
            &alice,
            pb::GetConsentRequest {
                consent_id: "nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn consent_rules_on_sqlite() {
    consent_rules(Backend::Sqlite).await;
}

#[tokio::test]
async fn consent_rules_on_postgres() {
    consent_rules(Backend::Postgres).await;
}

#[tokio::test]
async fn bad_consents_are_answered_with_the_field() {
    let node = NodeProcess::start(NodeSpec::new("ngo-a", Backend::Sqlite))
        .await
        .unwrap();
    let mut c = ConsentServiceClient::new(node.api_channel().await.unwrap());
    let alice = node.dev_token("case_manager", "alice").await.unwrap();
    let cases: Vec<(pb::RecordConsentRequest, &str)> = vec![
        (
            pb::RecordConsentRequest {
                request_id: String::new(),
                ..record("x", "c")
            },
            "request_id",
        ),
        (
            pb::RecordConsentRequest {
                subject_ref: "x".repeat(101),
                ..record("a", "c")
            },
            "subject_ref",
        ),
        (
            pb::RecordConsentRequest {
                terms: None,
                ..record("b", "c")
            },
            "terms",
        ),
        (
            pb::RecordConsentRequest {
                collection_method: 42,
                ..record("d", "c")
            },
            "collection_method",
        ),
        (
            pb::RecordConsentRequest {
                collection_method: pb::CollectionMethod::VerbalWitnessed as i32,
                ..record("e", "c")
            },
            "witness",
        ),
        (
            pb::RecordConsentRequest {
                terms: Some(pb::ConsentTerms {
                    recipients: vec!["NOT AN ID".into()],
                    ..terms()
                }),
                ..record("f", "c")
            },
            "terms.recipients",
        ),
        (
            pb::RecordConsentRequest {
                terms: Some(pb::ConsentTerms {
                    valid_until: None,
                    ..terms()
                }),
                ..record("g", "c")
            },
            "terms.valid_until",
        ),
    ];
    for (req, field) in cases {
        let e = c.record_consent(bearer(&alice, req)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }
    // Nothing was written by the refused requests.
    let all = c
        .list_consents(bearer(&alice, pb::ListConsentsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(all.consents.is_empty());
}
