//! The ledger's own id: a hold (a reservation of credits).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::columns::{ids_from_uuid_text, OptUuidText, UuidText};

/// A reservation of credits (for now, one per runtime lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, format = Uuid)]
pub struct HoldId(pub Uuid);

impl HoldId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl From<Uuid> for HoldId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

ids_from_uuid_text!(HoldId);

impl FromStr for HoldId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}
