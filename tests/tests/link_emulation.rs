//! Validates the emulated link (`cunyun_tests::link`): a bulk transfer takes what the rate and
//! latency say, a ping-pong of small messages takes one RTT per exchange, and cuts break
//! connections. Loopback only; every wait has a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use cunyun_tests::link::{Direction, LinkConfig, LinkEmulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(10);

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

/// Accepts one connection and reads until `n` bytes came, EOF or an error; reports how many
/// bytes it got, when the last one came, and whether the stream ended in an error.
fn sink(l: TcpListener, n: usize) -> oneshot::Receiver<(usize, Instant, bool)> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let mut got = 0;
        let mut last = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        let mut failed = false;
        while got < n {
            match s.read(&mut buf).await {
                Ok(0) => break,
                Ok(k) => {
                    got += k;
                    last = Instant::now();
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let _ = tx.send((got, last, failed));
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_transfer_takes_rate_plus_latency() {
    const N: usize = 100_000;
    let (l, target) = listener().await;
    let got = sink(l, N);
    let link = LinkEmulator::start(target, LinkConfig::village()).expect("link");
    let mut c = TcpStream::connect(link.addr()).await.expect("connect");
    c.set_nodelay(true).expect("nodelay");
    // Let the emulator's upstream connection settle so it is not timed.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let start = Instant::now();
    c.write_all(&vec![7u8; N]).await.expect("write");
    let (n, last, failed) = timeout(WAIT, got).await.expect("in time").expect("sink");
    let took = last.duration_since(start).as_secs_f64();
    eprintln!("100 KB at 1 Mbit/s + 100 ms: {took:.4} s (ideal 0.9000 s)");
    assert_eq!(n, N);
    assert!(!failed);
    assert!((0.75..1.6).contains(&took), "took {took} s");
    assert_eq!(link.bytes_a_to_b(), N as u64);
    assert_eq!(link.bytes_b_to_a(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_takes_one_rtt_per_exchange() {
    const ROUNDS: u32 = 8;
    let (l, target) = listener().await;
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; 32];
        for _ in 0..ROUNDS {
            if s.read_exact(&mut buf).await.is_err() {
                return;
            }
            if s.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    let link = LinkEmulator::start(target, LinkConfig::village()).expect("link");
    let mut c = TcpStream::connect(link.addr()).await.expect("connect");
    c.set_nodelay(true).expect("nodelay");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut rtts = Vec::new();
    let mut buf = [1u8; 32];
    for _ in 0..ROUNDS {
        let t = Instant::now();
        c.write_all(&buf).await.expect("write");
        timeout(WAIT, c.read_exact(&mut buf))
            .await
            .expect("in time")
            .expect("echo");
        rtts.push(t.elapsed().as_secs_f64());
    }
    let mean = rtts.iter().sum::<f64>() / f64::from(ROUNDS);
    let max = rtts.iter().copied().fold(0.0, f64::max);
    // 200 ms of latency plus 2 × 32 B at 1 Mbit/s (0.5 ms).
    eprintln!(
        "ping-pong RTT: mean {:.2} ms, max {:.2} ms (ideal 200.51 ms)",
        mean * 1e3,
        max * 1e3
    );
    assert!((0.195..0.26).contains(&mean), "mean RTT {mean} s");
    assert!(
        rtts.iter().all(|&r| r >= 0.2),
        "an RTT below the latency: {rtts:?}"
    );
    assert_eq!(link.bytes_a_to_b(), 32 * u64::from(ROUNDS));
    assert_eq!(link.bytes_b_to_a(), 32 * u64::from(ROUNDS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_breaks_a_transfer_midway() {
    const N: usize = 1_000_000; // 8 s at 1 Mbit/s
    let (l, target) = listener().await;
    let got = sink(l, N);
    let link = LinkEmulator::start(target, LinkConfig::village()).expect("link");
    let mut c = TcpStream::connect(link.addr()).await.expect("connect");
    let writer = tokio::spawn(async move {
        let _ = c.write_all(&vec![1u8; N]).await;
        // Wait for the server's reply that never comes: the cut must end this.
        let mut b = [0u8; 1];
        c.read(&mut b).await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(link.connections(), 1);
    let before = link.bytes_a_to_b();
    link.cut();

    let (n, _, failed) = timeout(WAIT, got)
        .await
        .expect("sink in time")
        .expect("sink");
    eprintln!("cut after {n} of {N} bytes (counter {before}); sink error: {failed}");
    assert!(n < N, "the whole transfer got through");
    assert!(n > 0, "nothing got through before the cut");
    assert!(failed, "the target saw a clean EOF, not a reset");
    let read = timeout(WAIT, writer)
        .await
        .expect("client in time")
        .expect("client task");
    assert!(
        matches!(read, Err(_) | Ok(0)),
        "the client's connection survived the cut: {read:?}"
    );
    assert_eq!(link.resets(), 1);
    timeout(WAIT, async {
        while link.connections() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("connection gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_after_bytes_lets_exactly_that_many_through() {
    const LIMIT: u64 = 5_000;
    let (l, target) = listener().await;
    let got = sink(l, 20_000);
    let link = LinkEmulator::start(
        target,
        LinkConfig {
            one_way_latency: Duration::from_millis(10),
            bits_per_second: 0,
        },
    )
    .expect("link");
    link.set_cut_after_bytes(Direction::AToB, Some(LIMIT));
    let mut c = TcpStream::connect(link.addr()).await.expect("connect");
    let _ = c.write_all(&[3u8; 20_000]).await;
    let (n, _, failed) = timeout(WAIT, got)
        .await
        .expect("sink in time")
        .expect("sink");
    assert_eq!(n as u64, LIMIT);
    assert!(failed, "the target saw a clean EOF, not a reset");
    assert_eq!(link.bytes_a_to_b(), LIMIT);
    let mut b = [0u8; 1];
    let read = timeout(WAIT, c.read(&mut b)).await.expect("client in time");
    assert!(matches!(read, Err(_) | Ok(0)), "client survived: {read:?}");
}
