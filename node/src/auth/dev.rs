//! The development issuer: with `auth.mode = "dev"` the node accepts tokens it
//! minted itself (over the admin socket, `exitnetctl dev-token`), signed with
//! its own key. Refused at start unless the client API is on loopback.

use super::{AuthError, Claims, Role};
use crate::state::NodeState;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub const DEV_AUDIENCE: &str = "exitnet-dev";
const DEV_TTL_SECS: i64 = 8 * 3600;

pub struct DevVerifier {
    issuer: String,
    verified: super::VerifiedTokens,
}

impl DevVerifier {
    pub fn new(org_id: &str) -> Self {
        Self {
            issuer: format!("exitnet-dev:{org_id}"),
            verified: Default::default(),
        }
    }

    pub fn verify(&self, state: &NodeState, token: &str) -> Result<Claims, AuthError> {
        let (spki, key_set) = {
            let identity = state
                .identity()
                .map_err(|_| AuthError::ProviderUnavailable)?;
            let current = identity.current();
            // The node's key is the key set: its fingerprint names it.
            let key_set = u64::from_str_radix(current.fingerprint().get(..16).unwrap_or(""), 16)
                .map_err(|_| AuthError::ProviderUnavailable)?;
            (current.spki_der().to_vec(), key_set)
        };
        let now = crate::domain::time::now_ms() / 1000;
        let digest = super::VerifiedTokens::digest(token);
        if let Some(claims) = self.verified.get(&digest, key_set) {
            super::jwt::check_claims(&claims, &self.issuer, DEV_AUDIENCE, 0, now)?;
            return Ok((*claims).clone());
        }
        let jwt = super::jwt::decode(token)?;
        if jwt.alg != "ES256" {
            return Err(AuthError::Algorithm);
        }
        if !crate::identity::verify_signature_fixed(
            &spki,
            jwt.signing_input.as_bytes(),
            &jwt.signature,
        ) {
            return Err(AuthError::Signature);
        }
        let claims = std::sync::Arc::new(jwt.claims);
        self.verified.put(digest, key_set, claims.clone());
        super::jwt::check_claims(&claims, &self.issuer, DEV_AUDIENCE, 0, now)?;
        Ok((*claims).clone())
    }

    /// Mints a token for `subject` with `role`, valid for eight hours.
    pub fn mint(
        &self,
        state: &NodeState,
        subject: &str,
        role: Role,
        team: Option<&str>,
    ) -> anyhow::Result<String> {
        let now = crate::domain::time::now_ms() / 1000;
        let header = serde_json::json!({"alg": "ES256", "typ": "at+jwt"});
        let mut claims = serde_json::json!({
            "iss": self.issuer,
            "aud": DEV_AUDIENCE,
            "sub": subject,
            "iat": now,
            "exp": now + DEV_TTL_SECS,
        });
        claims[state.config.auth.roles_claim.as_str()] = serde_json::json!([role.as_str()]);
        if let (Some(team), Some(claim)) = (team, state.config.auth.team_claim.as_deref()) {
            claims[claim] = serde_json::json!(team);
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = state.identity()?.current().sign_fixed(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}
