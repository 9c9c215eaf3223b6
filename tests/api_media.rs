//! Media over HTTP: uploads sniffed by content, limits and quotas, access-checked downloads,
//! deletion (bytes included), the account export, and account deletion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use common::{error_code, png, Backend, TestServer};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

// Minimal files of each accepted kind, laid out as the real formats are (not just a magic number).

/// A baseline JFIF: SOI, APP0 (JFIF 1.1, 1×1 dpi), a comment, EOI.
fn jpeg() -> Vec<u8> {
    let mut b = vec![0xFF, 0xD8]; // SOI
    b.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x10]); // APP0, length 16
    b.extend_from_slice(b"JFIF\0");
    b.extend_from_slice(&[0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00]);
    let comment = b"atelier test";
    b.extend_from_slice(&[0xFF, 0xFE, 0x00, (comment.len() + 2) as u8]); // COM
    b.extend_from_slice(comment);
    b.extend_from_slice(&[0xFF, 0xD9]); // EOI
    b
}

/// RIFF/WEBP with one lossless (VP8L) 1×1 chunk.
fn webp() -> Vec<u8> {
    let vp8l: &[u8] = &[0x2F, 0x00, 0x00, 0x00, 0x00, 0x88, 0x88, 0x08];
    let mut body = b"WEBP".to_vec();
    body.extend_from_slice(b"VP8L");
    body.extend_from_slice(&(vp8l.len() as u32).to_le_bytes());
    body.extend_from_slice(vp8l);
    let mut b = b"RIFF".to_vec();
    b.extend_from_slice(&(body.len() as u32).to_le_bytes());
    b.extend_from_slice(&body);
    b
}

/// A PCM WAV (8 kHz, mono, 16-bit) of `samples` samples: exactly `44 + 2 * samples` bytes.
fn wav(samples: usize) -> Vec<u8> {
    let data_len = (samples * 2) as u32;
    let mut b = b"RIFF".to_vec();
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVE");
    b.extend_from_slice(b"fmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&8000u32.to_le_bytes()); // sample rate
    b.extend_from_slice(&16000u32.to_le_bytes()); // byte rate
    b.extend_from_slice(&2u16.to_le_bytes()); // block align
    b.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let sample = ((i % 64) as i16 - 32) * 512;
        b.extend_from_slice(&sample.to_le_bytes());
    }
    b
}

/// An ID3v2.3 tag (no frames) followed by one silent MPEG-1 Layer III frame (128 kb/s, 44.1 kHz).
fn mp3() -> Vec<u8> {
    let mut b = b"ID3".to_vec();
    b.extend_from_slice(&[0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    b.extend_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
    b.extend(std::iter::repeat_n(0u8, 417 - 4));
    b
}

/// An ISO BMFF file: `ftyp` (isom, compatible isom/iso2/mp41), `free`, and a small `mdat`.
fn mp4() -> Vec<u8> {
    let mut b = Vec::new();
    let brands: &[&[u8; 4]] = &[b"isom", b"iso2", b"mp41"];
    b.extend_from_slice(&((16 + 4 * brands.len()) as u32).to_be_bytes());
    b.extend_from_slice(b"ftyp");
    b.extend_from_slice(b"isom");
    b.extend_from_slice(&0x200u32.to_be_bytes());
    for brand in brands {
        b.extend_from_slice(*brand);
    }
    b.extend_from_slice(&8u32.to_be_bytes());
    b.extend_from_slice(b"free");
    let payload = [0x5Au8; 24];
    b.extend_from_slice(&((8 + payload.len()) as u32).to_be_bytes());
    b.extend_from_slice(b"mdat");
    b.extend_from_slice(&payload);
    b
}

fn id(body: &Value) -> String {
    body["id"].as_str().expect("an id").to_string()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Stored media objects (the readiness probe's file is not media).
fn media_files(server: &TestServer) -> Vec<PathBuf> {
    files_under(&server.objects_dir().join("media"))
}

/// The object file of a media id, if it is on disk.
fn object_of(server: &TestServer, media_id: &str) -> Option<PathBuf> {
    media_files(server)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == media_id))
}

/// GET /media/{id}: status, content type, bytes.
async fn download(
    server: &TestServer,
    media: &str,
    token: Option<&str>,
) -> (StatusCode, String, Vec<u8>) {
    let mut req = server.client.get(server.api(&format!("/media/{media}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, res.bytes().await.unwrap().to_vec())
}

async fn send_form(server: &TestServer, token: &str, form: Form) -> (StatusCode, Value) {
    let res = server
        .client
        .post(server.api("/media"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn upload_every_kind(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("picture.png", png(17, 9), "image/png"),
        ("photo.jpg", jpeg(), "image/jpeg"),
        ("still.webp", webp(), "image/webp"),
        ("voice.wav", wav(100), "audio/x-wav"),
        ("song.mp3", mp3(), "audio/mpeg"),
        ("clip.mp4", mp4(), "video/mp4"),
        // The name and the client's header do not matter: the bytes decide.
        ("misnamed.txt", png(3, 3), "image/png"),
    ];
    let mut uploaded = Vec::new();
    for (name, bytes, content_type) in &cases {
        let (status, media) = server.upload(&ada.token, bytes.clone(), name, None).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {media}");
        assert_eq!(media["content_type"], *content_type, "{name}");
        assert_eq!(media["size_bytes"].as_u64(), Some(bytes.len() as u64));
        assert_eq!(media["filename"], *name);
        assert_eq!(media["owner_id"], ada.id.as_str());
        assert!(media["session_id"].is_null());
        assert!(media.get("object_key").is_none(), "{media}");
        uploaded.push(id(&media));
    }
    // Each download is byte-identical, with the sniffed type.
    for ((name, bytes, content_type), media) in cases.iter().zip(&uploaded) {
        let (status, ct, got) = download(&server, media, Some(&ada.token)).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(ct, *content_type, "{name}");
        assert!(got == *bytes, "{name}: the bytes differ");
    }
    // A client-declared type is ignored.
    let form = Form::new().part(
        "file",
        Part::bytes(jpeg())
            .file_name("x.png")
            .mime_str("image/png")
            .unwrap(),
    );
    let (status, media) = send_form(&server, &ada.token, form).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(media["content_type"], "image/jpeg");
    uploaded.push(id(&media));

    let (status, list) = server
        .call(Method::GET, "/media", Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut listed: Vec<String> = list.as_array().unwrap().iter().map(id).collect();
    listed.sort();
    uploaded.sort();
    assert_eq!(listed, uploaded);
    assert_eq!(media_files(&server).len(), uploaded.len());
    // The filename is metadata only, cut to 255 characters; the object key never uses it.
    let long = format!("{}.png", "n".repeat(300));
    let (status, media) = server.upload(&ada.token, png(2, 2), &long, None).await;
    assert_eq!(status, StatusCode::CREATED, "{media}");
    let kept = media["filename"].as_str().unwrap();
    assert_eq!(kept.chars().count(), 255);
    assert!(long.starts_with(kept));
    let object = object_of(&server, &id(&media)).expect("stored under its id");
    assert!(!object.to_string_lossy().contains("nnn"), "{object:?}");

    // Others see none of it in their list.
    let bob = server.signup("Bob").await;
    let (_, list) = server
        .call(Method::GET, "/media", Some(&bob.token), None)
        .await;
    assert_eq!(list, json!([]));
}

async fn bad_uploads(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let bob = server.signup("Bob").await;
    let session = server.create_session(&ada.token, "S").await;
    server
        .add_member(&ada.token, &session, &bob, "viewer")
        .await;

    // Wrong or unknown content: 415.
    for (name, bytes) in [
        ("x.png", b"this is plain text, not a PNG at all".to_vec()),
        ("x.png", b"\x89PNX but not quite".to_vec()),
        ("x.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec()),
        ("x.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec()),
        ("x.html", b"<!DOCTYPE html><html></html>".to_vec()),
        ("x.bin", vec![0u8; 64]),
    ] {
        let (status, res) = server.upload(&ada.token, bytes, name, None).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{name}: {res}");
        assert_eq!(error_code(&res), "unsupported_media_type");
    }
    // Empty file.
    let (status, res) = server.upload(&ada.token, Vec::new(), "x.png", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{res}");
    assert_eq!(error_code(&res), "invalid_input");

    let bad_forms: Vec<(&str, Form)> = vec![
        (
            "no file field",
            Form::new().text("session_id", session.clone()),
        ),
        ("nothing at all", Form::new()),
        (
            "unexpected field",
            Form::new()
                .part("file", Part::bytes(png(2, 2)).file_name("a.png"))
                .text("title", "hello"),
        ),
        (
            "file under another name",
            Form::new().part("upload", Part::bytes(png(2, 2)).file_name("a.png")),
        ),
        (
            "two files",
            Form::new()
                .part("file", Part::bytes(png(2, 2)).file_name("a.png"))
                .part("file", Part::bytes(png(2, 2)).file_name("b.png")),
        ),
        (
            "malformed session id",
            Form::new()
                .part("file", Part::bytes(png(2, 2)).file_name("a.png"))
                .text("session_id", "not-a-session"),
        ),
        (
            "overlong session id",
            Form::new()
                .part("file", Part::bytes(png(2, 2)).file_name("a.png"))
                .text("session_id", "x".repeat(10_000)),
        ),
    ];
    for (what, form) in bad_forms {
        let (status, res) = send_form(&server, &ada.token, form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {res}");
        assert_eq!(error_code(&res), "invalid_input", "{what}");
    }

    // Not multipart at all: a 4xx in the error shape.
    for (content_type, body) in [
        ("application/json", br#"{"file": "aGVsbG8="}"#.to_vec()),
        ("image/png", png(2, 2)),
        ("multipart/form-data", png(2, 2)),
        (
            "multipart/form-data; boundary=xyz",
            b"--xyz\r\nbroken".to_vec(),
        ),
    ] {
        let res = server
            .client
            .post(server.api("/media"))
            .bearer_auth(&ada.token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert!(status.is_client_error(), "{content_type}: {status}");
        error_code(&res.json().await.unwrap());
    }

    // Attaching to a session: it must exist and be visible (404), and the caller must be able
    // to edit it (403 for a viewer).
    let (status, res) = server
        .upload(
            &ada.token,
            png(2, 2),
            "a.png",
            Some("00000000-0000-4000-8000-000000000000"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{res}");
    let carol = server.signup("Carol").await;
    let (status, res) = server
        .upload(&carol.token, png(2, 2), "a.png", Some(&session))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{res}");
    let (status, res) = server
        .upload(&bob.token, png(2, 2), "a.png", Some(&session))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{res}");
    assert_eq!(error_code(&res), "forbidden");

    // No account: anonymous 401, a share link 403.
    let res = server
        .client
        .post(server.api("/media"))
        .multipart(Form::new().part("file", Part::bytes(png(2, 2)).file_name("a.png")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (_, link) = server.share_link(&ada.token, &session, None).await;
    let (status, _) = server
        .upload(&link, png(2, 2), "a.png", Some(&session))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // None of it stored anything.
    for token in [&ada.token, &bob.token, &carol.token] {
        let (_, list) = server.call(Method::GET, "/media", Some(token), None).await;
        assert_eq!(list, json!([]));
    }
    assert_eq!(media_files(&server), Vec::<PathBuf>::new());
}

async fn upload_size_limit(backend: Backend) {
    let server = TestServer::start_with(backend, &["--max-upload-bytes", "1000"]).await;
    let ada = server.signup("Ada").await;
    let fits = wav(478); // 44 + 956 = 1000 bytes: exactly the limit
    assert_eq!(fits.len(), 1000);
    let (status, res) = server.upload(&ada.token, fits, "fits.wav", None).await;
    assert_eq!(status, StatusCode::CREATED, "{res}");
    for size in [479, 3_000] {
        let (status, res) = server.upload(&ada.token, wav(size), "big.wav", None).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{res}");
        assert_eq!(error_code(&res), "payload_too_large");
    }
    let big_png = png(200, 200);
    assert!(big_png.len() > 1000);
    let (status, res) = server.upload(&ada.token, big_png, "big.png", None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{res}");
    let (_, list) = server
        .call(Method::GET, "/media", Some(&ada.token), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(media_files(&server).len(), 1);
}

async fn storage_quota(backend: Backend) {
    let server = TestServer::start_with(backend, &["--storage-quota-bytes", "5000"]).await;
    let ada = server.signup("Ada").await;
    let bob = server.signup("Bob").await;
    let file = wav(1478); // 3000 bytes
    assert_eq!(file.len(), 3000);
    let (status, first) = server
        .upload(&ada.token, file.clone(), "one.wav", None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, res) = server
        .upload(&ada.token, file.clone(), "two.wav", None)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{res}");
    assert_eq!(error_code(&res), "quota_exceeded");
    // Nothing stored for the refused upload.
    let (_, list) = server
        .call(Method::GET, "/media", Some(&ada.token), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(media_files(&server).len(), 1);
    // What still fits is accepted: exactly up to the quota.
    let (status, res) = server.upload(&ada.token, wav(978), "rest.wav", None).await; // 2000 bytes → 5000 in all
    assert_eq!(status, StatusCode::CREATED, "{res}");
    let (status, _) = server
        .upload(&ada.token, png(1, 1), "one-more.png", None)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // The quota is per account.
    let (status, _) = server.upload(&bob.token, file.clone(), "b.wav", None).await;
    assert_eq!(status, StatusCode::CREATED);
    // Deleting frees room.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/media/{}", id(&first)),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, res) = server.upload(&ada.token, file, "again.wav", None).await;
    assert_eq!(status, StatusCode::CREATED, "{res}");
}

async fn download_access_and_delete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let bob = server.signup("Bob").await;
    let carol = server.signup("Carol").await;
    let session = server.create_session(&ada.token, "Gallery").await;
    let other_session = server.create_session(&ada.token, "Elsewhere").await;
    server
        .add_member(&ada.token, &session, &bob, "viewer")
        .await;
    let (_, link) = server.share_link(&ada.token, &session, None).await;
    let (_, other_link) = server.share_link(&ada.token, &other_session, None).await;

    let shared_bytes = png(8, 8);
    let (status, shared) = server
        .upload(
            &ada.token,
            shared_bytes.clone(),
            "shared.png",
            Some(&session),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{shared}");
    assert_eq!(shared["session_id"], session.as_str());
    let shared = id(&shared);
    let private_bytes = jpeg();
    let (status, private) = server
        .upload(&ada.token, private_bytes.clone(), "private.jpg", None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let private = id(&private);

    // Media used by a session: owner, members and the session's link read it.
    for (who, token) in [
        ("owner", &ada.token),
        ("member", &bob.token),
        ("link", &link),
    ] {
        let (status, ct, bytes) = download(&server, &shared, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{who}");
        assert_eq!(ct, "image/png", "{who}");
        assert!(bytes == shared_bytes, "{who}: bytes differ");
    }
    for (who, token) in [("other account", &carol.token), ("other link", &other_link)] {
        let (status, _, body) = download(&server, &shared, Some(token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{who}");
        assert_eq!(
            error_code(&serde_json::from_slice(&body).unwrap()),
            "not_found"
        );
    }
    let (status, _, body) = download(&server, &shared, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error_code(&serde_json::from_slice(&body).unwrap()),
        "unauthenticated"
    );

    // Media without a session: its owner only.
    let (status, ct, bytes) = download(&server, &private, Some(&ada.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "image/jpeg");
    assert!(bytes == private_bytes);
    for token in [&bob.token, &carol.token, &link] {
        let (status, _, _) = download(&server, &private, Some(token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, _, _) = download(&server, &private, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Unknown and malformed ids.
    for missing in ["00000000-0000-4000-8000-000000000000", "nope"] {
        let (status, _, _) = download(&server, missing, Some(&ada.token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    }

    // A member who is removed loses access.
    let dave = server.signup("Dave").await;
    server
        .add_member(&ada.token, &session, &dave, "editor")
        .await;
    let (status, _, _) = download(&server, &shared, Some(&dave.token)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}/members/{}", dave.id),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = download(&server, &shared, Some(&dave.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Delete: members and links may read but not delete (403); strangers get 404.
    let path = format!("/media/{shared}");
    for (token, want) in [
        (&bob.token, StatusCode::FORBIDDEN),
        (&link, StatusCode::FORBIDDEN),
        (&carol.token, StatusCode::NOT_FOUND),
    ] {
        let (status, res) = server.call(Method::DELETE, &path, Some(token), None).await;
        assert_eq!(status, want, "{res}");
        error_code(&res);
    }
    let (status, _) = server.call(Method::DELETE, &path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let object = object_of(&server, &shared).expect("object file on disk");
    assert!(object.starts_with(server.objects_dir().join("media").join(&ada.id)));
    assert_eq!(std::fs::read(&object).unwrap(), shared_bytes);

    let (status, _) = server
        .call(Method::DELETE, &path, Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!object.exists(), "the object file is gone");
    for token in [&ada.token, &bob.token, &link] {
        let (status, _, _) = download(&server, &shared, Some(token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, _) = server
        .call(Method::DELETE, &path, Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The private file is untouched.
    assert!(object_of(&server, &private).is_some());
    let (_, list) = server
        .call(Method::GET, "/media", Some(&ada.token), None)
        .await;
    assert_eq!(
        list.as_array().unwrap().iter().map(id).collect::<Vec<_>>(),
        vec![private.clone()]
    );

    // Deleting a session keeps its media (owned by the uploader), now private to them.
    let (status, kept) = server
        .upload(&ada.token, png(5, 5), "kept.png", Some(&session))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let kept = id(&kept);
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{session}"),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = download(&server, &kept, Some(&ada.token)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = download(&server, &kept, Some(&bob.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The export as a map of file name → bytes.
async fn export(server: &TestServer, token: &str) -> BTreeMap<String, Vec<u8>> {
    let res = server
        .client
        .get(server.api("/me/export"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/zip"
    );
    let disposition = res
        .headers()
        .get("content-disposition")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let bytes = res.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes.to_vec())).expect("a zip archive");
    let mut files = BTreeMap::new();
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).unwrap();
        let mut content = Vec::new();
        file.read_to_end(&mut content).unwrap();
        files.insert(file.name().to_string(), content);
    }
    files
}

async fn account_export(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let bob = server.signup("Bob").await;
    let session = server.create_session(&ada.token, "Exported").await;
    let bobs_session = server.create_session(&bob.token, "Bob's").await;
    server
        .add_member(&ada.token, &session, &bob, "editor")
        .await;
    server
        .add_member(&bob.token, &bobs_session, &ada, "viewer")
        .await;
    let (link_id, link) = server.share_link(&ada.token, &session, None).await;

    let uploads: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
        ("a.png", png(6, 6), Some(session.as_str()), "png"),
        ("b.wav", wav(50), None, "wav"),
        ("c.mp4", mp4(), None, "mp4"),
    ];
    let mut media = Vec::new();
    for (name, bytes, s, ext) in &uploads {
        let (status, m) = server.upload(&ada.token, bytes.clone(), name, *s).await;
        assert_eq!(status, StatusCode::CREATED, "{m}");
        media.push((id(&m), bytes.clone(), *ext));
    }
    // Bob's media in Ada's session is Bob's, not Ada's.
    let (status, bobs_media) = server
        .upload(&bob.token, jpeg(), "bob.jpg", Some(&session))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let bobs_media = id(&bobs_media);

    let files = export(&server, &ada.token).await;
    let mut want_names: Vec<String> = media
        .iter()
        .map(|(id, _, ext)| format!("media/{id}.{ext}"))
        .collect();
    want_names.push("account.json".into());
    want_names.sort();
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), want_names);
    for (id, bytes, ext) in &media {
        assert!(
            files[&format!("media/{id}.{ext}")] == *bytes,
            "{id}: exported bytes differ"
        );
    }

    let raw = String::from_utf8(files["account.json"].clone()).unwrap();
    for secret in [
        "password",
        "token_hash",
        "object_key",
        &ada.token,
        &link,
        "atl_",
        "ats_",
    ] {
        assert!(!raw.contains(secret), "the export leaks {secret:?}");
    }
    let doc: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(doc["account"]["id"], ada.id.as_str());
    assert_eq!(doc["account"]["email"], ada.email.as_str());
    assert_eq!(doc["account"]["name"], "Ada");
    let sessions = doc["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{doc}");
    let own = sessions
        .iter()
        .find(|s| s["session"]["id"] == session.as_str())
        .unwrap();
    assert_eq!(own["role"], "owner");
    assert_eq!(own["session"]["title"], "Exported");
    let member_emails: Vec<&str> = own["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["email"].as_str().unwrap())
        .collect();
    assert!(
        member_emails.contains(&ada.email.as_str()) && member_emails.contains(&bob.email.as_str()),
        "{own}"
    );
    assert_eq!(own["share_links"][0]["id"], link_id.as_str());
    // Someone else's session: the membership, but not its members or links.
    let theirs = sessions
        .iter()
        .find(|s| s["session"]["id"] == bobs_session.as_str())
        .unwrap();
    assert_eq!(theirs["role"], "viewer");
    assert_eq!(theirs["members"], json!([]));
    assert_eq!(theirs["share_links"], json!([]));
    let mut exported: Vec<String> = doc["media"].as_array().unwrap().iter().map(id).collect();
    exported.sort();
    let mut want: Vec<String> = media.iter().map(|(id, _, _)| id.clone()).collect();
    want.sort();
    assert_eq!(exported, want, "only Ada's media");
    assert!(!raw.contains(&bobs_media));
    let png_entry = doc["media"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == media[0].0.as_str())
        .unwrap();
    assert_eq!(png_entry["content_type"], "image/png");
    assert_eq!(png_entry["filename"], "a.png");
    assert_eq!(png_entry["session_id"], session.as_str());
    assert!(doc["usage"].is_array());

    // Bob's export has his media and nothing of Ada's.
    let files = export(&server, &bob.token).await;
    assert_eq!(files.len(), 2, "{:?}", files.keys());
    assert!(files.contains_key(&format!("media/{bobs_media}.jpg")));
    assert!(files[&format!("media/{bobs_media}.jpg")] == jpeg());

    // Only for accounts.
    let (status, _) = server.call(Method::GET, "/me/export", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server
        .call(Method::GET, "/me/export", Some(&link), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn delete_account(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let ada_second_token = server.login(&ada.email).await;
    let bob = server.signup("Bob").await;

    let session = server.create_session(&ada.token, "Ada's").await;
    let bobs_session = server.create_session(&bob.token, "Bob's").await;
    server
        .add_member(&ada.token, &session, &bob, "editor")
        .await;
    server
        .add_member(&bob.token, &bobs_session, &ada, "editor")
        .await;
    let (_, link) = server.share_link(&ada.token, &session, None).await;
    let (_, bobs_link) = server.share_link(&bob.token, &bobs_session, None).await;

    let mut ada_media = Vec::new();
    for (name, bytes, s) in [
        ("a.png", png(4, 4), Some(session.as_str())),
        ("b.mp3", mp3(), None),
        ("c.webp", webp(), Some(bobs_session.as_str())),
    ] {
        let (status, m) = server.upload(&ada.token, bytes, name, s).await;
        assert_eq!(status, StatusCode::CREATED, "{m}");
        ada_media.push(id(&m));
    }
    let mut bob_media = Vec::new();
    for (name, bytes, s) in [
        ("x.png", png(3, 3), Some(session.as_str())),
        ("y.wav", wav(10), None),
    ] {
        let (status, m) = server.upload(&bob.token, bytes.clone(), name, s).await;
        assert_eq!(status, StatusCode::CREATED, "{m}");
        bob_media.push((id(&m), bytes));
    }
    assert_eq!(media_files(&server).len(), 5);

    // Share links cannot delete the account; anonymous neither.
    let (status, _) = server.call(Method::DELETE, "/me", Some(&link), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server.call(Method::DELETE, "/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _) = server
        .call(Method::DELETE, "/me", Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Every token of the account is dead.
    for token in [&ada.token, &ada_second_token] {
        let (status, res) = server.call(Method::GET, "/me", Some(token), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{res}");
        error_code(&res);
    }
    let (status, _) = server
        .call(Method::DELETE, "/me", Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Its sessions are gone for the other members; its links stop working.
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/sessions/{session}"),
            Some(&link),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Bob's session stays, without Ada in it.
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/sessions/{bobs_session}"),
            Some(&bobs_link),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = server
        .call(Method::GET, "/sessions", Some(&bob.token), None)
        .await;
    assert_eq!(
        list.as_array().unwrap().iter().map(id).collect::<Vec<_>>(),
        vec![bobs_session.clone()]
    );
    let (_, members) = server
        .call(
            Method::GET,
            &format!("/sessions/{bobs_session}/members"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(members.as_array().unwrap().len(), 1, "{members}");
    assert_eq!(members[0]["account_id"], bob.id.as_str());

    // Every object of Ada's media is gone from disk; Bob's are all there.
    let remaining = media_files(&server);
    for media in &ada_media {
        assert!(
            !remaining
                .iter()
                .any(|p| p.file_name().is_some_and(|n| n == media.as_str())),
            "{media} left behind: {remaining:?}"
        );
    }
    assert!(
        !remaining
            .iter()
            .any(|p| p.to_string_lossy().contains(&ada.id)),
        "{remaining:?}"
    );
    assert_eq!(remaining.len(), bob_media.len(), "{remaining:?}");
    for (media, bytes) in &bob_media {
        let (status, _, got) = download(&server, media, Some(&bob.token)).await;
        assert_eq!(status, StatusCode::OK, "{media}");
        assert!(got == *bytes);
    }
    let (_, list) = server
        .call(Method::GET, "/media", Some(&bob.token), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 2);

    // The email is free again, for a brand-new account with nothing in it.
    let (status, _) = server
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": ada.email, "password": common::PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = server
        .call(
            Method::POST,
            "/auth/signup",
            None,
            Some(json!({"email": ada.email, "password": common::PASSWORD, "name": "Ada again"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_ne!(body["account"]["id"], ada.id.as_str());
    let fresh = body["token"].as_str().unwrap();
    for path in ["/sessions", "/media"] {
        let (_, list) = server.call(Method::GET, path, Some(fresh), None).await;
        assert_eq!(list, json!([]), "{path}");
    }
}

/// `GET /sessions/{id}/media`: the session's images, every member's, newest first — not other
/// sessions' nor media without a session, nor sounds — for whoever may view the session.
async fn session_images(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let bob = server.signup("Bob").await;
    let carol = server.signup("Carol").await;
    let session = server.create_session(&ada.token, "Sketches").await;
    let elsewhere = server.create_session(&ada.token, "Elsewhere").await;
    server
        .add_member(&ada.token, &session, &bob, "editor")
        .await;
    let upload = |token: &str, bytes: Vec<u8>, name: &str, to: Option<&str>| {
        let (token, name, to) = (token.to_string(), name.to_string(), to.map(str::to_string));
        let server = &server;
        async move {
            let (status, body) = server.upload(&token, bytes, &name, to.as_deref()).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            id(&body)
        }
    };
    let adas = upload(&ada.token, png(4, 4), "ada.png", Some(&session)).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let bobs = upload(&bob.token, jpeg(), "bob.jpg", Some(&session)).await;
    upload(&bob.token, wav(64), "bob.wav", Some(&session)).await;
    upload(&ada.token, png(4, 4), "loose.png", None).await;
    upload(&ada.token, png(4, 4), "other.png", Some(&elsewhere)).await;

    let path = format!("/sessions/{session}/media");
    let (status, listed) = server
        .call(Method::GET, &path, Some(&ada.token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![bobs.as_str(), adas.as_str()]);
    // A member sees the others' uploads too; a share link may look; strangers get 404.
    let (status, as_bob) = server
        .call(Method::GET, &path, Some(&bob.token), None)
        .await;
    assert_eq!((status, as_bob), (StatusCode::OK, listed.clone()));
    let (_, link) = server.share_link(&ada.token, &session, None).await;
    let (status, _) = server.call(Method::GET, &path, Some(&link), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .call(Method::GET, &path, Some(&carol.token), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

on_both_backends!(
    session_images,
    upload_every_kind,
    bad_uploads,
    upload_size_limit,
    storage_quota,
    download_access_and_delete,
    account_export,
    delete_account,
);
