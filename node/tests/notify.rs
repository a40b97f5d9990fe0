//! Under systemd (`Type=notify`, `WatchdogSec=`), `cunyun-node run` sends `READY=1` once it
//! serves and then `WATCHDOG=1` while its `/healthz` answers: the real binary, with a Unix
//! datagram socket standing in for systemd's `NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

#[test]
fn the_node_reports_ready_and_pings_the_watchdog() {
    let dir = tempfile::tempdir().expect("tmp");
    let sock = dir.path().join("notify");
    let rx = UnixDatagram::bind(&sock).expect("bind");
    rx.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data").to_str().expect("utf-8")
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cunyun-node"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start node");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 256];
    while Instant::now() < deadline && !seen.iter().any(|m: &String| m == "WATCHDOG=1") {
        if let Ok(n) = rx.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.first().is_some_and(|m| m.starts_with("READY=1")),
        "READY=1 first: {seen:?}"
    );
    assert!(
        seen.iter().any(|m| m == "WATCHDOG=1"),
        "WATCHDOG=1 sent: {seen:?}"
    );
}
