//! Runs blob transfers over a byte stream (in practice a mutual-TLS connection with the
//! [`BLOB_ALPN`](crate::certs::tls::BLOB_ALPN) protocol id): [`fetch_over`] drives a
//! [`Fetcher`], [`serve_over`] a [`Server`], both sans-IO from `cunyun_protocol::blob`.
//! Store work runs on the blocking pool.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cunyun_protocol::blob::{
    wire, FetchConfig, FetchEvent, FetchStats, Fetcher, FrameReader, ServeRequest, ServeStats,
    Server,
};
use cunyun_protocol::manifest::ContentId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::store::{BlobError, BlobStore};
use crate::certs::tls::TlsContext;
use crate::clock::now_ms;

/// Why a transfer connection ended early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Could not connect or complete the TLS handshake.
    #[error("无法连接 {addr}: {reason}")]
    Connect {
        /// The peer's address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The connection broke or timed out.
    #[error("传输中断：{0}")]
    Io(String),
    /// The peer sent something malformed or broke the protocol.
    #[error("传输协议错误：{0}")]
    Protocol(String),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] BlobError),
}

/// Time limits of a transfer connection.
#[derive(Debug, Clone, Copy)]
pub struct TransferLimits {
    /// Longest wait for the next bytes from the peer.
    pub idle: Duration,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            idle: Duration::from_secs(60),
        }
    }
}

/// How a fetch went.
#[derive(Debug, Clone, Default)]
pub struct FetchReport {
    /// Items now complete here (fetched, or already held).
    pub complete: Vec<ContentId>,
    /// Items that could not be fetched, with why (Chinese).
    pub failed: Vec<(ContentId, String)>,
    /// Items evicted to make room.
    pub evicted: Vec<ContentId>,
    /// The fetcher's counters.
    pub stats: FetchStats,
    /// Bytes written to the stream.
    pub bytes_out: u64,
    /// Bytes read from the stream.
    pub bytes_in: u64,
    /// How long it took.
    pub duration: Duration,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TransferError::Io(format!("后台任务异常退出: {e}")))
}

/// Connects to `peer` (its county node or the hub) and fetches the `wanted` items into
/// `store`: what the node's recommendations name. Items already complete are not asked for;
/// the rest are made room for (evicting items no longer wanted) and fetched, every chunk
/// verified against the hub-signed manifest. After a cut, call again: only what is still
/// missing is asked for.
pub async fn fetch_wanted(
    tls: &TlsContext,
    peer: SocketAddr,
    store: &BlobStore,
    wanted: &[ContentId],
) -> Result<FetchReport, TransferError> {
    fetch_keeping(tls, peer, store, wanted, wanted).await
}

/// Like [`fetch_wanted`], but room is made by evicting only items outside `keep` (which should
/// include `wanted`): the push-down keeps its planned files while fetching one item on demand.
pub async fn fetch_keeping(
    tls: &TlsContext,
    peer: SocketAddr,
    store: &BlobStore,
    wanted: &[ContentId],
    keep: &[ContentId],
) -> Result<FetchReport, TransferError> {
    if wanted.iter().all(|id| store.is_complete(id)) {
        store.mark_wanted(wanted, now_ms())?;
        return Ok(FetchReport {
            complete: wanted.to_vec(),
            ..FetchReport::default()
        });
    }
    let (stream, _) = tokio::time::timeout(Duration::from_secs(15), tls.connect_blob(peer))
        .await
        .map_err(|_| TransferError::Connect {
            addr: peer,
            reason: "超时".into(),
        })?
        .map_err(|e| TransferError::Connect {
            addr: peer,
            reason: e.to_string(),
        })?;
    fetch_over_keeping(
        stream,
        store,
        wanted,
        keep,
        FetchConfig::default(),
        TransferLimits::default(),
    )
    .await
}

/// Fetches `wanted` over an established stream (see [`fetch_wanted`]).
pub async fn fetch_over<S>(
    stream: S,
    store: &BlobStore,
    wanted: &[ContentId],
    config: FetchConfig,
    limits: TransferLimits,
) -> Result<FetchReport, TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fetch_over_keeping(stream, store, wanted, wanted, config, limits).await
}

async fn fetch_over_keeping<S>(
    stream: S,
    store: &BlobStore,
    wanted: &[ContentId],
    keep: &[ContentId],
    config: FetchConfig,
    limits: TransferLimits,
) -> Result<FetchReport, TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut report = FetchReport::default();
    store.mark_wanted(wanted, now_ms())?;
    let mut todo = Vec::new();
    for id in wanted {
        if store.is_complete(id) {
            report.complete.push(*id);
        } else {
            todo.push(*id);
        }
    }
    if todo.is_empty() {
        report.duration = started.elapsed();
        return Ok(report);
    }
    let mut fetcher = Fetcher::new(&todo, store.trusted().clone(), config);
    let mut keep = keep.to_vec();
    keep.extend_from_slice(wanted);
    let result = fetch_loop(stream, store, &keep, &mut fetcher, limits, &mut report).await;
    report.stats = fetcher.stats();
    report.duration = started.elapsed();
    if result.is_err() {
        // Keep the start of the chunk that was cut, so the next transfer asks only for the rest.
        if let Some((_, hash, prefix)) = fetcher.partial() {
            let (store, prefix) = (store.clone(), prefix.to_vec());
            let _ = blocking(move || store.keep_partial(&hash, &prefix)).await;
        }
    }
    tracing::info!(
        target: "cunyun::_events::blob_fetch",
        complete = report.complete.len(),
        failed = report.failed.len(),
        chunks = report.stats.chunks,
        bad_chunks = report.stats.bad_chunks,
        bytes_in = report.bytes_in,
        ok = result.is_ok()
    );
    result.map(|()| report)
}

async fn fetch_loop<S>(
    stream: S,
    store: &BlobStore,
    wanted: &[ContentId],
    fetcher: &mut Fetcher,
    limits: TransferLimits,
    report: &mut FetchReport,
) -> Result<(), TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut out = Vec::new();
        while let Some(f) = fetcher.poll_outgoing() {
            wire::encode_into(&f, &mut out).map_err(|e| TransferError::Protocol(e.to_string()))?;
        }
        if !out.is_empty() {
            wr.write_all(&out)
                .await
                .map_err(|e| TransferError::Io(format!("发送失败: {e}")))?;
            wr.flush()
                .await
                .map_err(|e| TransferError::Io(format!("发送失败: {e}")))?;
            report.bytes_out += out.len() as u64;
        }
        if fetcher.is_finished() {
            let _ = wr.shutdown().await;
            return Ok(());
        }
        let n = tokio::time::timeout(limits.idle, rd.read(&mut buf))
            .await
            .map_err(|_| TransferError::Io(format!("对端{}秒无响应", limits.idle.as_secs())))?
            .map_err(|e| TransferError::Io(format!("接收失败: {e}")))?;
        if n == 0 {
            return Err(TransferError::Io("对端关闭了连接".into()));
        }
        report.bytes_in += n as u64;
        reader.push(&buf[..n]);
        while let Some(frame) = reader
            .next_frame()
            .map_err(|e| TransferError::Protocol(e.to_string()))?
        {
            fetcher
                .handle(frame)
                .map_err(|e| TransferError::Protocol(e.to_string()))?;
            handle_events(fetcher, store, wanted, report).await?;
        }
    }
}

async fn handle_events(
    fetcher: &mut Fetcher,
    store: &BlobStore,
    wanted: &[ContentId],
    report: &mut FetchReport,
) -> Result<(), TransferError> {
    while let Some(event) = fetcher.poll_event() {
        match event {
            FetchEvent::Manifest { manifest, .. } => {
                let id = manifest.content_id;
                let (s, w) = (store.clone(), wanted.to_vec());
                let prepared = blocking(move || {
                    s.put_manifest(&manifest)?;
                    let need = s.missing_bytes(&manifest);
                    let evicted = s.make_room(&w, need);
                    Ok::<_, BlobError>((evicted, s.missing_chunks(&manifest)))
                })
                .await?;
                match prepared {
                    Ok((Ok(evicted), missing)) => {
                        report.evicted.extend(evicted);
                        fetcher.start_content(id, missing);
                    }
                    Ok((Err(e), _)) => fetcher.abandon(id, e.to_string()),
                    Err(e) => return Err(e.into()),
                }
            }
            FetchEvent::Chunk { id, hash, data } => {
                let s = store.clone();
                blocking(move || s.put_chunk(&hash, &data)).await??;
                let stats = fetcher.stats();
                // Progress of long transfers: about every 4 MiB at the default chunk size.
                if stats.chunks.is_multiple_of(16) {
                    tracing::info!(
                        target: "cunyun::_events::blob_fetch_progress",
                        content = %id,
                        chunks = stats.chunks,
                        bytes = stats.piece_bytes
                    );
                }
            }
            FetchEvent::BadChunk { id, hash } => {
                tracing::warn!(
                    target: "cunyun::_events::blob_bad_chunk",
                    content = %id,
                    chunk = %ContentId(hash)
                );
            }
            FetchEvent::Complete(id) => {
                let s = store.clone();
                match blocking(move || s.verify_content(&id)).await? {
                    Ok(()) => report.complete.push(id),
                    Err(e) => {
                        let s = store.clone();
                        let _ = blocking(move || s.remove_content(&id)).await;
                        report.failed.push((id, e.to_string()));
                    }
                }
            }
            FetchEvent::Failed { id, error } => {
                tracing::warn!(
                    target: "cunyun::_events::blob_fetch_failed",
                    content = %id,
                    error = %error
                );
                report.failed.push((id, error.to_string()));
            }
        }
    }
    Ok(())
}

/// Serves what `store` holds to a fetcher over an established stream until the fetcher
/// closes it. Only complete items are offered, and every chunk is re-verified as it is read.
/// Returns what was sent, and how the connection ended.
pub async fn serve_over<S>(
    stream: S,
    store: &BlobStore,
    limits: TransferLimits,
) -> (ServeStats, Result<(), TransferError>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut server = Server::new();
    let result = serve_loop(stream, store, &mut server, limits).await;
    let stats = server.stats();
    tracing::info!(
        target: "cunyun::_events::blob_served",
        manifests = stats.manifests,
        chunks = stats.chunks,
        piece_bytes = stats.piece_bytes,
        missing = stats.missing,
        ok = result.is_ok()
    );
    (stats, result)
}

async fn serve_loop<S>(
    stream: S,
    store: &BlobStore,
    server: &mut Server,
    limits: TransferLimits,
) -> Result<(), TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(req) = server.next_request() {
            let s = store.clone();
            match req {
                ServeRequest::Manifest(id) => {
                    let bytes = blocking(move || {
                        s.is_complete(&id)
                            .then(|| s.manifest(&id).map(|m| m.encode()))
                            .flatten()
                    })
                    .await?;
                    server.supply_manifest(id, bytes);
                }
                ServeRequest::Chunk {
                    id,
                    rendition,
                    chunk,
                } => {
                    let data = blocking(move || {
                        let m = s.manifest(&id)?;
                        let hash = *m
                            .renditions
                            .get(usize::from(rendition))?
                            .chunks
                            .get(chunk as usize)?;
                        s.get_chunk(&hash).ok().flatten()
                    })
                    .await?;
                    server.supply_chunk(id, rendition, chunk, data);
                }
            }
        }
        let mut out = Vec::new();
        while out.len() < 256 * 1024 {
            let Some(f) = server.poll_outgoing() else {
                break;
            };
            wire::encode_into(&f, &mut out).map_err(|e| TransferError::Protocol(e.to_string()))?;
        }
        if !out.is_empty() {
            wr.write_all(&out)
                .await
                .map_err(|e| TransferError::Io(format!("发送失败: {e}")))?;
            wr.flush()
                .await
                .map_err(|e| TransferError::Io(format!("发送失败: {e}")))?;
            continue;
        }
        let n = tokio::time::timeout(limits.idle, rd.read(&mut buf))
            .await
            .map_err(|_| TransferError::Io(format!("对端{}秒无响应", limits.idle.as_secs())))?
            .map_err(|e| TransferError::Io(format!("接收失败: {e}")))?;
        if n == 0 {
            // The fetcher is done (or gone); nothing is owed to it.
            return Ok(());
        }
        reader.push(&buf[..n]);
        while let Some(frame) = reader
            .next_frame()
            .map_err(|e| TransferError::Protocol(e.to_string()))?
        {
            server
                .handle(frame)
                .map_err(|e| TransferError::Protocol(e.to_string()))?;
        }
    }
}
