//! Typed identifiers. Every id in Atelier is a newtype, never a bare `Uuid` or integer, so a
//! `JobId` cannot be passed where a `SessionId` is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Declares UUID-backed id newtypes: serde-transparent (a JSON string), `Display`/`FromStr` in
/// the hyphenated UUID form, and an OpenAPI schema of a UUID string.
macro_rules! uuid_ids {
    ($($(#[$doc:meta])* $name:ident;)+) => {$(
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random (v4) id.
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            /// Wraps an existing UUID (for example one read from the database).
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    )+};
}

uuid_ids! {
    /// A studio session: one shared node-graph document plus its participants and jobs.
    SessionId;
    /// A user account.
    AccountId;
    /// A share link granting (viewer) access to one session.
    ShareLinkId;
    /// A stored media object (upload or job output).
    MediaId;
    /// A GPU job running (part of) a session's graph.
    JobId;
    /// A Pro runtime lease of a GPU worker.
    LeaseId;
    /// A connected GPU worker host.
    WorkerId;
    /// An account's API key (a named, scoped credential for scripts).
    ApiKeyId;
    /// A kept version of a session's document (automatic, named, a job's, or a restore).
    VersionId;
    /// An invitation to a session (a link or a pending email invitation).
    InvitationId;
}

/// One live WebSocket connection to a session, unique within the server process. Not persisted;
/// it lets presence events (`participant.joined`/`left`) be paired up by clients.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_transparent_strings() {
        let id = SessionId::new_random();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        let back: SessionId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert_eq!(id.to_string().parse::<SessionId>().unwrap(), id);
        assert!("not-a-uuid".parse::<JobId>().is_err());
    }
}
