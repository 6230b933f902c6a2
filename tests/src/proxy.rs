//! A fault-injecting TCP proxy for multi-node tests: put it between two
//! nodes (the receiver advertises the proxy's address) and switch faults at
//! any time. A switch to a failing mode cuts the connections already open,
//! as a real partition would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Forward everything, each chunk delayed by this long.
    Latency(Duration),
    /// Accept, then close at once (a dropped connection).
    Refuse,
    /// Accept, then reset (RST).
    Reset,
    /// Accept and never answer, never close.
    BlackHole,
    /// Forward this many bytes per connection, then cut it mid-stream.
    CutAfter(usize),
}

impl Fault {
    fn forwards(self) -> bool {
        matches!(self, Fault::Pass | Fault::Latency(_) | Fault::CutAfter(_))
    }
}

#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    fault: watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.fault.send(Fault::Refuse);
    }
}

impl FaultProxy {
    /// Listens on a free loopback port; forwards once a target is set.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (fault, _) = watch::channel(Fault::Pass);
        let (t, f) = (target.clone(), fault.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let target = t.lock().ok().and_then(|g| *g);
                tokio::spawn(handle(inbound, target, f.subscribe()));
            }
        });
        Ok(Self {
            addr,
            target,
            fault,
            task,
        })
    }

    pub fn set_target(&self, to: &str) -> anyhow::Result<()> {
        let to: SocketAddr = to.parse()?;
        if let Ok(mut t) = self.target.lock() {
            *t = Some(to);
        }
        Ok(())
    }

    /// Switches the fault; failing modes also cut open connections.
    pub fn set(&self, fault: Fault) {
        let _ = self.fault.send_replace(fault);
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

async fn handle(inbound: TcpStream, target: Option<SocketAddr>, mut fault: watch::Receiver<Fault>) {
    let mode = *fault.borrow_and_update();
    match mode {
        Fault::Refuse => drop(inbound),
        Fault::Reset => {
            let _ = inbound.set_zero_linger();
            drop(inbound);
        }
        Fault::BlackHole => {
            // Hold the connection, unread, until the fault changes.
            let _ = fault.changed().await;
            drop(inbound);
        }
        Fault::Pass | Fault::Latency(_) | Fault::CutAfter(_) => {
            let Some(target) = target else { return };
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let budget = Arc::new(std::sync::atomic::AtomicUsize::new(match mode {
                Fault::CutAfter(n) => n,
                _ => usize::MAX,
            }));
            let delay = match mode {
                Fault::Latency(d) => d,
                _ => Duration::ZERO,
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            let pumps = async {
                tokio::select! {
                    _ = pump(ri, wo, delay, budget.clone()) => {}
                    _ = pump(ro, wi, delay, budget.clone()) => {}
                }
            };
            // A switch to a failing mode is a partition: cut this connection.
            let partition = async {
                loop {
                    if fault.changed().await.is_err() || !fault.borrow().forwards() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = pumps => {}
                _ = partition => {}
            }
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    budget: Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let left = budget.load(Ordering::SeqCst);
        let n = n.min(left);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if left != usize::MAX {
            budget.fetch_sub(n, Ordering::SeqCst);
            if n == left {
                // The budget is spent: cut mid-stream.
                return;
            }
        }
    }
}
