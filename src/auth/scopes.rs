//! What an API key may do: its scopes.
//!
//! A login token (or the session cookie) may do everything its account may; an API key only what
//! its scopes cover. Each endpoint declares the scope it needs in its OpenAPI annotation
//! (`security(("api_key" = ["sessions:read"]))`), and [`crate::authz::permit_api_key`] enforces
//! that declaration — the published contract and the enforced one are the same text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
pub enum Scope {
    /// Read sessions the account can see: their details, members, graph, jobs, media, runtime;
    /// open their live WebSocket (as a viewer without `sessions:write`).
    #[serde(rename = "sessions:read")]
    SessionsRead,
    /// Create, rename and delete sessions, manage members and share links, change the graph,
    /// upload and delete media; edit over the live WebSocket.
    #[serde(rename = "sessions:write")]
    SessionsWrite,
    /// Run and cancel jobs, start, extend and stop Pro runtime (spends the account's credits).
    #[serde(rename = "jobs:run")]
    JobsRun,
    /// Read balance, ledger, statements and the API usage log.
    #[serde(rename = "billing:read")]
    BillingRead,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::SessionsRead,
        Scope::SessionsWrite,
        Scope::JobsRun,
        Scope::BillingRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::SessionsRead => "sessions:read",
            Scope::SessionsWrite => "sessions:write",
            Scope::JobsRun => "jobs:run",
            Scope::BillingRead => "billing:read",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scope {s:?}; scopes are {}",
                    Scope::ALL.map(Scope::as_str).join(", ")
                )
            })
    }
}

/// Scopes as stored: space-separated, sorted, without repeats.
pub fn join(scopes: &[Scope]) -> String {
    let mut sorted = scopes.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads stored scopes (unknown words are an internal error: only [`join`] writes them).
pub fn split(stored: &str) -> Result<Vec<Scope>, String> {
    stored.split_whitespace().map(str::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip() {
        let stored = join(&[Scope::JobsRun, Scope::SessionsRead, Scope::JobsRun]);
        assert_eq!(stored, "sessions:read jobs:run");
        assert_eq!(
            split(&stored).unwrap(),
            vec![Scope::SessionsRead, Scope::JobsRun]
        );
        assert!("sessions:admin".parse::<Scope>().is_err());
    }
}
