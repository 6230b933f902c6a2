//! Calls to a peer: mutual TLS presenting one of our keys, accepting only
//! the peer's pinned keys, with TCP_NODELAY and deadlines.

use crate::identity::NodeKey;
use anyhow::Context;
use exitnet_proto::pb::federation_service_client::FederationServiceClient;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The name sent in SNI. Nodes are identified by key, not by name.
const PEER_SERVER_NAME: &str = "peer.exitnet.invalid";

pub async fn connect(
    endpoint: &str,
    ours: Option<&NodeKey>,
    pinned: Vec<String>,
    timeout: Duration,
) -> anyhow::Result<FederationServiceClient<Channel>> {
    Ok(
        FederationServiceClient::new(channel(endpoint, ours, pinned, timeout).await?)
            .max_decoding_message_size(crate::transport::MAX_MESSAGE_BYTES),
    )
}

/// The sender's connections to peers, kept between delivery rounds: a round
/// would otherwise open a new mutual-TLS connection (a handshake and its
/// round trips) before its first message. One is reused only for the same
/// endpoint, the same key of ours and the same pinned keys of the peer; a
/// change of any of them (a rotation, a new endpoint) opens a new one.
#[derive(Debug, Default)]
pub struct Channels {
    kept: std::sync::Mutex<std::collections::HashMap<String, Kept>>,
    /// Connections to and from peers by key, closed when a peering is revoked.
    pub connections: Arc<crate::transport::closer::Connections>,
    /// Peers that do not know `NotifyBatch`.
    unbatched: std::sync::Mutex<std::collections::HashSet<String>>,
}

#[derive(Debug)]
struct Kept {
    endpoint: String,
    ours: Option<String>,
    pinned: Vec<String>,
    client: FederationServiceClient<Channel>,
}

impl Channels {
    fn kept(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Kept>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client for the peer `org`: the kept connection if it still fits,
    /// else a new one (kept for next time).
    pub async fn connect(
        &self,
        org: &str,
        endpoint: &str,
        ours: Option<&NodeKey>,
        pinned: Vec<String>,
        timeout: Duration,
    ) -> anyhow::Result<FederationServiceClient<Channel>> {
        let ours_fp = ours.map(|k| k.fingerprint().to_owned());
        if let Some(k) = self.kept().get(org)
            && k.endpoint == endpoint
            && k.ours == ours_fp
            && k.pinned == pinned
        {
            return Ok(k.client.clone());
        }
        let client = FederationServiceClient::new(
            channel_with(
                endpoint,
                ours,
                pinned.clone(),
                timeout,
                Some(self.connections.clone()),
            )
            .await?,
        )
        .max_decoding_message_size(crate::transport::MAX_MESSAGE_BYTES);
        self.kept().insert(
            org.to_owned(),
            Kept {
                endpoint: endpoint.to_owned(),
                ours: ours_fp,
                pinned,
                client: client.clone(),
            },
        );
        self.unbatched().remove(org);
        Ok(client)
    }

    fn unbatched(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.unbatched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `NotifyBatch` may be tried with the peer `org`.
    pub fn batches(&self, org: &str) -> bool {
        !self.unbatched().contains(org)
    }

    /// The peer answered `NotifyBatch` with UNIMPLEMENTED (an older node):
    /// one `Notify` per message until a new connection is opened (it may
    /// have been upgraded by then).
    pub fn no_batches(&self, org: &str) {
        self.unbatched().insert(org.to_owned());
    }

    /// Drops the kept connection (the peer did not answer through it).
    pub fn forget(&self, org: &str) {
        self.kept().remove(org);
    }

    /// The peering with `org` was revoked: the kept connection is dropped
    /// and every connection to or from one of its keys (`fingerprints`) ends
    /// now. Returns how many were open.
    pub fn close_peer(&self, org: &str, fingerprints: &[String]) -> usize {
        self.forget(org);
        self.connections.close(fingerprints)
    }
}

/// A channel to a peer's federation listener (mutual TLS, pinned keys).
pub async fn channel(
    endpoint: &str,
    ours: Option<&NodeKey>,
    pinned: Vec<String>,
    timeout: Duration,
) -> anyhow::Result<Channel> {
    channel_with(endpoint, ours, pinned, timeout, None).await
}

/// As `channel`; with `connections`, each connection is registered under
/// the peer's key, so that a revoke closes it.
async fn channel_with(
    endpoint: &str,
    ours: Option<&NodeKey>,
    pinned: Vec<String>,
    timeout: Duration,
    connections: Option<Arc<crate::transport::closer::Connections>>,
) -> anyhow::Result<Channel> {
    crate::domain::endpoint_check("endpoint", endpoint)?;
    let tls = Arc::new(crate::tls::peer_client_config(ours, pinned)?);
    let connector = tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        let connections = connections.clone();
        async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(7710);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(PEER_SERVER_NAME)
                .map_err(std::io::Error::other)?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            let connections = connections.unwrap_or_default();
            let fingerprint = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(crate::tls::end_entity_fingerprint);
            Ok::<_, std::io::Error>(TokioIo::new(connections.track(fingerprint, stream)))
        }
    });
    let channel = Endpoint::from_shared(format!("http://{endpoint}"))
        .context("peer endpoint")?
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect_with_connector(connector)
        .await
        .with_context(|| format!("connecting to peer at {endpoint}"))?;
    Ok(channel)
}
