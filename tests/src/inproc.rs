//! Nodes inside the test's own process, beside the real-process harness
//! (`node`): for service tests that need a node's state and its federation
//! port but not a process of its own, and for tests that move a node's
//! clock instead of sleeping.

use exitnet_node::app::Node;
use exitnet_node::app::{Application, Services};
use exitnet_node::clock::{Clock, ManualClock};
use exitnet_node::config::Config;
use std::collections::HashMap;
use std::sync::Arc;

/// A node running in this process until dropped.
pub struct InProcess {
    pub state: Arc<Node>,
    pub services: Services,
    /// The node's clock: set or advance it to move the node's time.
    pub clock: Arc<ManualClock>,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts organisation `id` (SQLite, dev sign-in, listeners on port 0) in
/// this process, its clock standing at the system's time until moved.
pub async fn spawn_app(id: &str) -> anyhow::Result<InProcess> {
    let dir = tempfile::tempdir()?;
    let env: HashMap<String, String> = [
        (
            "EXITNET_DATA_DIR",
            dir.path().join(id).display().to_string(),
        ),
        ("EXITNET_ORG__ID", id.into()),
        ("EXITNET_ORG__NAME", format!("{id} (in process)")),
        ("EXITNET_ORG__SECTOR", "ngo".into()),
        ("EXITNET_API__LISTEN", "127.0.0.1:0".into()),
        ("EXITNET_FEDERATION__LISTEN", "127.0.0.1:0".into()),
        ("EXITNET_AUTH__MODE", "dev".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = Config::load(None, &env)?;
    let clock = ManualClock::at(exitnet_node::clock::SystemClock.now_ms());
    let app = Application::build_with_clock(config, clock.clone()).await?;
    let state = app.node();
    let services = app.services();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    Ok(InProcess {
        state,
        services,
        clock,
        stop,
        _dir: dir,
    })
}
