//! JSON Web Token structure and registered-claim checks (RFC 7519, RFC 9068).
//! Signatures are verified by the caller with the issuer's keys.

use super::{AuthError, Claims};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Debug)]
pub struct Jwt<'a> {
    pub alg: String,
    pub kid: Option<String>,
    /// The header's `typ`, if any.
    pub typ: Option<String>,
    pub claims: Claims,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

pub fn decode(token: &str) -> Result<Jwt<'_>, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| AuthError::Malformed)?,
    )
    .map_err(|_| AuthError::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(AuthError::Malformed)?
        .to_owned();
    let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
    let typ = header.get("typ").and_then(Value::as_str).map(str::to_owned);
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| AuthError::Malformed)?,
    )
    .map_err(|_| AuthError::Malformed)?;
    let Value::Object(claims) = claims else {
        return Err(AuthError::Malformed);
    };
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| AuthError::Malformed)?;
    Ok(Jwt {
        alg,
        kid,
        typ,
        claims,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
    })
}

/// Never `none`, never a symmetric (HMAC) algorithm: the issuer is asymmetric,
/// and accepting HS256 would let anyone who knows its public key sign.
pub fn algorithm_allowed(alg: &str, allowed: &[String]) -> bool {
    let upper = alg.to_ascii_uppercase();
    if upper == "NONE" || upper.starts_with("HS") {
        return false;
    }
    allowed.iter().any(|a| a == alg)
}

/// Whether a token of type `typ` (header) with `claims` is an access token.
/// With `expected` configured (`at+jwt`), the header must say so (RFC 9068
/// §4: compared without case, `application/` optional). Whatever the
/// configuration, a token that calls itself an ID token in its payload
/// (Keycloak's `"typ": "ID"`) is not one.
pub fn is_access_token(typ: Option<&str>, claims: &Claims, expected: Option<&str>) -> bool {
    if claims
        .get("typ")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("id"))
    {
        return false;
    }
    let Some(expected) = expected else {
        return true;
    };
    let bare = |t: &str| {
        let t = t.trim().to_ascii_lowercase();
        t.strip_prefix("application/")
            .map(str::to_owned)
            .unwrap_or(t)
    };
    typ.is_some_and(|t| bare(t) == bare(expected))
}

/// Checks `iss`, `aud`, `exp` and `nbf` (with `leeway_secs`) at `now_secs`.
pub fn check_claims(
    claims: &Claims,
    issuer: &str,
    audience: &str,
    leeway_secs: i64,
    now_secs: i64,
) -> Result<(), AuthError> {
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(AuthError::Malformed)?;
    if now_secs > exp + leeway_secs {
        return Err(AuthError::Expired);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
        && now_secs + leeway_secs < nbf
    {
        return Err(AuthError::NotYetValid);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(AuthError::Issuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(AuthError::Audience);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: Value, claims: Value) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(b"sig")
        )
    }

    #[test]
    fn decodes_and_checks() {
        let t = token(
            serde_json::json!({"alg": "ES256", "kid": "k1"}),
            serde_json::json!({"iss": "https://idp", "aud": ["x", "node"], "exp": 1000, "nbf": 900}),
        );
        let j = decode(&t).unwrap();
        assert_eq!((j.alg.as_str(), j.kid.as_deref()), ("ES256", Some("k1")));
        assert_eq!(j.signature, b"sig");
        assert!(t.starts_with(j.signing_input));
        assert_eq!(
            check_claims(&j.claims, "https://idp", "node", 0, 950),
            Ok(())
        );
        assert_eq!(
            check_claims(&j.claims, "https://idp", "node", 0, 1001),
            Err(AuthError::Expired)
        );
        assert_eq!(
            check_claims(&j.claims, "https://idp", "node", 60, 1001),
            Ok(())
        );
        assert_eq!(
            check_claims(&j.claims, "https://idp", "node", 0, 800),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            check_claims(&j.claims, "https://other", "node", 0, 950),
            Err(AuthError::Issuer)
        );
        assert_eq!(
            check_claims(&j.claims, "https://idp", "other", 0, 950),
            Err(AuthError::Audience)
        );
    }

    #[test]
    fn only_access_tokens_where_the_provider_types_them() {
        let none = Claims::new();
        assert!(is_access_token(Some("at+jwt"), &none, Some("at+jwt")));
        assert!(is_access_token(
            Some("application/AT+JWT"),
            &none,
            Some("at+jwt")
        ));
        // An ID token (typ JWT or none) where access tokens are typed.
        assert!(!is_access_token(Some("JWT"), &none, Some("at+jwt")));
        assert!(!is_access_token(None, &none, Some("at+jwt")));
        // Untyped providers: accepted, unless the payload says ID token.
        assert!(is_access_token(Some("JWT"), &none, None));
        let id = serde_json::json!({"typ": "ID"})
            .as_object()
            .unwrap()
            .clone();
        assert!(!is_access_token(Some("JWT"), &id, None));
    }

    #[test]
    fn refuses_malformed_and_unsafe_algorithms() {
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            &"a".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert_eq!(decode(bad).unwrap_err(), AuthError::Malformed);
        }
        let allowed = vec!["ES256".to_string(), "HS256".to_string(), "none".to_string()];
        assert!(algorithm_allowed("ES256", &allowed));
        assert!(!algorithm_allowed("HS256", &allowed));
        assert!(!algorithm_allowed("none", &allowed));
        assert!(!algorithm_allowed("RS256", &allowed));
    }
}
