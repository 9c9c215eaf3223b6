//! The servers under comparison: how each is started (pinned, persistence on, in a fresh
//! temporary directory) and how a client reaches one of its documents.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use tokio::process::Command;

use super::proto::Room;
use crate::api::Api;
use crate::server::{pinned, DataDir, Server, ServerSpec};

/// A server the comparison runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `atelier serve`, SQLite in the temporary directory.
    Atelier,
    /// `@y/websocket-server` with y-leveldb (`bench/peers/y-websocket.mjs`).
    YWebsocket,
    /// `@hocuspocus/server` with `@hocuspocus/extension-sqlite` (`bench/peers/hocuspocus.mjs`).
    Hocuspocus,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Atelier => "Atelier",
            Kind::YWebsocket => "y-websocket",
            Kind::Hocuspocus => "Hocuspocus",
        }
    }
}

/// Starts servers of every kind the same way: on `cpus` (`taskset -c`), on a fresh directory.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// Atelier: binary, log filter, extra flags (the comparison's raised limits included).
    pub atelier: ServerSpec,
    /// `node` and the directory with the peer scripts and their `node_modules`.
    pub node: PathBuf,
    pub peers_dir: PathBuf,
    pub cpus: String,
}

impl Launcher {
    pub async fn start(&self, kind: Kind, dir: &DataDir) -> Result<Server> {
        let script = match kind {
            Kind::Atelier => {
                let spec = ServerSpec {
                    cpus: Some(self.cpus.clone()),
                    ..self.atelier.clone()
                };
                return Server::start(&spec, dir).await;
            }
            Kind::YWebsocket => "y-websocket.mjs",
            Kind::Hocuspocus => "hocuspocus.mjs",
        };
        let mut cmd: Command = pinned(Some(&self.cpus), &self.node);
        cmd.arg(self.peers_dir.join(script))
            .arg(dir.path().join("data"))
            .current_dir(&self.peers_dir);
        Server::launch(cmd, dir.path().join("server.log"), &self.node).await
    }

    /// Creates `count` documents and returns how to reach each. Atelier: a user and `count` studio
    /// sessions over HTTP (`/ws/<session>?token=…`); the peers: names (their documents come into
    /// being on first use).
    pub async fn rooms(
        &self,
        kind: Kind,
        server: &Server,
        count: usize,
        label: &str,
    ) -> Result<Vec<Room>> {
        match kind {
            Kind::Atelier => {
                let api = Api::new(&server.base)?;
                let token = api.signup("Compare").await?;
                let mut rooms = Vec::with_capacity(count);
                for i in 0..count {
                    let session = api.create_session(&token, &format!("{label} {i}")).await?;
                    rooms.push(Room::plain(format!("/ws/{session}?token={token}")));
                }
                Ok(rooms)
            }
            Kind::YWebsocket => Ok((0..count)
                .map(|i| Room::plain(format!("/{label}-{i}")))
                .collect()),
            Kind::Hocuspocus => Ok((0..count)
                .map(|i| Room::hocuspocus(&format!("{label}-{i}")))
                .collect()),
        }
    }
}

/// Checks that the peers' npm packages are installed.
pub fn check_peers(launcher: &Launcher, kinds: &[Kind]) -> Result<()> {
    if kinds.iter().any(|k| *k != Kind::Atelier)
        && !launcher.peers_dir.join("node_modules").is_dir()
    {
        return Err(anyhow!(
            "{}/node_modules is missing: run `npm ci` there (scripts/bench compare does)",
            launcher.peers_dir.display()
        ));
    }
    Ok(())
}
