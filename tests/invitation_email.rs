//! Invitation emails through an SMTP relay, against the real binary and a stand-in relay
//! (`tests/smtp_stand_in/`), on SQLite and PostgreSQL: adding a member by email sends one
//! message to that address — the same words whether or not it has an account — naming the
//! inviter and the session, with a link; the link's token, after signing up with that address,
//! lands in the session (and works for that address only); a relay that refuses (5xx) or fails
//! for now (4xx, retried) changes nothing in the HTTP answer and is counted in `/metrics`; a
//! malformed relay URL stops start-up with a message naming the setting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod smtp_stand_in;

use std::time::Duration;

use common::{Backend, TestServer, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use smtp_stand_in::{Answer, Received, SmtpStandIn};

const PUBLIC_URL: &str = "https://studio.example.test";
const FROM: &str = "Atelier <atelier@example.test>";

async fn server_with_relay(backend: Backend, relay: &SmtpStandIn, extra: &[&str]) -> TestServer {
    let url = relay.url();
    let mut args = vec![
        "--smtp-url",
        url.as_str(),
        "--smtp-from",
        FROM,
        "--public-url",
        PUBLIC_URL,
    ];
    args.extend_from_slice(extra);
    TestServer::start_with(backend, &args).await
}

async fn add_member(server: &TestServer, owner: &str, session: &str, email: &str) -> Value {
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/members"),
            Some(owner),
            Some(json!({"email": email, "role": "editor"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The invitation token in an email's link.
fn link_token(message: &Received) -> String {
    let text = message.text();
    let prefix = format!("{PUBLIC_URL}/#/invite/");
    let start = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no link in {text}"))
        + prefix.len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

async fn listed_role(server: &TestServer, token: &str, session: &str) -> Option<String> {
    let (_, list) = server
        .call(Method::GET, "/sessions", Some(token), None)
        .await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == session)
        .map(|s| s["role"].as_str().unwrap().to_owned())
}

async fn metric(server: &TestServer, line_prefix: &str) -> f64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn wait_metric(server: &TestServer, line_prefix: &str, at_least: f64) -> f64 {
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let value = metric(server, line_prefix).await;
        if value >= at_least {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{line_prefix} is {value}, waited for {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn emailed_invitations_land_in_the_session(backend: Backend) {
    let relay = SmtpStandIn::start().await;
    let server = server_with_relay(backend, &relay, &[]).await;
    let owner =
        {
            let (status, body) = server
            .call(
                Method::POST,
                "/auth/signup",
                None,
                Some(json!({"email": format!("ann-{}@example.com", uuid::Uuid::new_v4().simple()),
                    "password": PASSWORD,
                    // A line separator (not a control character, so accepted as a name) must not
                    // start a header of its own.
                    "name": "Ann Inviter\u{2028}Bcc: evil@example.test"})),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["token"].as_str().unwrap().to_owned()
        };
    let known = server.signup("Known").await;
    let session = server.create_session(&owner, "Dünen — étude").await;
    let newcomer = format!("newcomer-{}@example.com", uuid::Uuid::new_v4().simple());

    // One message to each address, new and existing alike, the answer the same shape.
    let to_new = add_member(&server, &owner, &session, &newcomer).await;
    let to_known = add_member(&server, &owner, &session, &known.email).await;
    assert_eq!(to_new["invited"], true);
    assert_eq!(to_known["invited"], true);
    let messages = relay.wait_for(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(relay.received().len(), 2, "one email per invitation");
    let of = |email: &str| {
        messages
            .iter()
            .find(|m| m.rcpt_to == [email.to_owned()])
            .unwrap_or_else(|| panic!("no message to {email}: {messages:?}"))
            .clone()
    };
    let (new_mail, known_mail) = (of(&newcomer), of(&known.email));
    for (mail, address) in [(&new_mail, &newcomer), (&known_mail, &known.email)] {
        assert!(
            mail.mail_from.contains("atelier@example.test"),
            "{}",
            mail.mail_from
        );
        assert!(mail
            .header("From")
            .unwrap()
            .contains("atelier@example.test"));
        assert!(mail.header("To").unwrap().contains(address.as_str()));
        let subject = mail.header("Subject").unwrap();
        assert!(!subject.is_empty());
        assert!(
            !mail.header_names().contains(&"bcc".to_owned()),
            "{}",
            mail.data
        );
        assert_eq!(mail.rcpt_to, std::slice::from_ref(address));
        let text = mail.text();
        assert!(
            text.contains("Ann Inviter Bcc: evil@example.test invited you"),
            "{text}"
        );
        assert!(text.contains("Dünen — étude"), "{text}");
        assert!(text.contains("as editor"), "{text}");
        assert!(link_token(mail).starts_with("ati_"));
    }
    // Apart from the address and the token, the two emails say the same.
    let scrub =
        |m: &Received, address: &str| m.text().replace(address, "…").replace(&link_token(m), "…");
    assert_eq!(
        scrub(&new_mail, &newcomer),
        scrub(&known_mail, &known.email)
    );

    // The newcomer follows the link: signs up with the address, and the link lands them in
    // the session (they joined at signup; the link says so and accepting changes nothing).
    let new_token = link_token(&new_mail);
    let (status, signed_up) = server
        .call(
            Method::POST,
            "/auth/signup",
            None,
            Some(json!({"email": newcomer, "password": PASSWORD, "name": "Newcomer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{signed_up}");
    let newcomer_token = signed_up["token"].as_str().unwrap().to_owned();
    let (status, preview) = server
        .call(
            Method::GET,
            &format!("/invitations/{new_token}"),
            Some(&newcomer_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["session_id"], session.as_str());
    assert_eq!(preview["member"], true);
    let (status, accepted) = server
        .call(
            Method::POST,
            &format!("/invitations/{new_token}/accept"),
            Some(&newcomer_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(accepted["role"], "editor");
    assert_eq!(
        listed_role(&server, &newcomer_token, &session)
            .await
            .as_deref(),
        Some("editor")
    );

    // The existing account's link works for that address only.
    let known_token = link_token(&known_mail);
    let stranger = server.signup("Stranger").await;
    for path in [
        format!("/invitations/{known_token}"),
        format!("/invitations/{known_token}/accept"),
    ] {
        let method = if path.ends_with("accept") {
            Method::POST
        } else {
            Method::GET
        };
        let (status, body) = server
            .call(method, &path, Some(&stranger.token), None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    assert_eq!(listed_role(&server, &stranger.token, &session).await, None);
    let (status, preview) = server
        .call(
            Method::GET,
            &format!("/invitations/{known_token}"),
            Some(&known.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["member"], false);
    assert_eq!(preview["role"], "editor");
    let (status, accepted) = server
        .call(
            Method::POST,
            &format!("/invitations/{known_token}/accept"),
            Some(&known.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(
        listed_role(&server, &known.token, &session)
            .await
            .as_deref(),
        Some("editor")
    );
    // Accepted through the link, it is no longer pending on the dashboard.
    let (_, mine) = server
        .call(Method::GET, "/me/invitations", Some(&known.token), None)
        .await;
    assert_eq!(mine, json!([]));
    assert_eq!(
        wait_metric(&server, "atelier_emails_sent_total ", 2.0).await,
        2.0
    );
}

async fn a_failing_relay_changes_nothing_for_the_caller(backend: Backend) {
    let relay = SmtpStandIn::start().await;
    let server = server_with_relay(
        backend,
        &relay,
        &["--smtp-retry-base-ms", "20", "--smtp-max-attempts", "3"],
    )
    .await;
    let owner = server.signup("Owner").await;
    let session = server.create_session(&owner.token, "Refused").await;
    let address = |n: u32| format!("someone-{n}-{}@example.com", uuid::Uuid::new_v4().simple());

    // A permanent refusal (550): the answer is the usual one, the email is not retried.
    relay.answer(Answer::Refuse);
    let started = std::time::Instant::now();
    let first = address(1);
    let body = add_member(&server, &owner.token, &session, &first).await;
    assert_eq!(
        body,
        json!({"email": first, "role": "editor", "invited": true})
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_metric(
        &server,
        "atelier_emails_failed_total{reason=\"refused\"} ",
        1.0,
    )
    .await;
    assert_eq!(relay.rcpt_attempts(), 1);

    // A temporary failure (451): retried up to the attempts allowed, then given up.
    relay.answer(Answer::TryLater);
    let second = address(2);
    let body = add_member(&server, &owner.token, &session, &second).await;
    assert_eq!(
        body,
        json!({"email": second, "role": "editor", "invited": true})
    );
    wait_metric(
        &server,
        "atelier_emails_failed_total{reason=\"attempts\"} ",
        1.0,
    )
    .await;
    assert_eq!(metric(&server, "atelier_email_retries_total ").await, 2.0);
    assert_eq!(relay.rcpt_attempts(), 4);
    assert!(relay.received().is_empty());

    // The relay recovers: the next invitation goes out.
    relay.answer(Answer::Accept);
    let third = address(3);
    add_member(&server, &owner.token, &session, &third).await;
    let got = relay.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].rcpt_to, [third]);
    // Counted once the relay has answered the whole exchange (after the message, QUIT).
    assert_eq!(
        wait_metric(&server, "atelier_emails_sent_total ", 1.0).await,
        1.0
    );
    // The invitations themselves were all recorded.
    let (_, invitations) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}/invitations"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(invitations.as_array().unwrap().len(), 3, "{invitations}");
}

on_both_backends!(
    emailed_invitations_land_in_the_session,
    a_failing_relay_changes_nothing_for_the_caller,
);

/// Starts `atelier serve` with these arguments and expects it to stop with an error; returns
/// its stderr.
fn refused_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_atelier"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ATELIER_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .arg("serve")
        .args(["--bind", "127.0.0.1:0"])
        .args([
            "--database-url",
            &format!("sqlite://{}/a.db", dir.path().display()),
        ])
        .args(["--storage-url", "memory://", "--in-process-worker", "off"])
        .args(args)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_malformed_relay_stops_start_up() {
    for url in [
        "http://mail.example.test",
        "smtp://",
        "smtp://[broken",
        "mail.example.test:25",
    ] {
        let stderr = refused_start(&["--smtp-url", url, "--smtp-from", FROM]);
        assert!(stderr.contains("ATELIER_SMTP_URL"), "{url}: {stderr}");
    }
    // The password in a URL is never echoed.
    let stderr = refused_start(&["--smtp-url", "smtp://u:s3cret-pw@[x", "--smtp-from", FROM]);
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    let stderr = refused_start(&["--smtp-url", "smtp://127.0.0.1:2525"]);
    assert!(stderr.contains("ATELIER_SMTP_FROM"), "{stderr}");
    let stderr = refused_start(&[
        "--smtp-url",
        "smtp://127.0.0.1:2525",
        "--smtp-from",
        "not an address",
    ]);
    assert!(stderr.contains("ATELIER_SMTP_FROM"), "{stderr}");
}
