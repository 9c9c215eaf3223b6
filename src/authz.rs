//! Authorization, decided in one place: a function of who is asking, their role in the session,
//! and what they want to do. Handlers ask [`authorize`]; none of them compares roles itself.

use atelier_protocol::ids::SessionId;
use atelier_protocol::Role;

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
        | Action::ManageRuntime => matches!(access.role, Role::Owner | Role::Editor),
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
}
