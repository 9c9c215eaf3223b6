//! What the billing tests read back: a session's lease, and a lease's charges in the ledger.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::TestServer;

/// `GET /sessions/{session}/runtime`'s lease (`null` when none).
pub async fn lease_of(server: &TestServer, token: &str, session: &str) -> Value {
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/runtime"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["lease"].clone()
}

/// Charges recorded for the lease: (sum, usage_ms sum, number of charge entries).
pub fn charges(entries: &[Value], lease: &str) -> (i64, i64, usize) {
    let of: Vec<&Value> = entries
        .iter()
        .filter(|e| e["lease_id"] == lease && e["kind"] == "charge")
        .collect();
    (
        of.iter().map(|e| -e["amount"].as_i64().unwrap()).sum(),
        of.iter().map(|e| e["usage_ms"].as_i64().unwrap()).sum(),
        of.len(),
    )
}
