//! Where delivery hands what peers answered (`delivery::Answers`): receipts
//! and refusals of referral messages to `referrals`, witnesses of our audit
//! checkpoints to `witness`. Wired in `app`, so that delivery names neither.

use crate::delivery::Answers;
use crate::domain::{FailureReason, OrgId};
use crate::error::Result;
use crate::protocol::messages::Acknowledgement;
use crate::state::NodeState;
use crate::store::{AcceptedReceipt, Route};
use exitnet_proto::pb;
use futures_util::future::BoxFuture;

/// The node's own answers: referrals and the witnessed audit trail.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeAnswers;

impl Answers for NodeAnswers {
    fn receipt(
        &self,
        state: &NodeState,
        org: &OrgId,
        notice_row: i64,
        ack: Acknowledgement,
    ) -> AcceptedReceipt {
        state.referrals.delivery_receipt(org, notice_row, ack)
    }

    fn delivered<'a>(
        &'a self,
        state: &'a NodeState,
        items: &'a [AcceptedReceipt],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(state.referrals.on_delivered(items))
    }

    fn refused<'a>(
        &'a self,
        state: &'a NodeState,
        route: Option<&'a Route>,
        reason: FailureReason,
        text: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(state.referrals.on_refused(route, reason, text))
    }

    fn witnessed<'a>(
        &'a self,
        state: &'a NodeState,
        peer: &'a OrgId,
        sent: &'a pb::SignedCheckpoint,
        witness: Option<&'a pb::SignedWitness>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(crate::witness::checkpoint::on_witnessed(
            state, peer, sent, witness,
        ))
    }
}
