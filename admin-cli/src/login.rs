//! `exitnetctl login`: the OAuth 2.0 device authorization flow against the
//! organisation's OpenID provider (the `openidconnect` crate). Tokens are kept
//! in the user's configuration directory, readable by the user only, and
//! refreshed when they expire.

use anyhow::{Context, bail};
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreDeviceAuthorizationResponse, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreResponseMode,
    CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, ClientId, DeviceAuthorizationUrl, IssuerUrl, OAuth2TokenResponse,
    ProviderMetadata, RefreshToken, Scope,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Deserialize, Serialize)]
struct DeviceEndpoint {
    device_authorization_endpoint: DeviceAuthorizationUrl,
}
impl AdditionalProviderMetadata for DeviceEndpoint {}

type DeviceProviderMetadata = ProviderMetadata<
    DeviceEndpoint,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// What `login` keeps on disk.
#[derive(Serialize, Deserialize)]
pub struct StoredTokens {
    pub issuer: String,
    pub client_id: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Seconds since the epoch.
    pub expires_at: Option<u64>,
}

impl std::fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTokens")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// `$EXITNET_CTL_TOKEN_FILE`, else `$XDG_CONFIG_HOME/exitnet/tokens.json`,
/// else `~/.config/exitnet/tokens.json`.
pub fn token_path() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("EXITNET_CTL_TOKEN_FILE") {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var("XDG_CONFIG_HOME") {
        Ok(x) if !x.is_empty() => PathBuf::from(x),
        _ => PathBuf::from(std::env::var("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(base.join("exitnet").join("tokens.json"))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn http() -> anyhow::Result<openidconnect::reqwest::Client> {
    Ok(openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?)
}

async fn client(
    issuer: &str,
    client_id: &str,
    http: &openidconnect::reqwest::Client,
) -> anyhow::Result<(
    CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    DeviceAuthorizationUrl,
)> {
    let meta = DeviceProviderMetadata::discover_async(IssuerUrl::new(issuer.to_owned())?, http)
        .await
        .with_context(|| format!("discovering the provider at {issuer}"))?;
    let device = meta
        .additional_metadata()
        .device_authorization_endpoint
        .clone();
    let c = CoreClient::from_provider_metadata(meta, ClientId::new(client_id.to_owned()), None);
    Ok((c, device))
}

fn save(tokens: &StoredTokens) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = token_path()?;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(tokens)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Runs the device flow; prints where to go and the code on stderr.
pub async fn login(issuer: &str, client_id: &str) -> anyhow::Result<PathBuf> {
    let http = http()?;
    let (c, device_url) = client(issuer, client_id, &http).await?;
    let c = c.set_device_authorization_url(device_url);
    let details: CoreDeviceAuthorizationResponse = c
        .exchange_device_code()
        .add_scope(Scope::new("offline_access".into()))
        .request_async(&http)
        .await
        .context("asking the provider for a device code")?;
    eprintln!("To sign in, open the address below and enter the code.");
    eprintln!("open: {}", details.verification_uri().as_str());
    eprintln!("code: {}", details.user_code().secret());
    if let Some(complete) = details.verification_uri_complete() {
        eprintln!("or open: {}", complete.secret());
    }
    let token = c
        .exchange_device_access_token(&details)?
        .request_async(&http, tokio::time::sleep, None)
        .await
        .context("waiting for the sign-in to complete")?;
    let tokens = StoredTokens {
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
        access_token: token.access_token().secret().clone(),
        refresh_token: token.refresh_token().map(|r| r.secret().clone()),
        expires_at: token.expires_in().map(|d| now_secs() + d.as_secs()),
    };
    save(&tokens)
}

pub fn logout() -> anyhow::Result<bool> {
    let path = token_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The stored access token, refreshed first when it has (nearly) expired.
pub async fn access_token() -> anyhow::Result<String> {
    let path = token_path()?;
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "not signed in (no {}); run `exitnetctl login`",
            path.display()
        )
    })?;
    let mut tokens: StoredTokens =
        serde_json::from_slice(&text).context("reading the stored tokens")?;
    let expired = tokens.expires_at.is_some_and(|at| now_secs() + 30 >= at);
    if !expired {
        return Ok(tokens.access_token);
    }
    let Some(refresh) = tokens.refresh_token.clone() else {
        bail!("the sign-in has expired; run `exitnetctl login` again");
    };
    let http = http()?;
    let (c, _) = client(&tokens.issuer, &tokens.client_id, &http).await?;
    let fresh = c
        .exchange_refresh_token(&RefreshToken::new(refresh))?
        .request_async(&http)
        .await
        .context("refreshing the sign-in; run `exitnetctl login` again")?;
    tokens.access_token = fresh.access_token().secret().clone();
    if let Some(r) = fresh.refresh_token() {
        tokens.refresh_token = Some(r.secret().clone());
    }
    tokens.expires_at = fresh.expires_in().map(|d| now_secs() + d.as_secs());
    save(&tokens)?;
    Ok(tokens.access_token)
}
