//! A real OpenID provider for the tests: the npm package `oidc-provider`,
//! run by `tests/oidc/provider.mjs` on loopback. Installed on first use with
//! `npm ci` from the project's own lock file.

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// Installs the provider's packages once per test run.
pub fn ensure_installed() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = oidc_dir();
        if dir.join("node_modules/oidc-provider").exists() {
            return Ok(());
        }
        let status = std::process::Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .map_err(|e| format!("running npm ci: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err("npm ci in tests/oidc failed".into())
        }
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// An EC P-256 signing key as the provider reads it (a private JWK).
pub struct SigningKey {
    pub kid: String,
    pub jwk: serde_json::Value,
    pair: EcdsaKeyPair,
}

impl SigningKey {
    /// A new key, made by Node's crypto (which exports the private JWK).
    pub fn generate(kid: &str) -> anyhow::Result<Self> {
        let out = std::process::Command::new("node")
            .args([
                "-e",
                "const c=require('crypto');const {privateKey}=c.generateKeyPairSync('ec',{namedCurve:'P-256'});process.stdout.write(JSON.stringify(privateKey.export({format:'jwk'})))",
            ])
            .output()
            .context("running node")?;
        let mut jwk: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("node's JWK")?;
        jwk["kid"] = kid.into();
        jwk["alg"] = "ES256".into();
        jwk["use"] = "sig".into();
        let part = |k: &str| -> anyhow::Result<Vec<u8>> {
            Ok(URL_SAFE_NO_PAD.decode(jwk[k].as_str().context("jwk field")?)?)
        };
        let mut public = vec![4u8];
        public.extend(part("x")?);
        public.extend(part("y")?);
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &part("d")?,
            &public,
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| anyhow::anyhow!("key: {e}"))?;
        Ok(Self {
            kid: kid.into(),
            jwk,
            pair,
        })
    }

    /// Signs arbitrary claims with this key, as the provider would (or wouldn't).
    pub fn sign(
        &self,
        header: serde_json::Value,
        claims: serde_json::Value,
    ) -> anyhow::Result<String> {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .map_err(|e| anyhow::anyhow!("sign: {e}"))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// The public JWK, as the provider publishes it.
    pub fn public_jwk(&self) -> serde_json::Value {
        let mut j = self.jwk.clone();
        if let Some(m) = j.as_object_mut() {
            m.remove("d");
        }
        j
    }
}

/// A running provider.
pub struct OidcProvider {
    pub issuer: String,
    pub key_file: PathBuf,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl OidcProvider {
    pub async fn start(key: &SigningKey, audience: &str) -> anyhow::Result<Self> {
        Self::start_with_ttl(key, audience, 300).await
    }

    /// A provider whose access tokens live `ttl_secs`.
    pub async fn start_with_ttl(
        key: &SigningKey,
        audience: &str,
        ttl_secs: u32,
    ) -> anyhow::Result<Self> {
        ensure_installed()?;
        let dir = tempfile::tempdir()?;
        let key_file = dir.path().join("key.json");
        std::fs::write(&key_file, key.jwk.to_string())?;
        let mut child = Command::new("node")
            .arg(oidc_dir().join("provider.mjs"))
            .arg("--key")
            .arg(&key_file)
            .args(["--port", "0", "--audience", audience])
            .args(["--access-token-ttl", &ttl_secs.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting tests/oidc/provider.mjs")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), stdout.next_line())
            .await
            .context("the provider did not start in 30 s")??
            .context("the provider exited")?;
        let ready: serde_json::Value = serde_json::from_str(&line)?;
        Ok(Self {
            issuer: ready["issuer"].as_str().context("issuer")?.to_owned(),
            key_file,
            child,
            stdout,
            _dir: dir,
        })
    }

    /// Switches the provider to `key` (SIGHUP) and waits until it signs with it.
    pub async fn rotate(&mut self, key: &SigningKey) -> anyhow::Result<()> {
        std::fs::write(&self.key_file, key.jwk.to_string())?;
        let pid = self.child.id().context("provider exited")?;
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()?;
        loop {
            let line =
                tokio::time::timeout(std::time::Duration::from_secs(30), self.stdout.next_line())
                    .await
                    .context("no rotation in 30 s")??
                    .context("the provider exited")?;
            if line.contains("rotated") && line.contains(&key.kid) {
                return Ok(());
            }
        }
    }

    /// A client-credentials access token.
    pub async fn client_credentials(
        &self,
        client_id: &str,
        secret: &str,
    ) -> anyhow::Result<String> {
        let http = openidconnect::reqwest::Client::new();
        let resp = http
            .post(format!("{}/token", self.issuer))
            .basic_auth(client_id, Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await?;
        let status = resp.status();
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await?)?;
        if !status.is_success() {
            bail!("token request failed: {status} {body}");
        }
        Ok(body["access_token"]
            .as_str()
            .context("access_token")?
            .to_owned())
    }

    /// Signs `login` in with the device flow as public client `client_id`
    /// (scope `openid`): the token response, with its `id_token`.
    pub async fn device_tokens(
        &self,
        client_id: &str,
        login: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let http = openidconnect::reqwest::Client::new();
        let form = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect::<Vec<_>>()
                .join("&")
        };
        let post = |path: &str, body: String| {
            http.post(format!("{}{path}", self.issuer))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
        };
        let auth: serde_json::Value = serde_json::from_slice(
            &post(
                "/device/auth",
                form(&[("client_id", client_id), ("scope", "openid")]),
            )
            .await?
            .bytes()
            .await?,
        )?;
        let code = auth["device_code"].as_str().context("device_code")?;
        self.complete_device(
            auth["verification_uri"]
                .as_str()
                .context("verification_uri")?,
            auth["user_code"].as_str().context("user_code")?,
            login,
        )
        .await?;
        let resp = post(
            "/token",
            form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", code),
                ("client_id", client_id),
            ]),
        )
        .await?;
        let status = resp.status();
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await?)?;
        if !status.is_success() {
            bail!("device token request failed: {status} {body}");
        }
        Ok(body)
    }

    /// Approves a pending device sign-in through the provider's pages over HTTP.
    pub async fn complete_device(
        &self,
        verification_uri: &str,
        user_code: &str,
        login: &str,
    ) -> anyhow::Result<()> {
        let out = Command::new("node")
            .arg(oidc_dir().join("complete-device.mjs"))
            .args([verification_uri, user_code, login])
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "complete-device failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
