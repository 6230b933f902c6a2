//! The node's error type and the one place that maps it to gRPC status codes.
//!
//! Messages are written for the caller: they name the field or rule and never
//! carry case content, tokens or keys. Internal details are logged, not sent.

use tonic::{Code, Status};

/// A field of a request that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct FieldError {
    pub field: String,
    pub rule: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The same error under a parent field, e.g. `profile.` + `name`.
    pub fn within(self, parent: &str) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            rule: self.rule,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// The state of a peering refuses the call (`peer_suspended`, …): a
    /// sender keeps its message and tries again, as the peering may resume.
    #[error("refused: {0}")]
    PeeringRefused(&'static str),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Unavailable(String),
    /// A rate or concurrency limit; the caller may try again later.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::Internal(e)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Internal(anyhow::Error::new(e).context("database"))
    }
}

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
