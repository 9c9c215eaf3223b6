//! Invitation links: a link with a role (`editor` or `viewer`), an expiry and a number of uses,
//! that a signed-in person accepts to become a member. Owners create, list and revoke them (they
//! make members, which only owners do). Pending invitations by email are made by adding a
//! member by address (`POST /sessions/{id}/members`), whether or not the address has an
//! account; they are listed and revoked here too. The invited person sees them under
//! `/me/invitations` and accepts or declines them there (or, without an account yet, joins at
//! signup). When an SMTP relay is configured, an email invitation is also emailed with a link
//! (`#/invite/{token}`) that only the invited address can accept.
//!
//! Every change of who may see a session, and every invitation by email received or withdrawn,
//! is told to the account concerned on its live channel (`GET /me/events`).

use actix_web::{delete, get, post, web, HttpResponse};
use atelier_protocol::ids::{InvitationId, SessionId};
use atelier_protocol::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::account_events::AccountEvent;
use crate::auth::{tokens, AccountAuth, Auth};
use crate::authz::{authorize, Action};
use crate::db::accounts::Account;
use crate::db::invitations::{role_covers, Invitation, InvitationToMe, NewInvitation};
use crate::db::now_ms;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Longest expiry an invitation may be given: one year.
pub const MAX_EXPIRES_IN_S: i64 = 365 * 24 * 3600;
/// Most uses a limited invitation may be given.
pub const MAX_USES: i64 = 10_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitation {
    /// `editor` or `viewer`.
    pub role: Role,
    /// Seconds until the link stops working; none = until revoked.
    pub expires_in_s: Option<i64>,
    /// How many people may accept it (1 = single-use); none = any number until it expires or
    /// is revoked.
    pub max_uses: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedInvitation {
    #[serde(flatten)]
    pub invitation: Invitation,
    /// Shown once; only its hash is stored.
    pub token: String,
    /// The studio page that accepts it.
    pub url: String,
}

/// What a person holding an invitation link may see before accepting it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationPreview {
    pub session_id: SessionId,
    pub session_title: String,
    pub role: Role,
    pub expires_at: Option<i64>,
    /// The caller is already a member with at least this role: accepting changes nothing
    /// (e.g. the invited address signed up and joined already).
    pub member: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedInvitation {
    pub session_id: SessionId,
    /// The caller's role in the session now (an existing stronger role is kept).
    pub role: Role,
}

/// Create an invitation link (owners).
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "invitations", params(("id" = SessionId, Path,)), request_body = CreateInvitation,
    responses((status = 201, body = CreatedInvitation), (status = 400), (status = 403), (status = 404)))]
#[post("/sessions/{id}/invitations")]
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
    body: web::Json<CreateInvitation>,
) -> Result<HttpResponse> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::ManageMembers).await?;
    let creator = auth
        .principal
        .account_id()
        .ok_or_else(|| Error::forbidden("share links cannot invite"))?;
    if !matches!(body.role, Role::Editor | Role::Viewer) {
        return Err(Error::invalid(
            "invitation links can have the editor or viewer role",
        ));
    }
    let expires_at = match body.expires_in_s {
        None => None,
        Some(s) if (1..=MAX_EXPIRES_IN_S).contains(&s) => Some(now_ms() + s * 1000),
        Some(_) => {
            return Err(Error::invalid(format!(
                "expires_in_s must be between 1 and {MAX_EXPIRES_IN_S}"
            )))
        }
    };
    if body.max_uses.is_some_and(|n| !(1..=MAX_USES).contains(&n)) {
        return Err(Error::invalid(format!(
            "max_uses must be between 1 and {MAX_USES}"
        )));
    }
    let token = tokens::generate(tokens::INVITATION_PREFIX);
    let invitation = state
        .db
        .create_invitation(
            session.id,
            creator,
            body.role,
            NewInvitation::Link {
                token_hash: &tokens::hash(&token),
                max_uses: body.max_uses,
            },
            expires_at,
        )
        .await?;
    let url = invite_url(&state, &token);
    Ok(HttpResponse::Created().json(CreatedInvitation {
        invitation,
        token,
        url,
    }))
}

/// The session's invitations, links and pending emails, including revoked, expired and used ones
/// (owners).
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "invitations", params(("id" = SessionId, Path,)),
    responses((status = 200, body = Vec<Invitation>), (status = 403), (status = 404)))]
#[get("/sessions/{id}/invitations")]
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
) -> Result<web::Json<Vec<Invitation>>> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::ManageMembers).await?;
    Ok(web::Json(state.db.invitations(session.id).await?))
}

/// Revoke an invitation: its link stops working, a pending email invitation is dropped (owners).
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "invitations", params(("id" = SessionId, Path,), ("invitation_id" = InvitationId, Path,)),
    responses((status = 204), (status = 403), (status = 404)))]
#[delete("/sessions/{id}/invitations/{invitation_id}")]
pub async fn revoke(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(SessionId, InvitationId)>,
) -> Result<HttpResponse> {
    let (session_id, invitation_id) = path.into_inner();
    let (session, _) =
        authorize(&state, &auth.principal, session_id, Action::ManageMembers).await?;
    let invitation = state
        .db
        .invitation(session.id, invitation_id)
        .await?
        .ok_or(Error::NotFound("invitation"))?;
    if !state
        .db
        .revoke_invitation(session.id, invitation_id)
        .await?
    {
        return Err(Error::NotFound("invitation"));
    }
    if invitation.spent(now_ms()).is_none() {
        if let Some(email) = &invitation.email {
            tell_address(
                &state,
                email,
                &AccountEvent::InvitationWithdrawn {
                    invitation_id,
                    session_id: session.id,
                },
            )
            .await;
        }
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The studio page that accepts an invitation with this token.
pub fn invite_url(state: &AppState, token: &str) -> String {
    format!("{}/#/invite/{token}", state.public_url)
}

/// Tells the account with this address, if there is one, on its live channel. Nothing of it
/// reaches the caller: the answer is the same whether or not the address has an account, and a
/// failed lookup only costs the live hint (the dashboard reads its lists on reconnect).
pub async fn tell_address(state: &AppState, email: &str, event: &AccountEvent) {
    match state.db.account_by_email(email).await {
        Ok(Some(account)) => state.account_events.publish(account.id, event),
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "could not look up an invited address to tell it"),
    }
}

/// The invitation a token names, for `account`: 404 when there is none; 403 when it is an
/// email invitation to another address; 410 with the reason when it was revoked, has expired
/// or is used up — unless the account is already a member with at least its role (the second
/// value), as after signing up with the invited address.
async fn for_account(
    state: &AppState,
    token: &str,
    account: &Account,
) -> Result<(Invitation, Option<Role>)> {
    let invitation = state
        .db
        .invitation_by_token(&tokens::hash(token))
        .await?
        .ok_or_else(|| {
            Error::Missing("no invitation has this link; check that it was copied whole".into())
        })?;
    if invitation
        .email
        .as_deref()
        .is_some_and(|addressee| addressee != account.email)
    {
        return Err(Error::forbidden(
            "this invitation was sent to another email address; log in (or sign up) with the \
             address it was sent to",
        ));
    }
    let covered = state
        .db
        .member_role(invitation.session_id, account.id)
        .await?
        .filter(|current| role_covers(*current, invitation.role));
    if covered.is_none() {
        if let Some(why) = invitation.spent(now_ms()) {
            return Err(Error::Gone(why.explain().into()));
        }
    }
    Ok((invitation, covered))
}

/// What an invitation link offers (any signed-in account holding it).
#[utoipa::path(tag = "invitations", params(("token" = String, Path,)),
    responses((status = 200, body = InvitationPreview), (status = 401), (status = 404), (status = 410)))]
#[get("/invitations/{token}")]
pub async fn preview(
    state: web::Data<AppState>,
    auth: AccountAuth,
    token: web::Path<String>,
) -> Result<web::Json<InvitationPreview>> {
    let (invitation, member) = for_account(&state, &token, &auth.account).await?;
    let session = state
        .db
        .session(invitation.session_id)
        .await?
        .ok_or(Error::NotFound("session"))?;
    Ok(web::Json(InvitationPreview {
        session_id: session.id,
        session_title: session.title,
        role: invitation.role,
        expires_at: invitation.expires_at,
        member: member.is_some(),
    }))
}

/// Accept an invitation link: the signed-in caller becomes a member with its role (a stronger
/// role they already have is kept). The link of an invitation by email works for the invited
/// address only (403 for another account).
#[utoipa::path(tag = "invitations", params(("token" = String, Path,)),
    responses((status = 200, body = AcceptedInvitation), (status = 401), (status = 403), (status = 404), (status = 410)))]
#[post("/invitations/{token}/accept")]
pub async fn accept(
    state: web::Data<AppState>,
    auth: AccountAuth,
    token: web::Path<String>,
) -> Result<web::Json<AcceptedInvitation>> {
    let (invitation, member) = for_account(&state, &token, &auth.account).await?;
    if let Some(role) = member {
        return Ok(web::Json(AcceptedInvitation {
            session_id: invitation.session_id,
            role,
        }));
    }
    let role = state
        .db
        .accept_invitation(&invitation, auth.account.id)
        .await?
        .map_err(|why| Error::Gone(why.explain().into()))?;
    // Sockets the account already has open (as a viewer) follow an upgrade at once.
    state
        .live
        .set_role(invitation.session_id, auth.account.id, Some(role))
        .await;
    // The account's other tabs and devices list the session at once.
    state.account_events.publish(
        auth.account.id,
        &AccountEvent::MembershipAdded {
            session_id: invitation.session_id,
            role,
        },
    );
    tracing::info!(session = %invitation.session_id, account = %auth.account.id, %role, "invitation accepted");
    Ok(web::Json(AcceptedInvitation {
        session_id: invitation.session_id,
        role,
    }))
}

/// The pending email invitations addressed to the caller's email (signed-in accounts).
#[utoipa::path(tag = "invitations",
    responses((status = 200, body = Vec<InvitationToMe>), (status = 401), (status = 403)))]
#[get("/me/invitations")]
pub async fn mine(
    state: web::Data<AppState>,
    auth: AccountAuth,
) -> Result<web::Json<Vec<InvitationToMe>>> {
    Ok(web::Json(
        state.db.invitations_to(&auth.account.email).await?,
    ))
}

/// Accept a pending email invitation addressed to the caller's email: the caller becomes a
/// member with its role (a stronger role they already have is kept). 404 when no pending
/// invitation with this id is addressed to the caller.
#[utoipa::path(tag = "invitations", params(("id" = InvitationId, Path,)),
    responses((status = 200, body = AcceptedInvitation), (status = 401), (status = 403), (status = 404)))]
#[post("/me/invitations/{id}/accept")]
pub async fn accept_mine(
    state: web::Data<AppState>,
    auth: AccountAuth,
    id: web::Path<InvitationId>,
) -> Result<web::Json<AcceptedInvitation>> {
    let (session_id, role) = state
        .db
        .accept_email_invitation(*id, &auth.account.email, auth.account.id)
        .await?
        .ok_or(Error::NotFound("invitation"))?;
    // Sockets the account already has open (as a viewer) follow an upgrade at once.
    state
        .live
        .set_role(session_id, auth.account.id, Some(role))
        .await;
    state.account_events.publish(
        auth.account.id,
        &AccountEvent::MembershipAdded { session_id, role },
    );
    tracing::info!(session = %session_id, account = %auth.account.id, %role, "email invitation accepted");
    Ok(web::Json(AcceptedInvitation { session_id, role }))
}

/// Decline a pending email invitation addressed to the caller's email; the owner sees it
/// revoked. 404 when no pending invitation with this id is addressed to the caller.
#[utoipa::path(tag = "invitations", params(("id" = InvitationId, Path,)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
#[post("/me/invitations/{id}/decline")]
pub async fn decline_mine(
    state: web::Data<AppState>,
    auth: AccountAuth,
    id: web::Path<InvitationId>,
) -> Result<HttpResponse> {
    let Some(session_id) = state
        .db
        .decline_email_invitation(*id, &auth.account.email)
        .await?
    else {
        return Err(Error::NotFound("invitation"));
    };
    state.account_events.publish(
        auth.account.id,
        &AccountEvent::InvitationWithdrawn {
            invitation_id: *id,
            session_id,
        },
    );
    Ok(HttpResponse::NoContent().finish())
}
