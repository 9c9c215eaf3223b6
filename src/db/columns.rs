//! Column types for `#[derive(sqlx::FromRow)]` rows: what sqlx's `Any` driver cannot decode by
//! itself. UUIDs are stored as TEXT (the driver has no UUID type), so a row field of an id type
//! says `#[sqlx(try_from = "UuidText")]` (or `OptUuidText` when the column is nullable).

use std::str::FromStr;

use atelier_protocol::ids::{
    AccountId, ApiKeyId, InvitationId, JobId, LeaseId, MediaId, SessionId, ShareLinkId, VersionId,
    WorkerId,
};
use atelier_protocol::Role;
use sqlx::any::{Any, AnyTypeInfo};
use sqlx::error::BoxDynError;
use sqlx::{Decode, Type, ValueRef};
use uuid::Uuid;

/// A UUID read from a TEXT column.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UuidText(pub Uuid);

/// A UUID read from a nullable TEXT column.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OptUuidText(pub Option<Uuid>);

impl Type<Any> for UuidText {
    fn type_info() -> AnyTypeInfo {
        <String as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        <String as Type<Any>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Any> for UuidText {
    fn decode(value: <Any as sqlx::Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<'r, Any>>::decode(value)?;
        Ok(UuidText(Uuid::from_str(text)?))
    }
}

impl Type<Any> for OptUuidText {
    fn type_info() -> AnyTypeInfo {
        <String as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        <String as Type<Any>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Any> for OptUuidText {
    fn decode(value: <Any as sqlx::Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.is_null() {
            return Ok(OptUuidText(None));
        }
        Ok(OptUuidText(Some(UuidText::decode(value)?.0)))
    }
}

impl From<UuidText> for Uuid {
    fn from(text: UuidText) -> Uuid {
        text.0
    }
}

impl From<OptUuidText> for Option<Uuid> {
    fn from(text: OptUuidText) -> Option<Uuid> {
        text.0
    }
}

/// Lets a row field of an id type be read with `#[sqlx(try_from = "UuidText")]` or
/// `#[sqlx(try_from = "OptUuidText")]`.
macro_rules! ids_from_uuid_text {
    ($($id:ty),* $(,)?) => {$(
        impl From<UuidText> for $id {
            fn from(text: UuidText) -> $id {
                <$id>::from(text.0)
            }
        }

        impl From<OptUuidText> for Option<$id> {
            fn from(text: OptUuidText) -> Option<$id> {
                text.0.map(<$id>::from)
            }
        }
    )*};
}

pub(crate) use ids_from_uuid_text;

ids_from_uuid_text!(
    AccountId,
    ApiKeyId,
    InvitationId,
    JobId,
    LeaseId,
    MediaId,
    SessionId,
    ShareLinkId,
    VersionId,
    WorkerId
);

/// A JSON document stored as TEXT, for display: text that is not JSON reads as `null` rather
/// than failing the whole listing it appears in.
pub(crate) struct JsonTextOrNull(pub serde_json::Value);

impl Type<Any> for JsonTextOrNull {
    fn type_info() -> AnyTypeInfo {
        <String as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        <String as Type<Any>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Any> for JsonTextOrNull {
    fn decode(value: <Any as sqlx::Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<'r, Any>>::decode(value)?;
        Ok(JsonTextOrNull(
            serde_json::from_str(text).unwrap_or(serde_json::Value::Null),
        ))
    }
}

impl From<JsonTextOrNull> for serde_json::Value {
    fn from(json: JsonTextOrNull) -> serde_json::Value {
        json.0
    }
}

/// A nullable JSON document stored as TEXT, for display: text that is not JSON reads as absent.
pub(crate) struct OptJsonText(pub Option<serde_json::Value>);

impl Type<Any> for OptJsonText {
    fn type_info() -> AnyTypeInfo {
        <String as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        <String as Type<Any>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Any> for OptJsonText {
    fn decode(value: <Any as sqlx::Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.is_null() {
            return Ok(OptJsonText(None));
        }
        let text = <&str as Decode<'r, Any>>::decode(value)?;
        Ok(OptJsonText(serde_json::from_str(text).ok()))
    }
}

impl From<OptJsonText> for Option<serde_json::Value> {
    fn from(json: OptJsonText) -> Option<serde_json::Value> {
        json.0
    }
}

/// A session role stored as TEXT (`owner`, `editor`, …).
pub(crate) struct RoleText(pub Role);

impl Type<Any> for RoleText {
    fn type_info() -> AnyTypeInfo {
        <String as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        <String as Type<Any>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Any> for RoleText {
    fn decode(value: <Any as sqlx::Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<'r, Any>>::decode(value)?;
        let role = text.parse().map_err(|_| format!("unknown role {text:?}"))?;
        Ok(RoleText(role))
    }
}

impl From<RoleText> for Role {
    fn from(text: RoleText) -> Role {
        text.0
    }
}

/// A JSON document stored as TEXT, read strictly: text that does not parse as `T` fails the row.
pub(crate) struct JsonText<T>(pub T);

impl<T> Type<Any> for JsonText<T> {
    fn type_info() -> AnyTypeInfo {
        <String as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        <String as Type<Any>>::compatible(ty)
    }
}

impl<'r, T: serde::de::DeserializeOwned> Decode<'r, Any> for JsonText<T> {
    fn decode(value: <Any as sqlx::Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<'r, Any>>::decode(value)?;
        Ok(JsonText(serde_json::from_str(text)?))
    }
}

impl From<JsonText<serde_json::Value>> for serde_json::Value {
    fn from(json: JsonText<serde_json::Value>) -> serde_json::Value {
        json.0
    }
}

impl From<JsonText<Vec<MediaId>>> for Vec<MediaId> {
    fn from(json: JsonText<Vec<MediaId>>) -> Vec<MediaId> {
        json.0
    }
}

impl From<JsonText<Vec<AccountId>>> for Vec<AccountId> {
    fn from(json: JsonText<Vec<AccountId>>) -> Vec<AccountId> {
        json.0
    }
}

impl From<JsonText<std::collections::BTreeMap<String, MediaId>>>
    for std::collections::BTreeMap<String, MediaId>
{
    fn from(json: JsonText<std::collections::BTreeMap<String, MediaId>>) -> Self {
        json.0
    }
}
