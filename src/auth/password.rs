//! Password hashing with argon2id. Hashing is deliberately slow, so it runs on the blocking pool.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::error::{Error, Result};

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Rejects passwords that are short, overlong, or made of one repeated character.
pub fn check_strength(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::invalid(format!(
            "password is too weak: use at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(format!(
            "password is too long: at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let mut chars = password.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err(Error::invalid(
            "password is too weak: it repeats one character",
        ));
    }
    Ok(())
}

pub async fn hash(password: String) -> Result<String> {
    actix_web::web::block(move || {
        let salt_bytes: [u8; 16] = rand::random();
        let salt = SaltString::encode_b64(&salt_bytes)
            .map_err(|e| Error::Internal(format!("salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(format!("argon2: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(format!("blocking pool: {e}")))?
}

/// Checks a password against a stored hash. A malformed stored hash is an internal error.
pub async fn verify(password: String, stored: String) -> Result<bool> {
    actix_web::web::block(move || {
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| Error::Internal(format!("stored password hash: {e}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| Error::Internal(format!("blocking pool: {e}")))?
}

/// A hash to verify against when the account does not exist, so that a login for an unknown
/// email takes as long as one with a wrong password.
pub async fn dummy_hash() -> Result<String> {
    hash("not-a-real-password".to_string()).await
}
