//! Per-address connection limits for the node's TCP listeners (the sync port, the enrollment
//! port, and the HTTP port through [`LimitedListener`]): how many connections one IP address may open per minute, and how many it may hold at
//! once. A listener asks [`AddrLimiter::admit`] right after `accept` and before any TLS work; a
//! refused connection is closed at once, and the first refusal of an address in a window is
//! logged (in Chinese, for the operator) so a flood does not flood the log as well.
//!
//! The window is a sliding minute: an address is admitted while fewer than
//! [`AddrLimits::per_minute`] of its connections were admitted in the last 60 seconds and fewer
//! than [`AddrLimits::concurrent`] are still open. Refused attempts do not count. IPv4-mapped
//! IPv6 addresses count as their IPv4 address. At most [`MAX_TRACKED_ADDRESSES`] addresses
//! are tracked; when that many are busy, new addresses are refused until some go quiet.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Addresses tracked at once (each costs at most `per_minute` instants).
pub const MAX_TRACKED_ADDRESSES: usize = 4096;

const WINDOW: Duration = Duration::from_secs(60);

/// Limits per source address (the `[sync.per_address]` and `[http_per_address]` tables of the
/// config). A table that is given must set all three fields; without one, the listener's
/// defaults ([`AddrLimits::SYNC`], [`AddrLimits::HTTP`]) apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddrLimits {
    /// Connections one address may open in any 60 seconds; `0` turns the limit off.
    pub per_minute: u32,
    /// Connections one address may hold open at once; `0` turns the limit off.
    pub concurrent: u32,
    /// Whether connections from the node itself (loopback addresses, which no LAN peer can
    /// send from) are exempt: local tools and tests running several nodes on one machine.
    pub exempt_loopback: bool,
}

impl AddrLimits {
    /// Defaults of the sync port: a peer opens one session per sync (every 30 s, and shortly
    /// after local changes) plus content transfers, and one village node is one address.
    pub const SYNC: AddrLimits = AddrLimits {
        per_minute: 120,
        concurrent: 8,
        exempt_loopback: true,
    };
    /// Defaults of the HTTP port (API, web app, villager pages, `/automerge`): a phone's browser
    /// opens a handful of keep-alive connections, and a village office may share one address.
    pub const HTTP: AddrLimits = AddrLimits {
        per_minute: 600,
        concurrent: 64,
        exempt_loopback: true,
    };
    /// Defaults of the enrollment port: an enrollment is one connection, rare.
    pub const ENROLL: AddrLimits = AddrLimits {
        per_minute: 20,
        concurrent: 2,
        exempt_loopback: true,
    };
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Throttled {
    /// The address opened `per_minute` connections in the last minute.
    #[error("一分钟内连接次数超过 {0} 次")]
    Rate(u32),
    /// The address holds `concurrent` connections already.
    #[error("同时连接数超过 {0} 个")]
    Concurrent(u32),
    /// Too many addresses are busy at once.
    #[error("来源地址过多")]
    TooManyAddresses,
}

#[derive(Debug, Default)]
struct Entry {
    admitted: VecDeque<Instant>,
    open: u32,
    logged_at: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    limits: AddrLimits,
    listener: &'static str,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

/// The per-address limiter of one listener. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct AddrLimiter {
    inner: Arc<Inner>,
}

/// An admitted connection; dropping it frees its place in the address's concurrent count.
#[derive(Debug)]
pub struct AddrPermit {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl Drop for AddrPermit {
    fn drop(&mut self) {
        let mut entries = self
            .inner
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = entries.get_mut(&self.ip) {
            e.open = e.open.saturating_sub(1);
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl AddrLimiter {
    /// A limiter for the listener named `listener` (used in logs: `sync`, `enroll`).
    pub fn new(listener: &'static str, limits: AddrLimits) -> AddrLimiter {
        AddrLimiter {
            inner: Arc::new(Inner {
                limits,
                listener,
                entries: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> AddrLimits {
        self.inner.limits
    }

    /// Admits or refuses a connection from `peer` now; a refusal is logged once per address
    /// and minute.
    pub fn admit(&self, peer: SocketAddr) -> Result<AddrPermit, Throttled> {
        self.admit_at(peer.ip(), Instant::now())
    }

    /// [`AddrLimiter::admit`] at a given instant (tests drive the clock).
    pub fn admit_at(&self, ip: IpAddr, now: Instant) -> Result<AddrPermit, Throttled> {
        let ip = canonical(ip);
        let limits = self.inner.limits;
        if limits.exempt_loopback && ip.is_loopback() {
            return Ok(AddrPermit {
                inner: self.inner.clone(),
                ip,
            });
        }
        let mut entries = self
            .inner
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let expired = |t: &Instant| now.saturating_duration_since(*t) >= WINDOW;
        if !entries.contains_key(&ip) && entries.len() >= MAX_TRACKED_ADDRESSES {
            entries.retain(|_, e| {
                while e.admitted.front().is_some_and(expired) {
                    e.admitted.pop_front();
                }
                e.open > 0 || !e.admitted.is_empty()
            });
            if entries.len() >= MAX_TRACKED_ADDRESSES {
                drop(entries);
                self.log_refusal(ip, Throttled::TooManyAddresses, None);
                return Err(Throttled::TooManyAddresses);
            }
        }
        let entry = entries.entry(ip).or_default();
        while entry.admitted.front().is_some_and(expired) {
            entry.admitted.pop_front();
        }
        let refusal = if limits.concurrent > 0 && entry.open >= limits.concurrent {
            Some(Throttled::Concurrent(limits.concurrent))
        } else if limits.per_minute > 0 && entry.admitted.len() >= limits.per_minute as usize {
            Some(Throttled::Rate(limits.per_minute))
        } else {
            None
        };
        if let Some(why) = refusal {
            let first = entry
                .logged_at
                .is_none_or(|t| now.saturating_duration_since(t) >= WINDOW);
            if first {
                entry.logged_at = Some(now);
            }
            drop(entries);
            if first {
                self.log_refusal(ip, why, Some(limits));
            }
            return Err(why);
        }
        if limits.per_minute > 0 {
            entry.admitted.push_back(now);
        }
        entry.open += 1;
        Ok(AddrPermit {
            inner: self.inner.clone(),
            ip,
        })
    }

    fn log_refusal(&self, ip: IpAddr, why: Throttled, limits: Option<AddrLimits>) {
        tracing::warn!(
            target: "cunyun::_events::addr_throttled",
            listener = self.inner.listener,
            %ip,
            per_minute = limits.map(|l| l.per_minute),
            concurrent = limits.map(|l| l.concurrent),
            "来自 {ip} 的连接过于频繁（{why}），已拒绝；一分钟内不再重复记录"
        );
    }
}

/// A TCP listener for `axum::serve` that closes connections over the per-address limits as
/// soon as they are accepted; each admitted connection holds its [`AddrPermit`].
#[derive(Debug)]
pub struct LimitedListener {
    inner: tokio::net::TcpListener,
    limiter: AddrLimiter,
}

impl LimitedListener {
    /// Wraps `inner` with `limiter`.
    pub fn new(inner: tokio::net::TcpListener, limiter: AddrLimiter) -> LimitedListener {
        LimitedListener { inner, limiter }
    }
}

/// An admitted connection of a [`LimitedListener`].
#[derive(Debug)]
pub struct LimitedStream {
    inner: tokio::net::TcpStream,
    _permit: AddrPermit,
}

impl tokio::io::AsyncRead for LimitedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((tcp, addr)) => {
                    if let Ok(permit) = self.limiter.admit(addr) {
                        let _ = tcp.set_nodelay(true);
                        return (
                            LimitedStream {
                                inner: tcp,
                                _permit: permit,
                            },
                            addr,
                        );
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_connection_after_per_minute_is_refused_until_the_window_slides() {
        let l = AddrLimiter::new(
            "test",
            AddrLimits {
                per_minute: 3,
                concurrent: 0,
                exempt_loopback: false,
            },
        );
        let t0 = Instant::now();
        let a = ip("127.0.0.2");
        for i in 0..3 {
            drop(
                l.admit_at(a, t0 + Duration::from_secs(i))
                    .expect("within the limit"),
            );
        }
        assert_eq!(
            l.admit_at(a, t0 + Duration::from_secs(10)).unwrap_err(),
            Throttled::Rate(3)
        );
        // Another address is not affected.
        assert!(l
            .admit_at(ip("127.0.0.1"), t0 + Duration::from_secs(10))
            .is_ok());
        // Refusals do not count: once the first admission is a minute old, one more fits.
        assert!(l.admit_at(a, t0 + Duration::from_secs(60)).is_ok());
        assert!(l.admit_at(a, t0 + Duration::from_secs(60)).is_err());
    }

    #[test]
    fn concurrent_connections_are_capped_and_freed_on_drop() {
        let l = AddrLimiter::new(
            "test",
            AddrLimits {
                per_minute: 0,
                concurrent: 2,
                exempt_loopback: false,
            },
        );
        let now = Instant::now();
        let a = ip("10.0.0.1");
        let p1 = l.admit_at(a, now).unwrap();
        let _p2 = l.admit_at(a, now).unwrap();
        assert_eq!(l.admit_at(a, now).unwrap_err(), Throttled::Concurrent(2));
        // The IPv4-mapped form is the same address.
        assert!(l.admit_at(ip("::ffff:10.0.0.1"), now).is_err());
        drop(p1);
        assert!(l.admit_at(a, now).is_ok());
    }

    #[test]
    fn loopback_is_exempt_by_default_only() {
        let now = Instant::now();
        let on = AddrLimiter::new("test", AddrLimits::ENROLL);
        let held: Vec<_> = (0..10)
            .map(|_| on.admit_at(ip("127.0.0.1"), now).unwrap())
            .collect();
        assert_eq!(held.len(), 10);
        assert!(on.admit_at(ip("::1"), now).is_ok());
        let off = AddrLimiter::new(
            "test",
            AddrLimits {
                exempt_loopback: false,
                ..AddrLimits::ENROLL
            },
        );
        let _a = off.admit_at(ip("127.0.0.1"), now).unwrap();
        let _b = off.admit_at(ip("127.0.0.1"), now).unwrap();
        assert!(off.admit_at(ip("127.0.0.1"), now).is_err());
    }

    /// Collects what the `fmt` subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_throttled_address_is_logged_in_chinese_once_a_minute() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let l = AddrLimiter::new(
            "sync",
            AddrLimits {
                per_minute: 1,
                concurrent: 0,
                exempt_loopback: false,
            },
        );
        let t0 = Instant::now();
        let a = ip("10.0.0.9");
        tracing::subscriber::with_default(subscriber, || {
            // Another test's thread may have registered the warning's callsite while no
            // subscriber wanted it (cached as "never"); ask every callsite again, with this one.
            tracing::callsite::rebuild_interest_cache();
            drop(l.admit_at(a, t0).unwrap());
            for i in 1..5 {
                assert!(l.admit_at(a, t0 + Duration::from_secs(i)).is_err());
            }
            // A minute after the first refusal it is logged again.
            assert!(l.admit_at(a, t0 + Duration::from_secs(30)).is_err());
            assert!(l.admit_at(a, t0 + Duration::from_secs(59)).is_err());
            let _ = l.admit_at(a, t0 + Duration::from_secs(61));
            assert!(l.admit_at(a, t0 + Duration::from_secs(62)).is_err());
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("10.0.0.9")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("来自 10.0.0.9 的连接过于频繁"), "{text}");
        assert!(lines[0].contains("一分钟内连接次数超过 1 次"), "{text}");
        assert!(lines[0].contains("listener=\"sync\""), "{text}");
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let l = AddrLimiter::new(
            "test",
            AddrLimits {
                per_minute: 0,
                concurrent: 0,
                exempt_loopback: false,
            },
        );
        let now = Instant::now();
        let permits: Vec<_> = (0..1000)
            .map(|_| l.admit_at(ip("10.0.0.1"), now).unwrap())
            .collect();
        assert_eq!(permits.len(), 1000);
    }

    #[test]
    fn tracked_addresses_are_bounded_and_quiet_ones_are_forgotten() {
        let l = AddrLimiter::new(
            "test",
            AddrLimits {
                per_minute: 5,
                concurrent: 5,
                exempt_loopback: false,
            },
        );
        let t0 = Instant::now();
        let mut held = Vec::new();
        for i in 0..MAX_TRACKED_ADDRESSES as u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            held.push(l.admit_at(a, t0).unwrap());
        }
        let newcomer = ip("192.0.2.1");
        assert_eq!(
            l.admit_at(newcomer, t0).unwrap_err(),
            Throttled::TooManyAddresses
        );
        // Once they closed and their minute passed, they are forgotten.
        drop(held);
        assert!(l.admit_at(newcomer, t0 + WINDOW).is_ok());
        assert!(l.inner.entries.lock().unwrap().len() <= 1);
    }
}
