//! `atelier admin …`: what an operator does from the command line, on the same database
//! settings as `serve` (`ATELIER_DATABASE_URL`). Every action is written to the admin audit log
//! as `cli:<os user>`.

use std::io::{BufRead, IsTerminal, Write};

use rand::Rng;
use serde_json::json;

use crate::auth::{password, tokens};
use crate::config::{AdminCommand, DatabaseConfig};
use crate::db::accounts::{Account, AccountRole};
use crate::db::admin::AuditActor;
use crate::db::ledger::EntryKind;
use crate::db::Db;
use crate::http::api::admin::check_reason;
use crate::http::api::auth::normalize_email;
use crate::jobs::worker_socket::WORKER_TOKEN_PREFIX;

/// Length of a generated admin password.
const GENERATED_PASSWORD_CHARS: usize = 24;

/// Runs one admin command; what it prints is its answer, errors are returned as text.
pub async fn run(command: AdminCommand) -> Result<(), String> {
    match command {
        AdminCommand::CreateAdmin {
            database,
            email,
            name,
            password_env,
        } => {
            with_db(&database, |db| async move {
                create_admin(&db, &email, name, password_env).await
            })
            .await
        }
        AdminCommand::SetRole {
            database,
            email,
            role,
        } => {
            with_db(&database, |db| async move {
                let account = account_by_email(&db, &email).await?;
                db.set_role(account.id, role).await.map_err(|e| e.to_string())?;
                audit(&db, "set_role", &account, None, json!({"role": role})).await?;
                println!("{} is now {role}", account.email);
                Ok(())
            })
            .await
        }
        AdminCommand::GrantCredits {
            database,
            email,
            amount,
            reason,
            idempotency_key,
        } => {
            with_db(&database, |db| async move {
                let reason = check_reason(&reason).map_err(|e| e.to_string())?;
                let account = account_by_email(&db, &email).await?;
                let kind = match amount {
                    0 => return Err("--amount must not be 0".to_string()),
                    a if a > 0 => EntryKind::Grant,
                    _ => EntryKind::Adjustment,
                };
                let key = match idempotency_key {
                    Some(k) => format!("admin:{k}"),
                    None => format!("cli:{}", uuid::Uuid::new_v4()),
                };
                let posted = db
                    .admin_credit(account.id, kind, amount, &key, None, &reason)
                    .await
                    .map_err(|e| e.to_string())?;
                let detail = json!({"amount": amount, "kind": kind.as_str(),
                                    "replayed": posted.is_replay(), "entry_id": posted.entry().id});
                let action = if amount > 0 {
                    "grant_credits"
                } else {
                    "deduct_credits"
                };
                audit(&db, action, &account, Some(&reason), detail).await?;
                let balance = db.balance(account.id).await.map_err(|e| e.to_string())?;
                if posted.is_replay() {
                    println!("already done (same idempotency key): nothing changed");
                }
                println!(
                    "{}: balance {} millicredits ({} available)",
                    account.email, balance.balance, balance.available
                );
                Ok(())
            })
            .await
        }
        AdminCommand::CreateWorkerToken { database, name } => {
            with_db(&database, |db| async move {
                let token = tokens::generate(WORKER_TOKEN_PREFIX);
                let id = db
                    .insert_worker_token(&name, &tokens::hash(&token))
                    .await
                    .map_err(|e| e.to_string())?;
                db.record_audit(
                    &AuditActor::cli(),
                    "create_worker_token",
                    Some(&id.to_string()),
                    None,
                    Some(&json!({"name": name})),
                )
                .await
                .map_err(|e| e.to_string())?;
                eprintln!("worker token {id} ({name}); revoke it with: atelier admin revoke-worker-token --token {id}");
                println!("{token}");
                Ok(())
            })
            .await
        }
        AdminCommand::RevokeWorkerToken { database, token } => {
            with_db(&database, |db| async move {
                let revoked = db
                    .revoke_worker_token(token.trim())
                    .await
                    .map_err(|e| e.to_string())?;
                for id in &revoked {
                    db.record_audit(
                        &AuditActor::cli(),
                        "revoke_worker_token",
                        Some(&id.to_string()),
                        None,
                        None,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    println!("revoked worker token {id}");
                }
                Ok(())
            })
            .await
        }
    }
}

/// Connects (applying migrations), runs `f`, closes.
async fn with_db<F, Fut>(database: &DatabaseConfig, f: F) -> Result<(), String>
where
    F: FnOnce(Db) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let db = Db::connect(&database.database_url, database.database_max_connections)
        .await
        .map_err(|e| e.to_string())?;
    let result = f(db.clone()).await;
    db.close().await;
    result
}

async fn account_by_email(db: &Db, email: &str) -> Result<Account, String> {
    let email = normalize_email(email).map_err(|e| e.to_string())?;
    db.account_by_email(&email)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no account with the email {email}"))
}

async fn audit(
    db: &Db,
    action: &str,
    account: &Account,
    reason: Option<&str>,
    detail: serde_json::Value,
) -> Result<(), String> {
    let target = format!("{} ({})", account.id, account.email);
    db.record_audit(
        &AuditActor::cli(),
        action,
        Some(&target),
        reason,
        Some(&detail),
    )
    .await
    .map_err(|e| e.to_string())
}

/// Makes the admin: a new account with a password (from `password_env`, typed at the terminal,
/// or generated and printed once), or an existing account promoted (its password unchanged).
async fn create_admin(
    db: &Db,
    email: &str,
    name: Option<String>,
    password_env: Option<String>,
) -> Result<(), String> {
    let email = normalize_email(email).map_err(|e| e.to_string())?;
    if let Some(existing) = db
        .account_by_email(&email)
        .await
        .map_err(|e| e.to_string())?
    {
        db.set_role(existing.id, AccountRole::Admin)
            .await
            .map_err(|e| e.to_string())?;
        audit(
            db,
            "create_admin",
            &existing,
            None,
            json!({"existing_account": true}),
        )
        .await?;
        println!("{email} already had an account; it is now an admin (password unchanged)");
        return Ok(());
    }
    let (password, generated) = match password_env {
        Some(var) => (
            std::env::var(&var)
                .map_err(|_| format!("the environment variable {var} is not set"))?,
            false,
        ),
        None if std::io::stdin().is_terminal() => (prompt_password()?, false),
        None => (generate_password(), true),
    };
    password::check_strength(&password).map_err(|e| e.to_string())?;
    let hash = password::hash(password.clone())
        .await
        .map_err(|e| e.to_string())?;
    let name = name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| email.split('@').next().unwrap_or("admin").to_string());
    let account = db
        .create_account(&email, &name, &hash)
        .await
        .map_err(|e| e.to_string())?;
    db.set_role(account.id, AccountRole::Admin)
        .await
        .map_err(|e| e.to_string())?;
    audit(
        db,
        "create_admin",
        &account,
        None,
        json!({"existing_account": false}),
    )
    .await?;
    println!("admin {email} created");
    if generated {
        println!("password: {password}");
        eprintln!("(shown once; change it in the studio's account settings)");
    }
    Ok(())
}

fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..GENERATED_PASSWORD_CHARS)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Reads a password twice from the terminal, without echo (`stty -echo`).
fn prompt_password() -> Result<String, String> {
    let echo = |on: bool| {
        std::process::Command::new("stty")
            .arg(if on { "echo" } else { "-echo" })
            .stdin(std::process::Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success())
    };
    let read = |prompt: &str| -> Result<String, String> {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("could not read the password: {e}"))?;
        eprintln!();
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let hidden = echo(false);
    let first = read("password for the admin: ");
    let second = first.as_ref().ok().map(|_| read("again: "));
    if hidden {
        echo(true);
    }
    let first = first?;
    match second {
        Some(Ok(second)) if second == first => Ok(first),
        Some(Ok(_)) => Err("the two passwords differ".into()),
        Some(Err(e)) => Err(e),
        None => Err("no password read".into()),
    }
}
