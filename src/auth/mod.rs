//! Who is calling: passwords, tokens, the request principal, CSRF, and auth rate limits.

pub mod key_rate_limit;
pub mod password;
pub mod principal;
pub mod rate_limit;
pub mod scopes;
pub mod tokens;

pub use principal::{AccountAuth, AdminAuth, Auth, Principal};
