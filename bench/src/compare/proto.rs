//! The y-sync messages the load generator sends and recognises, in each server's framing.
//!
//! y-websocket and Atelier speak the y-websocket protocol: a binary WebSocket message is
//! `varUint(type)` then the body (`0` sync: `varUint(step) varUint8Array(payload)`, step 0 = sync
//! step 1 with a state vector, 1 = sync step 2 with an update, 2 = update); the document is
//! chosen by the URL. Hocuspocus multiplexes documents over one socket: every message is prefixed
//! with `varString(document name)`, a document's first message must be an auth message
//! (`2, 0, varString(token)`), and it adds its own message types (`4` sync reply, answered like a
//! sync message; `8` sync status, the ack of each update).

/// How a server frames messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// y-websocket protocol, the document from the URL (Atelier, y-websocket).
    Plain,
    /// Hocuspocus: `varString(document)` before every message.
    Hocuspocus,
}

const MSG_SYNC: u64 = 0;
const MSG_AUTH: u64 = 2;
/// Hocuspocus: a sync message that must not trigger another step 1.
const MSG_SYNC_REPLY: u64 = 4;
const STEP1: u64 = 0;
const STEP2: u64 = 1;
const UPDATE: u64 = 2;
/// Hocuspocus auth sub-types: the token (client → server), permission denied (server → client).
const AUTH_TOKEN: u64 = 0;
const AUTH_DENIED: u64 = 1;

/// The update of a document nobody has edited: no structs, empty delete set. A fresh client's
/// answer to the server's step 1.
pub const EMPTY_UPDATE: [u8; 2] = [0, 0];
/// The state vector of an empty document.
pub const EMPTY_STATE_VECTOR: [u8; 1] = [0];

/// Where a client connects and how it frames its messages.
#[derive(Debug, Clone)]
pub struct Room {
    pub framing: Framing,
    /// URL path and query of the WebSocket (`/ws/<session>?token=…`, `/<document>`, `/`).
    pub path: String,
    /// `varString(document)` for Hocuspocus, empty otherwise.
    prefix: Vec<u8>,
}

impl Room {
    pub fn plain(path: String) -> Self {
        Self {
            framing: Framing::Plain,
            path,
            prefix: Vec::new(),
        }
    }

    pub fn hocuspocus(document: &str) -> Self {
        let mut prefix = Vec::new();
        write_var_bytes(document.as_bytes(), &mut prefix);
        Self {
            framing: Framing::Hocuspocus,
            path: "/".into(),
            prefix,
        }
    }

    /// What a client sends as soon as it is connected: (Hocuspocus: the auth message, then) sync
    /// step 1 with `state_vector`.
    pub fn opening(&self, state_vector: &[u8]) -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        if self.framing == Framing::Hocuspocus {
            let mut auth = self.prefix.clone();
            write_var_u64(MSG_AUTH, &mut auth);
            write_var_u64(AUTH_TOKEN, &mut auth);
            write_var_bytes(b"", &mut auth);
            messages.push(auth);
        }
        messages.push(self.sync(STEP1, state_vector));
        messages
    }

    /// Sync step 2 carrying `update`.
    pub fn step2(&self, update: &[u8]) -> Vec<u8> {
        self.sync(STEP2, update)
    }

    /// A sync `update` message.
    pub fn update(&self, update: &[u8]) -> Vec<u8> {
        self.sync(UPDATE, update)
    }

    fn sync(&self, step: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + payload.len() + 8);
        out.extend_from_slice(&self.prefix);
        write_var_u64(MSG_SYNC, &mut out);
        write_var_u64(step, &mut out);
        write_var_bytes(payload, &mut out);
        out
    }

    /// What a received message is, as far as the benchmark cares.
    pub fn classify<'a>(&self, message: &'a [u8]) -> Incoming<'a> {
        let mut pos = 0;
        if self.framing == Framing::Hocuspocus && var_bytes(message, &mut pos).is_none() {
            return Incoming::Other;
        }
        let kind = var_u64(message, &mut pos);
        let sync = match (self.framing, kind) {
            (_, Some(MSG_SYNC)) | (Framing::Hocuspocus, Some(MSG_SYNC_REPLY)) => true,
            (Framing::Hocuspocus, Some(MSG_AUTH)) => {
                return match var_u64(message, &mut pos) {
                    Some(AUTH_DENIED) => Incoming::Denied,
                    _ => Incoming::Other,
                };
            }
            _ => false,
        };
        if !sync {
            return Incoming::Other;
        }
        let step = var_u64(message, &mut pos);
        let Some(payload) = var_bytes(message, &mut pos) else {
            return Incoming::Other;
        };
        match step {
            Some(STEP1) => Incoming::Step1,
            Some(STEP2) => Incoming::Step2(payload),
            Some(UPDATE) => Incoming::Update(payload),
            _ => Incoming::Other,
        }
    }
}

/// A received message.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// The server's sync step 1 (its state vector; a client answers with step 2).
    Step1,
    /// Sync step 2: the update that syncs the client.
    Step2(&'a [u8]),
    /// A relayed update.
    Update(&'a [u8]),
    /// Hocuspocus refused the auth message.
    Denied,
    /// Awareness, acks, anything else.
    Other,
}

/// `(client, clock)` of the first struct of a v1 update: `varUint(clients) varUint(structs)
/// varUint(client) varUint(clock) …`. Every edit the generator sends is one struct, so this
/// names the edit.
pub fn update_key(update: &[u8]) -> Option<(u64, u64)> {
    let mut pos = 0;
    if var_u64(update, &mut pos)? == 0 {
        return None;
    }
    let _structs = var_u64(update, &mut pos)?;
    Some((var_u64(update, &mut pos)?, var_u64(update, &mut pos)?))
}

/// How many clock ticks (characters, for the benchmark's documents) the structs of a v1 update
/// cover, read from its encoding without integrating it; `None` if it holds content other than
/// text, deleted ranges, GC or skips (never the case for the documents the benchmark builds).
///
/// Layout (Yjs `writeClientsStructs`, `Item.write`): `varUint(clients)`, per client
/// `varUint(structs) varUint(client) varUint(clock)`, per struct an info byte (content ref in
/// the low 5 bits; 0x80 left origin, 0x40 right origin, 0x20 parent sub), the origins as ID
/// pairs, the parent when there is no origin (`varUint(1) varString(root key)` or
/// `varUint(0) ID`, then the parent sub), then the content.
pub fn update_clock_len(update: &[u8]) -> Option<u64> {
    const GC: u8 = 0;
    const DELETED: u8 = 1;
    const STRING: u8 = 4;
    const SKIP: u8 = 10;
    let mut pos = 0;
    let mut total = 0u64;
    for _ in 0..var_u64(update, &mut pos)? {
        let structs = var_u64(update, &mut pos)?;
        let _client = var_u64(update, &mut pos)?;
        let _clock = var_u64(update, &mut pos)?;
        for _ in 0..structs {
            let info = *update.get(pos)?;
            pos += 1;
            let len = match info & 0x1f {
                GC | SKIP => var_u64(update, &mut pos)?,
                content => {
                    let has_origin = info & 0x80 != 0;
                    let has_right = info & 0x40 != 0;
                    if has_origin {
                        var_u64(update, &mut pos)?;
                        var_u64(update, &mut pos)?;
                    }
                    if has_right {
                        var_u64(update, &mut pos)?;
                        var_u64(update, &mut pos)?;
                    }
                    if !has_origin && !has_right {
                        if var_u64(update, &mut pos)? == 1 {
                            var_bytes(update, &mut pos)?;
                        } else {
                            var_u64(update, &mut pos)?;
                            var_u64(update, &mut pos)?;
                        }
                        if info & 0x20 != 0 {
                            var_bytes(update, &mut pos)?;
                        }
                    }
                    match content {
                        DELETED => var_u64(update, &mut pos)?,
                        STRING => {
                            let text = std::str::from_utf8(var_bytes(update, &mut pos)?).ok()?;
                            text.encode_utf16().count() as u64
                        }
                        _ => return None,
                    }
                }
            };
            total += len;
        }
    }
    Some(total)
}

fn var_u64(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn var_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(var_u64(buf, pos)?).ok()?;
    let bytes = buf.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    Some(bytes)
}

fn write_var_u64(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn write_var_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    write_var_u64(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_round_trip() {
        let room = Room::plain("/doc".into());
        assert_eq!(room.opening(&EMPTY_STATE_VECTOR), vec![vec![0, 0, 1, 0]]);
        let update = room.update(&[1, 1, 7, 3, 0]);
        assert_eq!(room.classify(&update), Incoming::Update(&[1, 1, 7, 3, 0]));
        assert_eq!(room.classify(&[0, 0, 1, 0]), Incoming::Step1);
        assert_eq!(
            room.classify(&room.step2(&EMPTY_UPDATE)),
            Incoming::Step2(&[0, 0])
        );
        assert_eq!(room.classify(&[1, 2, 3]), Incoming::Other);
        assert_eq!(update_key(&[1, 1, 7, 3, 0]), Some((7, 3)));
    }

    #[test]
    fn clock_length_of_text_updates() {
        use yrs::{Doc, ReadTxn, StateVector, Text, Transact};
        let doc = Doc::with_client_id(7);
        let text = doc.get_or_insert_text("bench");
        let mut updates = Vec::new();
        for (pos, s) in [(0, "hello"), (5, " world"), (0, "¡"), (3, "😀")] {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, pos, s);
            updates.push(txn.encode_update_v1());
        }
        // One struct each; "😀" is two UTF-16 units.
        let lens: Vec<_> = updates.iter().map(|u| update_clock_len(u)).collect();
        assert_eq!(lens, vec![Some(5), Some(6), Some(1), Some(2)]);
        // The whole document, as a server's step 2 sends it (several structs, split blocks).
        let full = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert_eq!(update_clock_len(&full), Some(14));
        assert_eq!(update_clock_len(&EMPTY_UPDATE), Some(0));
        // A map entry (content Any) is not something the walker reads.
        let map = doc.get_or_insert_map("m");
        let mut txn = doc.transact_mut();
        yrs::Map::insert(&map, &mut txn, "k", 1);
        assert_eq!(update_clock_len(&txn.encode_update_v1()), None);
    }

    #[test]
    fn hocuspocus_messages_carry_the_document_name() {
        let room = Room::hocuspocus("doc");
        let opening = room.opening(&EMPTY_STATE_VECTOR);
        // auth: "doc", Auth, Token, "" — then "doc", Sync, step 1, empty state vector.
        assert_eq!(opening[0], vec![3, b'd', b'o', b'c', 2, 0, 0]);
        assert_eq!(opening[1], vec![3, b'd', b'o', b'c', 0, 0, 1, 0]);
        let update = room.update(&[1, 1, 7, 3, 0]);
        assert_eq!(room.classify(&update), Incoming::Update(&[1, 1, 7, 3, 0]));
        // A sync reply (4) carrying step 1 is answered like step 1.
        assert_eq!(
            room.classify(&[3, b'd', b'o', b'c', 4, 0, 1, 0]),
            Incoming::Step1
        );
        // Sync status (8, the ack of an update) and "authenticated" (2, 2, …) are not syncs.
        assert_eq!(room.classify(&[3, b'd', b'o', b'c', 8, 1]), Incoming::Other);
        assert_eq!(
            room.classify(&[3, b'd', b'o', b'c', 2, 2, 0]),
            Incoming::Other
        );
        assert_eq!(
            room.classify(&[3, b'd', b'o', b'c', 2, 1, 0]),
            Incoming::Denied
        );
    }
}
