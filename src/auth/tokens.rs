//! Random bearer tokens. Only their SHA-256 is stored, so a leaked database holds no usable token.
//!
//! Account tokens start with `atl_`, share-link tokens with `ats_`, API keys with `atk_`,
//! invitation links with `ati_`: the prefix says where to look
//! one up and makes leaked tokens easy to recognise in logs and secret scanners.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const ACCOUNT_PREFIX: &str = "atl_";
pub const SHARE_LINK_PREFIX: &str = "ats_";
pub const API_KEY_PREFIX: &str = "atk_";
pub const INVITATION_PREFIX: &str = "ati_";

/// A new token: the prefix and 256 random bits in hex.
pub fn generate(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A random CSRF token (double-submit: cookie + header).
pub fn csrf() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// Whether a secret the client sent equals ours, in time that does not depend on where they
/// differ (so the response time cannot be used to guess it byte by byte). An empty secret never
/// matches.
pub fn same_secret(sent: &str, ours: &str) -> bool {
    !ours.is_empty() && bool::from(sent.as_bytes().ct_eq(ours.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc123", "abc123"));
        assert!(!same_secret("abc124", "abc123"));
        assert!(!same_secret("abc12", "abc123"));
        assert!(!same_secret("abc1234", "abc123"));
        assert!(!same_secret("", "abc123"));
        assert!(!same_secret("", ""));
    }
}
