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
}

impl DevVerifier {
    pub fn new(org_id: &str) -> Self {
        Self {
            issuer: format!("exitnet-dev:{org_id}"),
        }
    }

    pub fn verify(&self, state: &NodeState, token: &str) -> Result<Claims, AuthError> {
        let jwt = super::jwt::decode(token)?;
        if jwt.alg != "ES256" {
            return Err(AuthError::Algorithm);
        }
        let spki = {
            let identity = state
                .identity()
                .map_err(|_| AuthError::ProviderUnavailable)?;
            identity.current().spki_der().to_vec()
        };
        if !crate::identity::verify_signature_fixed(
            &spki,
            jwt.signing_input.as_bytes(),
            &jwt.signature,
        ) {
            return Err(AuthError::Signature);
        }
        let now = crate::domain::time::now_ms() / 1000;
        super::jwt::check_claims(&jwt.claims, &self.issuer, DEV_AUDIENCE, 0, now)?;
        Ok(jwt.claims)
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
