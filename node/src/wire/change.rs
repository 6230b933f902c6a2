//! A referral's state change on the wire (`StateChange`): the client API's
//! requests and the federation's status messages carry one, and a stored
//! event keeps its detail in that encoding. One conversion each way, so the
//! client API and the receiver of a peer's status check a change alike.

use crate::domain::referral::{EventDetail, Outcome, Transition};
use crate::domain::{DeclineReason, FailureReason, Progress, ReferralState};
use crate::error::FieldError;
use exitnet_proto::pb;
use prost::Message;

/// The outcome reported on completion, required; `field` names it in errors.
pub fn outcome(field: &str, o: Option<pb::Outcome>) -> Result<Outcome, FieldError> {
    let o = o.ok_or_else(|| FieldError::new(field, "required on completion"))?;
    let progress = |name: &str, v| Progress::from_pb_optional(&format!("{field}.{name}"), v);
    Ok(Outcome {
        disengagement: progress("disengagement", o.disengagement)?,
        deradicalisation: progress("deradicalisation", o.deradicalisation)?,
        reintegration: progress("reintegration", o.reintegration)?,
        rehabilitation: progress("rehabilitation", o.rehabilitation)?,
        service_delivered: o.service_delivered,
        note: o.note,
    })
}

fn outcome_to_pb(o: &Outcome) -> pb::Outcome {
    let progress = |p: Option<Progress>| p.map_or(0, Progress::to_pb);
    pb::Outcome {
        disengagement: progress(o.disengagement),
        deradicalisation: progress(o.deradicalisation),
        reintegration: progress(o.reintegration),
        rehabilitation: progress(o.rehabilitation),
        service_delivered: o.service_delivered,
        note: o.note.clone(),
    }
}

/// The transition a change reports, checked: a state the receiver sets, the
/// reason its vocabulary requires, bounded texts. `field` prefixes the names
/// in errors (`status.change` for a peer's message).
pub fn transition(field: &str, c: &pb::StateChange) -> Result<Transition, FieldError> {
    let f = |name: &str| format!("{field}.{name}");
    let text = c.text.clone();
    let t = match ReferralState::from_pb(&f("state"), c.state)? {
        ReferralState::Accepted => Transition::Accept,
        ReferralState::InProgress => Transition::Start,
        ReferralState::OnHold => Transition::Hold { text },
        ReferralState::Declined => Transition::Decline {
            reason: DeclineReason::from_pb(&f("decline_reason"), c.decline_reason)?,
            text,
        },
        ReferralState::Failed => Transition::Fail {
            reason: FailureReason::from_pb(&f("failure_reason"), c.failure_reason)?,
            text,
        },
        ReferralState::Completed => Transition::Complete {
            outcome: outcome(&f("outcome"), c.outcome.clone())?,
        },
        other => {
            return Err(FieldError::new(
                f("state"),
                format!("the receiving organisation does not set {other}"),
            ));
        }
    };
    t.checked(&f("text"), &f("outcome"))
}

/// The change as it travels; the caller adds when and by whom.
pub fn state_change(t: &Transition) -> pb::StateChange {
    detail_to_pb(t.to(), &t.detail())
}

/// An event's state and detail as a `StateChange`; the caller adds when,
/// by whom and the actor.
pub fn detail_to_pb(state: ReferralState, d: &EventDetail) -> pb::StateChange {
    pb::StateChange {
        state: state.to_pb(),
        decline_reason: d.decline_reason.map_or(0, DeclineReason::to_pb),
        failure_reason: d.failure_reason.map_or(0, FailureReason::to_pb),
        text: d.text.clone(),
        outcome: d.outcome.as_ref().map(outcome_to_pb),
        ..Default::default()
    }
}

/// An event's detail (or its sealed content) as stored: an encoded
/// `StateChange` with only the reasons, the text and the outcome; the state,
/// time and organisation are the event's own columns.
pub fn detail_to_stored(d: &EventDetail) -> Vec<u8> {
    let mut c = detail_to_pb(ReferralState::Requested, d);
    c.state = 0;
    c.encode_to_vec()
}

/// A stored detail, checked: a code this build does not know is an error,
/// never read as none. Rows written before the state and time were the
/// event's own columns carry them too; they are not read.
pub fn detail_from_stored(bytes: &[u8]) -> Result<EventDetail, FieldError> {
    let c = pb::StateChange::decode(bytes).map_err(|_| FieldError::new("detail", "malformed"))?;
    Ok(EventDetail {
        decline_reason: DeclineReason::from_pb_optional("detail.decline_reason", c.decline_reason)?,
        failure_reason: FailureReason::from_pb_optional("detail.failure_reason", c.failure_reason)?,
        text: c.text,
        outcome: match c.outcome {
            Some(o) => Some(outcome("detail.outcome", Some(o))?),
            None => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_detail_reads_back_and_an_unknown_code_is_an_error() {
        let t = Transition::Complete {
            outcome: Outcome {
                reintegration: Some(Progress::Substantial),
                service_delivered: true,
                note: "housing found".into(),
                ..Default::default()
            },
        };
        let d = t.detail();
        assert_eq!(detail_from_stored(&detail_to_stored(&d)), Ok(d));
        let unknown = pb::StateChange {
            failure_reason: 99,
            ..Default::default()
        };
        let err = detail_from_stored(&unknown.encode_to_vec()).unwrap_err();
        assert_eq!(err.field, "detail.failure_reason");
        assert!(detail_from_stored(b"\xff\xff").is_err());
    }

    fn change(state: pb::ReferralState) -> pb::StateChange {
        pb::StateChange {
            state: state as i32,
            ..Default::default()
        }
    }

    /// What a peer's status change must carry, state by state: each row a
    /// change and the field its error names (`None`: accepted).
    #[test]
    fn a_change_is_checked_by_what_its_state_requires() {
        use pb::ReferralState as S;
        let long = "x".repeat(501);
        let cases: Vec<(pb::StateChange, Option<&str>)> = vec![
            (change(S::Accepted), None),
            (change(S::InProgress), None),
            (change(S::Declined), Some("c.decline_reason")),
            (
                pb::StateChange {
                    decline_reason: pb::DeclineReason::NoCapacity as i32,
                    ..change(S::Declined)
                },
                None,
            ),
            (
                pb::StateChange {
                    decline_reason: 99,
                    ..change(S::Declined)
                },
                Some("c.decline_reason"),
            ),
            (change(S::Failed), Some("c.failure_reason")),
            (change(S::Completed), Some("c.outcome")),
            (
                pb::StateChange {
                    outcome: Some(pb::Outcome {
                        reintegration: 42,
                        ..Default::default()
                    }),
                    ..change(S::Completed)
                },
                Some("c.outcome.reintegration"),
            ),
            (
                pb::StateChange {
                    outcome: Some(pb::Outcome {
                        note: long.clone(),
                        ..Default::default()
                    }),
                    ..change(S::Completed)
                },
                Some("c.outcome.note"),
            ),
            (
                pb::StateChange {
                    text: long,
                    ..change(S::OnHold)
                },
                Some("c.text"),
            ),
            (change(S::Withdrawn), Some("c.state")),
            (change(S::Requested), Some("c.state")),
            (change(S::Unspecified), Some("c.state")),
        ];
        for (c, want) in cases {
            let got = transition("c", &c).err().map(|e| e.field);
            assert_eq!(got.as_deref(), want, "{c:?}");
        }
    }

    #[test]
    fn a_transition_survives_the_wire() {
        let ts = [
            Transition::Accept,
            Transition::Start,
            Transition::Hold {
                text: "waiting for a place".into(),
            },
            Transition::Decline {
                reason: DeclineReason::NoCapacity,
                text: "full until spring".into(),
            },
            Transition::Fail {
                reason: FailureReason::ClientWithdrew,
                text: String::new(),
            },
            Transition::Complete {
                outcome: Outcome {
                    disengagement: Some(Progress::Substantial),
                    deradicalisation: None,
                    reintegration: Some(Progress::Some),
                    rehabilitation: None,
                    service_delivered: true,
                    note: "housing found".into(),
                },
            },
        ];
        for t in ts {
            assert_eq!(transition("c", &state_change(&t)).unwrap(), t);
        }
    }
}
