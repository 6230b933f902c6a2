//! The development issuer: with `auth.mode = "dev"` the node accepts tokens it
//! minted itself (over the admin socket, `exitnetctl dev-token`), signed with
//! a key of its own (`<data_dir>/identity/dev-token.key.pem`, made on first start,
//! kept with the identity so that replicas sharing it accept each other's tokens),
//! never the node's identity key: nothing the identity key signs for peers
//! can be a token here, and a token is no statement by the node. Refused at
//! start unless the client API is on loopback.

use super::{AuthError, Claims, Role};
use crate::config::AuthConfig;
use anyhow::Context as _;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use std::path::Path;
use zeroize::Zeroizing;

pub const DEV_AUDIENCE: &str = "exitnet-dev";
const DEV_TTL_SECS: i64 = 8 * 3600;
const KEY_FILE: &str = "dev-token.key.pem";

pub struct DevVerifier {
    issuer: String,
    verified: super::VerifiedTokens,
    signer: EcdsaKeyPair,
    /// Names the key in the cache of verified tokens.
    key_set: u64,
}

impl DevVerifier {
    /// The issuer for `org_id`, with the key kept in `data_dir`'s identity
    /// directory (made if missing).
    pub fn new(org_id: &str, data_dir: &Path) -> anyhow::Result<Self> {
        let dir = data_dir.join("identity");
        crate::identity::create_private_dir(&dir)?;
        let path = dir.join(KEY_FILE);
        let pkcs8 = if path.exists() {
            let pem = Zeroizing::new(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
            );
            let b64: Zeroizing<String> =
                Zeroizing::new(pem.lines().filter(|l| !l.starts_with("-----")).collect());
            Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .with_context(|| format!("decoding {}", path.display()))?,
            )
        } else {
            let doc = EcdsaKeyPair::generate_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .map_err(|_| anyhow::anyhow!("generating the development token key"))?;
            let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
            let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*pkcs8));
            let pem = Zeroizing::new(format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                b64.as_str()
            ));
            crate::identity::write_private(&path, pem.as_bytes())?;
            pkcs8
        };
        let signer = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| anyhow::anyhow!("{} is not an ECDSA P-256 key", path.display()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, signer.public_key().as_ref());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        Ok(Self {
            issuer: format!("exitnet-dev:{org_id}"),
            verified: Default::default(),
            signer,
            key_set: u64::from_be_bytes(first),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let key_set = self.key_set;
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
        if signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.signer.public_key().as_ref(),
        )
        .verify(jwt.signing_input.as_bytes(), &jwt.signature)
        .is_err()
        {
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
        auth: &AuthConfig,
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
        claims[auth.roles_claim.as_str()] = serde_json::json!([role.as_str()]);
        if let (Some(team), Some(claim)) = (team, auth.team_claim.as_deref()) {
            claims[claim] = serde_json::json!(team);
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .signer
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing failed"))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn token(sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let now = crate::domain::time::now_ms() / 1000;
        let header = serde_json::json!({"alg": "ES256", "typ": "at+jwt"});
        let claims = serde_json::json!({
            "iss": "exitnet-dev:ngo-a", "aud": DEV_AUDIENCE, "sub": "cm",
            "iat": now, "exp": now + 60, "roles": ["case_manager"],
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sign(input.as_bytes())))
    }

    #[test]
    fn the_development_issuer_has_a_key_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let identity = crate::identity::Identity::load_or_create(dir.path(), "ngo-a").unwrap();
        let v = DevVerifier::new("ngo-a", dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("identity").join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        let own = token(|m| {
            v.signer
                .sign(&SystemRandom::new(), m)
                .unwrap()
                .as_ref()
                .to_vec()
        });
        assert!(v.verify(&own).is_ok());
        // The same key after a restart.
        let again = DevVerifier::new("ngo-a", dir.path()).unwrap();
        assert!(again.verify(&own).is_ok());
        // A token signed with the node's identity key is no token here.
        let by_identity = token(|m| identity.current().sign_fixed(m).unwrap());
        assert!(matches!(v.verify(&by_identity), Err(AuthError::Signature)));
        // Nor one of another node's issuer.
        let other = tempfile::tempdir().unwrap();
        let w = DevVerifier::new("ngo-a", other.path()).unwrap();
        assert!(matches!(w.verify(&own), Err(AuthError::Signature)));
    }
}
