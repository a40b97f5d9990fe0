//! The serving side of a blob transfer, without I/O.
//!
//! A [`Server`] queues what the fetcher asks for and answers strictly in request order. It
//! asks the host for data one item at a time ([`Server::next_request`]: a manifest, or a chunk
//! by item, rendition and index), which the host loads from its store and hands back with
//! [`Server::supply_manifest`] / [`Server::supply_chunk`] (`None` if it has none or its copy
//! failed verification). Chunk data goes out in pieces of at most [`MAX_PIECE_LEN`] bytes and
//! only within the fetcher's credit, so the server never runs more than the fetcher's window
//! ahead of what has arrived.

use std::collections::VecDeque;

use crate::manifest::ContentId;

use super::wire::{Frame, WantItem, MAX_PIECE_LEN};

/// Most queued requests (manifests plus chunks) a fetcher may have outstanding.
pub const MAX_QUEUED: usize = 65_536;

/// Data the host must load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeRequest {
    /// The encoded manifest of an item.
    Manifest(ContentId),
    /// One chunk of an item (the whole chunk; the server sends it from the wanted offset).
    Chunk {
        /// The item.
        id: ContentId,
        /// Rendition index.
        rendition: u8,
        /// Chunk index.
        chunk: u32,
    },
}

/// Why the server ends a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The fetcher broke the protocol.
    #[error("对端违反传输协议：{0}")]
    Protocol(String),
    /// The fetcher reported an error.
    #[error("对端报告错误：{0}")]
    Peer(String),
}

/// Counters of a serving connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Manifests sent.
    pub manifests: u64,
    /// Chunks whose sending began (whole or from an offset).
    pub chunks: u64,
    /// Piece bytes sent.
    pub piece_bytes: u64,
    /// Chunks answered with `Missing`.
    pub missing: u64,
}

#[derive(Debug, Clone, Copy)]
enum Queued {
    Manifest(ContentId),
    Chunk(ContentId, WantItem),
}

#[derive(Debug)]
struct Sending {
    id: ContentId,
    item: WantItem,
    data: Vec<u8>,
    pos: usize,
}

/// The serving side of one transfer connection (see the module doc).
#[derive(Debug, Default)]
pub struct Server {
    queue: VecDeque<Queued>,
    requested: bool,
    sending: Option<Sending>,
    outgoing: VecDeque<Frame>,
    credit: u64,
    stats: ServeStats,
}

impl Server {
    /// A server with nothing asked yet.
    pub fn new() -> Server {
        Server::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> ServeStats {
        self.stats
    }

    /// Handles one frame from the fetcher.
    pub fn handle(&mut self, frame: Frame) -> Result<(), ServeError> {
        match frame {
            Frame::GetManifests(ids) => {
                self.room(ids.len())?;
                self.queue.extend(ids.into_iter().map(Queued::Manifest));
            }
            Frame::Want { id, items } => {
                self.room(items.len())?;
                self.queue
                    .extend(items.into_iter().map(|i| Queued::Chunk(id, i)));
            }
            Frame::Credit(total) => {
                if total < self.credit {
                    return Err(ServeError::Protocol("流量额度减少".into()));
                }
                self.credit = total;
            }
            Frame::Error(msg) => return Err(ServeError::Peer(msg)),
            Frame::Manifest(_)
            | Frame::NotFound(_)
            | Frame::Piece { .. }
            | Frame::Missing { .. } => {
                return Err(ServeError::Protocol("获取端发送了应答帧".into()))
            }
        }
        Ok(())
    }

    fn room(&self, n: usize) -> Result<(), ServeError> {
        if self.queue.len() + n > MAX_QUEUED {
            return Err(ServeError::Protocol("排队的请求过多".into()));
        }
        Ok(())
    }

    /// The data the host must load next, if any (one at a time, in request order; call again
    /// after supplying it). Chunks are asked for only once there is credit to send them.
    pub fn next_request(&mut self) -> Option<ServeRequest> {
        if self.requested || self.sending.is_some() {
            return None;
        }
        let req = match self.queue.front()? {
            Queued::Manifest(id) => ServeRequest::Manifest(*id),
            Queued::Chunk(id, item) => {
                if self.stats.piece_bytes >= self.credit {
                    return None;
                }
                ServeRequest::Chunk {
                    id: *id,
                    rendition: item.rendition,
                    chunk: item.chunk,
                }
            }
        };
        self.requested = true;
        Some(req)
    }

    /// The host's answer to a [`ServeRequest::Manifest`].
    pub fn supply_manifest(&mut self, id: ContentId, bytes: Option<Vec<u8>>) {
        if !matches!(self.queue.front(), Some(Queued::Manifest(q)) if *q == id) {
            return;
        }
        self.queue.pop_front();
        self.requested = false;
        match bytes {
            Some(b) => {
                self.stats.manifests += 1;
                self.outgoing.push_back(Frame::Manifest(b));
            }
            None => self.outgoing.push_back(Frame::NotFound(id)),
        }
    }

    /// The host's answer to a [`ServeRequest::Chunk`]: the whole chunk, verified, or `None`.
    pub fn supply_chunk(
        &mut self,
        id: ContentId,
        rendition: u8,
        chunk: u32,
        data: Option<Vec<u8>>,
    ) {
        let item = match self.queue.front() {
            Some(Queued::Chunk(q, item))
                if *q == id && item.rendition == rendition && item.chunk == chunk =>
            {
                *item
            }
            _ => return,
        };
        self.queue.pop_front();
        self.requested = false;
        match data {
            Some(data) if (item.offset as usize) < data.len() => {
                self.stats.chunks += 1;
                self.sending = Some(Sending {
                    id,
                    item,
                    pos: item.offset as usize,
                    data,
                });
            }
            _ => {
                self.stats.missing += 1;
                self.outgoing.push_back(Frame::Missing {
                    id,
                    rendition,
                    chunk,
                });
            }
        }
    }

    /// The next frame to send, within the credit.
    pub fn poll_outgoing(&mut self) -> Option<Frame> {
        if let Some(f) = self.outgoing.pop_front() {
            return Some(f);
        }
        let room = self.credit.saturating_sub(self.stats.piece_bytes);
        let s = self.sending.as_mut()?;
        if room == 0 {
            return None;
        }
        let n = (s.data.len() - s.pos).min(MAX_PIECE_LEN).min(room as usize);
        let frame = Frame::Piece {
            id: s.id,
            rendition: s.item.rendition,
            chunk: s.item.chunk,
            offset: s.pos as u32,
            data: s.data[s.pos..s.pos + n].to_vec(),
        };
        s.pos += n;
        self.stats.piece_bytes += n as u64;
        if s.pos == s.data.len() {
            self.sending = None;
        }
        Some(frame)
    }

    /// Whether everything asked has been answered (and sent by [`Server::poll_outgoing`]).
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.sending.is_none() && self.outgoing.is_empty()
    }
}
