//! Admissions: every live-session connection the server lets in, from before its upgrade is
//! answered until the last trace of it is gone — what the connection caps count, and what a
//! kick finds even while the connection is still on its way into its session.
//!
//! The server [`Admissions::admit`]s a connection as soon as it knows who is asking (before it
//! checks, against the database, that the access still holds, and before the `101`), and the
//! [`Admission`] travels inside the [`crate::Participant`] to the session. Dropping its last
//! clone (the connection actor and the session's peer entry both hold one) frees the place.
//!
//! Why "admit, then check": a kick ([`crate::SessionRegistryHandle::kick`]) marks every
//! admission it matches *before* it closes the matching connections of live sessions, and the
//! registry looks at that mark again right after a connection joined. So an access taken away
//! at any moment of an upgrade — before the database check (refused there), between the check
//! and the join (the mark), after the join (the session closes it) — ends the connection.
//!
//! The table sits behind a std `Mutex`: every critical section is a few map operations, and no
//! `.await` happens while it is held.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::SystemTime;

use atelier_protocol::ids::{AccountId, ConnectionId, SessionId, ShareLinkId};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::session::{Identity, Participant};

/// How many live-session connections one holder of access may have open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionCaps {
    pub per_share_link: usize,
    pub per_account: usize,
    pub per_ip: usize,
}

impl Default for AdmissionCaps {
    fn default() -> Self {
        Self {
            per_share_link: 100,
            per_account: 32,
            per_ip: 256,
        }
    }
}

/// What a connection was let in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub session: SessionId,
    pub identity: Identity,
    /// The hash of the token it authenticated with (logout ends exactly those connections).
    pub credential: Option<String>,
    /// The client's address, for the per-IP cap.
    pub ip: Option<IpAddr>,
    /// When the access ends by itself (a share link's expiry): its connections are closed then.
    pub expires_at: Option<SystemTime>,
}

/// A cap that an admission would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CapExceeded {
    #[error("this share link already has {0} open connections (the limit)")]
    ShareLink(usize),
    #[error("this account already has {0} open connections (the limit)")]
    Account(usize),
    #[error("this address already has {0} open connections (the limit)")]
    Ip(usize),
}

/// Which connections a kick ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KickTarget {
    /// Every connection of the account, in every session.
    Account(AccountId),
    /// The account's connections in one session (it was removed from it).
    Member(SessionId, AccountId),
    /// Every connection opened with the share link.
    ShareLink(ShareLinkId),
    /// Every connection opened with this token (by its hash): it was logged out.
    Credential(String),
    /// Every connection of the session.
    Session(SessionId),
    /// One connection of one session.
    Connection(SessionId, ConnectionId),
}

impl KickTarget {
    /// Whether the target covers a connection admitted on `grant` (a `Connection` target is
    /// decided by the session, which knows connection ids).
    fn covers(&self, grant: &Grant) -> bool {
        match self {
            KickTarget::Account(account) => grant.identity == Identity::Account(*account),
            KickTarget::Member(session, account) => {
                grant.session == *session && grant.identity == Identity::Account(*account)
            }
            KickTarget::ShareLink(link) => grant.identity == Identity::ShareLink(*link),
            KickTarget::Credential(hash) => grant.credential.as_deref() == Some(hash.as_str()),
            KickTarget::Session(session) => grant.session == *session,
            KickTarget::Connection(..) => false,
        }
    }

    /// Whether the target covers connection `id` of session `session`, joined as `participant`.
    pub fn covers_peer(
        &self,
        session: SessionId,
        id: ConnectionId,
        participant: &Participant,
    ) -> bool {
        match self {
            KickTarget::Connection(s, c) => *s == session && *c == id,
            KickTarget::Account(account) => participant.identity == Identity::Account(*account),
            KickTarget::Member(s, account) => {
                *s == session && participant.identity == Identity::Account(*account)
            }
            KickTarget::ShareLink(link) => participant.identity == Identity::ShareLink(*link),
            KickTarget::Session(s) => *s == session,
            KickTarget::Credential(hash) => participant
                .admission
                .grant()
                .and_then(|g| g.credential.as_deref())
                .is_some_and(|c| c == hash),
        }
    }

    /// The sessions the target can reach without asking the admissions (`None`: any).
    fn session(&self) -> Option<SessionId> {
        match self {
            KickTarget::Member(s, _) | KickTarget::Session(s) | KickTarget::Connection(s, _) => {
                Some(*s)
            }
            KickTarget::Account(_) | KickTarget::ShareLink(_) | KickTarget::Credential(_) => None,
        }
    }
}

/// Why a connection's access ended: the close it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub code: u16,
    pub reason: String,
}

struct Entry {
    grant: Grant,
    revoked: Option<Revocation>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    per_link: HashMap<ShareLinkId, usize>,
    per_account: HashMap<AccountId, usize>,
    per_ip: HashMap<IpAddr, usize>,
}

fn increment<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    *map.entry(key).or_default() += 1;
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Table {
    fn count<K: std::hash::Hash + Eq>(map: &HashMap<K, usize>, key: &K) -> usize {
        map.get(key).copied().unwrap_or(0)
    }

    fn check(&self, grant: &Grant, caps: AdmissionCaps) -> Result<(), CapExceeded> {
        match grant.identity {
            Identity::ShareLink(link) => {
                if Self::count(&self.per_link, &link) >= caps.per_share_link {
                    return Err(CapExceeded::ShareLink(caps.per_share_link));
                }
            }
            Identity::Account(account) => {
                if Self::count(&self.per_account, &account) >= caps.per_account {
                    return Err(CapExceeded::Account(caps.per_account));
                }
            }
        }
        if let Some(ip) = grant.ip {
            if Self::count(&self.per_ip, &ip) >= caps.per_ip {
                return Err(CapExceeded::Ip(caps.per_ip));
            }
        }
        Ok(())
    }

    fn insert(&mut self, grant: Grant) -> u64 {
        match grant.identity {
            Identity::ShareLink(link) => increment(&mut self.per_link, link),
            Identity::Account(account) => increment(&mut self.per_account, account),
        }
        if let Some(ip) = grant.ip {
            increment(&mut self.per_ip, ip);
        }
        self.next_id += 1;
        let id = self.next_id;
        self.entries.insert(
            id,
            Entry {
                grant,
                revoked: None,
            },
        );
        id
    }

    fn remove(&mut self, id: u64) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        match entry.grant.identity {
            Identity::ShareLink(link) => decrement(&mut self.per_link, &link),
            Identity::Account(account) => decrement(&mut self.per_account, &account),
        }
        if let Some(ip) = entry.grant.ip {
            decrement(&mut self.per_ip, &ip);
        }
    }
}

pub(crate) struct Shared {
    table: Mutex<Table>,
    caps: AdmissionCaps,
}

/// Every admitted connection (one per registry).
#[derive(Clone)]
pub struct Admissions {
    shared: Arc<Shared>,
}

impl Admissions {
    pub fn new(caps: AdmissionCaps) -> Self {
        Self {
            shared: Arc::new(Shared {
                table: Mutex::new(Table::default()),
                caps,
            }),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Each critical section leaves the maps consistent before anything can panic.
        self.shared
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a connection in on `grant`, unless that would exceed a cap.
    pub fn admit(&self, grant: Grant) -> Result<Admission, CapExceeded> {
        self.admit_watched(grant).map(|(admission, _)| admission)
    }

    /// [`Admissions::admit`], plus a receiver that completes (with an error) when the admission
    /// is freed.
    pub(crate) fn admit_watched(
        &self,
        grant: Grant,
    ) -> Result<(Admission, oneshot::Receiver<()>), CapExceeded> {
        let mut table = self.table();
        table.check(&grant, self.shared.caps)?;
        let id = table.insert(grant.clone());
        let (alive, freed) = oneshot::channel();
        let ticket = Ticket {
            id,
            grant,
            admissions: Arc::downgrade(&self.shared),
            _alive: alive,
        };
        Ok((Admission(Some(Arc::new(ticket))), freed))
    }

    /// Marks every admission the target covers as revoked; returns the sessions they are in.
    pub(crate) fn revoke(&self, target: &KickTarget, revocation: &Revocation) -> Vec<SessionId> {
        let mut table = self.table();
        let mut sessions: Vec<SessionId> = target.session().into_iter().collect();
        for entry in table.entries.values_mut() {
            if target.covers(&entry.grant) {
                entry.revoked.get_or_insert_with(|| revocation.clone());
                if !sessions.contains(&entry.grant.session) {
                    sessions.push(entry.grant.session);
                }
            }
        }
        sessions
    }

    /// How many connections are admitted now.
    pub fn len(&self) -> usize {
        self.table().entries.len()
    }

    /// Whether no connection is admitted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn revocation_of(&self, id: u64) -> Option<Revocation> {
        self.table()
            .entries
            .get(&id)
            .and_then(|e| e.revoked.clone())
    }
}

struct Ticket {
    id: u64,
    grant: Grant,
    admissions: Weak<Shared>,
    /// Dropped with the ticket: tells whoever waits on the admission that it is gone.
    _alive: oneshot::Sender<()>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(shared) = self.admissions.upgrade() {
            Admissions { shared }.table().remove(self.id);
        }
    }
}

/// A connection's place among the admissions; freed when the last clone is dropped. The
/// default is an untracked connection (no caps, found by kicks through its identity only).
#[derive(Clone, Default)]
pub struct Admission(Option<Arc<Ticket>>);

impl Admission {
    /// What the connection was admitted on (none for an untracked one).
    pub fn grant(&self) -> Option<&Grant> {
        self.0.as_ref().map(|t| &t.grant)
    }

    /// Set once a kick has covered this connection: how it must be closed.
    pub fn revocation(&self) -> Option<Revocation> {
        let ticket = self.0.as_ref()?;
        let shared = ticket.admissions.upgrade()?;
        Admissions { shared }.revocation_of(ticket.id)
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.grant() {
            Some(grant) => f.debug_tuple("Admission").field(grant).finish(),
            None => f.write_str("Admission(untracked)"),
        }
    }
}

/// Two participants are the same whatever their places in the caps.
impl PartialEq for Admission {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for Admission {}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(identity: Identity, ip: Option<IpAddr>) -> Grant {
        Grant {
            session: SessionId::new_random(),
            identity,
            credential: None,
            ip,
            expires_at: None,
        }
    }

    #[test]
    fn caps_count_open_admissions_and_free_them_on_drop() {
        let admissions = Admissions::new(AdmissionCaps {
            per_share_link: 2,
            per_account: 1,
            per_ip: 3,
        });
        let link = Identity::ShareLink(ShareLinkId::new_random());
        let a = admissions.admit(grant(link, None)).unwrap();
        let b = admissions.admit(grant(link, None)).unwrap();
        assert_eq!(
            admissions.admit(grant(link, None)).unwrap_err(),
            CapExceeded::ShareLink(2)
        );
        let b2 = b.clone();
        drop(b);
        assert!(
            admissions.admit(grant(link, None)).is_err(),
            "a clone holds the place"
        );
        drop(b2);
        let c = admissions.admit(grant(link, None)).unwrap();
        let account = Identity::Account(AccountId::new_random());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let d = admissions.admit(grant(account, Some(ip))).unwrap();
        assert_eq!(
            admissions.admit(grant(account, None)).unwrap_err(),
            CapExceeded::Account(1)
        );
        let other = || Identity::Account(AccountId::new_random());
        let e = admissions.admit(grant(other(), Some(ip))).unwrap();
        let f = admissions.admit(grant(other(), Some(ip))).unwrap();
        assert_eq!(
            admissions.admit(grant(other(), Some(ip))).unwrap_err(),
            CapExceeded::Ip(3)
        );
        assert_eq!(admissions.len(), 5);
        drop((a, c, d, e, f));
        assert!(admissions.is_empty());
    }

    #[test]
    fn kicks_mark_what_they_cover() {
        let admissions = Admissions::new(AdmissionCaps::default());
        let account = AccountId::new_random();
        let mut g = grant(Identity::Account(account), None);
        g.credential = Some("hash-1".into());
        let session = g.session;
        let mine = admissions.admit(g).unwrap();
        let theirs = admissions
            .admit(grant(Identity::Account(AccountId::new_random()), None))
            .unwrap();
        let bye = Revocation {
            code: 4401,
            reason: "logged out".into(),
        };
        let sessions = admissions.revoke(&KickTarget::Credential("hash-2".into()), &bye);
        assert!(sessions.is_empty());
        assert_eq!(mine.revocation(), None);
        let sessions = admissions.revoke(&KickTarget::Credential("hash-1".into()), &bye);
        assert_eq!(sessions, vec![session]);
        assert_eq!(mine.revocation(), Some(bye));
        assert_eq!(theirs.revocation(), None);
        assert_eq!(Admission::default().revocation(), None);
    }
}
