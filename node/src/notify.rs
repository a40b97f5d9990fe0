//! systemd service notifications (the `sd_notify` protocol, a few lines over `$NOTIFY_SOCKET`):
//! `READY=1` once the node serves, then `WATCHDOG=1` every half `WatchdogSec` for as long as
//! the node's own `/healthz` answers. A node whose HTTP side hangs stops sending them, and
//! systemd restarts it (`WatchdogSec=` in the unit). Outside systemd (no `NOTIFY_SOCKET`) this
//! does nothing.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// The notifier of `$NOTIFY_SOCKET`, if set and usable.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var("NOTIFY_SOCKET").ok()?;
        match Notifier::new(&path) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(socket = %path, error = %e, "NOTIFY_SOCKET is set but unusable");
                None
            }
        }
    }

    /// A notifier sending to `path` (a file path, or `@name` for an abstract socket).
    pub fn new(path: &str) -> std::io::Result<Notifier> {
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(path)?,
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
        })
    }

    /// Sends one notification, e.g. `READY=1`.
    pub fn notify(&self, state: &str) -> std::io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        Ok(())
    }
}

/// Half of `$WATCHDOG_USEC` (systemd's advice), when the watchdog is on for this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Tells systemd the node at `http` is ready and, when the watchdog is on, keeps pinging it
/// while `/healthz` answers 200. Returns at once; the pings run on the current runtime.
pub fn announce_ready(http: SocketAddr) {
    let Some(notifier) = Notifier::from_env() else {
        return;
    };
    if let Err(e) = notifier.notify("READY=1\nSTATUS=村云节点已启动") {
        tracing::warn!(error = %e, "could not notify systemd");
    }
    let Some(every) = watchdog_interval() else {
        return;
    };
    let target = loopback_of(http);
    tracing::info!(
        interval_ms = every.as_millis() as u64,
        "systemd watchdog on"
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match healthz(target, every).await {
                Ok(()) => {
                    if let Err(e) = notifier.notify("WATCHDOG=1") {
                        tracing::warn!(error = %e, "could not ping the systemd watchdog");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "own /healthz failed; not pinging the watchdog")
                }
            }
        }
    });
}

/// The address to reach a listener bound to `addr` from this machine.
fn loopback_of(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

/// GET /healthz within `limit`; Ok if the answer is `200`.
async fn healthz(addr: SocketAddr, limit: Duration) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let check = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await?;
        if head.starts_with(b"HTTP/1.1 200") {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "/healthz answered {}",
                String::from_utf8_lossy(&head)
            )))
        }
    };
    tokio::time::timeout(limit, check)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "/healthz timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_datagram_socket() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let n = Notifier::new(path.to_str().expect("utf-8")).expect("notifier");
        n.notify("READY=1").expect("send");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn unspecified_listen_addresses_are_reached_on_loopback() {
        let a: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert_eq!(loopback_of(a), "127.0.0.1:8080".parse().expect("addr"));
        let b: SocketAddr = "192.0.2.1:8080".parse().expect("addr");
        assert_eq!(loopback_of(b), b);
    }
}
