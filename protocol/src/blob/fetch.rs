//! The fetching side of a blob transfer, without I/O.
//!
//! A [`Fetcher`] asks for the manifests of the items it wants, verifies each against the
//! trusted hub keys, lets the host say which chunks it still lacks ([`Fetcher::start_content`],
//! with any prefix kept from a cut transfer), asks for those, and checks every chunk against the
//! signed manifest's hash before handing it to the host ([`FetchEvent::Chunk`]). The host stores
//! what it is handed and never anything else.
//!
//! Flow control: the fetcher grants the server a byte credit (cumulative piece bytes the server
//! may have sent). It keeps the credit `window` bytes ahead of what has arrived, so the link
//! stays full as long as the window exceeds the link's bandwidth-delay product (1 Mbit/s ×
//! 200 ms = 25 KB; the default window is 128 KiB), and a cut loses at most `window` bytes that
//! were sent but not received. The chunk being received when the cut came is handed back by
//! [`Fetcher::partial`] so the host can keep its prefix; the next transfer asks only for the
//! rest. Together: after a cut, at most `window` bytes — less than one chunk — are sent again.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::manifest::{ContentId, ContentManifest, Hash, ManifestError, TrustedKeys};

use super::wire::{Frame, WantItem, MAX_IDS_PER_FRAME, MAX_WANT_ITEMS};

/// Settings of a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchConfig {
    /// Bytes of piece data the server may send ahead of what has arrived.
    pub window: u64,
    /// How many chunks of one item may fail verification (each is asked for again) before the
    /// item is given up for this transfer.
    pub max_bad_chunks: u32,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            window: 128 * 1024,
            max_bad_chunks: 3,
        }
    }
}

/// A chunk the host lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingChunk {
    /// Rendition index in the manifest.
    pub rendition: u8,
    /// Chunk index.
    pub chunk: u32,
    /// Bytes of the chunk's start already held from a cut transfer (unverified; checked with
    /// the rest once the chunk is whole).
    pub prefix: Vec<u8>,
}

/// Why an item (or the whole transfer) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The peer does not have the item.
    #[error("对端没有此内容")]
    NotFound,
    /// The manifest failed decoding or verification.
    #[error("内容清单被拒绝：{0}")]
    BadManifest(#[from] ManifestError),
    /// A manifest for another item came back.
    #[error("收到的内容清单与请求不符")]
    WrongManifest,
    /// Too many chunks failed verification.
    #[error("分块校验失败次数过多（{0} 次），已放弃")]
    BadChunks(u32),
    /// The peer cannot serve a chunk.
    #[error("对端缺少分块 {rendition}/{chunk}")]
    Missing {
        /// Rendition index.
        rendition: u8,
        /// Chunk index.
        chunk: u32,
    },
    /// The peer broke the protocol.
    #[error("对端违反传输协议：{0}")]
    Protocol(String),
    /// The peer reported an error.
    #[error("对端报告错误：{0}")]
    Peer(String),
    /// The host gave the item up (see [`Fetcher::abandon`]).
    #[error("{0}")]
    Host(String),
}

/// What the host must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// A verified manifest: store it, then call [`Fetcher::start_content`] with what is missing.
    Manifest {
        /// The decoded manifest.
        manifest: Box<ContentManifest>,
        /// Its encoding, as received.
        bytes: Vec<u8>,
    },
    /// A chunk that matched its hash in the signed manifest: store it.
    Chunk {
        /// The item it belongs to.
        id: ContentId,
        /// Its BLAKE3 hash.
        hash: Hash,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A chunk failed verification and was dropped (it is asked for again).
    BadChunk {
        /// The item.
        id: ContentId,
        /// The hash it should have had.
        hash: Hash,
    },
    /// Every chunk of the item is held.
    Complete(ContentId),
    /// The item could not be fetched in this transfer.
    Failed {
        /// The item.
        id: ContentId,
        /// Why.
        error: FetchError,
    },
}

/// Counters of a fetch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Piece bytes received.
    pub piece_bytes: u64,
    /// Verified chunks handed to the host.
    pub chunks: u64,
    /// Chunks that failed verification.
    pub bad_chunks: u64,
}

#[derive(Debug)]
struct Active {
    manifest: ContentManifest,
    pending: usize,
    bad: u32,
    failed: bool,
}

#[derive(Debug, Clone)]
struct Expected {
    id: ContentId,
    item: WantItem,
}

#[derive(Debug)]
struct Current {
    id: ContentId,
    rendition: u8,
    chunk: u32,
    hash: Hash,
    len: usize,
    buf: Vec<u8>,
}

/// The fetching side of one transfer connection (see the module doc).
#[derive(Debug)]
pub struct Fetcher {
    config: FetchConfig,
    trusted: TrustedKeys,
    asked: VecDeque<ContentId>,
    active: BTreeMap<ContentId, Active>,
    awaiting_start: BTreeSet<ContentId>,
    expected: VecDeque<Expected>,
    prefixes: HashMap<(ContentId, u8, u32), Vec<u8>>,
    current: Option<Current>,
    outgoing: VecDeque<Frame>,
    events: VecDeque<FetchEvent>,
    credited: u64,
    stats: FetchStats,
    error: Option<FetchError>,
}

impl Fetcher {
    /// A fetch of `wanted` (duplicates are ignored), verifying manifests against `trusted`.
    pub fn new(wanted: &[ContentId], trusted: TrustedKeys, config: FetchConfig) -> Fetcher {
        let mut seen = BTreeSet::new();
        let asked: VecDeque<ContentId> = wanted
            .iter()
            .copied()
            .filter(|id| seen.insert(*id))
            .collect();
        let mut outgoing = VecDeque::new();
        let ids: Vec<ContentId> = asked.iter().copied().collect();
        for batch in ids.chunks(MAX_IDS_PER_FRAME) {
            outgoing.push_back(Frame::GetManifests(batch.to_vec()));
        }
        Fetcher {
            config,
            trusted,
            asked,
            active: BTreeMap::new(),
            awaiting_start: BTreeSet::new(),
            expected: VecDeque::new(),
            prefixes: HashMap::new(),
            current: None,
            outgoing,
            events: VecDeque::new(),
            credited: 0,
            stats: FetchStats::default(),
            error: None,
        }
    }

    /// The next frame to send.
    pub fn poll_outgoing(&mut self) -> Option<Frame> {
        self.outgoing.pop_front()
    }

    /// The next thing the host must do.
    pub fn poll_event(&mut self) -> Option<FetchEvent> {
        self.events.pop_front()
    }

    /// Counters so far.
    pub fn stats(&self) -> FetchStats {
        self.stats
    }

    /// Whether every wanted item is complete or failed (or the transfer failed).
    pub fn is_finished(&self) -> bool {
        self.error.is_some()
            || (self.asked.is_empty()
                && self.awaiting_start.is_empty()
                && self.expected.is_empty()
                && self.current.is_none())
    }

    /// The chunk being received, if any bytes of it have arrived: `(item, hash, bytes so
    /// far)`. After a cut the host may keep these and offer them as a prefix next time.
    pub fn partial(&self) -> Option<(ContentId, Hash, &[u8])> {
        self.current
            .as_ref()
            .filter(|c| !c.buf.is_empty())
            .map(|c| (c.id, c.hash, c.buf.as_slice()))
    }

    /// Tells the fetcher what the host lacks of an item whose manifest it was handed and has
    /// stored. Ignored for items not awaiting it.
    pub fn start_content(&mut self, id: ContentId, missing: Vec<MissingChunk>) {
        if !self.awaiting_start.remove(&id) {
            return;
        }
        let Some(active) = self.active.get_mut(&id) else {
            return;
        };
        let mut items = Vec::with_capacity(missing.len());
        for m in missing {
            let Some(len) = active
                .manifest
                .renditions
                .get(usize::from(m.rendition))
                .map(|r| r.chunk_len(m.chunk) as usize)
                .filter(|l| *l > 0)
            else {
                continue;
            };
            let offset = if m.prefix.len() < len {
                m.prefix.len()
            } else {
                0
            };
            if offset > 0 {
                self.prefixes.insert((id, m.rendition, m.chunk), m.prefix);
            }
            items.push(WantItem {
                rendition: m.rendition,
                chunk: m.chunk,
                offset: offset as u32,
            });
        }
        active.pending = items.len();
        if items.is_empty() {
            self.active.remove(&id);
            self.events.push_back(FetchEvent::Complete(id));
            return;
        }
        self.want(id, items);
    }

    /// Gives up an item whose manifest was handed over (e.g. it does not fit the host's disk
    /// quota); it is reported as failed with `reason`.
    pub fn abandon(&mut self, id: ContentId, reason: String) {
        if self.awaiting_start.remove(&id) {
            self.active.remove(&id);
            self.events.push_back(FetchEvent::Failed {
                id,
                error: FetchError::Host(reason),
            });
        }
    }

    fn want(&mut self, id: ContentId, items: Vec<WantItem>) {
        for item in &items {
            self.expected.push_back(Expected { id, item: *item });
        }
        for batch in items.chunks(MAX_WANT_ITEMS) {
            self.outgoing.push_back(Frame::Want {
                id,
                items: batch.to_vec(),
            });
        }
        self.grant();
    }

    /// Keeps the credit `window` ahead of what has arrived (re-granting after a quarter).
    fn grant(&mut self) {
        let target = self.stats.piece_bytes + self.config.window;
        if self.credited == 0 || target >= self.credited + self.config.window / 4 {
            self.credited = target;
            self.outgoing.push_back(Frame::Credit(target));
        }
    }

    fn fail(&mut self, e: FetchError) -> Result<(), FetchError> {
        self.error = Some(e.clone());
        Err(e)
    }

    fn fail_item(&mut self, id: ContentId, error: FetchError) {
        if let Some(a) = self.active.get_mut(&id) {
            if a.failed {
                return;
            }
            a.failed = true;
        }
        self.events.push_back(FetchEvent::Failed { id, error });
    }

    /// Handles one frame from the server. An `Err` ends the transfer (drop the connection).
    pub fn handle(&mut self, frame: Frame) -> Result<(), FetchError> {
        if self.error.is_some() {
            return Err(FetchError::Protocol("传输已失败".into()));
        }
        match frame {
            Frame::Manifest(bytes) => {
                let Some(id) = self.asked.pop_front() else {
                    return self.fail(FetchError::Protocol("收到未请求的内容清单".into()));
                };
                match ContentManifest::decode_verified(&bytes, &self.trusted) {
                    Ok(m) if m.content_id == id => {
                        self.active.insert(
                            id,
                            Active {
                                manifest: m.clone(),
                                pending: 0,
                                bad: 0,
                                failed: false,
                            },
                        );
                        self.awaiting_start.insert(id);
                        self.events.push_back(FetchEvent::Manifest {
                            manifest: Box::new(m),
                            bytes,
                        });
                    }
                    Ok(_) => self.fail_item(id, FetchError::WrongManifest),
                    Err(e) => self.fail_item(id, FetchError::BadManifest(e)),
                }
                Ok(())
            }
            Frame::NotFound(id) => {
                if self.asked.pop_front() != Some(id) {
                    return self.fail(FetchError::Protocol("未请求的“未找到”回复".into()));
                }
                self.fail_item(id, FetchError::NotFound);
                Ok(())
            }
            Frame::Piece {
                id,
                rendition,
                chunk,
                offset,
                data,
            } => self.piece(id, rendition, chunk, offset, data),
            Frame::Missing {
                id,
                rendition,
                chunk,
            } => {
                match self.expected.front() {
                    Some(e)
                        if self.current.is_none()
                            && e.id == id
                            && e.item.rendition == rendition
                            && e.item.chunk == chunk => {}
                    _ => return self.fail(FetchError::Protocol("意外的“缺少分块”回复".into())),
                }
                self.expected.pop_front();
                self.prefixes.remove(&(id, rendition, chunk));
                self.fail_item(id, FetchError::Missing { rendition, chunk });
                Ok(())
            }
            Frame::Error(msg) => self.fail(FetchError::Peer(msg)),
            Frame::GetManifests(_) | Frame::Want { .. } | Frame::Credit(_) => {
                self.fail(FetchError::Protocol("服务端发送了请求帧".into()))
            }
        }
    }

    fn piece(
        &mut self,
        id: ContentId,
        rendition: u8,
        chunk: u32,
        offset: u32,
        data: Vec<u8>,
    ) -> Result<(), FetchError> {
        self.stats.piece_bytes += data.len() as u64;
        if self.stats.piece_bytes > self.credited {
            return self.fail(FetchError::Protocol("服务端超出了流量额度".into()));
        }
        if self.current.is_none() {
            let Some(e) = self.expected.pop_front() else {
                return self.fail(FetchError::Protocol("收到未请求的分片".into()));
            };
            let hash_len = self.active.get(&e.id).and_then(|a| {
                let r = a.manifest.renditions.get(usize::from(e.item.rendition))?;
                Some((
                    *r.chunks.get(e.item.chunk as usize)?,
                    r.chunk_len(e.item.chunk) as usize,
                ))
            });
            let Some((hash, len)) = hash_len else {
                return self.fail(FetchError::Protocol("分片不属于任何内容清单".into()));
            };
            let mut buf = self
                .prefixes
                .remove(&(e.id, e.item.rendition, e.item.chunk))
                .unwrap_or_default();
            buf.truncate(e.item.offset as usize);
            buf.reserve(len.saturating_sub(buf.len()));
            self.current = Some(Current {
                id: e.id,
                rendition: e.item.rendition,
                chunk: e.item.chunk,
                hash,
                len,
                buf,
            });
        }
        let Some(cur) = self.current.as_mut() else {
            return self.fail(FetchError::Protocol("内部状态错误".into()));
        };
        if cur.id != id
            || cur.rendition != rendition
            || cur.chunk != chunk
            || cur.buf.len() != offset as usize
            || cur.buf.len() + data.len() > cur.len
            || data.is_empty()
        {
            return self.fail(FetchError::Protocol(format!(
                "分片顺序或范围错误（分块 {rendition}/{chunk}，偏移 {offset}）"
            )));
        }
        cur.buf.extend_from_slice(&data);
        if cur.buf.len() == cur.len {
            if let Some(cur) = self.current.take() {
                self.chunk_done(cur);
            }
        }
        self.grant();
        Ok(())
    }

    fn chunk_done(&mut self, cur: Current) {
        let Some(active) = self.active.get_mut(&cur.id) else {
            return;
        };
        if active.failed {
            return;
        }
        if *blake3::hash(&cur.buf).as_bytes() == cur.hash {
            self.stats.chunks += 1;
            active.pending = active.pending.saturating_sub(1);
            let complete = active.pending == 0;
            self.events.push_back(FetchEvent::Chunk {
                id: cur.id,
                hash: cur.hash,
                data: cur.buf,
            });
            if complete {
                self.active.remove(&cur.id);
                self.events.push_back(FetchEvent::Complete(cur.id));
            }
            return;
        }
        self.stats.bad_chunks += 1;
        active.bad += 1;
        let bad = active.bad;
        self.events.push_back(FetchEvent::BadChunk {
            id: cur.id,
            hash: cur.hash,
        });
        if bad > self.config.max_bad_chunks {
            self.fail_item(cur.id, FetchError::BadChunks(bad));
        } else {
            // Ask again for the whole chunk (the kept prefix may have been the bad part).
            self.want(
                cur.id,
                vec![WantItem {
                    rendition: cur.rendition,
                    chunk: cur.chunk,
                    offset: 0,
                }],
            );
        }
    }
}
