//! The shapes of identifiers callers and peers choose: referral and consent
//! IDs travel between nodes and into URLs and logs, request IDs only to this
//! node (idempotency keys).

use crate::error::FieldError;

/// A referral or consent ID: 1 to 64 letters, digits or '-'.
pub fn id_check(field: &str, id: &str) -> Result<(), FieldError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(FieldError::new(
            field,
            "must be an ID (1 to 64 letters, digits or '-')",
        ));
    }
    Ok(())
}

/// A caller's request ID (idempotency key): 1 to 100 printable ASCII characters.
pub fn request_id_check(id: &str) -> Result<(), FieldError> {
    if id.is_empty() || id.len() > 100 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldError::new(
            "request_id",
            "1 to 100 printable ASCII characters, unique per request",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_request_ids() {
        for ok in ["r-1", "A", &"x".repeat(64)] {
            assert!(id_check("f", ok).is_ok(), "{ok}");
        }
        for bad in ["", "r 1", "r_1", "é", &"x".repeat(65)] {
            assert_eq!(id_check("f", bad).unwrap_err().field, "f", "{bad}");
        }
        for ok in ["req-1", "a:b/c", &"y".repeat(100)] {
            assert!(request_id_check(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "\u{7f}", &"y".repeat(101)] {
            assert_eq!(
                request_id_check(bad).unwrap_err().field,
                "request_id",
                "{bad}"
            );
        }
    }
}
