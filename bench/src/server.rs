//! Starts the real `atelier serve` on a temporary SQLite directory, reads its address from the
//! `atelier listening on http://…` line, and reads its memory and CPU time from `/proc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How to start one server process.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub bin: PathBuf,
    /// Pin the process to these CPUs (`taskset -c`).
    pub cpus: Option<String>,
    /// Extra `atelier serve` flags (limits raised for the scenario).
    pub args: Vec<String>,
    /// `RUST_LOG` for the server (its stderr goes to `server.log` in the data directory).
    pub log_filter: String,
    /// Extra environment (experiments, e.g. `LD_PRELOAD`; cluster mode's `ATELIER_REDIS_URL`…).
    pub env: Vec<(String, String)>,
    /// Database and object storage shared with other servers (cluster mode); `None`: SQLite and
    /// files in the server's own data directory.
    pub shared: Option<SharedStorage>,
}

/// Storage several nodes share.
#[derive(Debug, Clone)]
pub struct SharedStorage {
    pub database_url: String,
    pub storage_url: String,
}

/// A temporary data directory, removed when dropped.
#[derive(Debug)]
pub struct DataDir(PathBuf);

impl DataDir {
    pub fn new() -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "atelier-bench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `atelier serve`.
pub struct Server {
    child: Child,
    pid: u32,
    pub addr: SocketAddr,
    pub base: String,
    log: PathBuf,
}

impl Server {
    /// Starts `atelier serve` on `dir` (its SQLite database and objects live there).
    pub async fn start(spec: &ServerSpec, dir: &DataDir) -> Result<Self> {
        let dir = dir.path();
        let mut cmd = pinned(spec.cpus.as_deref(), &spec.bin);
        for (key, _) in std::env::vars() {
            if key.starts_with("ATELIER_") {
                cmd.env_remove(key);
            }
        }
        let (database_url, storage_url) = match &spec.shared {
            Some(shared) => (shared.database_url.clone(), shared.storage_url.clone()),
            None => (
                format!("sqlite://{}/atelier.db", dir.display()),
                format!("file://{}/objects", dir.display()),
            ),
        };
        cmd.arg("serve")
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--database-url")
            .arg(database_url)
            .arg("--storage-url")
            .arg(storage_url)
            .arg("--models-dir")
            .arg(dir.join("models"))
            .arg("--web-dir")
            .arg(dir.join("web"))
            .args(&spec.args)
            .env("ATELIER_AUTH_RATE_PER_MINUTE", "1000000")
            .env("RUST_LOG", &spec.log_filter)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir);
        Self::launch(cmd, dir.join("server.log"), &spec.bin).await
    }

    /// Starts a prepared command (stdout is read for its `… listening on http://host:port` line,
    /// stderr goes to `log`) and waits until it listens. The process is killed when the
    /// [`Server`] is dropped.
    pub async fn launch(mut cmd: Command, log: PathBuf, what: &Path) -> Result<Self> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", what.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("server exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let mut lines = BufReader::new(stdout).lines();
        let wait_line = async {
            while let Some(line) = lines.next_line().await? {
                if let Some((_, url)) = line.trim().split_once("listening on ") {
                    return Ok::<_, anyhow::Error>(url.to_owned());
                }
            }
            bail!("server closed stdout before listening")
        };
        let base = match tokio::time::timeout(Duration::from_secs(120), wait_line).await {
            Ok(Ok(base)) => base,
            Ok(Err(error)) => bail!("{error}; log:\n{}", tail(&log)),
            Err(_) => bail!("server did not listen within 120 s; log:\n{}", tail(&log)),
        };
        // Keep draining stdout so the server never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr: SocketAddr = base
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("server address {base}"))?;
        eprintln!("server pid {pid} listening on {base}");
        Ok(Self {
            child,
            pid,
            addr,
            base,
            log,
        })
    }

    /// The process id (the soak checks it never changes and never goes away).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How the process ended, if it has (`None`: still running).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(error) => Some(format!("cannot wait for it: {error}")),
        }
    }

    /// Path of the server's log (its stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Resident set size (`VmRSS`), KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        proc_status_kib(self.pid, "VmRSS:")
    }

    /// CPU time used so far (user + system), seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(&self.pid.to_string())
    }

    /// The last lines of the server's log (for error messages).
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// SIGTERM (the server flushes live sessions), then SIGKILL if it takes too long.
    pub async fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                eprintln!("server did not stop within 20 s; killing it");
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// `bin` under `taskset -c cpus` when `cpus` is given (the process and every thread it starts stay
/// on those CPUs).
pub fn pinned(cpus: Option<&str>, bin: &Path) -> Command {
    match cpus {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpus).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// User + system CPU seconds of a process (`self` for this one), from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (`state`).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name.
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Pins every thread of this process to `cpus` (`taskset -a -p`); threads started later inherit
/// it from the thread that starts them.
pub fn pin_self(cpus: &str) -> Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?;
    if !status.success() {
        bail!("taskset -a -p -c {cpus} failed");
    }
    Ok(())
}

/// The CPUs this process may run on now (`Cpus_allowed_list`).
pub fn allowed_cpus() -> Result<String> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(|list| list.trim().to_owned())
        .ok_or_else(|| anyhow!("no Cpus_allowed_list in /proc/self/status"))
}
