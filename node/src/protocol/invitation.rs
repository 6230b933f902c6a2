//! Invitation codes: `exitnet-invite-v1.` + base64url(SignedInvitation). The
//! inviter's key signs the payload, and the payload names the key's
//! fingerprint, so no part of a code can be altered without detection.

use crate::domain::{OrgId, endpoint_check};
use crate::error::FieldError;
use crate::identity::{NodeKey, context, fingerprint_spki, verify_in};
use crate::wire::time::{from_timestamp, to_timestamp};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use exitnet_proto::pb;
use prost::Message;

pub const PREFIX: &str = "exitnet-invite-v1.";
/// A code longer than this is refused before decoding.
pub const MAX_CODE_CHARS: usize = 4096;
pub const SECRET_BYTES: usize = 32;

/// A verified invitation.
#[derive(Debug, Clone)]
pub struct Invitation {
    pub invitation_id: String,
    pub org_id: OrgId,
    pub org_name: String,
    pub endpoint: String,
    pub key_fingerprint: String,
    pub public_key: Vec<u8>,
    pub secret: Vec<u8>,
    pub expires_at_ms: i64,
}

pub fn encode(inv: &Invitation, key: &NodeKey) -> anyhow::Result<String> {
    let payload = pb::Invitation {
        invitation_id: inv.invitation_id.clone(),
        org_id: inv.org_id.to_string(),
        org_name: inv.org_name.clone(),
        endpoint: inv.endpoint.clone(),
        key_fingerprint: inv.key_fingerprint.clone(),
        secret: inv.secret.clone(),
        expires_at: Some(to_timestamp(inv.expires_at_ms)),
    }
    .encode_to_vec();
    let signed = pb::SignedInvitation {
        signature: key.sign_in(context::INVITATION, &payload)?,
        payload,
        public_key: key.spki_der().to_vec(),
    };
    Ok(format!(
        "{PREFIX}{}",
        URL_SAFE_NO_PAD.encode(signed.encode_to_vec())
    ))
}

/// Decodes and verifies a code. Expiry is checked by the caller and again by
/// the inviter, whose clock decides.
pub fn decode(code: &str) -> Result<Invitation, FieldError> {
    let bad = |rule: &str| FieldError::new("code", rule.to_owned());
    let code = code.trim();
    if code.len() > MAX_CODE_CHARS {
        return Err(bad("too long to be an invitation code"));
    }
    let body = code
        .strip_prefix(PREFIX)
        .ok_or_else(|| bad("not an exitnet invitation code (v1)"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| bad("not valid base64url"))?;
    let signed = pb::SignedInvitation::decode(bytes.as_slice()).map_err(|_| bad("malformed"))?;
    // Codes made before signatures carried their context fail here: the
    // inviter makes a new one.
    if !verify_in(
        context::INVITATION,
        &signed.public_key,
        &signed.payload,
        &signed.signature,
    ) {
        return Err(bad(
            "signature does not verify: the code was altered or forged",
        ));
    }
    let pb::Invitation {
        invitation_id,
        org_id,
        org_name,
        endpoint,
        key_fingerprint,
        secret,
        expires_at,
    } = pb::Invitation::decode(signed.payload.as_slice()).map_err(|_| bad("malformed payload"))?;
    if fingerprint_spki(&signed.public_key) != key_fingerprint {
        return Err(bad(
            "the signing key does not match the fingerprint in the code",
        ));
    }
    let org_id = OrgId::parse("code.org_id", &org_id)?;
    crate::domain::bounded_text(
        "code.org_name",
        &org_name,
        crate::domain::org::MAX_NAME_CHARS,
    )?;
    endpoint_check("code.endpoint", &endpoint)?;
    if secret.len() != SECRET_BYTES {
        return Err(bad("secret has the wrong length"));
    }
    if invitation_id.is_empty() || invitation_id.len() > 64 {
        return Err(bad("invitation ID missing or too long"));
    }
    let expires_at_ms = expires_at
        .as_ref()
        .map(from_timestamp)
        .ok_or_else(|| bad("expiry missing"))?;
    Ok(Invitation {
        invitation_id,
        org_id,
        org_name,
        endpoint,
        key_fingerprint,
        public_key: signed.public_key,
        secret,
        expires_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &NodeKey) -> Invitation {
        Invitation {
            invitation_id: "inv-1".into(),
            org_id: OrgId::parse("f", "ngo-a").unwrap(),
            org_name: "Exit NGO".into(),
            endpoint: "127.0.0.1:7710".into(),
            key_fingerprint: key.fingerprint().to_owned(),
            public_key: key.spki_der().to_vec(),
            secret: vec![7; 32],
            expires_at_ms: 1_000_000,
        }
    }

    #[test]
    fn round_trip() {
        let key = NodeKey::generate("ngo-a").unwrap();
        let code = encode(&sample(&key), &key).unwrap();
        let inv = decode(&code).unwrap();
        assert_eq!(inv.org_id.as_str(), "ngo-a");
        assert_eq!(inv.secret, vec![7; 32]);
        assert_eq!(inv.key_fingerprint, key.fingerprint());
    }

    #[test]
    fn altered_and_forged_codes_are_refused() {
        let key = NodeKey::generate("ngo-a").unwrap();
        let code = encode(&sample(&key), &key).unwrap();
        // Flip one character in the body.
        let mut chars: Vec<char> = code.chars().collect();
        let i = PREFIX.len() + 40;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let altered: String = chars.into_iter().collect();
        assert!(decode(&altered).is_err());
        // Signed by another key but naming the first key's fingerprint.
        let other = NodeKey::generate("evil").unwrap();
        let forged = encode(&sample(&key), &other).unwrap();
        let e = decode(&forged).unwrap_err();
        assert_eq!(e.field, "code");
        assert!(decode("hello").is_err());
        assert!(decode(&format!("{PREFIX}!!!")).is_err());
    }
}
