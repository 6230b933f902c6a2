//! Real nodes in child processes, and `exitnetctl` runs against them.

use crate::db::{Backend, TestDatabase};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Path of a workspace binary, built (once per test run) if needed, so the
/// tests never run a stale binary.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            // One package at a time, as `cargo run -p exitnetctl` builds it
            // (the demo prints such commands and a test runs them): built
            // together, their shared dependencies get other features, and a
            // later `cargo run` would replace the binary while tests use it.
            for package in ["exitnet-node", "exitnetctl", "exitnet-demo"] {
                let status = std::process::Command::new(&cargo)
                    .args(["build", "--quiet", "-p", package, "--bins"])
                    .status()
                    .map_err(|e| format!("running cargo build: {e}"))?;
                if !status.success() {
                    return Err(format!("cargo build of {package} failed"));
                }
            }
            // target/debug/deps/<test> → target/debug
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            exe.parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .ok_or_else(|| "cannot find the target directory".into())
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(dir.join(name))
}

/// Polls `check` every 20 ms until it returns `Some`, or fails after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a node is started with.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub org_id: String,
    pub backend: Backend,
    /// Extra TOML appended to the generated configuration.
    pub extra_toml: String,
}

impl NodeSpec {
    pub fn new(org_id: &str, backend: Backend) -> Self {
        Self {
            org_id: org_id.into(),
            backend,
            extra_toml: String::new(),
        }
    }

    pub fn with_toml(mut self, toml: &str) -> Self {
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }
}

/// The output of one `exitnetctl` run.
#[derive(Debug)]
pub struct CtlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("not JSON: {} / {}", self.stdout, self.stderr))
    }
}

/// A running node in a child process.
#[derive(Debug)]
pub struct NodeProcess {
    pub spec: NodeSpec,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub db: Option<TestDatabase>,
    child: Option<Child>,
    pub api_addr: String,
    pub federation_addr: String,
    pub admin_socket: PathBuf,
    /// The Prometheus endpoint, when `metrics.listen` is configured.
    pub metrics_addr: Option<String>,
    /// This process among replicas (it names the delivery leases it holds).
    pub instance_id: String,
}

impl NodeProcess {
    /// Starts a node (on PostgreSQL, in a database of its own).
    pub async fn start(spec: NodeSpec) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = match spec.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDatabase::create().await?),
        };
        let data_dir = dir.path().join("data");
        let mut toml = format!(
            "data_dir = {data:?}\n{db}\n[api]\nlisten = \"127.0.0.1:0\"\n\n[federation]\nlisten = \"127.0.0.1:0\"\nretry_initial_ms = 50\nretry_max_ms = 1000\ncall_timeout_ms = 3000\nscheduler_interval_secs = 1\n",
            data = data_dir.display().to_string(),
            db = db
                .as_ref()
                .map(|d| format!("database_url = {:?}", d.url))
                .unwrap_or_default(),
        );
        // Bursts of hundreds of calls are what many tests do; the limits
        // have tests of their own that set them low.
        toml.push_str(
            "\n[limits]\ncaller_calls_per_sec = 100000\ncaller_burst = 100000\ncaller_max_in_flight = 10000\n\
             peer_calls_per_sec = 100000\npeer_burst = 100000\naddress_calls_per_sec = 100000\naddress_burst = 100000\n",
        );
        toml.push_str(&format!(
            // The development system `agency-crm` the tests sign in as acts
            // for Alice only (a system acts for no one it is not configured for).
            "\n[org]\nid = {:?}\nname = {:?}\n\n[auth]\nmode = \"dev\"\n\n[auth.system_acts_for]\n\"agency-crm\" = \"alice\"\n",
            spec.org_id,
            format!("Org {}", spec.org_id)
        ));
        // The master key generations: outside the data directory (as by
        // default), named so that replicas share them.
        toml.push_str(&format!(
            "\n[keys]\ndir = {:?}\n",
            dir.path().join("keys").display().to_string()
        ));
        let config_path = dir.path().join("exitnet.toml");
        std::fs::write(&config_path, merge_toml(&toml, &spec.extra_toml)?)?;
        let mut node = Self {
            spec,
            admin_socket: data_dir.join("admin.sock"),
            dir,
            config_path,
            db,
            child: None,
            api_addr: String::new(),
            federation_addr: String::new(),
            metrics_addr: None,
            instance_id: String::new(),
        };
        node.launch().await?;
        Ok(node)
    }

    /// Like `start`, but the first run is killed `after` it was spawned
    /// (whatever it was doing: creating its identity, migrating, binding);
    /// the node is left stopped, for `restart`.
    pub async fn start_killed_after(spec: NodeSpec, after: Duration) -> anyhow::Result<Self> {
        let mut node = Self::start(spec).await?;
        // `start` ran it once to learn its ports; begin again from nothing.
        node.kill().await?;
        if let Some(db) = &node.db {
            db.reset().await?;
        }
        let data = node.data_dir();
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        node.spawn()?;
        tokio::time::sleep(after).await;
        node.kill().await?;
        Ok(node)
    }

    /// Another process of the same node, as an organisation runs several
    /// replicas: the same configuration, identity, master key and (PostgreSQL)
    /// database, its own data directory and ports.
    pub async fn replica(&self) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("data");
        copy_private_dir(
            &self.data_dir().join("identity"),
            &data_dir.join("identity"),
        )?;
        let config_path = dir.path().join("exitnet.toml");
        let current = std::fs::read_to_string(&self.config_path)?;
        let own = format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[federation]\nlisten = \"127.0.0.1:0\"\n",
            data_dir.display().to_string()
        );
        std::fs::write(&config_path, merge_toml(&current, &own)?)?;
        let mut node = Self {
            spec: self.spec.clone(),
            admin_socket: data_dir.join("admin.sock"),
            dir,
            config_path,
            db: None,
            child: None,
            api_addr: String::new(),
            federation_addr: String::new(),
            metrics_addr: None,
            instance_id: String::new(),
        };
        node.launch().await?;
        Ok(node)
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self
            .metrics_addr
            .as_deref()
            .context("metrics.listen is not set")?;
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: exitnet\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        let (head, body) = out.split_once("\r\n\r\n").context("no HTTP response")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!(
                "metrics answered {}",
                head.lines().next().unwrap_or_default()
            );
        }
        Ok(body.to_owned())
    }

    /// The value of one series in `metrics()` (0 when absent).
    pub async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let text = self.metrics().await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// The key directory (`keys.dir`): one file per master-key generation.
    /// Replicas share their first process's.
    pub fn key_dir(&self) -> PathBuf {
        self.config_value("keys", "dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir.path().join("keys"))
    }

    fn config_value(&self, table: &str, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.config_path).ok()?;
        let t: toml::Table = text.parse().ok()?;
        t.get(table)?.get(key)?.as_str().map(str::to_owned)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The database URL the node uses.
    pub fn database_url(&self) -> String {
        let configured = std::fs::read_to_string(&self.config_path)
            .ok()
            .and_then(|t| toml_edit_like::parse(&t).ok())
            .and_then(|t| t.get("database_url")?.as_str().map(str::to_owned));
        match (&self.db, configured) {
            (Some(db), _) => db.url.clone(),
            (None, Some(url)) => url,
            (None, None) => format!("sqlite://{}", self.data_dir().join("exitnet.db").display()),
        }
    }

    /// Starts the process without waiting for it.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let listening = self.data_dir().join("listening.json");
        let _ = std::fs::remove_file(&listening);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("node.log"))?;
        let child = Command::new(binary("exitnet-node")?)
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .env_remove("EXITNET_CONFIG")
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting exitnet-node")?;
        self.child = Some(child);
        Ok(())
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        let listening = self.data_dir().join("listening.json");
        let pid = self.child.as_ref().and_then(|c| c.id());
        let info = wait_until(
            "the node to report its addresses",
            Duration::from_secs(30),
            || {
                let listening = listening.clone();
                async move {
                    let text = std::fs::read_to_string(&listening).ok()?;
                    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                    (v["pid"].as_u64() == pid.map(u64::from)).then_some(v)
                }
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", self.log()))?;
        self.api_addr = info["api"].as_str().unwrap_or_default().to_owned();
        self.metrics_addr = info["metrics"].as_str().map(str::to_owned);
        self.instance_id = info["instance_id"].as_str().unwrap_or_default().to_owned();
        self.federation_addr = info["federation"].as_str().unwrap_or_default().to_owned();
        // A restart keeps the addresses, as a real node's would: peers know them.
        let pinned = format!(
            "[api]\nlisten = {:?}\n[federation]\nlisten = {:?}\n",
            self.api_addr, self.federation_addr
        );
        let current = std::fs::read_to_string(&self.config_path)?;
        std::fs::write(&self.config_path, merge_toml(&current, &pinned)?)?;
        if self.spec.extra_toml.contains("[api.tls]") {
            // A TLS client API: the test checks it with its own client.
            return Ok(());
        }
        let api = self.api_addr.clone();
        wait_until(
            "the client API to answer SERVING",
            Duration::from_secs(30),
            || {
                let api = api.clone();
                async move { health_serving(&api).await.ok().filter(|s| *s) }
            },
        )
        .await?;
        Ok(())
    }

    /// Merges `toml` into the node's configuration file (takes effect on restart).
    pub fn set_config(&self, toml: &str) -> anyhow::Result<()> {
        let current = std::fs::read_to_string(&self.config_path)?;
        std::fs::write(&self.config_path, merge_toml(&current, toml)?)?;
        Ok(())
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Sends SIGTERM and waits; returns the exit status and how long it took.
    pub async fn stop(&mut self) -> anyhow::Result<(std::process::ExitStatus, Duration)> {
        let mut child = self.child.take().context("node not running")?;
        let pid = child.id().context("node already exited")?;
        let started = Instant::now();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
        Ok((status, started.elapsed()))
    }

    /// SIGKILL: the node dies without any chance to clean up.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            let (status, _) = self.stop().await?;
            if !status.success() {
                bail!("node exited with {status} on stop");
            }
        }
        self.launch().await
    }

    /// Runs `exitnetctl --socket <this node's socket> ARGS`.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<CtlOutput> {
        let out = Command::new(binary("exitnetctl")?)
            .arg("--socket")
            .arg(&self.admin_socket)
            .args(args)
            .env_remove("EXITNET_OUTPUT")
            .stdin(Stdio::null())
            .output()
            .await?;
        Ok(CtlOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Starts `exitnetctl ARGS` without waiting for it (to kill the node meanwhile).
    pub fn ctl_spawn(&self, args: &[&str]) -> anyhow::Result<Child> {
        Ok(Command::new(binary("exitnetctl")?)
            .arg("--socket")
            .arg(&self.admin_socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?)
    }

    /// `exitnetctl ARGS --output json`, which must succeed.
    pub async fn ctl_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.ctl(&all).await?;
        if !out.success {
            bail!("exitnetctl {args:?} failed: {}", out.stderr);
        }
        out.json()
    }

    /// The node's admin socket, through the typed client (what `exitnetctl`
    /// calls); tests about the command line itself run it (`ctl`).
    pub async fn admin(&self) -> anyhow::Result<exitnet_client::AdminClient> {
        exitnet_client::AdminClient::connect(&self.admin_socket, Duration::ZERO).await
    }

    /// A single-use invitation code, with the node's default lifetime.
    pub async fn invite(&self) -> anyhow::Result<String> {
        Ok(self.admin().await?.invite(0, "", "").await?.code)
    }

    /// Joins the peer that made `code`.
    pub async fn join(&self, code: &str) -> anyhow::Result<exitnet_proto::pb::PeerView> {
        Ok(self.admin().await?.join(code).await?)
    }

    /// The newest security events (the node's default number of them).
    pub async fn security_events(&self) -> anyhow::Result<Vec<exitnet_proto::pb::SecurityEvent>> {
        Ok(self.admin().await?.security_events(0).await?)
    }

    /// The audit records of one action, oldest first (the node selects them).
    pub async fn audit_records_of(
        &self,
        action: &str,
    ) -> anyhow::Result<Vec<exitnet_proto::pb::AuditRecord>> {
        self.audit_records_matching(exitnet_proto::pb::ListAuditRecordsRequest {
            action: action.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// Approves, rejects, suspends, resumes or revokes the peering with `org`.
    pub async fn peer_action(
        &self,
        org: &str,
        action: exitnet_proto::pb::PeerAction,
    ) -> anyhow::Result<exitnet_proto::pb::SetPeerStateResponse> {
        Ok(self.admin().await?.set_peer_state(org, action).await?)
    }

    /// The whole audit trail, oldest first.
    pub async fn audit_records(&self) -> anyhow::Result<Vec<exitnet_proto::pb::AuditRecord>> {
        self.audit_records_matching(Default::default()).await
    }

    /// The audit records `query` selects (every page of them), oldest first.
    async fn audit_records_matching(
        &self,
        query: exitnet_proto::pb::ListAuditRecordsRequest,
    ) -> anyhow::Result<Vec<exitnet_proto::pb::AuditRecord>> {
        let mut admin = self.admin().await?;
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = admin
                .export_audit(exitnet_proto::pb::ListAuditRecordsRequest {
                    page_size: 1000,
                    page_token,
                    ..query.clone()
                })
                .await?;
            all.extend(page.records);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// This node's view of one peer, as `peer list --output json` shows it.
    pub async fn peer(&self, org: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let peers = self.admin().await?.peers().await?;
        Ok(peers
            .iter()
            .find(|p| p.profile.as_ref().is_some_and(|x| x.org_id == org))
            .map(exitnetctl::output::peer_json))
    }

    /// Waits until this node sees `org` in `state` with the other side's view `remote`.
    pub async fn wait_peer_state(
        &self,
        org: &str,
        state: &str,
        remote: Option<&str>,
    ) -> anyhow::Result<serde_json::Value> {
        wait_until(
            &format!("{} to see {org} as {state}/{remote:?}", self.spec.org_id),
            Duration::from_secs(20),
            || async {
                let p = self.peer(org).await.ok()??;
                let remote_ok = match remote {
                    Some(r) => p["remote_state"] == r,
                    None => true,
                };
                (p["state"] == state && remote_ok).then_some(p)
            },
        )
        .await
    }

    /// A development token for the client API (`exitnetctl dev-token`).
    pub async fn dev_token(&self, role: &str, subject: &str) -> anyhow::Result<String> {
        let minted = self
            .admin()
            .await?
            .mint_dev_token(subject, role, "")
            .await
            .map_err(|s| anyhow::anyhow!("dev-token failed: {s}"))?;
        Ok(minted.access_token)
    }

    /// A channel to the client API.
    pub async fn api_channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        Ok(
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.api_addr))?
                .connect()
                .await?,
        )
    }

    pub async fn fingerprint(&self) -> anyhow::Result<String> {
        Ok(self.admin().await?.identity().await?.key_fingerprint)
    }
}

/// Whether the gRPC health service at `addr` (plaintext) says SERVING.
pub async fn health_serving(addr: &str) -> anyhow::Result<bool> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    Ok(r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
}

/// Copies a directory of private files (the identity), keeping them private.
fn copy_private_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700))?;
    if let Some(parent) = to.parent() {
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))?;
    }
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_private_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Appends `extra` to `base`, merging tables of the same name so that a test
/// can override a generated key.
fn merge_toml(base: &str, extra: &str) -> anyhow::Result<String> {
    let mut base: toml_edit_like::Table = toml_edit_like::parse(base)?;
    let extra: toml_edit_like::Table = toml_edit_like::parse(extra)?;
    toml_edit_like::merge(&mut base, extra);
    Ok(toml_edit_like::render(&base))
}

/// Just enough TOML handling for the harness, on top of serde_json values.
mod toml_edit_like {
    pub type Table = serde_json::Map<String, serde_json::Value>;

    pub fn parse(s: &str) -> anyhow::Result<Table> {
        let v: toml::Value = toml::from_str(s)?;
        match serde_json::to_value(v)? {
            serde_json::Value::Object(m) => Ok(m),
            _ => anyhow::bail!("not a table"),
        }
    }

    pub fn merge(base: &mut Table, extra: Table) {
        for (k, v) in extra {
            match (base.get_mut(&k), v) {
                (Some(serde_json::Value::Object(b)), serde_json::Value::Object(e)) => merge(b, e),
                (_, v) => {
                    base.insert(k, v);
                }
            }
        }
    }

    pub fn render(t: &Table) -> String {
        let v: toml::Value = serde_json::from_value(serde_json::Value::Object(t.clone()))
            .unwrap_or(toml::Value::Table(Default::default()));
        toml::to_string(&v).unwrap_or_default()
    }
}

/// Adds `authorization: Bearer <token>` to a request.
pub fn bearer<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// An interceptor that adds `authorization: Bearer <token>` to every call.
pub fn with_token(
    token: &str,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone + use<> {
    let value: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
        format!("Bearer {token}").parse().ok();
    move |mut req: tonic::Request<()>| {
        if let Some(v) = &value {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}
