//! Studio sessions and their members. Whoever gains, loses or changes access to a session is
//! told on their live channel (`GET /me/events`), so their dashboard follows at once.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use atelier_protocol::ids::{AccountId, SessionId};
use atelier_protocol::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::normalize_email;
use super::invitations::{invite_url, tell_address};
use crate::account_events::AccountEvent;
use crate::auth::principal::Principal;
use crate::auth::{tokens, AccountAuth, Auth};
use crate::authz::{authorize, Action};
use crate::db::sessions::{Member, StudioSession};
use crate::error::{Error, Result};
use crate::state::AppState;

pub const MAX_TITLE_CHARS: usize = 200;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub title: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSession {
    pub title: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub email: String,
    pub role: Role,
}

/// A session as the caller sees it, with the caller's role.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    #[serde(flatten)]
    pub session: StudioSession,
    pub role: Role,
}

fn check_title(raw: &str) -> Result<String> {
    let title = raw.trim();
    if title.is_empty() {
        return Err(Error::invalid("title must not be empty"));
    }
    if title.chars().count() > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "title must be at most {MAX_TITLE_CHARS} printable characters"
        )));
    }
    Ok(title.to_string())
}

/// Create a studio session; the caller becomes its owner.
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "sessions", request_body = CreateSession,
    responses((status = 201, body = SessionView), (status = 400), (status = 401)))]
#[post("/sessions")]
pub async fn create(
    state: web::Data<AppState>,
    auth: AccountAuth,
    body: web::Json<CreateSession>,
) -> Result<HttpResponse> {
    let title = check_title(&body.title)?;
    let session = state.db.create_session(auth.account.id, &title).await?;
    Ok(HttpResponse::Created().json(SessionView {
        session,
        role: Role::Owner,
    }))
}

/// The sessions the caller is a member of.
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "sessions", responses((status = 200, body = Vec<SessionView>), (status = 401)))]
#[get("/sessions")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AccountAuth,
) -> Result<web::Json<Vec<SessionView>>> {
    let sessions = state.db.sessions_of(auth.account.id).await?;
    Ok(web::Json(
        sessions
            .into_iter()
            .map(|(session, role)| SessionView { session, role })
            .collect(),
    ))
}

#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "sessions", params(("id" = SessionId, Path,)),
    responses((status = 200, body = SessionView), (status = 401), (status = 404)))]
#[get("/sessions/{id}")]
pub async fn get_one(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
) -> Result<web::Json<SessionView>> {
    let (session, access) = authorize(&state, &auth.principal, *id, Action::View).await?;
    Ok(web::Json(SessionView {
        session,
        role: access.role,
    }))
}

/// Rename a session (owners and editors).
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "sessions", params(("id" = SessionId, Path,)), request_body = UpdateSession,
    responses((status = 200, body = SessionView), (status = 400), (status = 403), (status = 404)))]
#[patch("/sessions/{id}")]
pub async fn update(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
    body: web::Json<UpdateSession>,
) -> Result<web::Json<SessionView>> {
    let (mut session, access) = authorize(&state, &auth.principal, *id, Action::Rename).await?;
    let title = check_title(&body.title)?;
    state.db.rename_session(session.id, &title).await?;
    session.title = title;
    Ok(web::Json(SessionView {
        session,
        role: access.role,
    }))
}

/// Delete a session and its document, members and share links (owners only).
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "sessions", params(("id" = SessionId, Path,)),
    responses((status = 204), (status = 403), (status = 404)))]
#[delete("/sessions/{id}")]
pub async fn delete_one(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
) -> Result<HttpResponse> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::Delete).await?;
    let had_access: Vec<AccountId> = state
        .db
        .members(session.id)
        .await?
        .into_iter()
        .map(|m| m.account_id)
        .collect();
    // Cached node results are media of the session: they go with it (other media stay their
    // owner's).
    crate::jobs::cache::purge_session(&state.db, &state.blobs, session.id).await;
    state.db.delete_session(session.id).await?;
    crate::lifecycle::members_lost_session(&state, session.id, &had_access);
    // Its Pro runtime settled (the payer refunded the unused part), its sockets closed.
    crate::lifecycle::session_deleted(&state, session.id).await;
    Ok(HttpResponse::NoContent().finish())
}

/// The session's members (members only).
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "sessions", params(("id" = SessionId, Path,)),
    responses((status = 200, body = Vec<Member>), (status = 403), (status = 404)))]
#[get("/sessions/{id}/members")]
pub async fn members(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
) -> Result<web::Json<Vec<Member>>> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::ViewMembers).await?;
    Ok(web::Json(state.db.members(session.id).await?))
}

/// What adding a member answers: the same whether or not the address has an account, so the
/// endpoint cannot be used to learn which addresses do.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberAdded {
    /// The address, normalised.
    pub email: String,
    pub role: Role,
    /// Always `true`: a pending invitation now waits for the address. A person with an account
    /// accepts it from their dashboard; a new account joins at signup. With an SMTP relay
    /// configured, the address is also emailed a link to it (whether or not it has an account).
    pub invited: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRole {
    pub role: Role,
}

/// Invite someone by email (owners only). Whatever the address, this records a pending email
/// invitation (listed under `GET /sessions/{id}/invitations`) and, when an SMTP relay is
/// configured, queues an email with a link that accepts it (sent in the background: its fate
/// never changes this answer). A person with an account becomes a member only by accepting it
/// (`POST /me/invitations/{id}/accept`, or the emailed link), an address without one joins at
/// signup. So neither this answer nor the member and invitation lists tell whether the address
/// has an account. A member's role is changed with `PATCH`.
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "sessions", params(("id" = SessionId, Path,)), request_body = AddMember,
    responses((status = 200, body = MemberAdded), (status = 400), (status = 403), (status = 404)))]
#[post("/sessions/{id}/members")]
pub async fn add_member(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
    body: web::Json<AddMember>,
) -> Result<web::Json<MemberAdded>> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::ManageMembers).await?;
    let Principal::Account(inviter) = &auth.principal else {
        return Err(Error::forbidden("share links cannot add members"));
    };
    let email = normalize_email(&body.email)?;
    // The creator's address is in the member list for every member to see, so refusing it
    // tells nobody anything new.
    if body.role != Role::Owner {
        let creator = state.db.account(session.owner_id).await?;
        if creator.is_some_and(|c| c.email == email) {
            return Err(Error::invalid(
                "the session's creator always stays an owner",
            ));
        }
    }
    let token = tokens::generate(tokens::INVITATION_PREFIX);
    let invitation_id = state
        .db
        .invite_email(
            session.id,
            inviter.id,
            &email,
            body.role,
            &tokens::hash(&token),
        )
        .await?;
    tell_address(
        &state,
        &email,
        &AccountEvent::InvitationReceived {
            invitation_id,
            session_id: session.id,
        },
    )
    .await;
    if state.mailer.is_on() {
        let link = invite_url(&state, &token);
        let invitation = crate::mail::invitation::Invitation {
            to: &email,
            inviter: &inviter.name,
            session_title: &session.title,
            role: body.role,
            link: &link,
        };
        match invitation.email() {
            Some(email) => state.mailer.send(email),
            None => {
                tracing::warn!(%invitation_id, "the invited address is not one SMTP takes; no email sent")
            }
        }
    }
    Ok(web::Json(MemberAdded {
        email,
        role: body.role,
        invited: true,
    }))
}

/// Gives a member (or a new member) a role; open sockets follow it at once.
async fn set_member_role(
    state: &AppState,
    session: &StudioSession,
    account: AccountId,
    role: Role,
) -> Result<()> {
    if account == session.owner_id && role != Role::Owner {
        return Err(Error::invalid(
            "the session's creator always stays an owner",
        ));
    }
    state.db.upsert_member(session.id, account, role).await?;
    // Open sockets follow the new role at once (a downgrade makes them read-only), and a
    // viewer's share links stop working.
    state.live.set_role(session.id, account, Some(role)).await;
    state.account_events.publish(
        account,
        &AccountEvent::MembershipChanged {
            session_id: session.id,
            role,
        },
    );
    if role == Role::Viewer {
        crate::lifecycle::member_lost_sharing(state, session.id, account).await?;
    }
    Ok(())
}

/// Change a member's role (owners only; the creator stays an owner).
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "sessions", params(("id" = SessionId, Path,), ("account_id" = AccountId, Path,)), request_body = ChangeRole,
    responses((status = 200, body = Member), (status = 400), (status = 403), (status = 404)))]
#[patch("/sessions/{id}/members/{account_id}")]
pub async fn change_role(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(SessionId, AccountId)>,
    body: web::Json<ChangeRole>,
) -> Result<web::Json<Member>> {
    let (session_id, account_id) = path.into_inner();
    let (session, _) =
        authorize(&state, &auth.principal, session_id, Action::ManageMembers).await?;
    if state
        .db
        .member_role(session.id, account_id)
        .await?
        .is_none()
    {
        return Err(Error::NotFound("member"));
    }
    set_member_role(&state, &session, account_id, body.role).await?;
    let member = state
        .db
        .members(session.id)
        .await?
        .into_iter()
        .find(|m| m.account_id == account_id)
        .ok_or(Error::NotFound("member"))?;
    Ok(web::Json(member))
}

/// Remove a member (owners only; the creator cannot be removed).
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "sessions", params(("id" = SessionId, Path,), ("account_id" = AccountId, Path,)),
    responses((status = 204), (status = 400), (status = 403), (status = 404)))]
#[delete("/sessions/{id}/members/{account_id}")]
pub async fn remove_member(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(SessionId, AccountId)>,
) -> Result<HttpResponse> {
    let (session_id, account_id) = path.into_inner();
    let (session, _) =
        authorize(&state, &auth.principal, session_id, Action::ManageMembers).await?;
    if account_id == session.owner_id {
        return Err(Error::invalid("the session's creator cannot be removed"));
    }
    if !state.db.remove_member(session.id, account_id).await? {
        return Err(Error::NotFound("member"));
    }
    state.live.set_role(session.id, account_id, None).await;
    state.account_events.publish(
        account_id,
        &AccountEvent::MembershipRemoved {
            session_id: session.id,
        },
    );
    crate::lifecycle::member_lost_sharing(&state, session.id, account_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
