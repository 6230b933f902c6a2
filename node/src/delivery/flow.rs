//! The order of one peer's notices: which may go now (a referral's message
//! waits while an earlier one of it is unanswered), what came back, and
//! when to try again.

use super::*;
use crate::domain::audit::{SignedCheckpoint, SignedWitness};

/// Whether messages and notices still flow in this round.
#[derive(Default)]
pub(super) struct Flow {
    pub(super) messages_wait: bool,
    pub(super) notices_wait: bool,
    /// The peer answered in this round.
    pub(super) seen: bool,
    /// Referrals with a message held back because the peering is not
    /// active: a later withdrawal of theirs waits too (order within a
    /// referral), the others' withdrawals go.
    pub(super) held: HashSet<String>,
}

impl Flow {
    /// Takes in the outcomes of stored receipts (referral messages).
    pub(super) fn apply_all(&mut self, handled: Vec<Handled>) {
        for h in handled {
            self.apply(h, true);
        }
    }

    pub(super) fn apply(&mut self, h: Handled, is_message: bool) {
        self.seen |= h.seen;
        if h.wait {
            self.wait(is_message);
        }
    }

    pub(super) fn wait(&mut self, is_message: bool) {
        if is_message {
            self.messages_wait = true;
        } else {
            self.notices_wait = true;
        }
    }

    /// Whether `n` may be sent now; records why not. `withdrawal_passes`: a
    /// withdrawal, which goes even while the peering is not active.
    pub(super) async fn ready(
        &mut self,
        delivery: &Delivery,
        n: &Notice,
        is_message: bool,
        exchange_allowed: bool,
        withdrawal_passes: bool,
    ) -> anyhow::Result<bool> {
        if (is_message && self.messages_wait) || (!is_message && self.notices_wait) {
            return Ok(false);
        }
        if is_message && !exchange_allowed {
            // Suspended (by either side), revoked or not yet active: referral
            // messages wait, in order per referral, until the peering is
            // active again; withdrawals go now, unless a message of their
            // referral waits before them.
            let rid = super::referral(n).cloned();
            let behind = rid.as_ref().is_some_and(|r| self.held.contains(r));
            if n.next_attempt_at_ms > delivery.now_ms() {
                self.held.extend(rid);
                return Ok(false);
            }
            if withdrawal_passes && !behind {
                return Ok(true);
            }
            self.held.extend(rid);
            let next = delivery.now_ms() + delivery.config.federation.retry_max_ms as i64;
            delivery
                .store
                .notice_failed(n.id, next, "peering not active")
                .await?;
            return Ok(false);
        }
        if n.next_attempt_at_ms > delivery.now_ms() {
            self.wait(is_message);
            return Ok(false);
        }
        Ok(true)
    }

    /// Records the outcome of one call.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn handle(
        &self,
        delivery: &Delivery,
        answers: &dyn Answers,
        org: &OrgId,
        peer: &crate::domain::Peer,
        n: &Notice,
        req: &pb::NotifyRequest,
        is_message: bool,
        result: Result<pb::NotifyResponse, tonic::Status>,
    ) -> anyhow::Result<Handled> {
        match result {
            Ok(resp) if is_message => {
                let mut handled =
                    accept_deliveries(delivery, answers, org, vec![(n.clone(), req.clone(), resp)])
                        .await?;
                Ok(handled.pop().unwrap_or(Handled {
                    wait: false,
                    seen: true,
                }))
            }
            Ok(resp) => {
                let now = delivery.now_ms();
                delivery.metrics.delivered(org.as_str(), "delivered");
                if let Some(pb::notify_request::Notice::Checkpoint(cp)) = &req.notice {
                    let witness = resp.witness.clone().map(SignedWitness::from);
                    let sent = SignedCheckpoint::from(cp.clone());
                    match answers.witnessed(org, &sent, witness.as_ref()).await {
                        Ok(()) => delivery.store.notice_delivered(n.id, now).await?,
                        Err(e) => {
                            retry_later(delivery, n.id, n.attempts, "invalid witness").await?;
                            tracing::warn!(peer = %org, error = %e, "witness refused; will retry");
                            return Ok(Handled {
                                wait: true,
                                seen: true,
                            });
                        }
                    }
                } else {
                    delivery.store.notice_delivered(n.id, now).await?;
                }
                Ok(Handled {
                    wait: false,
                    seen: true,
                })
            }
            Err(status) if is_message && refused_for_good(&status) => {
                delivery.metrics.delivered(org.as_str(), "refused");
                // The receiver checked the message and refused it: retrying
                // cannot help. An offer fails with the receiver's reason.
                delivery
                    .store
                    .notice_dropped(n.id, delivery.now_ms(), status.code().description())
                    .await?;
                answers
                    .refused(
                        n.route.as_ref(),
                        FailureReason::RefusedByReceiver,
                        status.message(),
                    )
                    .await?;
                tracing::info!(peer = %org, code = ?status.code(), "the peer refused a message");
                Ok(Handled {
                    wait: false,
                    seen: true,
                })
            }
            Err(status) => {
                let final_refusal = matches!(
                    status.code(),
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                ) && peer.state.is_final();
                // A checkpoint the peer will not keep (over its quota, or not
                // above what it witnessed) is not retried: a later one covers
                // more, and peering notices behind it must not wait.
                let checkpoint_refused =
                    matches!(req.notice, Some(pb::notify_request::Notice::Checkpoint(_)))
                        && matches!(
                            status.code(),
                            tonic::Code::ResourceExhausted | tonic::Code::FailedPrecondition
                        );
                if checkpoint_refused {
                    delivery.metrics.delivered(org.as_str(), "refused");
                    delivery
                        .store
                        .notice_dropped(n.id, delivery.now_ms(), status.code().description())
                        .await?;
                    tracing::info!(peer = %org, code = ?status.code(), "the peer refused a checkpoint; a later one will be sent");
                    return Ok(Handled {
                        wait: false,
                        seen: true,
                    });
                }
                delivery.metrics.delivered(org.as_str(), "retry");
                if final_refusal && !is_message {
                    // The peering is over on our side and they refuse us: stop trying.
                    delivery
                        .store
                        .notice_dropped(n.id, delivery.now_ms(), status.code().description())
                        .await?;
                    return Ok(Handled {
                        wait: false,
                        seen: false,
                    });
                }
                retry_later(delivery, n.id, n.attempts, status.code().description()).await?;
                tracing::debug!(peer = %org, code = ?status.code(), "notice refused; will retry");
                Ok(Handled {
                    wait: true,
                    seen: false,
                })
            }
        }
    }
}

/// What one call's outcome means for the rest of the round.
pub(super) struct Handled {
    /// Later messages (or notices) wait for a later round.
    pub(super) wait: bool,
    /// The peer answered.
    pub(super) seen: bool,
}

/// The peer answered these messages: their receipts are checked and stored
/// together. An invalid receipt is not proof of delivery: its message is
/// tried again later. One outcome per message, in order.
pub(super) async fn accept_deliveries(
    delivery: &Delivery,
    answers: &dyn Answers,
    org: &OrgId,
    answered: Vec<(Notice, pb::NotifyRequest, pb::NotifyResponse)>,
) -> anyhow::Result<Vec<Handled>> {
    if answered.is_empty() {
        return Ok(Vec::new());
    }
    let keys = delivery.store.peer_keys(org, delivery.now_ms()).await?;
    let now = delivery.now_ms();
    let mut handled = Vec::with_capacity(answered.len());
    let mut items = Vec::with_capacity(answered.len());
    let mut attempts = Vec::with_capacity(answered.len());
    for (n, req, resp) in &answered {
        delivery.metrics.delivered(org.as_str(), "delivered");
        let waited = (now - n.created_at_ms).max(0) as f64 / 1000.0;
        delivery.metrics.delivery_latency.observe(waited);
        match delivery.protocol.acknowledgement(org, &keys, req, resp) {
            Ok(Some(ack)) => {
                items.push(answers.receipt(org, n.id, ack));
                attempts.push((handled.len(), n.attempts));
            }
            Ok(None) => delivery.store.notice_delivered(n.id, now).await?,
            Err(e) => {
                retry_later(delivery, n.id, n.attempts, "invalid receipt").await?;
                tracing::warn!(peer = %org, error = %e, "receipt refused; will retry");
                handled.push(Handled {
                    wait: true,
                    seen: true,
                });
                continue;
            }
        }
        handled.push(Handled {
            wait: false,
            seen: true,
        });
    }
    if let Err(e) = answers.delivered(&items).await {
        // One receipt that cannot be stored must not hold up the others.
        tracing::warn!(peer = %org, error = %e, "storing receipts together failed; storing them one by one");
        for (item, (at, tries)) in items.iter().zip(attempts) {
            if let Err(e) = answers.delivered(std::slice::from_ref(item)).await {
                retry_later(delivery, item.notice_row, tries, "receipt not stored").await?;
                tracing::warn!(peer = %org, error = %e, "a receipt could not be stored; will retry");
                if let Some(h) = handled.get_mut(at) {
                    h.wait = true;
                }
            }
        }
    }
    Ok(handled)
}

/// Records a failed attempt; the notice is due again after a backoff.
pub(super) async fn retry_later(
    delivery: &Delivery,
    notice_row: i64,
    attempts: i64,
    why: &str,
) -> anyhow::Result<()> {
    let next = delivery.now_ms() + backoff_ms(delivery, attempts);
    delivery.store.notice_failed(notice_row, next, why).await?;
    Ok(())
}

/// A refusal of the message itself, not of the connection or the peering.
pub(super) fn refused_for_good(status: &tonic::Status) -> bool {
    use tonic::Code::*;
    match status.code() {
        InvalidArgument | FailedPrecondition | NotFound | AlreadyExists | OutOfRange => true,
        // About the peering (e.g. suspended), which may resume.
        PermissionDenied => !crate::transport::status::refused_by_peering(status),
        _ => false,
    }
}

/// Exponential backoff with full jitter, capped.
pub(super) fn backoff_ms(delivery: &Delivery, attempts: i64) -> i64 {
    let initial = delivery.config.federation.retry_initial_ms as i64;
    let cap = delivery.config.federation.retry_max_ms as i64;
    let exp = initial
        .saturating_mul(1i64 << attempts.clamp(0, 30))
        .min(cap);
    // Without randomness the wait is simply not jittered.
    let b = crate::crypto::random_bytes::<8>().unwrap_or_default();
    let jitter = (u64::from_le_bytes(b) % (exp as u64 / 2 + 1)) as i64;
    exp / 2 + jitter
}
