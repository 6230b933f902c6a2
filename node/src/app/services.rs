//! The composition root: every service built once, from the node's parts,
//! each given exactly what it uses. Nothing below `app` imports this; the
//! adapters and background tasks are handed the services they call.

use super::node::Node;
use crate::clock::Clock;
use std::sync::Arc;
use std::time::Duration;

/// The services a running node is made of.
#[derive(Clone)]
pub struct Services {
    pub sign_in: crate::api::SignIn,
    pub directory: crate::directory::Directory,
    pub audit: crate::audit::Audit,
    pub protocol: crate::protocol::Protocol,
    pub refusals: crate::security::Refusals,
    pub quotas: crate::security::Quotas,
    pub referrals: crate::referrals::Referrals,
    pub consents: crate::consents::Consents,
    pub peering: crate::peering::Peering,
    pub witness: crate::witness::Witness,
    pub subject_access: crate::subject_access::SubjectAccess,
    pub master_keys: crate::keys::MasterKeys,
    pub delivery: crate::delivery::Delivery,
}

/// Builds the services of `n`. `pseudonym_key` names clients to peers;
/// `key_clock` is the master key generations' own clock.
pub(super) fn build(n: &Node, pseudonym_key: &[u8], key_clock: Arc<dyn Clock>) -> Services {
    let audit = crate::audit::Audit::new(n.store.clone(), n.clock.clone());
    let protocol = crate::protocol::Protocol::new(
        n.org_id.clone(),
        n.identity.clone(),
        n.master_key.clone(),
        n.store.clone(),
        n.clock.clone(),
        Duration::from_millis(n.config.federation.call_timeout_ms),
    );
    let refusals = crate::security::Refusals::new(n.limits.clone(), n.store.clone());
    let quotas = crate::security::Quotas::new(
        &n.config.limits,
        n.limits.clone(),
        n.store.clone(),
        refusals.clone(),
        n.metrics.clone(),
        n.clock.clone(),
    );
    let referrals = crate::referrals::Referrals::new(crate::referrals::ReferralParts {
        org_id: n.org_id.clone(),
        config: n.config.clone(),
        store: n.store.clone(),
        intake: n.intake.clone(),
        clock: n.clock.clone(),
        master_key: n.master_key.clone(),
        pseudonyms: crate::referrals::Pseudonyms::new(pseudonym_key),
        audit: audit.clone(),
        protocol: protocol.clone(),
        changes: n.changes.clone(),
        outbox: n.outbox.clone(),
        metrics: n.metrics.clone(),
        quotas: quotas.clone(),
    });
    let consents = crate::consents::Consents::new(
        n.store.clone(),
        n.clock.clone(),
        audit.clone(),
        referrals.clone(),
    );
    let peering = crate::peering::Peering::new(crate::peering::PeeringParts {
        org_id: n.org_id.clone(),
        config: n.config.clone(),
        store: n.store.clone(),
        clock: n.clock.clone(),
        identity: n.identity.clone(),
        current_key: n.current_key.clone(),
        profile: n.profile.clone(),
        advertised: n.advertised_endpoint(),
        outbox: n.outbox.clone(),
        peer_channels: n.peer_channels.clone(),
        protocol: protocol.clone(),
        refusals: refusals.clone(),
        audit: audit.clone(),
    });
    let witness = crate::witness::Witness::new(crate::witness::WitnessParts {
        org_id: n.org_id.clone(),
        config: n.config.clone(),
        store: n.store.clone(),
        clock: n.clock.clone(),
        outbox: n.outbox.clone(),
        audit: audit.clone(),
        protocol: protocol.clone(),
        quotas: quotas.clone(),
        refusals: refusals.clone(),
    });
    let delivery = crate::delivery::Delivery::new(crate::delivery::DeliveryParts {
        config: n.config.clone(),
        store: n.store.clone(),
        clock: n.clock.clone(),
        identity: n.identity.clone(),
        instance_id: n.instance_id.clone(),
        metrics: n.metrics.clone(),
        outbox: n.outbox.clone(),
        peer_channels: n.peer_channels.clone(),
        protocol: protocol.clone(),
    });
    Services {
        sign_in: crate::api::SignIn::new(
            n.auth.clone(),
            n.config.auth.clone(),
            n.limits.clone(),
            n.metrics.clone(),
            refusals.clone(),
            n.clock.clone(),
        ),
        directory: crate::directory::Directory::new(
            n.profile.clone(),
            n.identity.clone(),
            n.store.clone(),
        ),
        subject_access: crate::subject_access::SubjectAccess::new(
            n.org_id.clone(),
            n.store.clone(),
            n.clock.clone(),
            referrals.clone(),
        ),
        master_keys: crate::keys::MasterKeys::new(
            n.org_id.clone(),
            &n.config.keys,
            n.store.clone(),
            n.master_key.clone(),
            audit.clone(),
            n.clock.clone(),
            key_clock,
        ),
        audit,
        protocol,
        refusals,
        quotas,
        referrals,
        consents,
        peering,
        witness,
        delivery,
    }
}
