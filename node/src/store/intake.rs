//! Writes that arrive at once are stored together: offers from a peer (which
//! sends many messages at a time, one call each) and referrals that case
//! managers create at the same time. Each is checked, sealed and signed on
//! its own, but their writes are gathered here and stored with a handful of
//! multi-row statements in one transaction instead of a handful of
//! statements each. A lone write is stored at once: nothing waits for
//! company.

use crate::error::{Error, Result};
use crate::store::{NewCreate, NewOffer, ReceiptRecord, ReferralRecord, Store};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most writes stored in one transaction.
const MAX_BATCH: usize = 256;

/// Stores a batch; one outcome per item, or an error for the whole batch
/// (then nothing of it was stored).
type StoreMany<I, O> =
    fn(Arc<dyn Store>, Arc<Vec<I>>) -> BoxFuture<'static, Result<Vec<Result<O>>>>;

struct Job<I, O> {
    item: I,
    done: oneshot::Sender<Result<O>>,
}

/// One kind of write, gathered by a task of its own.
struct Gather<I, O> {
    jobs: mpsc::Sender<Job<I, O>>,
}

impl<I, O> Clone for Gather<I, O> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<I: Clone + Send + Sync + 'static, O: Send + 'static> Gather<I, O> {
    fn start(store: Arc<dyn Store>, store_many: StoreMany<I, O>) -> Self {
        let (jobs, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(run(store, rx, store_many));
        Self { jobs }
    }

    async fn submit(&self, item: I) -> Result<O> {
        let (done, rx) = oneshot::channel();
        self.jobs
            .send(Job { item, done })
            .await
            .map_err(|_| Error::Unavailable("the node is stopping".into()))?;
        rx.await
            .map_err(|_| Error::Internal(anyhow::anyhow!("storing was abandoned")))?
    }
}

/// Gathers received offers and created referrals into batched writes.
#[derive(Clone)]
pub struct Intake {
    offers: Gather<NewOffer, ReceiptRecord>,
    creates: Gather<NewCreate, ReferralRecord>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Intake")
    }
}

impl Intake {
    /// Starts the writer tasks; they end when the last `Intake` is dropped.
    pub fn start(store: Arc<dyn Store>) -> Self {
        Self {
            offers: Gather::start(store.clone(), |s, items| {
                Box::pin(async move { s.receive_offers(&items).await })
            }),
            creates: Gather::start(store, |s, items| {
                Box::pin(async move { s.create_referrals(&items).await })
            }),
        }
    }

    /// Stores one offer (with others waiting at the same time); its receipt,
    /// or the receipt stored the first time for a repeat.
    pub async fn receive(&self, offer: NewOffer) -> Result<ReceiptRecord> {
        self.offers.submit(offer).await
    }

    /// Stores one new referral (with others created at the same time); the
    /// stored referral, the one made the first time for a repeated request.
    pub async fn create(&self, new: NewCreate) -> Result<ReferralRecord> {
        self.creates.submit(new).await
    }
}

async fn run<I: Clone + Send + Sync + 'static, O: Send + 'static>(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Job<I, O>>,
    store_many: StoreMany<I, O>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (items, done): (Vec<I>, Vec<_>) = jobs.drain(..).map(|j| (j.item, j.done)).unzip();
        let items = Arc::new(items);
        match store_many(store.clone(), items.clone()).await {
            Ok(results) => {
                for (d, r) in done.into_iter().zip(results) {
                    let _ = d.send(r);
                }
            }
            Err(e) => {
                // Nothing of the batch was stored: each on its own, so that
                // one item's failure is not the others'.
                tracing::warn!(error = %e, items = items.len(), "storing writes together failed; storing them one by one");
                for (d, item) in done.into_iter().zip(items.iter()) {
                    let r = store_many(store.clone(), Arc::new(vec![item.clone()]))
                        .await
                        .and_then(|mut r| {
                            r.pop().unwrap_or_else(|| {
                                Err(Error::Internal(anyhow::anyhow!("no outcome for a write")))
                            })
                        });
                    let _ = d.send(r);
                }
            }
        }
    }
}
