//! Where delivery hands what peers answered (`delivery::Answers`): receipts
//! and refusals of referral messages to `referrals`, witnesses of our audit
//! checkpoints to `witness`. Wired in `app`, so that delivery names neither.

use crate::delivery::Answers;
use crate::domain::{FailureReason, OrgId};
use crate::error::Result;
use crate::protocol::messages::Acknowledgement;
use crate::referrals::Referrals;
use crate::store::{AcceptedReceipt, Route};
use crate::witness::Witness;
use futures_util::future::BoxFuture;

/// The node's own answers: referrals and the witnessed audit trail.
pub struct NodeAnswers {
    pub referrals: Referrals,
    pub witness: Witness,
}

impl Answers for NodeAnswers {
    fn receipt(&self, org: &OrgId, notice_row: i64, ack: Acknowledgement) -> AcceptedReceipt {
        self.referrals.delivery_receipt(org, notice_row, ack)
    }

    fn delivered<'a>(&'a self, items: &'a [AcceptedReceipt]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.referrals.on_delivered(items))
    }

    fn refused<'a>(
        &'a self,
        route: Option<&'a Route>,
        reason: FailureReason,
        text: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.referrals.on_refused(route, reason, text))
    }

    fn witnessed<'a>(
        &'a self,
        peer: &'a OrgId,
        sent: &'a crate::domain::audit::SignedCheckpoint,
        witness: Option<&'a crate::domain::audit::SignedWitness>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.witness.on_witnessed(peer, sent, witness))
    }
}
