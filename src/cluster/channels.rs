//! Names of the cluster's Redis channels and keys, all under one prefix (`ATELIER_REDIS_PREFIX`),
//! so several clusters — or test runs — can share one Redis without seeing each other.

use atelier_protocol::SessionId;

#[derive(Debug, Clone)]
pub struct Channels {
    prefix: String,
    control: String,
}

impl Channels {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            control: format!("{prefix}:control"),
        }
    }

    /// Kicks, heartbeats and departures: every node listens.
    pub fn control(&self) -> &str {
        &self.control
    }

    /// Updates, presence and events of one session: the nodes that hold it listen.
    pub fn session(&self, session: SessionId) -> String {
        format!("{}:session:{session}", self.prefix)
    }

    /// The session a channel name belongs to, if it is one of ours.
    pub fn session_of(&self, channel: &str) -> Option<SessionId> {
        channel
            .strip_prefix(&self.prefix)?
            .strip_prefix(":session:")?
            .parse()
            .ok()
    }

    /// A rate-limit counter (`what`, e.g. `auth:203.0.113.5`) for one time window.
    pub fn rate_limit(&self, what: &str, window: u64) -> String {
        format!("{}:rate:{what}:{window}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_channels_round_trip_under_the_prefix() {
        let channels = Channels::new("atelier-test-1");
        let session = SessionId::new_random();
        let name = channels.session(session);
        assert_eq!(channels.session_of(&name), Some(session));
        assert_eq!(Channels::new("other").session_of(&name), None);
        assert_eq!(channels.session_of(channels.control()), None);
    }
}
