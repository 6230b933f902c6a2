//! Mutual TLS without a certificate authority. Nodes present self-signed
//! certificates; what counts is the key, pinned by its SHA-256 SPKI
//! fingerprint. The TLS layer checks that each side holds the private key of
//! the certificate it shows (the handshake signature); whether that key
//! belongs to an approved peer is decided per call, against the database, so
//! a refusal can carry a gRPC status and be recorded.

use crate::identity::{fingerprint_spki, spki_from_cert};
use anyhow::Context;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// The SPKI fingerprint of the end-entity certificate a peer presented.
pub fn end_entity_fingerprint(certs: &[CertificateDer<'_>]) -> Option<String> {
    let first = certs.first()?;
    spki_from_cert(first)
        .ok()
        .map(|spki| fingerprint_spki(&spki))
}

// === impl AnyKeyClientVerifier ===

/// Accepts any well-formed client certificate whose key signs the handshake;
/// the key is checked against pinned peers per call. A missing certificate
/// is allowed here so that the call can be refused with UNAUTHENTICATED.
#[derive(Debug)]
struct AnyKeyClientVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyKeyClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        spki_from_cert(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

// === impl PinnedServerVerifier ===

/// Accepts a server only if its key is one of the pinned fingerprints.
#[derive(Debug)]
struct PinnedServerVerifier {
    pinned: Vec<String>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let spki = spki_from_cert(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let fp = fingerprint_spki(&spki);
        if self.pinned.iter().any(|p| p == &fp) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

// === impl CurrentKey ===

/// The certificate the federation listener presents; swapped on rotation.
#[derive(Debug)]
pub struct CurrentKey(RwLock<Arc<CertifiedKey>>);

impl CurrentKey {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Self(RwLock::new(key)))
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut guard) = self.0.write() {
            *guard = key;
        }
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|g| g.clone())
    }
}

impl ResolvesServerCert for CurrentKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

/// TLS for the federation listener: our current key, any client key (checked per call).
pub fn federation_server_config(current: Arc<CurrentKey>) -> anyhow::Result<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(AnyKeyClientVerifier { algs: algorithms() }))
        .with_cert_resolver(current);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// TLS for calls to a peer: present `ours`, accept only the pinned keys.
/// Without a key of ours (only probes and tests do that) no certificate is sent.
pub fn peer_client_config(
    ours: Option<&crate::identity::NodeKey>,
    pinned: Vec<String>,
) -> anyhow::Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier {
            pinned,
            algs: algorithms(),
        }));
    let mut cfg = match ours {
        Some(k) => builder.with_client_auth_cert(vec![k.cert_der()], k.private_key_der())?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// TLS for the client API from configured PEM files; with a client CA,
/// agency systems must present a certificate it issued.
pub fn api_server_config(
    tls: &crate::config::ApiTlsConfig,
) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .with_context(|| format!("api.tls.cert_file {}", tls.cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("api.tls.cert_file {}", tls.cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .with_context(|| format!("api.tls.key_file {}", tls.key_file.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let mut cfg = match &tls.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("api.tls.client_ca_file {}", ca.display()))?
            {
                roots
                    .add(c.with_context(|| format!("api.tls.client_ca_file {}", ca.display()))?)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)?
        }
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Whether a connection from an address may start its TLS handshake.
pub type ConnectionGate = Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>;

/// Accepts TCP connections with TCP_NODELAY and completes TLS handshakes
/// concurrently, each under a deadline, so a slow or silent client cannot
/// hold up others. Yields only established sessions. A connection `gate`
/// refuses is closed before its handshake, the costliest part of a
/// connection for us (an address flooding past its limits then costs an
/// accept and a close).
pub fn tls_incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
    handshake_timeout: Duration,
    gate: Option<ConnectionGate>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            if gate.as_ref().is_some_and(|admit| !admit(remote.ip())) {
                drop(tcp);
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
