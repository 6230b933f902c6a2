//! Who is calling the client API. Every call (except health and reflection)
//! carries a bearer token from the organisation's identity provider (or, in
//! development, one the node minted itself); the token's role claim maps to
//! one of four roles. Deny by default: a token without a mapped role gets
//! nothing. Failure messages name the reason and never echo the token.

pub mod dev;
pub mod jwt;
pub mod oidc;

use crate::config::{AuthConfig, AuthMode};
use crate::error::Error;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Header with which an agency system names the case manager it acts for.
pub const ON_BEHALF_OF_HEADER: &str = "x-exitnet-on-behalf-of";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Acts on the consents and referrals they own or are assigned (and their team's).
    CaseManager,
    /// Sees the organisation's referrals and reassigns them.
    Supervisor,
    /// Reads metadata and the audit trail; never case content.
    Auditor,
    /// An agency system (client credentials) acting for a named case manager.
    System,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "case_manager" => Role::CaseManager,
            "supervisor" => Role::Supervisor,
            "auditor" => Role::Auditor,
            "system" => Role::System,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::CaseManager => "case_manager",
            Role::Supervisor => "supervisor",
            Role::Auditor => "auditor",
            Role::System => "system",
        }
    }
}

/// A verified caller of the client API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject (a person, or a system's client ID).
    pub subject: String,
    pub role: Role,
    /// The caller's team, where teams are configured.
    pub team: Option<String>,
    /// For a system: the case manager the call is made for.
    pub on_behalf_of: Option<String>,
    /// When the token stops being accepted (its `exp` plus the leeway), if
    /// it says: a watch ends then.
    pub expires_at_ms: Option<i64>,
}

impl Principal {
    /// The person the call acts as: the case manager a system names, or the caller.
    pub fn acting_subject(&self) -> &str {
        self.on_behalf_of.as_deref().unwrap_or(&self.subject)
    }

    /// Who this is, as a referral's history records it locally.
    pub fn actor(&self) -> String {
        match (&self.role, &self.on_behalf_of) {
            (Role::System, Some(who)) => format!("{} (system) for {who}", self.subject),
            _ => format!("{} ({})", self.subject, self.role.as_str()),
        }
    }
}

/// Why a token was refused. The message is safe to send to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token (send `authorization: Bearer <token>`)")]
    Missing,
    #[error("sign-in is not configured on this node (auth.issuer)")]
    NotConfigured,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not allowed")]
    Algorithm,
    #[error("the token's signature does not verify with the issuer's keys")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not trusted here")]
    Issuer,
    #[error("the token's audience is not this node")]
    Audience,
    #[error("the token is not active")]
    Inactive,
    #[error("the identity provider cannot be reached")]
    ProviderUnavailable,
    #[error("the token carries no role for this node")]
    NoRole,
    #[error("a system must name the case manager it acts for in `x-exitnet-on-behalf-of`")]
    OnBehalfOfMissing,
    #[error("`x-exitnet-on-behalf-of` is only for systems")]
    OnBehalfOfNotAllowed,
    #[error("`x-exitnet-on-behalf-of` must be 1 to 200 printable characters")]
    OnBehalfOfInvalid,
    #[error(
        "this system may not act for that case manager (auth.system_acts_for does not list them for its client ID)"
    )]
    OnBehalfOfNotConfigured,
    #[error(
        "the token is not an access token (its JWT `typ` is not the one auth.access_token_typ names; an ID token is not accepted)"
    )]
    NotAccessToken,
    #[error(
        "the token is not a JWT, and this node does not introspect opaque tokens (auth.introspection is not set)"
    )]
    Opaque,
}

impl AuthError {
    /// Short code for logs, security events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::NotConfigured => "auth_not_configured",
            AuthError::Malformed => "token_malformed",
            AuthError::Algorithm => "token_algorithm",
            AuthError::Signature => "token_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::Issuer => "token_issuer",
            AuthError::Audience => "token_audience",
            AuthError::Inactive => "token_inactive",
            AuthError::ProviderUnavailable => "provider_unavailable",
            AuthError::NoRole => "no_role",
            AuthError::OnBehalfOfMissing => "on_behalf_of_missing",
            AuthError::OnBehalfOfNotAllowed => "on_behalf_of_not_allowed",
            AuthError::OnBehalfOfInvalid => "on_behalf_of_invalid",
            AuthError::OnBehalfOfNotConfigured => "on_behalf_of_not_configured",
            AuthError::NotAccessToken => "token_type",
            AuthError::Opaque => "token_opaque",
        }
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::NoRole
            | AuthError::OnBehalfOfNotAllowed
            | AuthError::OnBehalfOfNotConfigured => Error::PermissionDenied(e.to_string()),
            AuthError::ProviderUnavailable => Error::Unavailable(e.to_string()),
            AuthError::OnBehalfOfMissing | AuthError::OnBehalfOfInvalid => Error::InvalidArgument(
                crate::error::FieldError::new(ON_BEHALF_OF_HEADER, e.to_string()),
            ),
            _ => Error::Unauthenticated(e.to_string()),
        }
    }
}

/// Verified token claims, before roles are mapped.
pub type Claims = serde_json::Map<String, Value>;

/// Tokens whose signature was verified, by their SHA-256, with the key set
/// that verified them. An agency system calls with one token for minutes:
/// its signature (tens of microseconds) need not be checked on every call.
/// Only the signature's result is kept: a token is found by its exact bytes
/// (signature included), counts only while the same key set is in use (a
/// rotation or a refetched JWKS starts afresh), and its claims (expiry,
/// issuer, audience) are checked on every call as before. Bounded: when full,
/// it is emptied.
#[derive(Default)]
pub struct VerifiedTokens {
    map: Mutex<HashMap<[u8; 32], Verified>>,
}

/// The key set that verified a token, and its claims.
type Verified = (u64, Arc<Claims>);

/// Most tokens remembered.
const VERIFIED_TOKENS: usize = 4096;

impl VerifiedTokens {
    pub fn digest(token: &str) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// The claims of a token verified under `key_set`.
    pub fn get(&self, digest: &[u8; 32], key_set: u64) -> Option<Arc<Claims>> {
        let map = self.map.lock().ok()?;
        match map.get(digest) {
            Some((k, claims)) if *k == key_set => Some(claims.clone()),
            _ => None,
        }
    }

    pub fn put(&self, digest: [u8; 32], key_set: u64, claims: Arc<Claims>) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= VERIFIED_TOKENS {
                map.clear();
            }
            map.insert(digest, (key_set, claims));
        }
    }
}

/// Verifies tokens according to the configured mode.
pub enum Authenticator {
    Oidc(Box<oidc::OidcVerifier>),
    Dev(Box<dev::DevVerifier>),
    Unconfigured,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Authenticator::Oidc(_) => "Authenticator::Oidc",
            Authenticator::Dev(_) => "Authenticator::Dev",
            Authenticator::Unconfigured => "Authenticator::Unconfigured",
        })
    }
}

impl Authenticator {
    pub fn from_config(
        cfg: &AuthConfig,
        org_id: &str,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        Ok(match cfg.mode {
            AuthMode::Dev => Authenticator::Dev(Box::new(dev::DevVerifier::new(org_id, data_dir)?)),
            AuthMode::Oidc => match &cfg.issuer {
                Some(_) => Authenticator::Oidc(Box::new(oidc::OidcVerifier::new(cfg)?)),
                None => Authenticator::Unconfigured,
            },
        })
    }

    /// Verifies a bearer token and maps its role; `on_behalf_of` is the
    /// header value, if any.
    pub async fn authenticate(
        &self,
        config: &crate::config::AuthConfig,
        token: Option<&str>,
        on_behalf_of: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let claims = match self {
            Authenticator::Unconfigured => return Err(AuthError::NotConfigured),
            Authenticator::Oidc(v) => v.verify(token).await?,
            Authenticator::Dev(v) => v.verify(token)?,
        };
        principal_from_claims(config, &claims, on_behalf_of)
    }
}

/// Follows a dotted path (`realm_access.roles`) into the claims.
fn claim_at<'a>(claims: &'a Claims, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

/// The case managers one `auth.system_acts_for` entry names (comma
/// separated, each as `x-exitnet-on-behalf-of` would carry it).
pub fn acts_for_list(names: &str) -> Result<Vec<&str>, String> {
    let list: Vec<&str> = names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if list.is_empty() {
        return Err("expected the case managers this system acts for, comma separated".into());
    }
    for n in &list {
        if n.chars().count() > 200 || n.chars().any(char::is_control) {
            return Err("each case manager must be 1 to 200 printable characters".into());
        }
    }
    Ok(list)
}

/// The client ID a system's token names (RFC 9068 `client_id`, else `azp`,
/// else the subject).
fn client_id_of<'a>(claims: &'a Claims, subject: &'a str) -> &'a str {
    ["client_id", "azp"]
        .iter()
        .find_map(|c| claims.get(*c).and_then(Value::as_str))
        .unwrap_or(subject)
}

/// Maps claims to a principal: the role from the configured claim (a string
/// or an array, through `auth.role_map` or the role's own name), the subject
/// from `sub` (or `client_id`), the team from `auth.team_claim`.
pub fn principal_from_claims(
    cfg: &AuthConfig,
    claims: &Claims,
    on_behalf_of: Option<&str>,
) -> Result<Principal, AuthError> {
    let values: Vec<&str> = match claim_at(claims, &cfg.roles_claim) {
        Some(Value::String(s)) => s.split_whitespace().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let map: &BTreeMap<String, String> = &cfg.role_map;
    // A configured map is an allow-list: a provider role it does not name
    // grants nothing, even one literally called "system" or "supervisor"
    // (a provider's users may be able to name their own groups). Without a
    // map the provider's values must be role names themselves.
    let mut roles: Vec<Role> = values
        .iter()
        .filter_map(|v| {
            if map.is_empty() {
                Role::parse(v)
            } else {
                map.get(*v).and_then(|r| Role::parse(r))
            }
        })
        .collect();
    roles.sort();
    // One role per call: the most limited wins when a token carries several,
    // except that a system is always a system.
    let role = if roles.contains(&Role::System) {
        Role::System
    } else {
        *roles
            .iter()
            .max_by_key(|r| match r {
                Role::Auditor => 3,
                Role::CaseManager => 2,
                Role::Supervisor => 1,
                Role::System => 0,
            })
            .ok_or(AuthError::NoRole)?
    };
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .or_else(|| claims.get("client_id").and_then(Value::as_str))
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or(AuthError::Malformed)?
        .to_owned();
    let team = cfg
        .team_claim
        .as_deref()
        .and_then(|c| claim_at(claims, c))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let on_behalf_of = match (role, on_behalf_of) {
        (Role::System, Some(who)) => {
            if who.is_empty() || who.chars().count() > 200 || who.chars().any(char::is_control) {
                return Err(AuthError::OnBehalfOfInvalid);
            }
            // Deny by default: a system acts only for the case managers
            // configured for its client ID, whatever its token says.
            let allowed = cfg
                .system_acts_for
                .get(client_id_of(claims, &subject))
                .and_then(|names| acts_for_list(names).ok())
                .is_some_and(|list| list.contains(&who));
            if !allowed {
                return Err(AuthError::OnBehalfOfNotConfigured);
            }
            Some(who.to_owned())
        }
        (Role::System, None) => None,
        (_, Some(_)) => return Err(AuthError::OnBehalfOfNotAllowed),
        (_, None) => None,
    };
    let expires_at_ms = claims.get("exp").and_then(Value::as_i64).map(|exp| {
        exp.saturating_add(cfg.leeway_secs.min(i64::MAX as u64) as i64)
            .saturating_mul(1000)
    });
    Ok(Principal {
        subject,
        role,
        team,
        on_behalf_of,
        expires_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AuthConfig {
        let mut c = crate::config::Config::load(None, &Default::default())
            .unwrap()
            .auth;
        c.role_map
            .insert("exitnet-auditors".into(), "auditor".into());
        c.team_claim = Some("team".into());
        c
    }

    /// No role map: the provider's values are role names.
    fn names() -> AuthConfig {
        let mut c = cfg();
        c.role_map.clear();
        c
    }

    fn claims(v: serde_json::Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_role_map_is_an_allow_list() {
        // "system" and "supervisor" are role names, but the map does not
        // name them: they grant nothing.
        for roles in [
            serde_json::json!(["system"]),
            serde_json::json!(["supervisor"]),
            serde_json::json!("system exitnet-unknown"),
        ] {
            assert_eq!(
                principal_from_claims(
                    &cfg(),
                    &claims(serde_json::json!({"sub": "mallory", "roles": roles})),
                    None
                ),
                Err(AuthError::NoRole)
            );
        }
        // What the map names, it grants.
        let p = principal_from_claims(
            &cfg(),
            &claims(serde_json::json!({"sub": "dpo", "roles": ["system", "exitnet-auditors"]})),
            None,
        )
        .unwrap();
        assert_eq!(p.role, Role::Auditor);
    }

    #[test]
    fn a_system_acts_only_for_those_configured() {
        let mut c = names();
        c.system_acts_for
            .insert("agency-crm".into(), "alice, bob".into());
        let sys = |client: &str| {
            claims(
                serde_json::json!({"sub": client, "client_id": client, "roles": ["system"], "exp": 100}),
            )
        };
        let p = principal_from_claims(&c, &sys("agency-crm"), Some("bob")).unwrap();
        assert_eq!(p.on_behalf_of.as_deref(), Some("bob"));
        assert_eq!(p.expires_at_ms, Some((100 + 60) * 1000));
        for (client, who) in [
            ("agency-crm", "carol"),
            ("agency-crm", "alice, bob"),
            ("other-crm", "alice"),
        ] {
            assert_eq!(
                principal_from_claims(&c, &sys(client), Some(who)),
                Err(AuthError::OnBehalfOfNotConfigured),
                "{client} for {who}"
            );
        }
        // The client ID counts, not a subject that happens to match.
        let mut t = sys("agency-crm");
        t.insert("client_id".into(), "other-crm".into());
        assert!(principal_from_claims(&c, &t, Some("alice")).is_err());
        assert!(acts_for_list(" , ").is_err());
        assert!(acts_for_list("a\u{7}").is_err());
    }

    #[test]
    fn roles_map_from_names_or_the_map() {
        let names = names();
        let p = principal_from_claims(
            &names,
            &claims(serde_json::json!({"sub": "alice", "roles": ["case_manager"], "team": "east"})),
            None,
        )
        .unwrap();
        assert_eq!(
            (p.subject.as_str(), p.role, p.team.as_deref()),
            ("alice", Role::CaseManager, Some("east"))
        );
        let p = principal_from_claims(
            &cfg(),
            &claims(serde_json::json!({"sub": "dpo", "roles": "exitnet-auditors"})),
            None,
        )
        .unwrap();
        assert_eq!(p.role, Role::Auditor);
        // The most limited role wins.
        let p = principal_from_claims(
            &names,
            &claims(serde_json::json!({"sub": "x", "roles": ["supervisor", "auditor"]})),
            None,
        )
        .unwrap();
        assert_eq!(p.role, Role::Auditor);
    }

    #[test]
    fn verified_tokens_count_only_under_their_key_set() {
        let cache = VerifiedTokens::default();
        let claims = Arc::new(claims(serde_json::json!({"sub": "alice"})));
        let d = VerifiedTokens::digest("header.payload.signature");
        cache.put(d, 7, claims.clone());
        assert_eq!(cache.get(&d, 7).as_deref(), Some(&*claims));
        // Another key set (a rotation, a refetched JWKS): verified afresh.
        assert!(cache.get(&d, 8).is_none());
        // Another signature is another token.
        assert!(
            cache
                .get(&VerifiedTokens::digest("header.payload.signaturf"), 7)
                .is_none()
        );
        // Bounded: full, it starts again.
        for i in 0..VERIFIED_TOKENS {
            cache.put(VerifiedTokens::digest(&i.to_string()), 7, claims.clone());
        }
        assert!(cache.map.lock().unwrap().len() <= VERIFIED_TOKENS);
    }

    #[test]
    fn deny_by_default() {
        for c in [
            serde_json::json!({"sub": "x"}),
            serde_json::json!({"sub": "x", "roles": ["admin"]}),
            serde_json::json!({"sub": "x", "roles": 5}),
        ] {
            assert_eq!(
                principal_from_claims(&cfg(), &claims(c), None),
                Err(AuthError::NoRole)
            );
        }
    }

    #[test]
    fn systems_act_for_a_named_case_manager() {
        let sys = claims(serde_json::json!({"client_id": "agency", "roles": ["system"]}));
        let mut cfg = names();
        cfg.system_acts_for.insert("agency".into(), "alice".into());
        let p = principal_from_claims(&cfg, &sys, Some("alice")).unwrap();
        assert_eq!(
            (p.subject.as_str(), p.acting_subject()),
            ("agency", "alice")
        );
        assert_eq!(
            principal_from_claims(&names(), &sys, Some("a\nb")),
            Err(AuthError::OnBehalfOfInvalid)
        );
        let person = claims(serde_json::json!({"sub": "bob", "roles": ["case_manager"]}));
        assert_eq!(
            principal_from_claims(&names(), &person, Some("alice")),
            Err(AuthError::OnBehalfOfNotAllowed)
        );
    }

    #[test]
    fn nested_role_claims() {
        let mut c = names();
        c.roles_claim = "realm_access.roles".into();
        let p = principal_from_claims(
            &c,
            &claims(serde_json::json!({"sub": "s", "realm_access": {"roles": ["supervisor"]}})),
            None,
        )
        .unwrap();
        assert_eq!(p.role, Role::Supervisor);
    }
}
