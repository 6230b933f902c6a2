//! Access tokens from an OpenID Connect provider. The issuer is found by
//! discovery (the `openidconnect` crate), its JWKS cached and refetched when a
//! token names an unknown key ID (at most once per `jwks_min_refetch_secs`),
//! so a provider's key rotation needs no restart. Discovery is lazy and
//! retried: a provider that is down at start does not stop the node. Opaque
//! tokens go to RFC 7662 introspection when it is configured.

use super::{AuthError, Claims, jwt};
use crate::config::AuthConfig;
use anyhow::Context;
use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreProviderMetadata};
use openidconnect::{IssuerUrl, JsonWebKey};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

struct Discovered {
    jwks_uri: openidconnect::JsonWebKeySetUrl,
    keys: CoreJsonWebKeySet,
    fetched_at: Instant,
    /// Names this key set among those fetched: a token verified under one
    /// is verified again under the next.
    generation: u64,
}

pub struct OidcVerifier {
    issuer: String,
    audience: String,
    algorithms: Vec<String>,
    leeway_secs: i64,
    min_refetch: Duration,
    introspection: Option<crate::config::IntrospectionConfig>,
    access_token_typ: Option<String>,
    http: openidconnect::reqwest::Client,
    discovered: RwLock<Option<Arc<Discovered>>>,
    /// Serialises discovery and refetches.
    fetch_lock: Mutex<()>,
    /// Key sets fetched so far.
    fetches: std::sync::atomic::AtomicU64,
    verified: super::VerifiedTokens,
}

impl OidcVerifier {
    pub fn new(cfg: &AuthConfig) -> anyhow::Result<Self> {
        let issuer = cfg.issuer.clone().context("auth.issuer")?;
        let audience = cfg
            .audience
            .clone()
            .context("auth.audience is required with auth.issuer")?;
        let http = openidconnect::reqwest::ClientBuilder::new()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client for the identity provider")?;
        Ok(Self {
            issuer,
            audience,
            algorithms: cfg.algorithms.clone(),
            leeway_secs: cfg.leeway_secs as i64,
            min_refetch: Duration::from_secs(cfg.jwks_min_refetch_secs),
            introspection: cfg.introspection.clone(),
            access_token_typ: cfg.access_token_typ.clone(),
            http,
            discovered: RwLock::new(None),
            fetch_lock: Mutex::new(()),
            fetches: Default::default(),
            verified: Default::default(),
        })
    }

    async fn discover(&self) -> Result<Arc<Discovered>, AuthError> {
        if let Some(d) = self.discovered.read().await.clone() {
            return Ok(d);
        }
        let _guard = self.fetch_lock.lock().await;
        if let Some(d) = self.discovered.read().await.clone() {
            return Ok(d);
        }
        let url = IssuerUrl::new(self.issuer.clone()).map_err(|_| AuthError::NotConfigured)?;
        let meta = CoreProviderMetadata::discover_async(url, &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "OpenID discovery failed");
                AuthError::ProviderUnavailable
            })?;
        let d = Arc::new(Discovered {
            jwks_uri: meta.jwks_uri().clone(),
            keys: meta.jwks().clone(),
            fetched_at: Instant::now(),
            generation: self.next_generation(),
        });
        *self.discovered.write().await = Some(d.clone());
        Ok(d)
    }

    /// Refetches the JWKS unless that was done less than `min_refetch` ago.
    async fn refetch(&self, seen: &Arc<Discovered>) -> Result<Option<Arc<Discovered>>, AuthError> {
        let _guard = self.fetch_lock.lock().await;
        let current = self.discovered.read().await.clone();
        if let Some(c) = &current {
            if !Arc::ptr_eq(c, seen) {
                return Ok(Some(c.clone())); // someone else refetched meanwhile
            }
            if c.fetched_at.elapsed() < self.min_refetch {
                return Ok(None);
            }
        }
        let keys = CoreJsonWebKeySet::fetch_async(&seen.jwks_uri, &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "JWKS refetch failed");
                AuthError::ProviderUnavailable
            })?;
        tracing::info!(
            keys = keys.keys().len(),
            "refetched the identity provider's keys"
        );
        let d = Arc::new(Discovered {
            jwks_uri: seen.jwks_uri.clone(),
            keys,
            fetched_at: Instant::now(),
            generation: self.next_generation(),
        });
        *self.discovered.write().await = Some(d.clone());
        Ok(Some(d))
    }

    fn next_generation(&self) -> u64 {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let digest = super::VerifiedTokens::digest(token);
        if let Some(d) = self.discovered.read().await.clone()
            && let Some(claims) = self.verified.get(&digest, d.generation)
        {
            let now = crate::domain::time::now_ms() / 1000;
            jwt::check_claims(&claims, &self.issuer, &self.audience, self.leeway_secs, now)?;
            return Ok((*claims).clone());
        }
        let jwt = match jwt::decode(token) {
            Ok(j) => j,
            Err(_) if self.introspection.is_some() => return self.introspect(token).await,
            // Not a JWT and nowhere to ask: refused here, no network call
            // (not even discovery).
            Err(_) => return Err(AuthError::Opaque),
        };
        // Before any key is looked up: an ID token never gets further.
        if !jwt::is_access_token(
            jwt.typ.as_deref(),
            &jwt.claims,
            self.access_token_typ.as_deref(),
        ) {
            return Err(AuthError::NotAccessToken);
        }
        if !jwt::algorithm_allowed(&jwt.alg, &self.algorithms) {
            return Err(AuthError::Algorithm);
        }
        let alg: CoreJwsSigningAlgorithm = serde_json::from_value(Value::String(jwt.alg.clone()))
            .map_err(|_| AuthError::Algorithm)?;
        let mut d = self.discover().await?;
        let mut refetched = false;
        loop {
            match verify_with(&d.keys, &jwt, &alg) {
                KeyOutcome::Verified => break,
                KeyOutcome::BadSignature => return Err(AuthError::Signature),
                KeyOutcome::NoKey if !refetched => {
                    refetched = true;
                    match self.refetch(&d).await? {
                        Some(newer) => d = newer,
                        None => return Err(AuthError::Signature),
                    }
                }
                KeyOutcome::NoKey => return Err(AuthError::Signature),
            }
        }
        let claims = Arc::new(jwt.claims);
        self.verified.put(digest, d.generation, claims.clone());
        let now = crate::domain::time::now_ms() / 1000;
        jwt::check_claims(&claims, &self.issuer, &self.audience, self.leeway_secs, now)?;
        Ok((*claims).clone())
    }

    /// RFC 7662: the provider says whether an opaque token is active.
    async fn introspect(&self, token: &str) -> Result<Claims, AuthError> {
        let Some(cfg) = &self.introspection else {
            return Err(AuthError::Malformed);
        };
        let resp = self
            .http
            .post(&cfg.url)
            .basic_auth(&cfg.client_id, Some(cfg.client_secret.expose()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(format!("token={}", form_encode(token)))
            .send()
            .await
            .map_err(|_| AuthError::ProviderUnavailable)?;
        if !resp.status().is_success() {
            return Err(AuthError::ProviderUnavailable);
        }
        let body = resp
            .bytes()
            .await
            .map_err(|_| AuthError::ProviderUnavailable)?;
        let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&body) else {
            return Err(AuthError::ProviderUnavailable);
        };
        if claims.get("active").and_then(Value::as_bool) != Some(true) {
            return Err(AuthError::Inactive);
        }
        let now = crate::domain::time::now_ms() / 1000;
        jwt::check_claims(&claims, &self.issuer, &self.audience, self.leeway_secs, now)?;
        Ok(claims)
    }
}

enum KeyOutcome {
    Verified,
    BadSignature,
    NoKey,
}

fn verify_with(
    keys: &CoreJsonWebKeySet,
    jwt: &jwt::Jwt<'_>,
    alg: &CoreJwsSigningAlgorithm,
) -> KeyOutcome {
    let candidates: Vec<_> = keys
        .keys()
        .iter()
        .filter(|k| match (&jwt.kid, k.key_id()) {
            (Some(kid), Some(id)) => id.as_str() == kid,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .collect();
    if candidates.is_empty() {
        return KeyOutcome::NoKey;
    }
    if candidates.iter().any(|k| {
        k.verify_signature(alg, jwt.signing_input.as_bytes(), &jwt.signature)
            .is_ok()
    }) {
        KeyOutcome::Verified
    } else {
        KeyOutcome::BadSignature
    }
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
