//! Offers that arrive at once are stored together. A peer sends many
//! messages at a time (one call each); each is checked, sealed and answered
//! on its own, but their writes are gathered here and stored with a handful
//! of multi-row statements in one transaction instead of a handful of
//! statements each. A lone offer is stored at once: nothing waits for
//! company.

use crate::error::{Error, Result};
use crate::store::{NewOffer, ReceiptRecord, Store};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most offers stored in one transaction.
const MAX_BATCH: usize = 256;

struct Job {
    offer: NewOffer,
    done: oneshot::Sender<Result<ReceiptRecord>>,
}

/// Gathers received offers into batched writes.
#[derive(Debug, Clone)]
pub struct Intake {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Intake {
    /// Starts the writer task; it ends when the last `Intake` is dropped.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (jobs, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(run(store, rx));
        Self { jobs }
    }

    /// Stores one offer (with others waiting at the same time); its receipt,
    /// or the receipt stored the first time for a repeat.
    pub async fn receive(&self, offer: NewOffer) -> Result<ReceiptRecord> {
        let (done, rx) = oneshot::channel();
        self.jobs
            .send(Job { offer, done })
            .await
            .map_err(|_| Error::Unavailable("the node is stopping".into()))?;
        rx.await
            .map_err(|_| Error::Internal(anyhow::anyhow!("storing an offer was abandoned")))?
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (offers, done): (Vec<NewOffer>, Vec<_>) =
            jobs.drain(..).map(|j| (j.offer, j.done)).unzip();
        match store.receive_offers(&offers).await {
            Ok(results) => {
                for (d, r) in done.into_iter().zip(results) {
                    let _ = d.send(r);
                }
            }
            Err(e) => {
                // Nothing of the batch was stored: each on its own, so that
                // one offer's failure is not the others'.
                tracing::warn!(error = %e, offers = offers.len(), "storing offers together failed; storing them one by one");
                for (d, o) in done.into_iter().zip(offers) {
                    let r = store
                        .receive_offers(std::slice::from_ref(&o))
                        .await
                        .and_then(|mut r| {
                            r.pop().unwrap_or_else(|| {
                                Err(Error::Internal(anyhow::anyhow!("no outcome for an offer")))
                            })
                        });
                    let _ = d.send(r);
                }
            }
        }
    }
}
