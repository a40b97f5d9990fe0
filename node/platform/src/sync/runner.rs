//! Runs one sync session over a byte stream (in practice a mutual-TLS connection).
//!
//! The sans-IO [`Session`] decides what to say; this module moves its frames over the stream,
//! applies the changes it hands out (durably, before the next frame is handled, as the session
//! requires), and gives up when the peer falls silent or the whole session takes too long.
//! Store work runs on the blocking pool so the async workers stay free.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cunyun_protocol::identity::NodeIdentity;
use cunyun_protocol::key::DocKey;
use cunyun_protocol::sync::scope::Reach;
use cunyun_protocol::sync::{
    wire, Event, FrameReader, PeerMemory, Session, SessionConfig, SessionStats,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::host::SyncHost;
use crate::sync::adapter::{apply_changes, HostSyncStore, IndexCache, ReceivePolicy};

/// Time limits of one session.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Longest wait for the next bytes from the peer.
    pub idle: Duration,
    /// Longest a whole session may take.
    pub total: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// How a session went, for logs, status and metrics.
#[derive(Debug, Clone)]
pub struct SessionReport {
    /// The peer, as its certificate says.
    pub peer: NodeIdentity,
    /// What to remember about the peer (converged), or why it failed.
    pub outcome: Result<PeerMemory, String>,
    /// The session's counters.
    pub stats: SessionStats,
    /// Documents changed here by what the peer sent.
    pub docs_applied: usize,
    /// Documents refused (either way).
    pub refused: usize,
    /// Bytes written to the stream.
    pub bytes_out: u64,
    /// Bytes read from the stream.
    pub bytes_in: u64,
    /// How long it took.
    pub duration: Duration,
}

/// Runs the store-touching part of a session on the blocking pool.
async fn on_store<T: Send + 'static>(
    host: &Arc<dyn SyncHost>,
    cache: &Arc<IndexCache>,
    withhold: bool,
    session: Session,
    f: impl FnOnce(&mut Session, &HostSyncStore<'_>) -> T + Send + 'static,
) -> Result<(Session, T), String> {
    let host = host.clone();
    let cache = cache.clone();
    tokio::task::spawn_blocking(move || {
        let mut session = session;
        let view = HostSyncStore::with_cache(host.as_ref(), &cache).withholding_sensitive(withhold);
        let out = f(&mut session, &view);
        (session, out)
    })
    .await
    .map_err(|e| format!("同步任务异常退出: {e}"))
}

/// Runs a session with `peer` over `stream` until it converges, fails, or times out.
pub async fn run_session<S>(
    stream: S,
    host: Arc<dyn SyncHost>,
    local: NodeIdentity,
    peer: NodeIdentity,
    memory: Option<PeerMemory>,
    limits: SessionLimits,
) -> SessionReport
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut report = SessionReport {
        peer,
        outcome: Err("会话未开始".into()),
        stats: SessionStats::default(),
        docs_applied: 0,
        refused: 0,
        bytes_out: 0,
        bytes_in: 0,
        duration: Duration::ZERO,
    };
    let result = tokio::time::timeout(
        limits.total,
        drive(stream, &host, local, peer, memory, limits, &mut report),
    )
    .await;
    report.outcome = match result {
        Ok(Ok(memory)) => Ok(memory),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("会话超过{}秒，已中止", limits.total.as_secs())),
    };
    report.duration = started.elapsed();
    report
}

/// Drains the session's events: applies changes durably, logs refusals, and returns the
/// outcome once the session has one.
async fn process_events(
    session: &mut Session,
    host: &Arc<dyn SyncHost>,
    cache: &IndexCache,
    policy: ReceivePolicy,
    report: &mut SessionReport,
) -> Result<Option<Result<PeerMemory, String>>, String> {
    let peer = report.peer.node_id;
    let mut batch: Vec<(DocKey, Vec<Vec<u8>>)> = Vec::new();
    let mut outcome = None;
    while let Some(event) = session.poll_event() {
        match event {
            Event::Apply { key, changes } => batch.push((key, changes)),
            Event::Refused { key, reason, by } => {
                report.refused += 1;
                tracing::warn!(
                    target: "cunyun::_events::sync_refused",
                    peer = %peer, key = %key, ?reason, ?by
                );
            }
            Event::DocError { key, message } => {
                tracing::warn!(peer = %peer, key = %key, message, "document skipped in sync");
            }
            Event::Converged { memory, stats } => {
                report.stats = stats;
                outcome = Some(Ok(memory));
            }
            Event::Failed { error, stats } => {
                report.stats = stats;
                outcome = Some(Err(error.to_string()));
            }
        }
    }
    if !batch.is_empty() {
        let host = host.clone();
        let applied =
            tokio::task::spawn_blocking(move || apply_changes(host.as_ref(), batch, policy))
                .await
                .map_err(|e| format!("同步任务异常退出: {e}"))?
                .map_err(|e| format!("写入失败: {e}"))?;
        report.docs_applied += applied.documents;
        for e in &applied.written {
            cache.record(&e.key, e.digest, e.pos);
        }
        for key in &applied.removed {
            cache.forget(key);
        }
        for e in applied.failed {
            tracing::warn!(peer = %peer, error = %e, "received changes refused");
        }
    }
    Ok(outcome)
}

async fn drive<S>(
    stream: S,
    host: &Arc<dyn SyncHost>,
    local: NodeIdentity,
    peer: NodeIdentity,
    memory: Option<PeerMemory>,
    limits: SessionLimits,
    report: &mut SessionReport,
) -> Result<PeerMemory, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    // The privacy boundary: nothing sensitive is sent to a node above the county, and a node
    // above the county refuses it.
    let withhold = Reach::from(&peer).above_county();
    let policy = ReceivePolicy {
        refuse_sensitive: Reach::from(&local).above_county(),
    };
    let mut config = SessionConfig::new(local, peer);
    config.memory = memory;
    let cache = Arc::new(IndexCache::default());
    let mut session = {
        let host = host.clone();
        let cache = cache.clone();
        tokio::task::spawn_blocking(move || {
            Session::new(
                config,
                &HostSyncStore::with_cache(host.as_ref(), &cache).withholding_sensitive(withhold),
            )
        })
        .await
        .map_err(|e| format!("同步任务异常退出: {e}"))?
        .map_err(|e| e.to_string())?
    };
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Everything the session has to say goes out first.
        let mut out = Vec::new();
        while let Some(frame) = session.poll_outgoing() {
            wire::encode_into(&frame, &mut out).map_err(|e| format!("帧编码失败: {e}"))?;
        }
        if !out.is_empty() {
            wr.write_all(&out)
                .await
                .map_err(|e| format!("发送失败: {e}"))?;
            wr.flush().await.map_err(|e| format!("发送失败: {e}"))?;
            report.bytes_out += out.len() as u64;
        }
        if let Some(done) = process_events(&mut session, host, &cache, policy, report).await? {
            // Our last frames (e.g. Done) are already written; close our half politely.
            let _ = wr.shutdown().await;
            return done;
        }
        if session.is_finished() {
            return Err("会话结束但没有结果".into());
        }
        // Wait for the peer.
        let n = tokio::time::timeout(limits.idle, rd.read(&mut buf))
            .await
            .map_err(|_| format!("对端{}秒无响应", limits.idle.as_secs()))?
            .map_err(|e| format!("接收失败: {e}"))?;
        if n == 0 {
            return Err("对端关闭了连接".into());
        }
        report.bytes_in += n as u64;
        reader.push(&buf[..n]);
        // Handle frames one at a time: what one frame makes us apply lands before the next.
        while let Some(frame) = reader
            .next_frame()
            .map_err(|e| format!("收到无效的帧: {e}"))?
        {
            let (s, handled) = on_store(host, &cache, withhold, session, move |s, view| {
                s.handle(view, frame)
            })
            .await?;
            session = s;
            if let Err(e) = handled {
                // Also reported as Event::Failed, which ends the loop below.
                tracing::debug!(peer = %peer.node_id, error = %e, "session failed");
            }
            let mut pending_out = Vec::new();
            while let Some(frame) = session.poll_outgoing() {
                wire::encode_into(&frame, &mut pending_out)
                    .map_err(|e| format!("帧编码失败: {e}"))?;
            }
            if !pending_out.is_empty() {
                wr.write_all(&pending_out)
                    .await
                    .map_err(|e| format!("发送失败: {e}"))?;
                report.bytes_out += pending_out.len() as u64;
            }
            if let Some(done) = process_events(&mut session, host, &cache, policy, report).await? {
                let _ = wr.flush().await;
                let _ = wr.shutdown().await;
                return done;
            }
        }
    }
}
