//! A typed client for a node's admin socket.

use anyhow::Context;
use exitnet_proto::pb::admin_service_client::AdminServiceClient;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub type AdminClient = AdminServiceClient<Channel>;

/// Connects to the admin socket at `path`.
pub async fn connect(path: &Path) -> anyhow::Result<AdminClient> {
    let path: PathBuf = path.to_owned();
    if !path.exists() {
        anyhow::bail!(
            "no admin socket at {} (is the node running? set --socket or EXITNET_ADMIN_SOCKET)",
            path.display()
        );
    }
    let shown = path.display().to_string();
    // The URI is a placeholder: the connector always dials the socket.
    let channel = Endpoint::from_static("http://exitnet.admin")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("connecting to the admin socket {shown}"))?;
    Ok(AdminServiceClient::new(channel))
}
