//! Delivery to a peer of an older version (unit tests).

use super::*;
use exitnet_proto::pb::federation_service_server::{FederationService, FederationServiceServer};
use tonic::{Request, Response, Status};

/// A peer of an older version, without `NotifyBatch`: it answers each
/// `Notify` carrying a message signed alone by `spki` (it reads no batch
/// proofs) with a receipt whose payload is the notice's ID. Every method it
/// lacks answers UNIMPLEMENTED, as gRPC answers a method a server does not
/// know: that answer to `NotifyBatch` is what the test is about; the others
/// are never called.
struct Older {
    spki: Vec<u8>,
}

#[tonic::async_trait]
impl FederationService for Older {
    async fn join(
        &self,
        _: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        Err(Status::unimplemented("join"))
    }

    async fn notify(
        &self,
        r: Request<pb::NotifyRequest>,
    ) -> Result<Response<pb::NotifyResponse>, Status> {
        let r = r.into_inner();
        let Some(pb::notify_request::Notice::Message(m)) = &r.notice else {
            return Err(Status::invalid_argument("notice"));
        };
        if m.batch.is_some()
            || !crate::identity::verify_in(
                crate::identity::context::MESSAGE,
                &self.spki,
                &m.payload,
                &m.signature,
            )
        {
            return Err(Status::permission_denied("signature"));
        }
        Ok(Response::new(pb::NotifyResponse {
            receipt: Some(pb::SignedReceipt {
                payload: r.notice_id.into_bytes(),
                signature: vec![],
                batch: None,
            }),
            witness: None,
        }))
    }

    async fn notify_batch(
        &self,
        _: Request<pb::NotifyBatchRequest>,
    ) -> Result<Response<pb::NotifyBatchResponse>, Status> {
        Err(Status::unimplemented(
            "exitnet.v1.FederationService/NotifyBatch",
        ))
    }

    async fn list_witnessed_checkpoints(
        &self,
        _: Request<pb::ListWitnessedCheckpointsRequest>,
    ) -> Result<Response<pb::ListWitnessedCheckpointsResponse>, Status> {
        Err(Status::unimplemented("list"))
    }

    async fn list_withdrawn(
        &self,
        _: Request<pb::ListWithdrawnRequest>,
    ) -> Result<Response<pb::ListWithdrawnResponse>, Status> {
        Err(Status::unimplemented("list"))
    }
}

fn queued(i: i64) -> (Notice, pb::NotifyRequest) {
    let id = format!("notice-{i}");
    let n = Notice {
        id: i,
        notice_id: id.clone(),
        org_id: OrgId::parse("org", "older-peer").unwrap(),
        payload: vec![],
        present_key: None,
        attempts: 0,
        next_attempt_at_ms: 0,
        created_at_ms: 0,
        route: Some(crate::store::Route {
            kind: crate::store::NoticeKind::Status,
            referral_id: None,
        }),
    };
    let req = pb::NotifyRequest {
        notice_id: id,
        notice: Some(pb::notify_request::Notice::Message(pb::SignedMessage {
            payload: vec![1, 2, 3],
            signature: Vec::new(),
            batch: None,
        })),
    };
    (n, req)
}

#[tokio::test]
async fn a_peer_without_batches_gets_one_call_per_message() {
    let key = crate::identity::NodeKey::generate("sender").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FederationServiceServer::new(Older {
                spki: key.spki_der().to_vec(),
            }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = Client::new(channel);
    let channels = crate::transport::client::Channels::default();
    let batch: Vec<_> = (0..3).map(queued).collect();
    assert!(channels.batches("older-peer"));
    let results = call_all(&channels, "older-peer", &client, &key, &batch).await;
    let answered: Vec<Vec<u8>> = results
        .into_iter()
        .map(|r| r.unwrap().receipt.unwrap().payload)
        .collect();
    assert_eq!(
        answered,
        vec![
            b"notice-0".to_vec(),
            b"notice-1".to_vec(),
            b"notice-2".to_vec()
        ]
    );
    // Remembered: the next round does not ask again.
    assert!(!channels.batches("older-peer"));
    assert!(channels.batches("another-peer"));
}

#[test]
fn a_batch_answer_proves_only_what_it_answers() {
    let receipt = |p: &[u8]| pb::NotifyOutcome {
        outcome: Some(pb::notify_outcome::Outcome::Response(pb::NotifyResponse {
            receipt: Some(pb::SignedReceipt {
                payload: p.to_vec(),
                signature: vec![],
                batch: None,
            }),
            witness: None,
        })),
    };
    let refusal = |code: i32| pb::NotifyOutcome {
        outcome: Some(pb::notify_outcome::Outcome::Refusal(pb::NotifyRefusal {
            code,
            message: "offer.terms.recipients: not a recipient".into(),
        })),
    };
    // One outcome per message, in order; a refusal keeps its code.
    let r = batch_outcomes(
        pb::NotifyBatchResponse {
            outcomes: vec![
                receipt(b"a"),
                refusal(tonic::Code::PermissionDenied as i32),
                refusal(0),
                refusal(999),
                pb::NotifyOutcome { outcome: None },
            ],
        },
        5,
    );
    assert_eq!(
        r[0].as_ref().unwrap().receipt.as_ref().unwrap().payload,
        b"a"
    );
    let codes: Vec<tonic::Code> = r[1..]
        .iter()
        .map(|x| x.as_ref().unwrap_err().code())
        .collect();
    assert_eq!(
        codes,
        vec![
            tonic::Code::PermissionDenied,
            // "Refused with OK" and codes we do not know are tried again.
            tonic::Code::Unknown,
            tonic::Code::Unknown,
            tonic::Code::Unavailable
        ]
    );
    assert!(refused_for_good(r[1].as_ref().unwrap_err()));
    assert!(!refused_for_good(r[2].as_ref().unwrap_err()));
    // Too few (or too many) answers: nothing is proven, all are retried.
    let r = batch_outcomes(
        pb::NotifyBatchResponse {
            outcomes: vec![receipt(b"a")],
        },
        2,
    );
    assert!(
        r.iter()
            .all(|x| x.as_ref().unwrap_err().code() == tonic::Code::Unavailable)
    );
}
