//! Metric names (through the `metrics` facade; the server installs the exporter).

/// Gauge: session actors currently loaded.
pub const LIVE_SESSIONS: &str = "atelier_live_sessions";
/// Gauge: open live-session WebSockets.
pub const WS_CONNECTIONS: &str = "atelier_ws_connections";
/// Counter: document updates stored and fanned out.
pub const DOC_UPDATES: &str = "atelier_doc_updates_total";
/// Counter: bytes of WebSocket messages received.
pub const WS_BYTES_IN: &str = "atelier_ws_bytes_in_total";
/// Counter: bytes of WebSocket messages sent.
pub const WS_BYTES_OUT: &str = "atelier_ws_bytes_out_total";
/// Histogram (label `op` = `load` | `append` | `compact`): time spent in the `DocStore`.
pub const PERSIST_SECONDS: &str = "atelier_persist_seconds";
/// Counter: clients disconnected because their outbound queue was full.
pub const OUTBOUND_OVERFLOWS: &str = "atelier_outbound_overflows_total";
/// Counter: session actors restarted from storage after a panic.
pub const SESSION_RESTARTS: &str = "atelier_session_restarts_total";
/// Counter: gaps in a session's applied `seq`s repaired from storage (cluster relay losses,
/// concurrent commits on other nodes).
pub const GAP_REPAIRS: &str = "atelier_cluster_gap_repairs_total";

/// Registers descriptions for the metrics above; call once after installing a recorder.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(LIVE_SESSIONS, "Studio sessions loaded in memory");
    describe_gauge!(WS_CONNECTIONS, "Open live-session WebSocket connections");
    describe_counter!(DOC_UPDATES, "Document updates stored and fanned out");
    describe_counter!(WS_BYTES_IN, Unit::Bytes, "WebSocket bytes received");
    describe_counter!(WS_BYTES_OUT, Unit::Bytes, "WebSocket bytes sent");
    describe_histogram!(PERSIST_SECONDS, Unit::Seconds, "Document store latency");
    describe_counter!(
        OUTBOUND_OVERFLOWS,
        "Clients disconnected for not keeping up with their outbound queue"
    );
    describe_counter!(SESSION_RESTARTS, "Session actors restarted after a panic");
    describe_counter!(
        GAP_REPAIRS,
        "Gaps in a session's applied updates read back from storage"
    );
}
