//! The one place errors become gRPC statuses, for every surface (client API,
//! admin socket, federation), and where a sender reads a peer's refusal.

use crate::error::{Error, FieldError};
use tonic::{Code, Status};

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::PermissionDenied(_) | Error::PeeringRefused(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Unavailable(_) => Code::Unavailable,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        if let Error::Internal(inner) = &e {
            // The cause stays in our log; the caller learns only that it failed.
            tracing::error!(error = format!("{inner:#}"), "internal error");
        }
        let mut status = Status::new(e.code(), e.to_string());
        if let Error::PeeringRefused(reason) = &e
            && let Ok(value) = reason.parse()
        {
            status.metadata_mut().insert(PEERING_REFUSED, value);
        }
        status
    }
}

/// Metadata of a PERMISSION_DENIED that a peering's state caused, naming
/// the reason: what a sender reads instead of the text.
pub const PEERING_REFUSED: &str = "exitnet-peering-refused";

/// Whether `status` refuses a call because of a peering's state (which may
/// change), not the call itself. Nodes from before the metadata said so
/// only in the text, `refused: peer_…`.
pub fn refused_by_peering(status: &Status) -> bool {
    status.code() == Code::PermissionDenied
        && (status.metadata().get(PEERING_REFUSED).is_some()
            || status.message().starts_with("refused: peer_"))
}

impl From<FieldError> for Status {
    fn from(e: FieldError) -> Self {
        Error::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peering_refusal_says_so_in_metadata_and_other_refusals_do_not() {
        let s = Status::from(Error::PeeringRefused("peer_suspended"));
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(s.message(), "refused: peer_suspended");
        assert_eq!(
            s.metadata()
                .get(PEERING_REFUSED)
                .and_then(|v| v.to_str().ok()),
            Some("peer_suspended")
        );
        assert!(refused_by_peering(&s));
        let other = Status::from(Error::PermissionDenied("not in the consent's scope".into()));
        assert!(other.metadata().get(PEERING_REFUSED).is_none());
        assert!(!refused_by_peering(&other));
        // A node from before the metadata: the text alone.
        assert!(refused_by_peering(&Status::permission_denied(
            "refused: peer_revoked"
        )));
        // The reason in the text of another code is not a peering refusal.
        assert!(!refused_by_peering(&Status::invalid_argument(
            "refused: peer_x"
        )));
    }
}
