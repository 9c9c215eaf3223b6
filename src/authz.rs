//! Authorization, decided in one place: a function of who is asking, their role in the session,
//! and what they want to do. Handlers ask [`authorize`]; none of them compares roles itself.
//!
//! A request made with an API key must in addition be covered by the key's scopes: every
//! endpoint declares the scope it needs in its OpenAPI annotation, and [`permit_api_key`] (called
//! by the authenticating extractor, so for every endpoint that authenticates) enforces exactly
//! that declaration. An endpoint that declares no `api_key` requirement cannot be called with a
//! key at all (its own account management, admin, buying credits).

use std::collections::HashMap;
use std::sync::OnceLock;

use actix_web::http::Method;
use atelier_protocol::ids::SessionId;
use atelier_protocol::Role;

use crate::auth::principal::KeyGrant;
use crate::auth::scopes::Scope;
use crate::auth::Principal;
use crate::db::media::Media;
use crate::db::sessions::StudioSession;
use crate::error::{Error, Result};
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    View,
    ViewMembers,
    Rename,
    Delete,
    ManageMembers,
    ManageShareLinks,
    EditDocument,
    RunJobs,
    CancelJobs,
    /// Start or stop the session's Pro runtime lease (paid by the caller's own credits).
    ManageRuntime,
    /// Name the current state, restore or delete a version.
    ManageVersions,
}

impl Action {
    fn describe(self) -> &'static str {
        match self {
            Action::View => "view this session",
            Action::ViewMembers => "see this session's members",
            Action::Rename => "rename this session",
            Action::Delete => "delete this session",
            Action::ManageMembers => "manage this session's members",
            Action::ManageShareLinks => "manage this session's share links",
            Action::EditDocument => "edit this session",
            Action::RunJobs => "run jobs in this session",
            Action::CancelJobs => "cancel jobs in this session",
            Action::ManageRuntime => "start or stop this session's Pro runtime",
            Action::ManageVersions => "name, restore or delete versions of this session",
        }
    }
}

/// How the caller reaches the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub role: Role,
    pub via_share_link: bool,
}

/// The policy itself.
pub fn allows(access: Access, action: Action) -> bool {
    match action {
        Action::View => true,
        // Member lists carry emails: for members only, not for anyone holding a link.
        Action::ViewMembers => !access.via_share_link,
        Action::Rename
        | Action::ManageShareLinks
        | Action::EditDocument
        | Action::RunJobs
        | Action::CancelJobs
        | Action::ManageRuntime
        | Action::ManageVersions => matches!(access.role, Role::Owner | Role::Editor),
        Action::Delete | Action::ManageMembers => access.role == Role::Owner,
    }
}

/// The caller's access to a session, if any.
pub async fn access(
    state: &AppState,
    principal: &Principal,
    session: SessionId,
) -> Result<Option<Access>> {
    Ok(match principal {
        Principal::Account(account) => {
            state
                .db
                .member_role(session, account.id)
                .await?
                .map(|role| Access {
                    role,
                    via_share_link: false,
                })
        }
        Principal::ShareLink(link) if link.session_id == session => Some(Access {
            role: link.role,
            via_share_link: true,
        }),
        Principal::ShareLink(_) => None,
    })
}

/// Loads the session and checks the action. Sessions are private: to anyone without access a
/// session does not exist (404), so ids cannot be probed; members lacking the role get 403.
pub async fn authorize(
    state: &AppState,
    principal: &Principal,
    session_id: SessionId,
    action: Action,
) -> Result<(StudioSession, Access)> {
    let session = state
        .db
        .session(session_id)
        .await?
        .ok_or(Error::NotFound("session"))?;
    let access = access(state, principal, session_id)
        .await?
        .ok_or(Error::NotFound("session"))?;
    if !allows(access, action) {
        return Err(Error::forbidden(format!(
            "your role ({}) does not allow you to {}",
            access.role,
            action.describe()
        )));
    }
    Ok((session, access))
}

/// The security scheme name API keys are declared under in the OpenAPI document.
pub const API_KEY_SCHEME: &str = "api_key";

/// Where the API is mounted; OpenAPI paths are relative to it.
const API_PREFIX: &str = "/api/v1";

/// `(METHOD, /path/{pattern})` → the scopes an API key needs there; absent: keys are refused.
type KeyScopes = HashMap<(String, String), Vec<Scope>>;

/// The endpoints' declared key scopes, read once from the generated OpenAPI document.
fn key_scopes() -> &'static KeyScopes {
    static TABLE: OnceLock<KeyScopes> = OnceLock::new();
    TABLE.get_or_init(|| declared_key_scopes(&crate::http::api::openapi::document()))
}

/// Reads each operation's `security` list for an [`API_KEY_SCHEME`] requirement.
pub fn declared_key_scopes(doc: &serde_json::Value) -> KeyScopes {
    let mut table = KeyScopes::new();
    let paths = doc.get("paths").and_then(|p| p.as_object());
    for (path, item) in paths.into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let requirements = op.get("security").and_then(|s| s.as_array());
            for requirement in requirements.into_iter().flatten() {
                let Some(scopes) = requirement.get(API_KEY_SCHEME).and_then(|s| s.as_array())
                else {
                    continue;
                };
                // Scopes are written by our own annotations; an unknown one is a programming
                // error that the unit test below catches, so here it makes the endpoint
                // unreachable for keys rather than open.
                let parsed: Option<Vec<Scope>> = scopes
                    .iter()
                    .map(|s| s.as_str().and_then(|s| s.parse().ok()))
                    .collect();
                if let Some(parsed) = parsed {
                    table.insert((method.to_ascii_uppercase(), path.clone()), parsed);
                }
            }
        }
    }
    table
}

/// Whether the API key may call this endpoint (`pattern`: the matched route, e.g.
/// `/api/v1/sessions/{id}`): 403 `insufficient_scope` when the key lacks the declared scope or
/// the endpoint takes no keys.
pub fn permit_api_key(key: &KeyGrant, method: &Method, pattern: Option<&str>) -> Result<()> {
    let path = pattern
        .and_then(|p| p.strip_prefix(API_PREFIX))
        .unwrap_or_default();
    let needed = key_scopes().get(&(method.as_str().to_owned(), path.to_owned()));
    match needed {
        None => Err(Error::InsufficientScope(format!(
            "API keys cannot call {method} {API_PREFIX}{path}; this needs a login"
        ))),
        Some(needed) => match needed.iter().find(|scope| !key.allows(**scope)) {
            Some(missing) => Err(Error::InsufficientScope(format!(
                "this API key lacks the {missing} scope that {method} {API_PREFIX}{path} needs"
            ))),
            None => Ok(()),
        },
    }
}

/// Media is readable by its owner and by anyone who may view a session that uses it.
pub async fn can_read_media(
    state: &AppState,
    principal: &Principal,
    media: &Media,
) -> Result<bool> {
    if principal.account_id() == Some(media.owner_id) {
        return Ok(true);
    }
    match media.session_id {
        Some(session) => Ok(access(state, principal, session).await?.is_some()),
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_table() {
        let owner = Access {
            role: Role::Owner,
            via_share_link: false,
        };
        let editor = Access {
            role: Role::Editor,
            via_share_link: false,
        };
        let viewer = Access {
            role: Role::Viewer,
            via_share_link: false,
        };
        let link = Access {
            role: Role::Viewer,
            via_share_link: true,
        };
        assert!(allows(owner, Action::Delete));
        assert!(!allows(editor, Action::Delete));
        assert!(allows(editor, Action::Rename));
        assert!(!allows(viewer, Action::Rename));
        assert!(allows(viewer, Action::ViewMembers));
        assert!(!allows(link, Action::ViewMembers));
        assert!(allows(link, Action::View));
        assert!(!allows(link, Action::EditDocument));
        assert!(!allows(editor, Action::ManageMembers));
        assert!(allows(editor, Action::ManageRuntime));
        assert!(!allows(viewer, Action::ManageRuntime));
        assert!(!allows(link, Action::ManageRuntime));
    }

    /// Every operation of the document either takes API keys with known scopes or does not
    /// take them; the handful that must take them do, and account management does not.
    #[test]
    fn every_endpoint_declares_its_key_scopes() {
        let doc = crate::http::api::openapi::document();
        let table = declared_key_scopes(&doc);
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for requirement in op["security"].as_array().into_iter().flatten() {
                    if let Some(scopes) = requirement.get(API_KEY_SCHEME) {
                        for scope in scopes.as_array().unwrap() {
                            let scope = scope.as_str().unwrap();
                            assert!(
                                scope.parse::<Scope>().is_ok(),
                                "{method} {path}: unknown scope {scope}"
                            );
                        }
                    }
                }
            }
        }
        let get = |m: &str, p: &str| table.get(&(m.to_owned(), p.to_owned())).cloned();
        assert_eq!(
            get("GET", "/sessions/{id}"),
            Some(vec![Scope::SessionsRead])
        );
        assert_eq!(
            get("POST", "/sessions/{id}/jobs"),
            Some(vec![Scope::JobsRun])
        );
        assert_eq!(
            get("GET", "/billing/balance"),
            Some(vec![Scope::BillingRead])
        );
        assert_eq!(get("POST", "/me/api-keys"), None);
        assert_eq!(get("GET", "/admin/accounts"), None);
        let key = KeyGrant {
            id: atelier_protocol::ids::ApiKeyId::new_random(),
            scopes: vec![Scope::SessionsRead],
            expires_at: None,
        };
        let ok = permit_api_key(&key, &Method::GET, Some("/api/v1/sessions/{id}"));
        assert!(ok.is_ok());
        let refused = permit_api_key(&key, &Method::PATCH, Some("/api/v1/sessions/{id}"));
        assert!(matches!(refused, Err(Error::InsufficientScope(_))));
        let unmatched = permit_api_key(&key, &Method::GET, None);
        assert!(matches!(unmatched, Err(Error::InsufficientScope(_))));
    }
}
