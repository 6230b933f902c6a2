//! The demo's last step: each node signs a checkpoint of its audit trail,
//! waits for its peers to countersign it, and verifies the trail against
//! what they hold, as `exitnetctl audit verify` does.

use crate::{Org, wait_for};
use anyhow::bail;

pub async fn checkpoint_and_verify(org: &Org) -> anyhow::Result<()> {
    let state = &org.state;
    let peers: Vec<String> = state
        .store
        .list_peers()
        .await?
        .into_iter()
        .filter(|p| p.exchange_allowed())
        .map(|p| p.org_id.to_string())
        .collect();
    let created = org.services.witness.create().await?;
    wait_for("the peers to countersign the audit checkpoint", || async {
        let held = state.store.witnesses().await?;
        Ok(peers
            .iter()
            .all(|peer| {
                held.iter()
                    .any(|w| w.witness_org == *peer && w.seq >= created.seq)
            })
            .then_some(()))
    })
    .await?;
    let report = org.services.witness.verify(false).await?;
    println!(
        "  {}: {} records, each chained to the one before; {} signed, countersigned {}",
        org.label,
        report.records,
        count(report.checkpoints, "checkpoint"),
        count(report.witnesses, "time")
    );
    let copies: Vec<String> = report
        .peers
        .iter()
        .map(|p| match &p.error {
            None => format!(
                "{} holds {} and {} match",
                p.org_id,
                p.held,
                if p.agreeing == p.held {
                    "all".to_owned()
                } else {
                    p.agreeing.to_string()
                }
            ),
            Some(e) => format!("{} could not be asked ({e})", p.org_id),
        })
        .collect();
    println!("    copies at its peers: {}", copies.join("; "));
    if let Some(first) = report.failures.first() {
        bail!(
            "the audit trail of {} does not verify: record {}: {}",
            org.label,
            first.seq,
            first.reason
        );
    }
    println!("    audit verify: the trail verifies");
    Ok(())
}

fn count(n: u32, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
