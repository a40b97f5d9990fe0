//! An in-process emulated network link: a TCP proxy on 127.0.0.1 that delays and paces the
//! bytes it forwards like a slow link, counts them, and can break the connections through it.
//!
//! ```text
//!   side A ──connect──▶ LinkEmulator::addr() ══ emulated link ══▶ target (side B)
//! ```
//!
//! Side A is whoever connects to [`LinkEmulator::addr`]; side B is the `target` it forwards to.
//! Each direction is emulated on its own ([`Direction`]) with the same [`LinkConfig`]:
//!
//! - **Bandwidth**: bytes are serialised at `bits_per_second` through a FIFO shared by every
//!   connection in that direction. A chunk read from the sender at time `now` starts
//!   transmitting at `start = max(now, end of the previous chunk)`; its byte `i` has left at
//!   `start + (i+1)·8/rate`.
//! - **Latency**: a byte arrives `one_way_latency` after it has left. Delivery is byte-precise:
//!   the receiving side gets every byte whose arrival time has passed, so a frame in the middle
//!   of a large write is not held back until the whole write has been "transmitted".
//! - **Counters**: bytes delivered per direction ([`LinkEmulator::bytes`]), over all connections.
//! - **Faults**: [`LinkEmulator::cut`] resets every current connection on both of its sockets
//!   (RST: zero linger, no FIN); [`LinkEmulator::set_cut_after_bytes`] does the same once a
//!   given number of further bytes has been delivered in one direction (exactly that many get
//!   through).
//!
//! # Timing accuracy
//!
//! The emulator runs on its own thread with its own tokio runtime, so a benchmark that keeps
//! its own runtime's workers busy does not delay the link. Deliveries do not use tokio's
//! timers (millisecond granularity, rounded up: up to ~2 ms late per hop) but a timer thread
//! that waits with sub-millisecond precision; a delivery is never early and typically late by
//! well under 1 ms (thread wake-ups), which `tests/tests/link_emulation.rs` checks. While a
//! long chunk is being "transmitted" the writer wakes about once per millisecond of
//! transmission, so pacing adds at most about 1 ms on top. Connection set-up is not
//! emulated (the connect completes at loopback speed): benchmarks should use warm connections.
//!
//! The sender is never blocked (the emulator reads eagerly and buffers without limit), as if the
//! link had an unbounded queue; arrival times are what a FIFO link of that rate would give.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle as ThreadHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// How long the emulator waits for its upstream connection to the target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`LinkEmulator::stop`] waits for connections to wind down after cutting them.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Size of one read from a sender.
const READ_CHUNK: usize = 64 * 1024;

/// The emulated link's properties, the same in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Time from a byte leaving the sender's end of the link to its arrival (half the RTT).
    pub one_way_latency: Duration,
    /// Link rate in each direction, in bits per second; 0 means unlimited.
    pub bits_per_second: u64,
}

impl LinkConfig {
    /// A mountain village's link: 200 ms RTT (100 ms each way) and 1 Mbit/s each way.
    pub fn village() -> LinkConfig {
        LinkConfig {
            one_way_latency: Duration::from_millis(100),
            bits_per_second: 1_000_000,
        }
    }

    /// Time to put `bytes` on the link (zero when the rate is unlimited).
    pub fn transmit_time(&self, bytes: u64) -> Duration {
        if self.bits_per_second == 0 {
            return Duration::ZERO;
        }
        let nanos = u128::from(bytes) * 8 * 1_000_000_000 / u128::from(self.bits_per_second);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// One direction of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the connecting side (A) to the target (B).
    AToB,
    /// From the target (B) back to the connecting side (A).
    BToA,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::AToB => 0,
            Direction::BToA => 1,
        }
    }
}

/// A request to the timer thread: complete the oneshot at the instant.
type Wakeup = (std::time::Instant, oneshot::Sender<()>);

/// Wakes tasks at precise instants: tokio's timers round up to the next millisecond, which
/// would make every emulated hop up to ~2 ms late. One thread per emulator waits with
/// `recv_timeout` (futex, sub-millisecond) and completes a oneshot per sleep.
struct PreciseTimer {
    tx: Mutex<Option<std::sync::mpsc::Sender<Wakeup>>>,
}

impl PreciseTimer {
    fn start() -> io::Result<PreciseTimer> {
        let (tx, rx) = std::sync::mpsc::channel::<Wakeup>();
        std::thread::Builder::new()
            .name("link-timer".into())
            .spawn(move || {
                let mut due: BTreeMap<(std::time::Instant, u64), oneshot::Sender<()>> =
                    BTreeMap::new();
                let mut seq = 0u64;
                // Runs until the emulator drops its sender.
                loop {
                    let next = due.keys().next().map(|(t, _)| *t);
                    let msg = match next {
                        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                        Some(t) => {
                            rx.recv_timeout(t.saturating_duration_since(std::time::Instant::now()))
                        }
                    };
                    match msg {
                        Ok((t, waker)) => {
                            seq += 1;
                            due.insert((t, seq), waker);
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    let now = std::time::Instant::now();
                    while let Some(entry) = due.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        // The sleeper may have given up (a cut); nothing to do then.
                        let _ = entry.remove().send(());
                    }
                }
            })?;
        Ok(PreciseTimer {
            tx: Mutex::new(Some(tx)),
        })
    }

    /// Sleeps until `t` (falls back to tokio's timer if the timer thread is gone).
    async fn sleep_until(&self, t: Instant) {
        if t <= Instant::now() {
            return;
        }
        let (waker, woken) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|tx| tx.send((t.into_std(), waker)).is_ok());
        if sent == Some(true) && woken.await.is_ok() {
            return;
        }
        tokio::time::sleep_until(t).await;
    }

    /// Lets the timer thread end.
    fn stop(&self) {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// Counter value meaning "no cut scheduled".
const NO_CUT: u64 = u64::MAX;

/// State shared by the handle and the emulator thread.
struct Shared {
    config: LinkConfig,
    /// Bytes delivered, per direction.
    bytes: [AtomicU64; 2],
    /// Per direction: the delivered-bytes count at which to cut every connection, or `NO_CUT`.
    cut_at: [AtomicU64; 2],
    /// Per direction: when the link finishes transmitting what it has been given so far.
    free_at: [Mutex<Option<Instant>>; 2],
    /// Live connections: id and the switch that resets it.
    conns: Mutex<Vec<(u64, Arc<watch::Sender<bool>>)>>,
    next_id: AtomicU64,
    /// Connections reset so far (by cuts, cut-after-bytes or I/O errors).
    resets: AtomicU64,
    timer: PreciseTimer,
}

impl Shared {
    fn cut_all(&self) {
        let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, tx) in conns.iter() {
            tx.send_replace(true);
        }
    }

    /// Schedules a chunk of `len` bytes read at `now`; returns when its first byte starts
    /// transmitting.
    fn schedule(&self, dir: Direction, now: Instant, len: usize) -> Instant {
        let mut free = self.free_at[dir.index()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let start = match *free {
            Some(f) if f > now => f,
            _ => now,
        };
        *free = Some(start + self.config.transmit_time(len as u64));
        start
    }

    /// How many bytes of a chunk that started transmitting at `start` have arrived by `now`.
    fn arrived(&self, start: Instant, len: usize, now: Instant) -> usize {
        let Some(since) = now.checked_duration_since(start + self.config.one_way_latency) else {
            return 0;
        };
        if self.config.bits_per_second == 0 {
            return len;
        }
        let bits = since.as_nanos() * u128::from(self.config.bits_per_second) / 1_000_000_000;
        usize::try_from(bits / 8).unwrap_or(usize::MAX).min(len)
    }

    /// When byte `index` (0-based) of a chunk that started transmitting at `start` arrives.
    fn arrival_of(&self, start: Instant, index: usize) -> Instant {
        start + self.config.transmit_time(index as u64 + 1) + self.config.one_way_latency
    }

    /// Bytes that may still be delivered in `dir` before the scheduled cut.
    fn allowance(&self, dir: Direction) -> u64 {
        let at = self.cut_at[dir.index()].load(Ordering::SeqCst);
        if at == NO_CUT {
            return u64::MAX;
        }
        at.saturating_sub(self.bytes[dir.index()].load(Ordering::SeqCst))
    }

    /// Counts `n` bytes as delivered in `dir` (they have arrived; they are being handed over).
    fn count(&self, dir: Direction, n: u64) {
        self.bytes[dir.index()].fetch_add(n, Ordering::SeqCst);
    }

    /// Cuts every connection if the bytes delivered in `dir` reached the scheduled cut.
    fn check_cut(&self, dir: Direction) {
        let total = self.bytes[dir.index()].load(Ordering::SeqCst);
        let at = self.cut_at[dir.index()].load(Ordering::SeqCst);
        if at != NO_CUT
            && total >= at
            && self.cut_at[dir.index()]
                .compare_exchange(at, NO_CUT, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.cut_all();
        }
    }
}

/// A running emulated link. Dropping it stops it (like [`LinkEmulator::stop`]).
pub struct LinkEmulator {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    thread: Option<ThreadHandle<()>>,
}

impl std::fmt::Debug for LinkEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkEmulator")
            .field("addr", &self.addr)
            .field("target", &self.target)
            .field("config", &self.shared.config)
            .field("bytes_a_to_b", &self.bytes_a_to_b())
            .field("bytes_b_to_a", &self.bytes_b_to_a())
            .finish()
    }
}

impl LinkEmulator {
    /// Starts a link on `127.0.0.1:0` that forwards every connection to `target` (which should
    /// be a loopback address). Works from inside or outside a tokio runtime: the emulator runs
    /// on a thread of its own.
    pub fn start(target: SocketAddr, config: LinkConfig) -> io::Result<LinkEmulator> {
        let listener = StdTcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            cut_at: [AtomicU64::new(NO_CUT), AtomicU64::new(NO_CUT)],
            free_at: [Mutex::new(None), Mutex::new(None)],
            conns: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            timer: PreciseTimer::start()?,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("link-emulator".into())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, target, thread_shared, shutdown_rx));
            })?;
        Ok(LinkEmulator {
            addr,
            target,
            shared,
            shutdown,
            thread: Some(thread),
        })
    }

    /// The address to connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The link's configuration.
    pub fn config(&self) -> LinkConfig {
        self.shared.config
    }

    /// Bytes delivered in `dir` so far, over all connections.
    pub fn bytes(&self, dir: Direction) -> u64 {
        self.shared.bytes[dir.index()].load(Ordering::SeqCst)
    }

    /// Bytes delivered from the connecting side to the target so far.
    pub fn bytes_a_to_b(&self) -> u64 {
        self.bytes(Direction::AToB)
    }

    /// Bytes delivered from the target to the connecting side so far.
    pub fn bytes_b_to_a(&self) -> u64 {
        self.bytes(Direction::BToA)
    }

    /// Connections currently open through the link.
    pub fn connections(&self) -> usize {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Connections reset so far (by [`LinkEmulator::cut`], a cut after bytes, or an I/O error
    /// on one of its sockets).
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Abruptly drops every current connection: both of its sockets are reset (RST), and
    /// whatever is still in flight is lost. New connections are accepted as before.
    pub fn cut(&self) {
        self.shared.cut_all();
    }

    /// Cuts every connection (as [`LinkEmulator::cut`]) once `n` more bytes have been delivered
    /// in `dir` — exactly `n` get through; `None` cancels. The cut happens once.
    pub fn set_cut_after_bytes(&self, dir: Direction, n: Option<u64>) {
        let at = match n {
            Some(n) => self.bytes(dir).saturating_add(n).min(NO_CUT - 1),
            None => NO_CUT,
        };
        self.shared.cut_at[dir.index()].store(at, Ordering::SeqCst);
        if n == Some(0) {
            self.shared.cut_at[dir.index()].store(NO_CUT, Ordering::SeqCst);
            self.cut();
        }
    }

    /// Stops accepting, resets every connection and waits (briefly) for the emulator thread.
    /// Idempotent.
    pub fn stop(&mut self) {
        self.shutdown.send_replace(true);
        self.shared.cut_all();
        if let Some(t) = self.thread.take() {
            // The thread only ends by returning; a panic there has already been reported.
            let _ = t.join();
        }
        self.shared.timer.stop();
    }
}

impl Drop for LinkEmulator {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: StdTcpListener,
    target: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            biased;
            _ = cut_signal(&mut shutdown) => break,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(connection(client, target, Arc::clone(&shared)));
            }
        }
    }
    drop(listener);
    // Let the connections see their cut and reset their sockets.
    shared.cut_all();
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Resolves once the switch is on (or its sender is gone).
async fn cut_signal(switch: &mut watch::Receiver<bool>) {
    let _ = switch.wait_for(|on| *on).await;
}

/// How a pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The sender closed its side and everything was passed on.
    Eof,
    /// The connection was cut.
    Cut,
}

/// One chunk in flight: its bytes and when its first byte started transmitting.
struct Chunk {
    start: Instant,
    data: Vec<u8>,
}

/// Removes a connection from the live list when dropped.
struct Registration {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut conns = self
            .shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        conns.retain(|(id, _)| *id != self.id);
    }
}

async fn connection(client: TcpStream, target: SocketAddr, shared: Arc<Shared>) {
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        _ => {
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let (cut_tx, cut_rx) = watch::channel(false);
    let cut_tx = Arc::new(cut_tx);
    shared
        .conns
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((id, Arc::clone(&cut_tx)));
    let _registration = Registration {
        id,
        shared: Arc::clone(&shared),
    };

    let (client_rd, client_wr) = client.into_split();
    let (up_rd, up_wr) = upstream.into_split();
    let (ab_tx, ab_rx) = mpsc::unbounded_channel();
    let (ba_tx, ba_rx) = mpsc::unbounded_channel();
    let (
        (client_rd, end_read_a),
        (up_wr, end_write_b),
        (up_rd, end_read_b),
        (client_wr, end_write_a),
    ) = tokio::join!(
        read_pump(
            client_rd,
            ab_tx,
            Direction::AToB,
            &shared,
            &cut_tx,
            cut_rx.clone()
        ),
        write_pump(
            up_wr,
            ab_rx,
            Direction::AToB,
            &shared,
            &cut_tx,
            cut_rx.clone()
        ),
        read_pump(
            up_rd,
            ba_tx,
            Direction::BToA,
            &shared,
            &cut_tx,
            cut_rx.clone()
        ),
        write_pump(client_wr, ba_rx, Direction::BToA, &shared, &cut_tx, cut_rx),
    );
    let cut = [end_read_a, end_write_b, end_read_b, end_write_a].contains(&End::Cut);
    if cut {
        shared.resets.fetch_add(1, Ordering::SeqCst);
        // Reset both sockets: zero linger, and no FIN first (reunite does not shut down).
        for (rd, wr) in [(client_rd, client_wr), (up_rd, up_wr)] {
            if let Ok(s) = rd.reunite(wr) {
                let _ = s.set_zero_linger();
            }
        }
    }
}

/// Reads from one side and schedules every chunk on the link.
async fn read_pump(
    mut rd: OwnedReadHalf,
    tx: mpsc::UnboundedSender<Chunk>,
    dir: Direction,
    shared: &Shared,
    cut_tx: &watch::Sender<bool>,
    mut cut: watch::Receiver<bool>,
) -> (OwnedReadHalf, End) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        tokio::select! {
            biased;
            _ = cut_signal(&mut cut) => return (rd, End::Cut),
            r = rd.read(&mut buf) => match r {
                Ok(0) => return (rd, End::Eof),
                Ok(n) => {
                    let start = shared.schedule(dir, Instant::now(), n);
                    if tx.send(Chunk { start, data: buf[..n].to_vec() }).is_err() {
                        // The writer is gone: it was cut.
                        return (rd, End::Cut);
                    }
                }
                Err(_) => {
                    // A reset from this side: pass it on as a reset of the whole connection.
                    cut_tx.send_replace(true);
                    return (rd, End::Cut);
                }
            }
        }
    }
}

/// Delivers scheduled chunks to the other side as their bytes arrive.
async fn write_pump(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Chunk>,
    dir: Direction,
    shared: &Shared,
    cut_tx: &watch::Sender<bool>,
    mut cut: watch::Receiver<bool>,
) -> (OwnedWriteHalf, End) {
    // Wake about once per millisecond of transmission while a long chunk is going through.
    let bytes_per_ms = usize::try_from(shared.config.bits_per_second / 8_000)
        .unwrap_or(usize::MAX)
        .max(1);
    loop {
        let chunk = tokio::select! {
            biased;
            _ = cut_signal(&mut cut) => return (wr, End::Cut),
            c = rx.recv() => match c {
                Some(c) => c,
                None => {
                    // The sender closed its side: pass the FIN on.
                    let _ = wr.shutdown().await;
                    return (wr, End::Eof);
                }
            },
        };
        let len = chunk.data.len();
        let mut off = 0;
        // Each pass delivers at least one byte or sleeps until one arrives; `len` bounds it.
        while off < len {
            if *cut.borrow() {
                return (wr, End::Cut);
            }
            let due = shared.arrived(chunk.start, len, Instant::now());
            let allowed = usize::try_from(shared.allowance(dir)).unwrap_or(usize::MAX);
            let upto = due.min(off.saturating_add(allowed));
            if upto > off {
                shared.count(dir, (upto - off) as u64);
                tokio::select! {
                    biased;
                    _ = cut_signal(&mut cut) => return (wr, End::Cut),
                    r = wr.write_all(&chunk.data[off..upto]) => {
                        if r.is_err() {
                            cut_tx.send_replace(true);
                            return (wr, End::Cut);
                        }
                    }
                }
                shared.check_cut(dir);
                off = upto;
                continue;
            }
            if allowed == 0 {
                // The scheduled cut is due (it fires in `check_cut`, or was set at zero).
                cut_tx.send_replace(true);
                return (wr, End::Cut);
            }
            let next = shared.arrival_of(chunk.start, (off + bytes_per_ms).min(len) - 1);
            tokio::select! {
                biased;
                _ = cut_signal(&mut cut) => return (wr, End::Cut),
                _ = shared.timer.sleep_until(next) => {}
            }
        }
    }
}
