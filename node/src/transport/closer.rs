//! Connections to and from peers, closable by key: when a peering is
//! revoked, every connection authenticated with one of that peer's keys
//! (calls it makes to us, and the connections we keep to it) ends at once,
//! instead of staying open until it idles out (calls on it would be refused
//! one by one, but the channel itself would live on).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The live connections by the other side's key fingerprint: one token per
/// key, dropped with its last connection (so strangers' fresh keys do not
/// grow the map beyond the connections open).
#[derive(Debug, Default)]
pub struct Connections {
    by_key: Mutex<HashMap<String, (CancellationToken, usize)>>,
}

impl Connections {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (CancellationToken, usize)>> {
        self.by_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `io`, authenticated as `fingerprint` (if any), made closable.
    pub fn track<T>(self: &Arc<Self>, fingerprint: Option<String>, io: T) -> Closable<T> {
        let Some(fp) = fingerprint else {
            return Closable::new(io, CancellationToken::new(), None);
        };
        let token = {
            let mut map = self.map();
            let entry = map
                .entry(fp.clone())
                .or_insert_with(|| (CancellationToken::new(), 0));
            entry.1 += 1;
            entry.0.clone()
        };
        Closable::new(
            io,
            token,
            Some(Registration {
                connections: self.clone(),
                fingerprint: fp,
            }),
        )
    }

    /// Ends every open connection authenticated with one of `fingerprints`.
    /// Returns how many there were.
    pub fn close(&self, fingerprints: &[String]) -> usize {
        let mut map = self.map();
        let mut closed = 0;
        for fp in fingerprints {
            if let Some((token, count)) = map.remove(fp) {
                token.cancel();
                closed += count;
            }
        }
        closed
    }

    /// Open connections authenticated with `fingerprint`.
    pub fn open(&self, fingerprint: &str) -> usize {
        self.map().get(fingerprint).map_or(0, |(_, n)| *n)
    }

    fn release(&self, fingerprint: &str, token: &CancellationToken) {
        // A closed key's entry was removed (a newer one is not ours); an
        // entry is only replaced after it was closed.
        if token.is_cancelled() {
            return;
        }
        let mut map = self.map();
        if let Some((_, count)) = map.get_mut(fingerprint) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(fingerprint);
            }
        }
    }
}

#[derive(Debug)]
struct Registration {
    connections: Arc<Connections>,
    fingerprint: String,
}

/// An IO stream that fails every read and write once its token is cancelled
/// (the server or client above it then drops the connection).
pub struct Closable<T> {
    inner: T,
    token: CancellationToken,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    registration: Option<Registration>,
}

impl<T> std::fmt::Debug for Closable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closable")
            .field("closed", &self.token.is_cancelled())
            .finish()
    }
}

impl<T> Closable<T> {
    fn new(inner: T, token: CancellationToken, registration: Option<Registration>) -> Self {
        Self {
            inner,
            closed: Box::pin(token.clone().cancelled_owned()),
            token,
            registration,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Whether the connection was closed; registers the waker otherwise.
    fn closed(&mut self, cx: &mut Context<'_>) -> bool {
        self.token.is_cancelled() || self.closed.as_mut().poll(cx).is_ready()
    }
}

impl<T> Drop for Closable<T> {
    fn drop(&mut self) {
        if let Some(r) = &self.registration {
            r.connections.release(&r.fingerprint, &self.token);
        }
    }
}

/// The name a connection whose client presented no certificate is
/// registered under (its own address: one connection).
pub fn unauthenticated(remote: std::net::SocketAddr) -> String {
    format!("connection:{remote}")
}

/// The federation listener's sessions, each registered under the key its
/// client presented (or, without one, under its address).
pub fn closable_incoming(
    incoming: impl tokio_stream::Stream<Item = io::Result<TlsStream<TcpStream>>>,
    connections: Arc<Connections>,
) -> impl tokio_stream::Stream<Item = io::Result<Closable<TlsStream<TcpStream>>>> {
    use tokio_stream::StreamExt as _;
    incoming.map(move |r| {
        r.map(|tls| {
            let (tcp, session) = tls.get_ref();
            let fingerprint = session
                .peer_certificates()
                .and_then(crate::tls::end_entity_fingerprint)
                .or_else(|| tcp.peer_addr().ok().map(unauthenticated));
            connections.track(fingerprint, tls)
        })
    })
}

fn revoked() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the peering was revoked")
}

use std::future::Future as _;

impl<T: AsyncRead + Unpin> AsyncRead for Closable<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed(cx) {
            return Poll::Ready(Err(revoked()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Closable<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed(cx) {
            return Poll::Ready(Err(revoked()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed(cx) {
            return Poll::Ready(Err(revoked()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Closable<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn closing_a_key_ends_its_connections_only() {
        let c = Arc::new(Connections::default());
        let (a, mut a_far) = tokio::io::duplex(64);
        let (b, mut b_far) = tokio::io::duplex(64);
        let mut a = c.track(Some("key-a".into()), a);
        let mut b = c.track(Some("key-b".into()), b);
        assert_eq!(c.open("key-a"), 1);
        a_far.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        a.read_exact(&mut one).await.unwrap();
        // A read waiting when the key is closed ends with an error.
        let waiting = tokio::spawn(async move {
            let mut one = [0u8; 1];
            a.read(&mut one).await
        });
        assert_eq!(c.close(&["key-a".into()]), 1);
        assert!(waiting.await.unwrap().is_err());
        assert_eq!(c.open("key-a"), 0);
        // The other key's connection is untouched.
        b_far.write_all(b"y").await.unwrap();
        b.read_exact(&mut one).await.unwrap();
        assert!(b.write_all(b"z").await.is_ok());
        drop(b);
        assert_eq!(c.open("key-b"), 0, "released with its last connection");
    }
}
