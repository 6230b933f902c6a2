//! Builds a node from its configuration and runs it. `build` opens the store,
//! loads the identity and binds every listener (so port 0 is resolved and
//! reported before anything is served); `run_until_stopped` serves until the
//! shutdown future completes, then stops gracefully within a deadline.

use crate::config::Config;
use crate::domain::{OrgId, OrgProfile};
use crate::identity::{Identity, create_private_dir};
mod node;
mod serve;
mod services;

use crate::tls;
use anyhow::{Context, bail};
use exitnet_proto::pb;
pub use node::Node;
pub use services::Services;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};

/// How long in-flight calls may take to finish after a stop signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(4);

pub struct Application {
    node: Arc<Node>,
    services: Services,
    api_listener: TcpListener,
    federation_listener: TcpListener,
    admin_listener: UnixListener,
    api_addr: SocketAddr,
    admin_socket: PathBuf,
    /// Prometheus endpoint, when configured.
    metrics_listener: Option<TcpListener>,
    /// Plaintext gRPC health only, for orchestrators' probes, when configured.
    health_listener: Option<TcpListener>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("org_id", &self.node.org_id)
            .field("api", &self.api_addr)
            .field("federation", &self.node.federation_bound)
            .finish()
    }
}

/// The organisation ID: configured (and kept in the database), or the one
/// the database kept from an earlier start; without either, no start.
async fn resolve_org_id(config: &Config, store: &dyn crate::store::Store) -> anyhow::Result<OrgId> {
    let stored = store.meta_get("org_id").await?;
    let id = match (&config.org.id, stored) {
        (Some(configured), Some(stored)) if configured != &stored => bail!(
            "org.id is {configured} but this database belongs to {stored}; \
             an organisation ID cannot change (peers pin it)"
        ),
        (Some(configured), _) => store.meta_init("org_id", configured).await?,
        (None, Some(stored)) => stored,
        // Never made up: a generated ID would be pinned by peers for good.
        (None, None) => bail!(crate::config::check::missing_org_id()),
    };
    Ok(OrgId::parse("org.id", &id)?)
}

fn profile_from_config(config: &Config, org_id: &OrgId) -> OrgProfile {
    let o = &config.org;
    let mut p = OrgProfile {
        org_id: org_id.clone(),
        name: o.name.clone().unwrap_or_else(|| org_id.to_string()),
        sector: o.sector,
        need_areas: o.need_areas.clone(),
        services: o.services.clone(),
        languages: o.languages.clone(),
        settings: o.settings.clone(),
        accepting_referrals: o.accepting_referrals,
        updated_at_ms: 0,
    };
    p.need_areas.sort();
    p.need_areas.dedup();
    p.services.sort();
    p.services.dedup();
    p.settings.sort();
    p.settings.dedup();
    p.languages.sort();
    p.languages.dedup();
    p
}

impl Application {
    /// A node on the system's clock.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(crate::clock::SystemClock)).await
    }

    /// A node reading the time from `clock` (in-process tests move it
    /// instead of sleeping). The master-key generations keep their own
    /// clock (`dev.clock_offset_secs`).
    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> anyhow::Result<Self> {
        create_private_dir(&config.data_dir)?;
        let store = match crate::store::open(&config.database_url()).await {
            Ok(s) => s,
            Err(e) => return Err(crate::config::check::database_error(&config, e).await),
        };
        let org_id = resolve_org_id(&config, store.as_ref()).await?;
        let data_dir = config.data_dir.clone();
        let id_for_key = org_id.to_string();
        let identity =
            tokio::task::spawn_blocking(move || Identity::load_or_create(&data_dir, &id_for_key))
                .await
                .context("identity task")??;
        let current_key = tls::CurrentKey::new(identity.current().certified_key()?);

        let api_listener = TcpListener::bind(config.api.listen)
            .await
            .with_context(|| format!("binding api.listen {}", config.api.listen))?;
        let federation_listener = TcpListener::bind(config.federation.listen)
            .await
            .with_context(|| format!("binding federation.listen {}", config.federation.listen))?;
        let admin_socket = config.admin_socket();
        let admin_listener = crate::admin::bind_socket(&admin_socket)?;
        let api_addr = api_listener.local_addr()?;
        let federation_bound = federation_listener.local_addr()?;
        let metrics_listener = match config.metrics.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding metrics.listen {addr}"))?,
            ),
            None => None,
        };
        let health_listener = match config.api.health_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding api.health_listen {addr}"))?,
            ),
            None => None,
        };

        let profile = profile_from_config(&config, &org_id);
        let key_clock = crate::clock::for_node(config.dev.clock_offset_secs);
        if config.dev.clock_offset_secs != 0 {
            tracing::warn!(
                offset_secs = config.dev.clock_offset_secs,
                "DEVELOPMENT CLOCK: dev.clock_offset_secs moves the master key generations' clock ahead; never use it with real data"
            );
        }
        let key_dir = config.key_dir();
        let master_key = crate::crypto::MasterKey::load(crate::crypto::KeySources {
            inline: config.master_key.as_ref().map(|s| s.expose()),
            file: config.master_key_file.as_deref(),
            data_dir: &config.data_dir,
            key_dir: &key_dir,
            now_ms: key_clock.now_ms(),
        })?;
        crate::keys::check_opens(store.as_ref(), &master_key).await?;
        let pseudonym_key =
            crate::keys::pseudonym_key(store.as_ref(), &master_key, key_clock.now_ms()).await?;
        let auth = crate::auth::Authenticator::from_config(
            &config.auth,
            org_id.as_str(),
            &config.data_dir,
        )?;
        match &auth {
            crate::auth::Authenticator::Dev(_) => tracing::warn!(
                "DEVELOPMENT SIGN-IN: auth.mode = \"dev\" accepts tokens this node mints itself \
                 (exitnetctl dev-token); never use it with real data"
            ),
            crate::auth::Authenticator::Unconfigured => tracing::warn!(
                "sign-in is not configured (auth.issuer): the client API refuses every call but health and reflection"
            ),
            crate::auth::Authenticator::Oidc(_) => {}
        }
        let limits = Arc::new(crate::limits::Limits::new(&config.limits));
        let store_is_shared = store.backend() == "postgres";
        let intake = crate::store::intake::Intake::start(store.clone());
        // Kept in the data directory: a restarted process is the same
        // instance and takes over the delivery leases its predecessor held
        // at once, instead of waiting for them to expire (other replicas,
        // with data directories of their own, still wait for each other's).
        let instance_id = instance_id(&config.data_dir)?;
        store.release_leases(&instance_id).await?;
        let changes = Arc::new(crate::signals::ChangeFeed::new(
            store.clone(),
            &instance_id,
            store_is_shared,
        ));
        let node = Arc::new(Node {
            config: Arc::new(config),
            store,
            identity: Arc::new(crate::identity::IdentityCell::new(identity)),
            current_key,
            org_id,
            profile: Arc::new(RwLock::new(profile)),
            federation_bound,
            auth: Arc::new(auth),
            master_key: Arc::new(master_key),
            changes,
            outbox: Arc::new(crate::signals::OutboxSignal::default()),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            limits,
            instance_id,
            intake,
            peer_channels: Arc::new(crate::transport::client::Channels::default()),
            clock,
        });
        let services = services::build(&node, &pseudonym_key, key_clock);
        Ok(Self {
            node,
            services,
            api_listener,
            federation_listener,
            admin_listener,
            api_addr,
            admin_socket,
            metrics_listener,
            health_listener,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn federation_addr(&self) -> SocketAddr {
        self.node.federation_bound
    }

    pub fn admin_socket(&self) -> &Path {
        &self.admin_socket
    }

    pub fn node(&self) -> Arc<Node> {
        self.node.clone()
    }

    /// The node's services, for a caller in the same process (the demo,
    /// in-process tests).
    pub fn services(&self) -> Services {
        self.services.clone()
    }

    /// Serves until `shutdown` completes; then stops accepting, lets
    /// in-flight calls finish (up to a deadline) and closes the database.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            node,
            services,
            api_listener,
            federation_listener,
            admin_listener,
            api_addr,
            admin_socket,
            metrics_listener,
            health_listener,
        } = self;
        // History written before its content was sealed is split, once,
        // before anything is served: no call sees (or writes next to) a
        // history half rewritten.
        services.referrals.upgrade().await?;
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let health = tonic_health::server::HealthReporter::new();
        let serving = serve::Serving {
            node: &node,
            services: &services,
            health: health.clone(),
            stop,
        };
        let listeners = [
            ("client API", serving.client_api(api_listener).await?),
            ("federation", serving.federation(federation_listener)?),
            ("admin", serving.admin(admin_listener)),
        ];
        let metrics_addr = serving.metrics(metrics_listener)?;
        let health_addr = serving.health_only(health_listener)?;
        node.changes
            .follow_other_replicas(node.store.as_ref())
            .await?;
        let tasks = serving.tasks();
        // Our receipts and checkpoints must stay verifiable after a rotation.
        services.protocol.remember_own_key().await?;
        services.peering.announce_rotation_if_missing().await?;
        if let Err(e) = services.peering.announce_profile_if_changed().await {
            tracing::warn!(error = %e, "could not queue the profile for peers");
        }

        let listening = node.config.data_dir.join("listening.json");
        let info = serde_json::json!({
            "org_id": node.org_id.as_str(),
            "api": api_addr.to_string(),
            "federation": node.federation_bound.to_string(),
            "admin_socket": admin_socket.display().to_string(),
            "metrics": metrics_addr.map(|a| a.to_string()),
            "health": health_addr.map(|a| a.to_string()),
            "instance_id": node.instance_id,
            "pid": std::process::id(),
        });
        crate::identity::write_private(&listening, info.to_string().as_bytes())?;
        tracing::info!(
            org_id = %node.org_id,
            api = %api_addr,
            federation = %node.federation_bound,
            admin_socket = %admin_socket.display(),
            backend = node.store.backend(),
            "node is serving"
        );

        shutdown.await;
        tracing::info!("stopping: no new calls, finishing in-flight ones");
        health
            .set_not_serving::<pb::node_service_server::NodeServiceServer<crate::api::NodeApi>>()
            .await;
        // The overall status too, so probes see the stop before the listener closes.
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let _ = stop_tx.send(true);
        let drain = async {
            for (name, task) in listeners {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(listener = name, error = %e, "listener ended with an error")
                    }
                    Err(e) => tracing::warn!(listener = name, error = %e, "listener task failed"),
                }
            }
            // After the listeners: refusals counted up to the end are written.
            for task in tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_err() {
            tracing::warn!("in-flight calls did not finish in time; stopping anyway");
        }
        // Another replica may deliver at once, without waiting for expiry.
        if let Err(e) = node.store.release_leases(&node.instance_id).await {
            tracing::warn!(error = %e, "releasing delivery leases failed");
        }
        node.store.close().await;
        let _ = std::fs::remove_file(&listening);
        let _ = std::fs::remove_file(&admin_socket);
        tracing::info!("stopped");
        Ok(())
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: called before the node
/// binds its sockets, a signal that arrives while it is still starting stops
/// it gracefully instead of killing it (the default action) with its admin
/// socket left behind.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async fn recv(s: Option<Signal>) {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    async move {
        tokio::select! {
            _ = recv(term) => {}
            _ = recv(int) => {}
        }
    }
}

/// This process's instance ID: made once per data directory and kept.
fn instance_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}
