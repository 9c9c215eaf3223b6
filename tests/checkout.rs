//! Buying credits through Stripe Checkout, against a Stripe stand-in: a small HTTP server in this
//! test that answers `POST /v1/checkout/sessions` as Stripe does and then sends the signed
//! `checkout.session.completed` webhook to the server, as Stripe would once the user paid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{error_code, stripe_signature, unix_now, Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const SECRET: &str = "whsec_checkout_test";
const STRIPE_KEY: &str = "sk_test_standin";
const PACKS: &str = "starter=10000:500:usd,studio=100000:4000:usd";

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    form: HashMap<String, String>,
}

/// What the stand-in does after answering a Checkout Session: "the user pays", i.e. it posts
/// the signed webhook to this URL.
#[derive(Clone)]
struct StandIn {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Sessions by idempotency key, so a retried request gets the same session (as Stripe).
    sessions: Arc<Mutex<HashMap<String, String>>>,
    /// The signed webhook bodies it delivered.
    delivered: Arc<Mutex<Vec<String>>>,
}

async fn read_request(
    stream: &mut BufReader<tokio::net::TcpStream>,
) -> Option<(String, HashMap<String, String>, Vec<u8>)> {
    let mut line = String::new();
    stream.read_line(&mut line).await.ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        stream.read_line(&mut h).await.ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.ok()?;
    Some((path, headers, body))
}

impl StandIn {
    async fn start(webhook_url: Arc<Mutex<String>>) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stand_in = StandIn {
            base: format!("http://{}", listener.local_addr().unwrap()),
            seen: Arc::default(),
            sessions: Arc::default(),
            delivered: Arc::default(),
        };
        let this = stand_in.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let this = this.clone();
                let webhook_url = webhook_url.clone();
                tokio::spawn(async move { this.serve(socket, webhook_url).await });
            }
        });
        stand_in
    }

    async fn serve(&self, socket: tokio::net::TcpStream, webhook_url: Arc<Mutex<String>>) {
        let mut stream = BufReader::new(socket);
        let Some((path, headers, body)) = read_request(&mut stream).await else {
            return;
        };
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        self.seen.lock().unwrap().push(Seen {
            path: path.clone(),
            headers: headers.clone(),
            form: form.clone(),
        });
        let authorized = headers.get("authorization").map(String::as_str)
            == Some(&format!("Bearer {STRIPE_KEY}"));
        let (status, answer) = if path != "/v1/checkout/sessions" {
            (
                "404 Not Found",
                json!({"error": {"message": "no such path"}}),
            )
        } else if !authorized {
            (
                "401 Unauthorized",
                json!({"error": {"message": "Invalid API Key provided"}}),
            )
        } else {
            let key = headers.get("idempotency-key").cloned().unwrap_or_default();
            let (id, new) = {
                let mut sessions = self.sessions.lock().unwrap();
                let n = sessions.len() + 1;
                match sessions.get(&key) {
                    Some(id) => (id.clone(), false),
                    None => {
                        let id = format!("cs_test_{n}");
                        sessions.insert(key, id.clone());
                        (id, true)
                    }
                }
            };
            if new {
                // The user pays a moment later; Stripe tells the server.
                let event = json!({
                    "id": format!("evt_{id}"),
                    "type": "checkout.session.completed",
                    "data": {"object": {
                        "id": id,
                        "object": "checkout.session",
                        "payment_status": "paid",
                        "payment_intent": format!("pi_{id}"),
                        "client_reference_id": form.get("client_reference_id"),
                        "amount_total": form.get("line_items[0][price_data][unit_amount]")
                            .and_then(|a| a.parse::<i64>().ok()),
                        "metadata": {
                            "credits": form.get("metadata[credits]"),
                            "account_id": form.get("metadata[account_id]"),
                            "pack": form.get("metadata[pack]"),
                        },
                    }},
                })
                .to_string();
                let url = webhook_url.lock().unwrap().clone();
                let delivered = self.delivered.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let res = reqwest::Client::new()
                        .post(url)
                        .header(
                            "stripe-signature",
                            stripe_signature(SECRET, unix_now(), &event),
                        )
                        .header("content-type", "application/json")
                        .body(event.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), StatusCode::OK);
                    delivered.lock().unwrap().push(event);
                });
            }
            (
                "200 OK",
                json!({"id": id, "object": "checkout.session",
                       "url": format!("https://checkout.stripe.test/c/pay/{id}")}),
            )
        };
        let body = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.get_mut().write_all(response.as_bytes()).await;
        let _ = stream.get_mut().shutdown().await;
    }
}

async fn wait_for_balance(server: &TestServer, token: &str, want: i64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if server.balance(token).await.0 == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the balance never reached {want}"));
}

async fn checkout_through_the_stripe_stand_in(backend: Backend) {
    let webhook_url = Arc::new(Mutex::new(String::new()));
    let stand_in = StandIn::start(webhook_url.clone()).await;
    let server = TestServer::start_with(
        backend,
        &[
            "--signup-credits",
            "0",
            "--payment-webhook-secret",
            SECRET,
            "--stripe-secret-key",
            STRIPE_KEY,
            "--stripe-api-base",
            &stand_in.base,
            "--credit-packs",
            PACKS,
            "--public-url",
            "https://atelier.example.com",
        ],
    )
    .await;
    *webhook_url.lock().unwrap() = server.api("/billing/webhook");
    let buyer = server.signup("Buyer").await;

    let (status, packs) = server.call(Method::GET, "/billing/packs", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(packs["enabled"], true);
    assert_eq!(packs["packs"][1]["name"], "studio");
    assert_eq!(packs["packs"][1]["credits"], 100_000);
    assert_eq!(packs["packs"][1]["price"], 4000);

    // Pack → checkout URL.
    let res = server
        .client
        .post(server.api("/billing/checkout"))
        .bearer_auth(&buyer.token)
        .header("idempotency-key", "click-0001")
        .json(&json!({"pack": "studio"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["url"], "https://checkout.stripe.test/c/pay/cs_test_1",
        "{body}"
    );
    {
        let seen = stand_in.seen.lock().unwrap();
        let call = &seen[0];
        assert_eq!(call.path, "/v1/checkout/sessions");
        assert!(call.headers["content-type"].starts_with("application/x-www-form-urlencoded"));
        assert!(call.headers["idempotency-key"].ends_with(":studio:click-0001"));
        assert_eq!(call.form["mode"], "payment");
        assert_eq!(call.form["client_reference_id"], buyer.id);
        assert_eq!(call.form["metadata[credits]"], "100000");
        assert_eq!(call.form["line_items[0][price_data][unit_amount]"], "4000");
        assert_eq!(call.form["line_items[0][price_data][currency]"], "usd");
        assert_eq!(call.form["customer_email"], buyer.email);
        assert!(call.form["success_url"].starts_with("https://atelier.example.com/#/sessions"));
        assert!(call.form["cancel_url"].starts_with("https://atelier.example.com/#/sessions"));
    }
    // → signed webhook → balance up once.
    wait_for_balance(&server, &buyer.token, 100_000).await;
    // A double click (same key) gets the same checkout, and no second webhook.
    let res = server
        .client
        .post(server.api("/billing/checkout"))
        .bearer_auth(&buyer.token)
        .header("idempotency-key", "click-0001")
        .json(&json!({"pack": "studio"}))
        .send()
        .await
        .unwrap();
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["checkout_id"], "cs_test_1");
    // Stripe retries the webhook: nothing changes.
    let delivered = stand_in.delivered.lock().unwrap()[0].clone();
    let (status, replay) = server
        .webhook(
            &delivered,
            Some(&stripe_signature(SECRET, unix_now(), &delivered)),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replay["outcome"], "duplicate");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.balance(&buyer.token).await, (100_000, 0, 100_000));
    let purchases: Vec<Value> = server
        .ledger(&buyer.token)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "purchase")
        .collect();
    assert_eq!(purchases.len(), 1);
    assert_eq!(purchases[0]["reference"], "pi_cs_test_1");

    // A bad pack is a 400 naming the offered ones; nothing reaches Stripe.
    let calls = stand_in.seen.lock().unwrap().len();
    let (status, body) = server
        .call(
            Method::POST,
            "/billing/checkout",
            Some(&buyer.token),
            Some(json!({"pack": "mega"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("starter, studio"));
    let (status, _) = server
        .call(
            Method::POST,
            "/billing/checkout",
            Some(&buyer.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(stand_in.seen.lock().unwrap().len(), calls);
    // Anonymous callers cannot buy.
    let (status, _) = server
        .call(
            Method::POST,
            "/billing/checkout",
            None,
            Some(json!({"pack": "starter"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The statement shows the purchase, and the CSV has it as a line in credits.
    let res = server
        .client
        .get(server.api("/billing/ledger.csv"))
        .bearer_auth(&buyer.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[1].contains(",Credits bought,100,100,"), "{csv}");
}

async fn stripe_refusing_is_a_clear_error(backend: Backend) {
    let webhook_url = Arc::new(Mutex::new(String::new()));
    let stand_in = StandIn::start(webhook_url).await;
    let server = TestServer::start_with(
        backend.clone(),
        &[
            "--stripe-secret-key",
            "sk_test_wrong",
            "--stripe-api-base",
            &stand_in.base,
            "--credit-packs",
            PACKS,
        ],
    )
    .await;
    let buyer = server.signup("Buyer").await;
    let (status, body) = server
        .call(
            Method::POST,
            "/billing/checkout",
            Some(&buyer.token),
            Some(json!({"pack": "starter"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(error_code(&body), "payment_provider_error");
    assert!(
        !body["error"]["message"].as_str().unwrap().contains("sk_"),
        "{body}"
    );
    drop(server);
    // Stripe unreachable: the same clear 502, not a hang.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = TestServer::start_with(
        backend,
        &[
            "--stripe-secret-key",
            STRIPE_KEY,
            "--stripe-api-base",
            &unreachable,
            "--credit-packs",
            PACKS,
        ],
    )
    .await;
    let buyer = server.signup("Buyer").await;
    let (status, body) = server
        .call(
            Method::POST,
            "/billing/checkout",
            Some(&buyer.token),
            Some(json!({"pack": "starter"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(error_code(&body), "payment_provider_error");
}

async fn unconfigured_payments_say_so(backend: Backend) {
    let server = TestServer::start_with(backend, &["--credit-packs", PACKS]).await;
    let buyer = server.signup("Buyer").await;
    let (status, packs) = server.call(Method::GET, "/billing/packs", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(packs["enabled"], false);
    let (status, body) = server
        .call(
            Method::POST,
            "/billing/checkout",
            Some(&buyer.token),
            Some(json!({"pack": "starter"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "payments_not_configured");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not set up payments"));
}

on_both_backends!(
    checkout_through_the_stripe_stand_in,
    stripe_refusing_is_a_clear_error,
    unconfigured_payments_say_so,
);
