//! Playing a peer or a stranger on the federation port: the signed offers a
//! peer sends, and a stranger's flood. Shared by the integration tests and
//! the benchmark.

use exitnet_node::identity::{NodeKey, context};
use exitnet_proto::pb;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

type Federation = pb::federation_service_client::FederationServiceClient<Channel>;

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A valid offer from `sender` to `recipient` (terms for a year), as a
/// flooding or a measured peer builds it.
pub fn offer(sender: &str, recipient: &str) -> pb::FederationMessage {
    let now = now_secs();
    let ts = |seconds| exitnet_proto::Timestamp { seconds, nanos: 0 };
    let terms = pb::ConsentTerms {
        recipients: vec![recipient.into()],
        purposes: vec![pb::Purpose::ExitSupport as i32],
        data_categories: vec![pb::DataCategory::NeedsNarrative as i32],
        need_areas: vec![pb::NeedArea::FunctionalReintegration as i32],
        legal_basis: Some(pb::LegalBasis {
            kind: pb::LegalBasisKind::Consent as i32,
            statute: String::new(),
        }),
        valid_from: Some(ts(now - 10)),
        valid_until: Some(ts(now + 365 * 86_400)),
        ..Default::default()
    };
    pb::FederationMessage {
        message_id: uuid::Uuid::now_v7().to_string(),
        sender_org: sender.into(),
        recipient_org: recipient.into(),
        sent_at: Some(ts(now)),
        body: Some(pb::federation_message::Body::Offer(pb::ReferralOffer {
            referral_id: uuid::Uuid::new_v4().to_string(),
            subject_pseudonym: "0123456789abcdef0123456789abcdef".into(),
            need_areas: vec![pb::NeedArea::FunctionalReintegration as i32],
            services: vec![],
            urgency: pb::Urgency::Routine as i32,
            summary: Some(pb::CaseSummary {
                needs_narrative: "flood".into(),
                ..Default::default()
            }),
            terms: Some(terms),
            consent_ref: "ref".into(),
        })),
    }
}

/// Sends a new offer from `sender` (signed with `key`) to `recipient` over
/// `peer` and returns how long its receipt took: the whole intake (checks,
/// sealing, a signed receipt, a durable write).
pub async fn timed_offer(
    peer: &Federation,
    key: &NodeKey,
    sender: &str,
    recipient: &str,
) -> anyhow::Result<Duration> {
    let msg = offer(sender, recipient);
    let payload = prost::Message::encode_to_vec(&msg);
    let signature = key.sign_in(context::MESSAGE, &payload)?;
    let started = std::time::Instant::now();
    peer.clone()
        .notify(pb::NotifyRequest {
            notice_id: msg.message_id.clone(),
            notice: Some(pb::notify_request::Notice::Message(pb::SignedMessage {
                payload,
                signature,
                batch: None,
            })),
        })
        .await?;
    Ok(started.elapsed())
}

/// What a stranger's flood got back.
#[derive(Debug, Default)]
pub struct FloodAnswers {
    pub unauthenticated: u64,
    pub limited: u64,
    /// Calls that ended with their connection: closed by the node, or no
    /// new one let through to its handshake.
    pub cut_off: u64,
    pub other: Vec<Code>,
}

/// The address a stranger floods from: an attacker's own machine, not the
/// peers' (all of loopback's 127/8 is local on Linux).
pub const STRANGER_ADDRESS: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// A channel to the federation port at `addr` (key `pinned`) presenting
/// `key`, its connections made from `local`; reconnecting whenever the
/// node closes one, as an attacker's client would.
async fn channel_from(
    local: std::net::IpAddr,
    addr: &str,
    key: &NodeKey,
    pinned: String,
) -> anyhow::Result<Channel> {
    let tls = std::sync::Arc::new(exitnet_node::tls::peer_client_config(
        Some(key),
        vec![pinned],
    )?);
    let target: std::net::SocketAddr = addr.parse()?;
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let tls = tls.clone();
        async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind((local, 0).into())?;
            let tcp = socket.connect(target).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from("peer.exitnet.invalid")
                .map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .timeout(Duration::from_secs(30))
            .connect_with_connector_lazy(connector),
    )
}

/// A stranger's flood of the node at `addr` (key `pinned`): `calls` calls
/// of `Notify` with a fresh key, `concurrency` at a time, from
/// [`STRANGER_ADDRESS`], each counted in `done` as it returns. It runs
/// only while `go` holds true (paused otherwise), so load can alternate
/// with quiet; it ends early once `go` is closed while false.
pub async fn strangers_flood(
    addr: String,
    pinned: String,
    calls: usize,
    concurrency: usize,
    go: tokio::sync::watch::Receiver<bool>,
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<FloodAnswers> {
    let stranger = NodeKey::generate("stranger")?;
    let client = Federation::new(channel_from(STRANGER_ADDRESS, &addr, &stranger, pinned).await?);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let (mut client, mut go, done) = (client.clone(), go.clone(), done.clone());
        let mine = calls / concurrency + usize::from(t < calls % concurrency);
        tasks.spawn(async move {
            let mut answers = FloodAnswers::default();
            for _ in 0..mine {
                if go.wait_for(|go| *go).await.is_err() {
                    break;
                }
                let answer = client
                    .notify(pb::NotifyRequest {
                        notice_id: uuid::Uuid::new_v4().to_string(),
                        notice: Some(pb::notify_request::Notice::State(
                            pb::PeerState::Active as i32,
                        )),
                    })
                    .await;
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match answer.map_err(|e| e.code()) {
                    Err(Code::Unauthenticated) => answers.unauthenticated += 1,
                    Err(Code::ResourceExhausted) => answers.limited += 1,
                    Err(Code::Unavailable | Code::Unknown | Code::Cancelled) => {
                        answers.cut_off += 1;
                    }
                    Err(c) => answers.other.push(c),
                    Ok(_) => answers.other.push(Code::Ok),
                }
            }
            answers
        });
    }
    let mut all = FloodAnswers::default();
    while let Some(r) = tasks.join_next().await {
        let r = r?;
        all.unauthenticated += r.unauthenticated;
        all.limited += r.limited;
        all.cut_off += r.cut_off;
        all.other.extend(r.other);
    }
    Ok(all)
}

/// Puts the calling thread under SCHED_IDLE, the lowest CPU priority: an
/// attacker's own work runs on its machines, not ours, and on a small
/// machine a flooding client would take the cores the node needs. (By
/// util-linux's chrt: the workspace forbids unsafe code.)
pub fn lowest_cpu_priority() -> anyhow::Result<()> {
    let this = std::fs::read_link("/proc/thread-self")?;
    let tid = this
        .file_name()
        .map(|t| t.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow::anyhow!("/proc/thread-self names no thread"))?;
    let out = std::process::Command::new("chrt")
        .args(["--idle", "--pid", "0", &tid])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "chrt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// 99th percentile of `v` (sorted in place).
pub fn p99(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get((v.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default()
}
