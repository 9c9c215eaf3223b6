//! A participant's role in a studio session.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use utoipa::ToSchema;

/// What a member (or share-link holder) may do in a session. Share links are always `Viewer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Full control, including members, share links and deletion.
    Owner,
    /// May change the document and run jobs.
    Editor,
    /// Sees everything live; may not change the document.
    Viewer,
}

impl Role {
    /// Whether document updates from this role are applied (viewers get `[2,0,"read-only"]`).
    pub fn can_write(self) -> bool {
        matches!(self, Self::Owner | Self::Editor)
    }

    /// The lowercase wire name (`owner`, `editor`, `viewer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Editor => "editor",
            Self::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of `owner`, `editor`, `viewer`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown role {0:?} (expected owner, editor or viewer)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(Self::Owner),
            "editor" => Ok(Self::Editor),
            "viewer" => Ok(Self::Viewer),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for role in [Role::Owner, Role::Editor, Role::Viewer] {
            assert_eq!(role.to_string().parse::<Role>().unwrap(), role);
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{role}\""));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), role);
        }
        assert!("Owner".parse::<Role>().is_err());
        assert!(Role::Editor.can_write() && Role::Owner.can_write() && !Role::Viewer.can_write());
    }
}
