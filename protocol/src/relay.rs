//! The cluster relay: what one `atelier serve` node tells the others through Redis.
//!
//! Every message travels in an [`Envelope`] naming the node that sent it (so a node skips its
//! own) and when (relay lag). Live-session messages go on the session's channel, to the nodes
//! that hold that session live; [`RelayMessage::Kick`], account events, job cancellations and
//! the node heartbeats go on the cluster's control channel, to every node.
//!
//! Document updates are relayed only after they are committed, with their `seq` from the
//! durable log, so a receiving node can tell a duplicate from a gap: Redis pub/sub drops
//! messages when a subscriber reconnects or falls behind, and a node that sees `seq` jump reads
//! the missing updates from the database instead of silently diverging.
//!
//! Layout (lib0 varints, written with yrs's encoder, read with the bounded [`Reader`]):
//! `varUint(version=1) varString(node) varUint(sent_at_ms) varUint(kind)` and the kind's fields.
//! Decoding is as defensive as for client frames: a malformed message from a buggy or foreign
//! publisher is an error, never a panic or an allocation of a declared size.

use yrs::encoding::write::Write;

use crate::ids::{AccountId, JobId, SessionId, ShareLinkId};
use crate::lib0::Reader;
use crate::role::Role;
use crate::ysync::FrameError;

const VERSION: u64 = 1;

/// Longest node id accepted (`ATELIER_NODE_ID`).
pub const MAX_NODE_ID_LEN: usize = 64;

/// Most updates one relayed batch may carry (a group commit is far smaller).
const MAX_BATCH: u64 = 65_536;

const KIND_UPDATES: u64 = 0;
const KIND_AWARENESS: u64 = 1;
const KIND_QUERY_AWARENESS: u64 = 2;
const KIND_EVENT: u64 = 3;
const KIND_PREVIEW: u64 = 4;
const KIND_KICK: u64 = 5;
const KIND_HEARTBEAT: u64 = 6;
const KIND_LEAVING: u64 = 7;
const KIND_ACCOUNT_EVENT: u64 = 8;
const KIND_CANCEL_JOB: u64 = 9;

/// Longest cancellation reason relayed.
pub const MAX_CANCEL_REASON_LEN: usize = 1024;

const KICK_CLOSE: u64 = 0;
const KICK_ROLE: u64 = 1;

const SCOPE_ACCOUNT: u64 = 0;
const SCOPE_MEMBER: u64 = 1;
const SCOPE_SHARE_LINK: u64 = 2;
const SCOPE_CREDENTIAL: u64 = 3;
const SCOPE_SESSION: u64 = 4;

/// One relayed message with its sender and send time.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// `ATELIER_NODE_ID` of the sender.
    pub node: String,
    /// Sender's wall clock, milliseconds since the Unix epoch (relay lag metric only).
    pub sent_at_ms: u64,
    pub message: RelayMessage,
}

/// What nodes tell each other.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayMessage {
    /// Committed document updates of a session: `updates[i]` has `seq = first_seq + i`.
    Updates {
        session: SessionId,
        first_seq: i64,
        updates: Vec<Vec<u8>>,
    },
    /// An awareness update (already validated and owned by the sender's connection).
    Awareness {
        session: SessionId,
        payload: Vec<u8>,
    },
    /// A node that just loaded the session asks the others for their clients' presence.
    QueryAwareness { session: SessionId },
    /// A studio event (type-100 JSON) for every participant of the session.
    Event { session: SessionId, json: String },
    /// An encoded type-101 preview frame for the session's events participants.
    Preview { session: SessionId, frame: Vec<u8> },
    /// Access ended somewhere: close the matching sockets on every node.
    Kick(Kick),
    /// The sender is alive (sent every second); silence means its clients are gone.
    Heartbeat,
    /// The sender is shutting down: its clients' presence is gone now.
    Leaving,
    /// An event for one account's live channel (`GET /me/events`), whichever node it is on.
    AccountEvent { account: AccountId, json: String },
    /// Cancel a job, asked on another node: the node whose board has it cancels it.
    CancelJob { job: JobId, reason: Option<String> },
}

/// Access that ended somewhere: the matching sockets close on every node.
#[derive(Debug, Clone, PartialEq)]
pub enum Kick {
    /// Close the connections `scope` covers with `code` (after `session.kicked {reason}`).
    Close {
        scope: KickScope,
        code: u16,
        reason: String,
    },
    /// A member's role changed: their connections get it at once (a downgrade makes them
    /// read-only). Removal is a `Close` of [`KickScope::Member`].
    Role {
        session: SessionId,
        account: AccountId,
        role: Role,
    },
}

/// Which connections a [`Kick::Close`] covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KickScope {
    /// Every connection of the account (suspension, deletion).
    Account(AccountId),
    /// The account's connections in one session (removed from it).
    Member(SessionId, AccountId),
    /// Every connection opened with the share link (revoked, expired, its creator's right gone).
    ShareLink(ShareLinkId),
    /// Every connection opened with one login token (by its hash): logged out.
    Credential(String),
    /// Every connection of the session (deleted).
    Session(SessionId),
}

impl RelayMessage {
    /// The session whose channel carries this message (`None`: the control channel).
    pub fn session(&self) -> Option<SessionId> {
        match self {
            Self::Updates { session, .. }
            | Self::Awareness { session, .. }
            | Self::QueryAwareness { session }
            | Self::Event { session, .. }
            | Self::Preview { session, .. } => Some(*session),
            Self::Kick(_)
            | Self::Heartbeat
            | Self::Leaving
            | Self::AccountEvent { .. }
            | Self::CancelJob { .. } => None,
        }
    }
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.write_var(VERSION);
        out.write_string(&self.node);
        out.write_var(self.sent_at_ms);
        match &self.message {
            RelayMessage::Updates {
                session,
                first_seq,
                updates,
            } => {
                out.write_var(KIND_UPDATES);
                write_id(&mut out, session);
                // Sequence numbers start at 1; a negative one never reaches the relay.
                out.write_var(u64::try_from(*first_seq).unwrap_or(0));
                out.write_var(updates.len() as u64);
                for update in updates {
                    out.write_buf(update);
                }
            }
            RelayMessage::Awareness { session, payload } => {
                out.write_var(KIND_AWARENESS);
                write_id(&mut out, session);
                out.write_buf(payload);
            }
            RelayMessage::QueryAwareness { session } => {
                out.write_var(KIND_QUERY_AWARENESS);
                write_id(&mut out, session);
            }
            RelayMessage::Event { session, json } => {
                out.write_var(KIND_EVENT);
                write_id(&mut out, session);
                out.write_string(json);
            }
            RelayMessage::Preview { session, frame } => {
                out.write_var(KIND_PREVIEW);
                write_id(&mut out, session);
                out.write_buf(frame);
            }
            RelayMessage::Kick(kick) => {
                out.write_var(KIND_KICK);
                encode_kick(&mut out, kick);
            }
            RelayMessage::Heartbeat => out.write_var(KIND_HEARTBEAT),
            RelayMessage::Leaving => out.write_var(KIND_LEAVING),
            RelayMessage::AccountEvent { account, json } => {
                out.write_var(KIND_ACCOUNT_EVENT);
                write_id(&mut out, account);
                out.write_string(json);
            }
            RelayMessage::CancelJob { job, reason } => {
                out.write_var(KIND_CANCEL_JOB);
                write_id(&mut out, job);
                match reason {
                    Some(reason) => {
                        out.write_var(1u64);
                        out.write_string(reason);
                    }
                    None => out.write_var(0u64),
                }
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(bytes);
        if r.var_u64()? != VERSION {
            return Err(FrameError::Malformed("unknown relay message version"));
        }
        let node = r.var_str()?;
        if node.len() > MAX_NODE_ID_LEN {
            return Err(FrameError::Malformed("node id too long"));
        }
        let node = node.to_owned();
        let sent_at_ms = r.var_u64()?;
        let message = match r.var_u64()? {
            KIND_UPDATES => {
                let session = read_id(&mut r)?;
                let first_seq = i64::try_from(r.var_u64()?)
                    .map_err(|_| FrameError::Malformed("sequence number out of range"))?;
                let count = r.var_u64()?;
                if count > MAX_BATCH {
                    return Err(FrameError::Malformed("too many updates in one batch"));
                }
                let mut updates = Vec::new();
                for _ in 0..count {
                    updates.push(r.var_bytes()?.to_vec());
                }
                RelayMessage::Updates {
                    session,
                    first_seq,
                    updates,
                }
            }
            KIND_AWARENESS => RelayMessage::Awareness {
                session: read_id(&mut r)?,
                payload: r.var_bytes()?.to_vec(),
            },
            KIND_QUERY_AWARENESS => RelayMessage::QueryAwareness {
                session: read_id(&mut r)?,
            },
            KIND_EVENT => RelayMessage::Event {
                session: read_id(&mut r)?,
                json: r.var_str()?.to_owned(),
            },
            KIND_PREVIEW => RelayMessage::Preview {
                session: read_id(&mut r)?,
                frame: r.var_bytes()?.to_vec(),
            },
            KIND_KICK => RelayMessage::Kick(decode_kick(&mut r)?),
            KIND_HEARTBEAT => RelayMessage::Heartbeat,
            KIND_LEAVING => RelayMessage::Leaving,
            KIND_ACCOUNT_EVENT => RelayMessage::AccountEvent {
                account: read_id(&mut r)?,
                json: r.var_str()?.to_owned(),
            },
            KIND_CANCEL_JOB => {
                let job = read_id(&mut r)?;
                let reason = match r.var_u64()? {
                    0 => None,
                    1 => {
                        let reason = r.var_str()?;
                        if reason.len() > MAX_CANCEL_REASON_LEN {
                            return Err(FrameError::Malformed("cancellation reason too long"));
                        }
                        Some(reason.to_owned())
                    }
                    _ => return Err(FrameError::Malformed("bad cancellation reason flag")),
                };
                RelayMessage::CancelJob { job, reason }
            }
            other => return Err(FrameError::UnknownType(other)),
        };
        r.finish()?;
        Ok(Self {
            node,
            sent_at_ms,
            message,
        })
    }
}

fn encode_kick(out: &mut Vec<u8>, kick: &Kick) {
    match kick {
        Kick::Close {
            scope,
            code,
            reason,
        } => {
            out.write_var(KICK_CLOSE);
            match scope {
                KickScope::Account(account) => {
                    out.write_var(SCOPE_ACCOUNT);
                    write_id(out, account);
                }
                KickScope::Member(session, account) => {
                    out.write_var(SCOPE_MEMBER);
                    write_id(out, session);
                    write_id(out, account);
                }
                KickScope::ShareLink(link) => {
                    out.write_var(SCOPE_SHARE_LINK);
                    write_id(out, link);
                }
                KickScope::Credential(hash) => {
                    out.write_var(SCOPE_CREDENTIAL);
                    out.write_string(hash);
                }
                KickScope::Session(session) => {
                    out.write_var(SCOPE_SESSION);
                    write_id(out, session);
                }
            }
            out.write_var(u64::from(*code));
            out.write_string(reason);
        }
        Kick::Role {
            session,
            account,
            role,
        } => {
            out.write_var(KICK_ROLE);
            write_id(out, session);
            write_id(out, account);
            out.write_string(role.as_str());
        }
    }
}

fn decode_kick(r: &mut Reader<'_>) -> Result<Kick, FrameError> {
    Ok(match r.var_u64()? {
        KICK_CLOSE => {
            let scope = match r.var_u64()? {
                SCOPE_ACCOUNT => KickScope::Account(read_id(r)?),
                SCOPE_MEMBER => KickScope::Member(read_id(r)?, read_id(r)?),
                SCOPE_SHARE_LINK => KickScope::ShareLink(read_id(r)?),
                SCOPE_CREDENTIAL => KickScope::Credential(r.var_str()?.to_owned()),
                SCOPE_SESSION => KickScope::Session(read_id(r)?),
                other => return Err(FrameError::UnknownType(other)),
            };
            Kick::Close {
                scope,
                code: u16::try_from(r.var_u64()?)
                    .map_err(|_| FrameError::Malformed("close code out of range"))?,
                reason: r.var_str()?.to_owned(),
            }
        }
        KICK_ROLE => Kick::Role {
            session: read_id(r)?,
            account: read_id(r)?,
            role: r
                .var_str()?
                .parse()
                .map_err(|_| FrameError::Malformed("unknown role"))?,
        },
        other => return Err(FrameError::UnknownType(other)),
    })
}

fn write_id(out: &mut Vec<u8>, id: &impl std::fmt::Display) {
    out.write_string(&id.to_string());
}

fn read_id<T: std::str::FromStr>(r: &mut Reader<'_>) -> Result<T, FrameError> {
    r.var_str()?
        .parse()
        .map_err(|_| FrameError::Malformed("id is not a UUID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: RelayMessage) {
        let envelope = Envelope {
            node: "node-a".into(),
            sent_at_ms: 1_700_000_000_123,
            message,
        };
        let decoded = Envelope::decode(&envelope.encode()).unwrap();
        assert_eq!(decoded, envelope);
    }

    #[test]
    fn every_message_round_trips() {
        let session = SessionId::new_random();
        let account = AccountId::new_random();
        round_trip(RelayMessage::Updates {
            session,
            first_seq: 42,
            updates: vec![vec![0, 0], vec![1, 2, 3]],
        });
        round_trip(RelayMessage::Awareness {
            session,
            payload: vec![1, 2],
        });
        round_trip(RelayMessage::QueryAwareness { session });
        round_trip(RelayMessage::Event {
            session,
            json: r#"{"type":"job.queued"}"#.into(),
        });
        round_trip(RelayMessage::Preview {
            session,
            frame: vec![101, 1],
        });
        for scope in [
            KickScope::Account(account),
            KickScope::Member(session, account),
            KickScope::ShareLink(ShareLinkId::new_random()),
            KickScope::Credential("abc123".into()),
            KickScope::Session(session),
        ] {
            round_trip(RelayMessage::Kick(Kick::Close {
                scope,
                code: 4403,
                reason: "revoked".into(),
            }));
        }
        round_trip(RelayMessage::Kick(Kick::Role {
            session,
            account,
            role: Role::Viewer,
        }));
        round_trip(RelayMessage::Heartbeat);
        round_trip(RelayMessage::Leaving);
        round_trip(RelayMessage::CancelJob {
            job: JobId::new_random(),
            reason: Some("cancelled by a participant".into()),
        });
        round_trip(RelayMessage::CancelJob {
            job: JobId::new_random(),
            reason: None,
        });
        round_trip(RelayMessage::AccountEvent {
            account,
            json: r#"{"type":"membership.added"}"#.into(),
        });
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let valid = Envelope {
            node: "n".into(),
            sent_at_ms: 1,
            message: RelayMessage::Updates {
                session: SessionId::new_random(),
                first_seq: 1,
                updates: vec![vec![0, 0]],
            },
        }
        .encode();
        for len in 0..valid.len() {
            assert!(Envelope::decode(&valid[..len]).is_err());
        }
        let mut trailing = valid.clone();
        trailing.push(0);
        assert!(Envelope::decode(&trailing).is_err());
        // A batch declaring billions of updates in a few bytes.
        let mut huge = Vec::new();
        huge.write_var(VERSION);
        huge.write_string("n");
        huge.write_var(0u64);
        huge.write_var(KIND_UPDATES);
        huge.write_string(&SessionId::new_random().to_string());
        huge.write_var(1u64);
        huge.write_var(u64::from(u32::MAX));
        assert!(Envelope::decode(&huge).is_err());
    }
}
