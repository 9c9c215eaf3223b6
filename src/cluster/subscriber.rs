//! The one task that owns this node's Redis pub/sub connection.
//!
//! It is subscribed to the control channel and to the channel of every session loaded here
//! (sessions ask through [`Command`]s as they load and unload), and hands every message from
//! another node to the registry. One malformed message is logged and skipped, and delivery
//! never waits for an actor, so one busy session cannot hold up the others.
//!
//! When the connection is lost (Redis restarted, or it dropped us for reading too slowly), the
//! task keeps answering subscriptions at once — sessions load from the database regardless —
//! reconnects, resubscribes, and asks every live session to catch up from the database and
//! re-announce its presence: whatever was published meanwhile is gone from pub/sub.

use std::collections::HashSet;
use std::time::Duration;

use atelier_actors::SessionRegistryHandle;
use atelier_protocol::relay::{Envelope, RelayMessage};
use atelier_protocol::SessionId;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::membership::Membership;
use super::{now_ms, telemetry, Cluster};
use crate::account_events::AccountEvents;

/// Pause between attempts to reach Redis.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// How long one (un)subscribe may take before the connection counts as lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// This node's own heartbeat comes back on the control channel every second; without it for
/// this long the subscription is considered dead even if the socket looks open.
const ECHO_TIMEOUT: Duration = Duration::from_secs(5);

/// What session actors ask of the subscriber.
pub enum Command {
    /// Receive this session's channel; the sender is told once the subscription is active.
    Subscribe(SessionId, oneshot::Sender<()>),
    Unsubscribe(SessionId),
}

enum Ended {
    /// The connection is gone: reconnect.
    Lost,
    /// The server is shutting down.
    Closed,
}

pub async fn run(
    cluster: Cluster,
    mut commands: mpsc::UnboundedReceiver<Command>,
    registry: SessionRegistryHandle,
    account_events: AccountEvents,
    membership: Membership,
) {
    let mut wanted: HashSet<SessionId> = HashSet::new();
    let mut connected_before = false;
    loop {
        match connect(&cluster, &wanted).await {
            Ok((sink, stream)) => {
                cluster.set_subscriber_up(true);
                if connected_before {
                    metrics::counter!(telemetry::REDIS_RECONNECTS).increment(1);
                    tracing::info!("Redis is back: live sessions catch up from the database");
                }
                connected_before = true;
                // Whatever was published while this node was not subscribed is lost.
                registry.resync_all();
                let receivers = Receivers {
                    registry: &registry,
                    account_events: &account_events,
                    membership: &membership,
                };
                let ended = serve(
                    &cluster,
                    sink,
                    stream,
                    &mut commands,
                    &mut wanted,
                    receivers,
                )
                .await;
                cluster.set_subscriber_up(false);
                if let Ended::Closed = ended {
                    return;
                }
                tracing::warn!(
                    "lost the Redis subscription; serving this node's clients alone meanwhile"
                );
            }
            Err(error) => {
                cluster.set_subscriber_up(false);
                tracing::debug!(%error, "cannot reach Redis to subscribe");
            }
        }
        // Redis is unreachable: sessions still load (from the database) and must not wait.
        let retry = tokio::time::sleep(RECONNECT_DELAY);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = &mut retry => break,
                command = commands.recv() => match command {
                    None => return,
                    Some(command) => note(&mut wanted, command),
                },
            }
        }
    }
}

/// Records a command while disconnected, answering a subscription at once.
fn note(wanted: &mut HashSet<SessionId>, command: Command) {
    match command {
        Command::Subscribe(session, done) => {
            wanted.insert(session);
            let _ = done.send(());
        }
        Command::Unsubscribe(session) => {
            wanted.remove(&session);
        }
    }
}

async fn connect(
    cluster: &Cluster,
    wanted: &HashSet<SessionId>,
) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let pubsub = tokio::time::timeout(COMMAND_TIMEOUT, cluster.client().get_async_pubsub())
        .await
        .map_err(|_| timeout_error())??;
    let (mut sink, stream) = pubsub.split();
    let mut channels: Vec<String> = wanted
        .iter()
        .map(|s| cluster.channels().session(*s))
        .collect();
    channels.push(cluster.channels().control().to_owned());
    for chunk in channels.chunks(512) {
        tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(chunk))
            .await
            .map_err(|_| timeout_error())??;
    }
    Ok((sink, stream))
}

fn timeout_error() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "Redis did not answer in time",
    ))
}

/// Where relayed messages go on this node.
#[derive(Clone, Copy)]
struct Receivers<'a> {
    registry: &'a SessionRegistryHandle,
    account_events: &'a AccountEvents,
    membership: &'a Membership,
}

async fn serve(
    cluster: &Cluster,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    wanted: &mut HashSet<SessionId>,
    receivers: Receivers<'_>,
) -> Ended {
    let mut last_echo = Instant::now();
    let mut liveness = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return Ended::Lost };
                if dispatch(cluster, message.get_payload_bytes(), receivers) {
                    last_echo = Instant::now();
                }
            }
            command = commands.recv() => match command {
                None => return Ended::Closed,
                Some(Command::Subscribe(session, done)) => {
                    wanted.insert(session);
                    let channel = cluster.channels().session(session);
                    let result = tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&channel)).await;
                    // The session loads either way; if this failed, the resync after the
                    // reconnect covers what it misses.
                    let _ = done.send(());
                    if !matches!(result, Ok(Ok(()))) {
                        return Ended::Lost;
                    }
                }
                Some(Command::Unsubscribe(session)) => {
                    wanted.remove(&session);
                    let channel = cluster.channels().session(session);
                    let result = tokio::time::timeout(COMMAND_TIMEOUT, sink.unsubscribe(&channel)).await;
                    if !matches!(result, Ok(Ok(()))) {
                        return Ended::Lost;
                    }
                }
            },
            _ = liveness.tick() => {
                if last_echo.elapsed() > ECHO_TIMEOUT && cluster.redis_up() {
                    tracing::warn!("this node's own heartbeats stopped coming back; resubscribing");
                    return Ended::Lost;
                }
            }
        }
    }
}

/// Handles one pub/sub payload; returns whether it was this node's own heartbeat coming back.
fn dispatch(cluster: &Cluster, payload: &[u8], receivers: Receivers<'_>) -> bool {
    let Receivers {
        registry,
        account_events,
        membership,
    } = receivers;
    let envelope = match Envelope::decode(payload) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::warn!(%error, "skipping a malformed relay message");
            return false;
        }
    };
    if envelope.node == cluster.node_id() {
        return matches!(envelope.message, RelayMessage::Heartbeat);
    }
    membership.seen(&envelope.node);
    match &envelope.message {
        RelayMessage::Heartbeat => return false,
        RelayMessage::Leaving => {
            membership.left(&envelope.node);
            return false;
        }
        RelayMessage::AccountEvent { account, json } => {
            account_events.deliver_here(*account, json);
            return false;
        }
        RelayMessage::CancelJob { job, reason } => {
            cluster.deliver_cancel(*job, reason.clone());
            return false;
        }
        RelayMessage::Updates { .. } => {
            let lag_ms = now_ms().saturating_sub(envelope.sent_at_ms);
            metrics::histogram!(telemetry::RELAY_LAG_SECONDS).record(lag_ms as f64 / 1000.0);
        }
        _ => {}
    }
    // Never waits for an actor: one busy session cannot hold up the others' messages.
    registry.deliver(envelope);
    false
}
