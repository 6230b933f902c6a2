//! What parts of a node tell each other, with no content: which referrals
//! changed (for watchers here and in the other replicas of the node), and
//! that notices are waiting to be sent. Values of their own, so that a part
//! holds the one it uses and nothing else of the node.

use crate::domain::OrgId;
use crate::store::Store;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, broadcast, mpsc};

/// Largest notification payload: PostgreSQL's limit is 8,000 bytes.
const MAX_CHANGE_PAYLOAD: usize = 7_900;

/// Referral IDs that changed, for `WatchReferrals`.
#[derive(Debug)]
pub struct ChangeFeed {
    local: broadcast::Sender<String>,
    /// Other processes may share the database (PostgreSQL): the referrals
    /// that changed go to them (see `publisher`), so that their watchers
    /// see them too.
    out: Option<mpsc::UnboundedSender<String>>,
    /// This process, among replicas of one node.
    instance_id: String,
}

impl ChangeFeed {
    /// A feed for this process; with `shared` (a database other replicas
    /// use) the changes are published to them through `store`.
    pub fn new(store: Arc<dyn Store>, instance_id: &str, shared: bool) -> Self {
        ChangeFeed {
            local: broadcast::channel(1024).0,
            out: shared.then(|| publisher(store, instance_id.to_owned())),
            instance_id: instance_id.to_owned(),
        }
    }

    /// Tells watchers that a referral changed (no content, just the ID).
    pub fn changed(&self, referral_id: &str) {
        let _ = self.local.send(referral_id.to_owned());
        if let Some(out) = &self.out {
            let _ = out.send(referral_id.to_owned());
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.local.subscribe()
    }

    /// Passes changes other replicas published to this process's watchers.
    pub async fn follow_other_replicas(&self, store: &dyn Store) -> anyhow::Result<()> {
        let Some(mut rx) = store.subscribe_changes().await? else {
            return Ok(());
        };
        let local = self.local.clone();
        let me = self.instance_id.clone();
        tokio::spawn(async move {
            while let Some(payload) = rx.recv().await {
                if let Some((from, ids)) = payload.split_once(':')
                    && from != me
                {
                    for id in ids.split(',') {
                        let _ = local.send(id.to_owned());
                    }
                }
            }
        });
        Ok(())
    }
}

/// Tells the other replicas which referrals changed, gathered: one
/// notification per gathering, not one per referral (on PostgreSQL each
/// notification's commit takes one lock for the whole database, and 64
/// referrals received at once queued on it for seconds).
fn publisher(store: Arc<dyn Store>, instance_id: String) -> mpsc::UnboundedSender<String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut ids = Vec::new();
        while rx.recv_many(&mut ids, 1024).await > 0 {
            for payload in change_payloads(&instance_id, &ids) {
                if let Err(e) = store.publish_change(&payload).await {
                    tracing::warn!(error = %e, "telling other replicas of a change failed");
                }
            }
            ids.clear();
        }
    });
    tx
}

/// `instance:id,id,…`, as few as fit under the limit.
fn change_payloads(instance_id: &str, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for id in ids {
        if !cur.is_empty() && cur.len() + 1 + id.len() > MAX_CHANGE_PAYLOAD {
            out.push(std::mem::take(&mut cur));
        }
        if cur.is_empty() {
            cur = format!("{instance_id}:{id}");
        } else {
            cur.push(',');
            cur.push_str(id);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Wakes the notice sender when something was queued.
#[derive(Debug, Default)]
pub struct OutboxSignal {
    wake: Notify,
    /// Peers something was queued for since the sender last looked (see
    /// `queued_for`); a wake without any makes the sender look everywhere.
    queued: Mutex<HashSet<OrgId>>,
}

impl OutboxSignal {
    /// Something was queued (or a delivery task ended): the sender looks.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Wakes the sender for a notice just queued for `org`. Cheaper than a
    /// bare wake: while a delivery task for `org` runs, the sender need not
    /// look for due notices (the task's next round takes it).
    pub fn queued_for(&self, org: &OrgId) {
        if let Ok(mut q) = self.queued.lock() {
            q.insert(org.clone());
        }
        self.wake.notify_one();
    }

    /// Until the sender is woken.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The peers something was queued for since the last look.
    pub fn take_queued(&self) -> Vec<OrgId> {
        self.queued
            .lock()
            .map(|mut q| q.drain().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_go_out_gathered_and_under_the_limit() {
        let ids: Vec<String> = (0..1000)
            .map(|i| format!("0190b3c4-5d6e-7f80-9a1b-{i:012}"))
            .collect();
        let payloads = change_payloads("instance-1", &ids);
        assert!(
            payloads.len() > 1 && payloads.len() < 10,
            "{}",
            payloads.len()
        );
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() <= MAX_CHANGE_PAYLOAD);
            let (from, list) = p.split_once(':').unwrap();
            assert_eq!(from, "instance-1");
            back.extend(list.split(',').map(str::to_owned));
        }
        assert_eq!(back, ids);
        assert_eq!(
            change_payloads("i", &["a".to_owned()]),
            vec!["i:a".to_owned()]
        );
        assert!(change_payloads("i", &[]).is_empty());
    }
}
