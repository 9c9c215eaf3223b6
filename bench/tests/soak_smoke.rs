//! A short soak on every test run: 30 s of every hostile kind against the debug server next to
//! this test binary, with honest editors on other sessions. It proves the machinery and that the
//! protections hold (server alive, nothing honest lost, every hostile kind ended as designed);
//! the latency and memory figures that count come from the release run (`scripts/soak`), so the
//! p99 bound here allows for a debug build on a busy machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

#[test]
fn a_short_soak_passes() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_atelier-bench"));
    let server = bench
        .parent()
        .expect("the bench binary has a directory")
        .join("atelier");
    assert!(
        server.exists(),
        "{} not found: build it first (cargo build --bin atelier)",
        server.display()
    );
    let output = Command::new(&bench)
        .args(["soak", "--minutes", "0.5", "--honest-sessions", "2"])
        .args(["--honest-clients", "3", "--hostile-clients", "8"])
        .args(["--p99-limit-ms", "250"])
        .arg("--server-bin")
        .arg(&server)
        .output()
        .expect("running atelier-bench soak");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "soak failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("| lost honest updates | 0 "), "{stdout}");
    assert!(stdout.contains("nested maps | 4422 |"), "{stdout}");
}
