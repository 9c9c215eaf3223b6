//! The HTTP calls the benchmark needs: sign up (returns a bearer token), create a session, and
//! for the soak a viewer share link and a server metric.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

pub const PASSWORD: &str = "bench password, long enough";

pub struct Api {
    http: reqwest::Client,
    base: String,
    root: String,
}

impl Api {
    pub fn new(base: &str) -> Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().build()?,
            base: format!("{base}/api/v1"),
            root: base.to_owned(),
        })
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Result<(u16, Value)> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.with_context(|| format!("POST {path}"))?;
        let status = res.status().as_u16();
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Creates an account and returns its bearer token.
    pub async fn signup(&self, name: &str) -> Result<String> {
        let email = format!(
            "{}-{}-{}@bench.example.com",
            name.to_lowercase(),
            std::process::id(),
            unique()
        );
        let (status, body) = self
            .post(
                "/auth/signup",
                None,
                json!({"email": email, "password": PASSWORD, "name": name}),
            )
            .await?;
        if status != 201 {
            bail!("signup: {status} {body}");
        }
        body["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("signup: no token in {body}"))
    }

    /// Creates a studio session and returns its id.
    pub async fn create_session(&self, token: &str, title: &str) -> Result<String> {
        let (status, body) = self
            .post("/sessions", Some(token), json!({"title": title}))
            .await?;
        if status != 201 {
            bail!("create session: {status} {body}");
        }
        body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("create session: no id in {body}"))
    }

    /// The value of an unlabelled counter or gauge on `/metrics` (0 when it was never set).
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.root))
            .send()
            .await
            .context("GET /metrics")?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0.0))
    }

    /// Creates a viewer share link of `session` (no expiry) and returns its token.
    pub async fn share_link(&self, token: &str, session: &str) -> Result<String> {
        let (status, body) = self
            .post(
                &format!("/sessions/{session}/share-links"),
                Some(token),
                json!({"role": "viewer"}),
            )
            .await?;
        if status != 201 {
            bail!("create share link: {status} {body}");
        }
        body["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("create share link: no token in {body}"))
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
