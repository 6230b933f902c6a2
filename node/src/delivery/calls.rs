//! One round's calls to a peer: a batch of referral messages under one
//! signature in one `NotifyBatch`, or one notice per `Notify` to a peer that
//! lacks it, and what each call's answer means for each notice.

use super::*;

pub(super) type Client =
    pb::federation_service_client::FederationServiceClient<tonic::transport::Channel>;

/// Sends a batch of messages at once: in one `NotifyBatch` call, or, to a
/// peer that does not know it, in one `Notify` call each (multiplexed on one
/// connection). The answers in the batch's order.
pub(super) async fn call_all(
    channels: &crate::transport::client::Channels,
    org: &str,
    client: &Client,
    key: &crate::identity::NodeKey,
    batch: &[(Notice, pb::NotifyRequest)],
) -> Vec<Result<pb::NotifyResponse, tonic::Status>> {
    let queued = || batch.iter().map(|(_, r)| r);
    let signing_failed = |e: anyhow::Error| {
        tracing::error!(error = %e, "signing messages failed");
        let status = tonic::Status::internal("signing failed");
        batch.iter().map(|_| Err(status.clone())).collect()
    };
    if batch.len() > 1 && channels.batches(org) {
        let notices = match sign_for_sending(key, queued(), true) {
            Ok(n) => n,
            Err(e) => return signing_failed(e),
        };
        match client
            .clone()
            .notify_batch(pb::NotifyBatchRequest { notices })
            .await
        {
            Ok(resp) => return batch_outcomes(resp.into_inner(), batch.len()),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                channels.no_batches(org);
            }
            // Larger than the peer accepts in one message (or its rate
            // refused it): each message goes on its own, as it would alone.
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {}
            // The call failed as a whole: so did each message in it.
            Err(status) => return batch.iter().map(|_| Err(status.clone())).collect(),
        }
    }
    match sign_for_sending(key, queued(), false) {
        Ok(notices) => call_each(client, notices).await,
        Err(e) => signing_failed(e),
    }
}

/// A peer's answer to a batch, one result per message sent. Answers missing
/// (or too many) mean nothing was proven: those messages are tried again.
pub(super) fn batch_outcomes(
    resp: pb::NotifyBatchResponse,
    sent: usize,
) -> Vec<Result<pb::NotifyResponse, tonic::Status>> {
    if resp.outcomes.len() != sent {
        let status = tonic::Status::unavailable(format!(
            "the peer answered {sent} messages with {} outcomes",
            resp.outcomes.len()
        ));
        return (0..sent).map(|_| Err(status.clone())).collect();
    }
    resp.outcomes
        .into_iter()
        .map(|o| match o.outcome {
            Some(pb::notify_outcome::Outcome::Response(r)) => Ok(r),
            Some(pb::notify_outcome::Outcome::Refusal(r)) => {
                // A refusal is never OK: an unknown or OK code counts as
                // UNKNOWN, which is tried again.
                let code = match tonic::Code::from(r.code) {
                    tonic::Code::Ok => tonic::Code::Unknown,
                    c => c,
                };
                Err(tonic::Status::new(code, r.message))
            }
            None => Err(tonic::Status::unavailable("the peer left an outcome empty")),
        })
        .collect()
}

/// One `Notify` call per message, all at once on one connection.
pub(super) async fn call_each(
    client: &Client,
    batch: Vec<pb::NotifyRequest>,
) -> Vec<Result<pb::NotifyResponse, tonic::Status>> {
    let mut calls = tokio::task::JoinSet::new();
    let n = batch.len();
    for (i, req) in batch.into_iter().enumerate() {
        let mut client = client.clone();
        calls.spawn(async move { (i, client.notify(req).await.map(|r| r.into_inner())) });
    }
    let mut results: Vec<Option<Result<pb::NotifyResponse, tonic::Status>>> =
        (0..n).map(|_| None).collect();
    while let Some(done) = calls.join_next().await {
        if let Ok((i, r)) = done
            && let Some(slot) = results.get_mut(i)
        {
            *slot = Some(r);
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(tonic::Status::unavailable("call task failed"))))
        .collect()
}

/// Most bytes of messages in one `NotifyBatch`: well below the smallest
/// message size a peer accepts (a message larger than this goes alone).
pub(super) const BATCH_BYTES: usize = crate::transport::MAX_MESSAGE_BYTES / 4;

pub(super) fn notice_bytes(req: &pb::NotifyRequest) -> usize {
    use prost::Message;
    req.encoded_len()
}
