//! The sync wire format: versioned, length-prefixed binary frames with hard limits.
//!
//! This module owns every byte a sync session puts on the wire and the rules for reading them
//! back. It is hand-written (no serde on the hot path), never panics on input, and never
//! allocates more than a frame's declared length, which is itself limited to [`MAX_FRAME_LEN`].
//!
//! # Frame
//!
//! ```text
//! [u32 BE length][u8 protocol version = 1][u8 frame type][payload]
//! ```
//! `length` counts the bytes after itself (version, type and payload) and is at most
//! [`MAX_FRAME_LEN`]. Integers inside payloads are unsigned LEB128 varints (at most 10 bytes);
//! signed ones are zigzag-encoded first. Only the shortest varint form is accepted, so a frame
//! has exactly one encoding. A document key is a `u8` length and its ASCII bytes
//! (at most [`MAX_KEY_LEN`]); a change hash is its 32 raw bytes; a node id 16 raw bytes.
//!
//! | type | frame | payload |
//! |---|---|---|
//! | 1 | [`Hello`] | max version, node id, role, scope, flags, optional watermarks, my seq, doc count, estimate, fingerprint |
//! | 2 | `Sketch` | start index, cell count, cells (16 B sum, 8 B checksum BE, zigzag count) |
//! | 3 | `MoreCells` | total number of cells wanted |
//! | 4 | `Summary` | basis, docs with their full heads followed by the heads' parents |
//! | 5 | `Want` | docs with the heads the sender has |
//! | 6 | `Changes` | docs, each with a list of raw Automerge change chunks |
//! | 7 | `Refused` | key, reason code |
//! | 8 | `End` | phase code |
//! | 9 | `Done` | fingerprint, the sender's feed position the peer has now seen everything up to |
//! | 10 | `Error` | error code, UTF-8 message |
//!
//! [`decode`] returns [`WireError::Incomplete`] while a frame's bytes have not all arrived, and
//! a specific error for anything malformed; callers drop the connection on any other error.

use std::fmt;

use automerge::ChangeHash;

use crate::area::AreaScope;
use crate::identity::{NodeId, NodeIdentity};
use crate::key::{DocKey, KeyError, Role, MAX_KEY_LEN};

use super::riblt::{Cell, Fingerprint, FINGERPRINT_LEN, SYMBOL_LEN};

/// The protocol version this build speaks (the second byte of every frame).
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest value of a frame's length field: 4 MiB.
pub const MAX_FRAME_LEN: usize = 4 << 20;

/// Bytes before the payload: length (4), version (1), type (1).
pub const HEADER_LEN: usize = 6;

/// Most documents in one `Summary`, `Want` or `Changes` frame.
pub const MAX_DOCS_PER_FRAME: usize = 8192;

/// Most heads listed for one document.
pub const MAX_HEADS_PER_DOC: usize = 256;

/// Most change chunks in one `Changes` frame (over all its documents).
pub const MAX_CHANGES_PER_FRAME: usize = 65_536;

/// Most cells in one `Sketch` frame.
pub const MAX_CELLS_PER_FRAME: usize = 65_536;

/// Longest `Error` message, in bytes.
pub const MAX_ERROR_MESSAGE_LEN: usize = 1024;

/// Size of a change hash on the wire.
pub const CHANGE_HASH_LEN: usize = 32;

/// The frame types and their numbers on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// [`Frame::Hello`].
    Hello = 1,
    /// [`Frame::Sketch`].
    Sketch = 2,
    /// [`Frame::MoreCells`].
    MoreCells = 3,
    /// [`Frame::Summary`].
    Summary = 4,
    /// [`Frame::Want`].
    Want = 5,
    /// [`Frame::Changes`].
    Changes = 6,
    /// [`Frame::Refused`].
    Refused = 7,
    /// [`Frame::End`].
    End = 8,
    /// [`Frame::Done`].
    Done = 9,
    /// [`Frame::Error`].
    Error = 10,
}

impl FrameType {
    fn from_u8(b: u8) -> Option<FrameType> {
        Some(match b {
            1 => FrameType::Hello,
            2 => FrameType::Sketch,
            3 => FrameType::MoreCells,
            4 => FrameType::Summary,
            5 => FrameType::Want,
            6 => FrameType::Changes,
            7 => FrameType::Refused,
            8 => FrameType::End,
            9 => FrameType::Done,
            10 => FrameType::Error,
            _ => return None,
        })
    }
}

/// What each side says first. Identity fields must match the authenticated identity the
/// transport established; the session checks that and never trusts them otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Highest protocol version the sender speaks.
    pub version: u8,
    /// The sender's identity as it claims it.
    pub identity: NodeIdentity,
    /// The sender's change-feed position for the receiver as of their last converged session
    /// ("I have seen your changes up to here"), if it has one for this shared scope.
    pub watermark_for_you: Option<u64>,
    /// If set, the sender's first flight also carries a `Summary` of everything it changed after
    /// this position of its own feed (its guess of the receiver's watermark for it).
    pub summary_since: Option<u64>,
    /// The sender's current change-feed position; the receiver's watermark for next time.
    pub my_seq: u64,
    /// Documents the sender holds in the shared scope.
    pub doc_count: u64,
    /// The sender's estimate of how many documents differ (0 if unknown).
    pub estimate: u64,
    /// Fingerprint of the sender's shared-scope set.
    pub fingerprint: Fingerprint,
    /// Cells of the sender's sketch that follow this hello in the same flight (0 if none).
    pub eager_cells: u32,
}

/// Why the sender lists these documents in a [`Frame::Summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SummaryBasis {
    /// Documents changed since the receiver's watermark.
    Watermark = 1,
    /// Documents the sketch exchange found to differ.
    Decoded = 2,
}

/// A document key with a set of change hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocHeads {
    /// The document.
    pub key: DocKey,
    /// Hashes the sender has (in `Summary`: its full heads, followed by their parents that are
    /// not heads themselves; in `Want`: the heads the sender has).
    pub heads: Vec<ChangeHash>,
}

/// A document key with raw Automerge change chunks, in causal order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocChanges {
    /// The document.
    pub key: DocKey,
    /// Each element is one change as `Change::raw_bytes`/`Change::bytes` produce it.
    pub changes: Vec<Vec<u8>>,
}

/// Why a document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RefuseReason {
    /// The key lies outside the scope the two peers share.
    OutOfScope = 1,
    /// Documents of this kind may not travel to the refusing node's role (e.g. `hp` to a hub).
    NotForRole = 2,
    /// A single change is too large to fit in a frame.
    TooLarge = 3,
    /// The sender could not read the document.
    Unavailable = 4,
}

/// Which part of the exchange an [`Frame::End`] closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Phase {
    /// All `Summary` frames of basis `Watermark` have been sent.
    WatermarkSummary = 1,
    /// All `Summary` frames of basis `Decoded` have been sent.
    DecodedSummary = 2,
    /// The response to the peer's summary is complete: `Changes` for what it lacks, then all
    /// `Want`s.
    Response = 3,
    /// `Changes` answering every `Want` of the peer have been sent.
    Answers = 4,
}

/// Error codes of [`Frame::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorCode {
    /// A frame arrived that the protocol does not allow at this point.
    Protocol = 1,
    /// The hello's identity differs from the authenticated one.
    Identity = 2,
    /// No common protocol version.
    Version = 3,
    /// A session limit was exceeded.
    Limit = 4,
    /// Reconciliation did not converge.
    NotConverged = 5,
    /// The sender's store failed.
    Store = 6,
}

/// One protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame of each side.
    Hello(Hello),
    /// Coded cells `start..start + cells.len()` of the sender's sketch of the shared scope.
    Sketch {
        /// Index of the first cell.
        start: u64,
        /// The cells.
        cells: Vec<Cell>,
    },
    /// Asks the peer to send its sketch cells up to (not including) index `total`.
    MoreCells {
        /// Total number of cells wanted.
        total: u64,
    },
    /// Documents with the sender's full heads (and their parents).
    Summary {
        /// Why these documents are listed.
        basis: SummaryBasis,
        /// The documents.
        entries: Vec<DocHeads>,
    },
    /// Documents the sender lacks changes of, with the heads it has (empty if it lacks the
    /// document).
    Want {
        /// The documents.
        entries: Vec<DocHeads>,
    },
    /// Changes the receiver lacks.
    Changes {
        /// The documents.
        docs: Vec<DocChanges>,
    },
    /// The sender will not take (or give) this document.
    Refused {
        /// The document.
        key: DocKey,
        /// Why.
        reason: RefuseReason,
    },
    /// The sender finished a phase.
    End {
        /// Which one.
        phase: Phase,
    },
    /// The sender has everything it will receive and sent everything it will send; this is the
    /// fingerprint of its shared-scope set now.
    Done {
        /// The fingerprint.
        fingerprint: Fingerprint,
        /// The sender's change-feed position the peer will have seen everything up to if the
        /// session converges (the sender's `my_seq`, or later when every local change since
        /// then came from the peer); the peer remembers it as its watermark for the sender.
        seq: u64,
    },
    /// The sender gives up on the session.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// Human-readable detail (at most [`MAX_ERROR_MESSAGE_LEN`] bytes).
        message: String,
    },
}

impl Frame {
    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Hello(_) => FrameType::Hello,
            Frame::Sketch { .. } => FrameType::Sketch,
            Frame::MoreCells { .. } => FrameType::MoreCells,
            Frame::Summary { .. } => FrameType::Summary,
            Frame::Want { .. } => FrameType::Want,
            Frame::Changes { .. } => FrameType::Changes,
            Frame::Refused { .. } => FrameType::Refused,
            Frame::End { .. } => FrameType::End,
            Frame::Done { .. } => FrameType::Done,
            Frame::Error { .. } => FrameType::Error,
        }
    }
}

/// Why bytes are not a frame (or a frame cannot be encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not all of the frame has arrived; `needed` is the total number of bytes the frame takes
    /// (as far as known).
    #[error("帧不完整，至少需要{needed}字节 (incomplete frame: need {needed} bytes)")]
    Incomplete {
        /// Bytes needed from the start of the frame.
        needed: usize,
    },
    /// The length field exceeds [`MAX_FRAME_LEN`].
    #[error("帧过大：{0}字节 (frame of {0} bytes exceeds the limit)")]
    TooLarge(usize),
    /// The length field is too small to hold version and type.
    #[error("帧长度无效 (frame length {0} too small)")]
    TooShort(usize),
    /// Unsupported protocol version.
    #[error("不支持的协议版本{0} (unsupported protocol version {0})")]
    Version(u8),
    /// Unknown frame type.
    #[error("未知的帧类型{0} (unknown frame type {0})")]
    UnknownType(u8),
    /// The payload ended inside a field.
    #[error("帧内容被截断 (payload truncated in {0})")]
    Truncated(&'static str),
    /// Bytes left over after the payload.
    #[error("帧末尾有多余的{0}字节 ({0} trailing bytes)")]
    Trailing(usize),
    /// A varint is longer than 10 bytes or overflows 64 bits.
    #[error("整数编码无效 (bad varint in {0})")]
    Varint(&'static str),
    /// A count exceeds its limit.
    #[error("{field}数量{count}超过上限{max} (too many {field}: {count} > {max})")]
    Limit {
        /// The field.
        field: &'static str,
        /// The count found.
        count: u64,
        /// Its limit.
        max: usize,
    },
    /// A document key is malformed.
    #[error("文档键无效：{0}")]
    Key(#[from] KeyError),
    /// A field has a value outside its domain.
    #[error("字段取值无效 (bad value in {0})")]
    Value(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Encoding

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, b: u8) {
        self.buf.push(b);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return;
            }
            self.buf.push(byte | 0x80);
        }
    }
    fn zigzag(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }
    fn key(&mut self, k: &DocKey) {
        let s = k.to_string();
        // Valid keys are at most MAX_KEY_LEN (< 256) bytes.
        self.u8(s.len() as u8);
        self.bytes(s.as_bytes());
    }
    fn opt(&mut self, v: Option<u64>) {
        if let Some(v) = v {
            self.varint(v);
        }
    }
    fn fingerprint(&mut self, f: &Fingerprint) {
        self.bytes(&f.xor);
        self.varint(f.count);
    }
    fn heads_list(&mut self, entries: &[DocHeads]) {
        self.varint(entries.len() as u64);
        for e in entries {
            self.key(&e.key);
            self.varint(e.heads.len() as u64);
            for h in &e.heads {
                self.bytes(&h.0);
            }
        }
    }
}

fn varint_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

fn zigzag_len(v: i64) -> usize {
    varint_len(((v << 1) ^ (v >> 63)) as u64)
}

fn role_code(r: Role) -> u8 {
    match r {
        Role::Village => 0,
        Role::Mule => 1,
        Role::County => 2,
        Role::Hub => 3,
    }
}

fn role_from(b: u8) -> Option<Role> {
    Some(match b {
        0 => Role::Village,
        1 => Role::Mule,
        2 => Role::County,
        3 => Role::Hub,
        _ => return None,
    })
}

fn check(field: &'static str, count: usize, max: usize) -> Result<(), WireError> {
    if count > max {
        Err(WireError::Limit {
            field,
            count: count as u64,
            max,
        })
    } else {
        Ok(())
    }
}

fn check_heads_list(field: &'static str, entries: &[DocHeads]) -> Result<(), WireError> {
    check(field, entries.len(), MAX_DOCS_PER_FRAME)?;
    for e in entries {
        check("heads", e.heads.len(), MAX_HEADS_PER_DOC)?;
    }
    Ok(())
}

/// Checks a frame against the per-field limits (the frame-length limit is checked by
/// [`encode`]).
pub fn check_limits(frame: &Frame) -> Result<(), WireError> {
    match frame {
        Frame::Sketch { cells, .. } => check("cells", cells.len(), MAX_CELLS_PER_FRAME),
        Frame::Summary { entries, .. } => check_heads_list("summary docs", entries),
        Frame::Want { entries } => check_heads_list("wanted docs", entries),
        Frame::Changes { docs } => {
            check("changed docs", docs.len(), MAX_DOCS_PER_FRAME)?;
            let total: usize = docs.iter().map(|d| d.changes.len()).sum();
            check("changes", total, MAX_CHANGES_PER_FRAME)
        }
        Frame::Error { message, .. } => {
            check("error message bytes", message.len(), MAX_ERROR_MESSAGE_LEN)
        }
        Frame::Hello(_)
        | Frame::MoreCells { .. }
        | Frame::Refused { .. }
        | Frame::End { .. }
        | Frame::Done { .. } => Ok(()),
    }
}

fn key_len(k: &DocKey) -> usize {
    // area (12) + '/' + kind + '/' + id
    12 + 2 + k.kind().as_str().len() + k.id().len()
}

fn heads_list_len(entries: &[DocHeads]) -> usize {
    varint_len(entries.len() as u64)
        + entries
            .iter()
            .map(|e| {
                1 + key_len(&e.key)
                    + varint_len(e.heads.len() as u64)
                    + CHANGE_HASH_LEN * e.heads.len()
            })
            .sum::<usize>()
}

/// Bytes a document with these changes adds to a `Changes` frame.
pub fn doc_changes_len(key: &DocKey, changes: &[Vec<u8>]) -> usize {
    1 + key_len(key)
        + varint_len(changes.len() as u64)
        + changes
            .iter()
            .map(|c| varint_len(c.len() as u64) + c.len())
            .sum::<usize>()
}

/// Bytes one document with these heads adds to a `Summary` or `Want` frame.
pub fn doc_heads_len(key: &DocKey, heads: usize) -> usize {
    1 + key_len(key) + varint_len(heads as u64) + CHANGE_HASH_LEN * heads
}

fn cell_len(c: &Cell) -> usize {
    SYMBOL_LEN + 8 + zigzag_len(c.count)
}

/// The exact number of bytes [`encode`] produces for `frame`, header included.
pub fn encoded_len(frame: &Frame) -> usize {
    let payload = match frame {
        Frame::Hello(h) => {
            1 + 16
                + 1
                + 1
                + h.identity.scope.prefix().len()
                + 1
                + h.watermark_for_you.map_or(0, varint_len)
                + h.summary_since.map_or(0, varint_len)
                + varint_len(h.my_seq)
                + varint_len(h.doc_count)
                + varint_len(h.estimate)
                + FINGERPRINT_LEN
                + varint_len(h.fingerprint.count)
                + varint_len(u64::from(h.eager_cells))
        }
        Frame::Sketch { start, cells } => {
            varint_len(*start)
                + varint_len(cells.len() as u64)
                + cells.iter().map(cell_len).sum::<usize>()
        }
        Frame::MoreCells { total } => varint_len(*total),
        Frame::Summary { entries, .. } => 1 + heads_list_len(entries),
        Frame::Want { entries } => heads_list_len(entries),
        Frame::Changes { docs } => {
            varint_len(docs.len() as u64)
                + docs
                    .iter()
                    .map(|d| doc_changes_len(&d.key, &d.changes))
                    .sum::<usize>()
        }
        Frame::Refused { key, .. } => 1 + key_len(key) + 1,
        Frame::End { .. } => 1,
        Frame::Done { fingerprint, seq } => {
            FINGERPRINT_LEN + varint_len(fingerprint.count) + varint_len(*seq)
        }
        Frame::Error { message, .. } => 1 + varint_len(message.len() as u64) + message.len(),
    };
    HEADER_LEN + payload
}

/// Encodes a frame, checking every limit.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    encode_into(frame, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `frame` to `out`, checking every limit. On error `out` is unchanged.
pub fn encode_into(frame: &Frame, out: &mut Vec<u8>) -> Result<(), WireError> {
    check_limits(frame)?;
    let total = encoded_len(frame);
    if total - 4 > MAX_FRAME_LEN {
        return Err(WireError::TooLarge(total - 4));
    }
    let start = out.len();
    let mut w = Writer {
        buf: std::mem::take(out),
    };
    w.buf.reserve(total);
    w.bytes(&((total - 4) as u32).to_be_bytes());
    w.u8(PROTOCOL_VERSION);
    w.u8(frame.frame_type() as u8);
    match frame {
        Frame::Hello(h) => {
            w.u8(h.version);
            w.bytes(&h.identity.node_id.0);
            w.u8(role_code(h.identity.role));
            let scope = h.identity.scope.prefix();
            w.u8(scope.len() as u8);
            w.bytes(scope.as_bytes());
            let flags = u8::from(h.watermark_for_you.is_some())
                | (u8::from(h.summary_since.is_some()) << 1);
            w.u8(flags);
            w.opt(h.watermark_for_you);
            w.opt(h.summary_since);
            w.varint(h.my_seq);
            w.varint(h.doc_count);
            w.varint(h.estimate);
            w.fingerprint(&h.fingerprint);
            w.varint(u64::from(h.eager_cells));
        }
        Frame::Sketch { start, cells } => {
            w.varint(*start);
            w.varint(cells.len() as u64);
            for c in cells {
                w.bytes(&c.sum);
                w.bytes(&c.checksum.to_be_bytes());
                w.zigzag(c.count);
            }
        }
        Frame::MoreCells { total } => w.varint(*total),
        Frame::Summary { basis, entries } => {
            w.u8(*basis as u8);
            w.heads_list(entries);
        }
        Frame::Want { entries } => w.heads_list(entries),
        Frame::Changes { docs } => {
            w.varint(docs.len() as u64);
            for d in docs {
                w.key(&d.key);
                w.varint(d.changes.len() as u64);
                for c in &d.changes {
                    w.varint(c.len() as u64);
                    w.bytes(c);
                }
            }
        }
        Frame::Refused { key, reason } => {
            w.key(key);
            w.u8(*reason as u8);
        }
        Frame::End { phase } => w.u8(*phase as u8),
        Frame::Done { fingerprint, seq } => {
            w.fingerprint(fingerprint);
            w.varint(*seq);
        }
        Frame::Error { code, message } => {
            w.u8(*code as u8);
            w.varint(message.len() as u64);
            w.bytes(message.as_bytes());
        }
    }
    debug_assert_eq!(w.buf.len() - start, total, "encoded_len agrees with encode");
    *out = w.buf;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Decoding

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated(field));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, field)?[0])
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
    fn varint(&mut self, field: &'static str) -> Result<u64, WireError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8(field)?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(WireError::Varint(field));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                // Only the shortest encoding is accepted, so every frame has one byte form.
                if i > 0 && b == 0 {
                    return Err(WireError::Varint(field));
                }
                return Ok(v);
            }
        }
        Err(WireError::Varint(field))
    }
    fn zigzag(&mut self, field: &'static str) -> Result<i64, WireError> {
        let u = self.varint(field)?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    /// A count, checked against its limit and against the bytes left (each element takes at
    /// least `min_size` bytes), so a lying count can never cause a large allocation.
    fn count(
        &mut self,
        field: &'static str,
        max: usize,
        min_size: usize,
    ) -> Result<usize, WireError> {
        let n = self.varint(field)?;
        if n > max as u64 {
            return Err(WireError::Limit {
                field,
                count: n,
                max,
            });
        }
        let n = n as usize;
        if n.saturating_mul(min_size) > self.buf.len() {
            return Err(WireError::Truncated(field));
        }
        Ok(n)
    }
    fn key(&mut self) -> Result<DocKey, WireError> {
        let len = usize::from(self.u8("key length")?);
        if len > MAX_KEY_LEN {
            return Err(WireError::Limit {
                field: "key length",
                count: len as u64,
                max: MAX_KEY_LEN,
            });
        }
        Ok(DocKey::from_bytes(self.take(len, "key")?)?)
    }
    fn fingerprint(&mut self) -> Result<Fingerprint, WireError> {
        Ok(Fingerprint {
            xor: self.array::<FINGERPRINT_LEN>("fingerprint")?,
            count: self.varint("fingerprint count")?,
        })
    }
    fn heads_list(&mut self, field: &'static str) -> Result<Vec<DocHeads>, WireError> {
        // Smallest entry: key length byte + shortest key (12 + 2 + 2 + 1) + heads count.
        let n = self.count(field, MAX_DOCS_PER_FRAME, 18)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let key = self.key()?;
            let h = self.count("heads", MAX_HEADS_PER_DOC, CHANGE_HASH_LEN)?;
            let mut heads = Vec::with_capacity(h);
            for _ in 0..h {
                heads.push(ChangeHash(self.array::<CHANGE_HASH_LEN>("change hash")?));
            }
            out.push(DocHeads { key, heads });
        }
        Ok(out)
    }
}

/// Reads one frame from the start of `buf`. Returns the frame and the number of bytes it took;
/// [`WireError::Incomplete`] if `buf` holds only part of a frame.
pub fn decode(buf: &[u8]) -> Result<(Frame, usize), WireError> {
    if buf.len() < 4 {
        return Err(WireError::Incomplete { needed: 4 });
    }
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&buf[..4]);
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > MAX_FRAME_LEN {
        return Err(WireError::TooLarge(len));
    }
    if len < 2 {
        return Err(WireError::TooShort(len));
    }
    let total = 4 + len;
    if buf.len() < total {
        return Err(WireError::Incomplete { needed: total });
    }
    let version = buf[4];
    if version != PROTOCOL_VERSION {
        return Err(WireError::Version(version));
    }
    let ty = FrameType::from_u8(buf[5]).ok_or(WireError::UnknownType(buf[5]))?;
    let mut r = Reader {
        buf: &buf[HEADER_LEN..total],
    };
    let frame = decode_payload(ty, &mut r)?;
    if !r.buf.is_empty() {
        return Err(WireError::Trailing(r.buf.len()));
    }
    Ok((frame, total))
}

fn decode_payload(ty: FrameType, r: &mut Reader<'_>) -> Result<Frame, WireError> {
    Ok(match ty {
        FrameType::Hello => {
            let version = r.u8("version")?;
            let node_id = NodeId(r.array::<16>("node id")?);
            let role = role_from(r.u8("role")?).ok_or(WireError::Value("role"))?;
            let scope_len = usize::from(r.u8("scope length")?);
            if scope_len > 12 {
                return Err(WireError::Value("scope"));
            }
            // Only the bare prefix form, so the encoding stays canonical.
            let scope = std::str::from_utf8(r.take(scope_len, "scope")?)
                .ok()
                .and_then(|s| AreaScope::parse(s).ok().filter(|p| p.prefix() == s))
                .ok_or(WireError::Value("scope"))?;
            let flags = r.u8("flags")?;
            if flags & !0b11 != 0 {
                return Err(WireError::Value("flags"));
            }
            let watermark_for_you = if flags & 1 != 0 {
                Some(r.varint("watermark")?)
            } else {
                None
            };
            let summary_since = if flags & 2 != 0 {
                Some(r.varint("summary since")?)
            } else {
                None
            };
            let my_seq = r.varint("my seq")?;
            let doc_count = r.varint("doc count")?;
            let estimate = r.varint("estimate")?;
            let fingerprint = r.fingerprint()?;
            let eager = r.varint("eager cells")?;
            let eager_cells = u32::try_from(eager).map_err(|_| WireError::Value("eager cells"))?;
            Frame::Hello(Hello {
                version,
                identity: NodeIdentity {
                    node_id,
                    role,
                    scope,
                },
                watermark_for_you,
                summary_since,
                my_seq,
                doc_count,
                estimate,
                fingerprint,
                eager_cells,
            })
        }
        FrameType::Sketch => {
            let start = r.varint("sketch start")?;
            let n = r.count("cells", MAX_CELLS_PER_FRAME, SYMBOL_LEN + 8 + 1)?;
            let mut cells = Vec::with_capacity(n);
            for _ in 0..n {
                let sum = r.array::<SYMBOL_LEN>("cell sum")?;
                let checksum = u64::from_be_bytes(r.array::<8>("cell checksum")?);
                let count = r.zigzag("cell count")?;
                cells.push(Cell {
                    sum,
                    checksum,
                    count,
                });
            }
            Frame::Sketch { start, cells }
        }
        FrameType::MoreCells => Frame::MoreCells {
            total: r.varint("total cells")?,
        },
        FrameType::Summary => {
            let basis = match r.u8("basis")? {
                1 => SummaryBasis::Watermark,
                2 => SummaryBasis::Decoded,
                _ => return Err(WireError::Value("basis")),
            };
            Frame::Summary {
                basis,
                entries: r.heads_list("summary docs")?,
            }
        }
        FrameType::Want => Frame::Want {
            entries: r.heads_list("wanted docs")?,
        },
        FrameType::Changes => {
            let n = r.count("changed docs", MAX_DOCS_PER_FRAME, 18)?;
            let mut docs = Vec::with_capacity(n);
            let mut total = 0usize;
            for _ in 0..n {
                let key = r.key()?;
                let c = r.count("changes", MAX_CHANGES_PER_FRAME - total, 1)?;
                total += c;
                let mut changes = Vec::with_capacity(c);
                for _ in 0..c {
                    let len = r.count("change bytes", MAX_FRAME_LEN, 1)?;
                    changes.push(r.take(len, "change")?.to_vec());
                }
                docs.push(DocChanges { key, changes });
            }
            Frame::Changes { docs }
        }
        FrameType::Refused => {
            let key = r.key()?;
            let reason = match r.u8("reason")? {
                1 => RefuseReason::OutOfScope,
                2 => RefuseReason::NotForRole,
                3 => RefuseReason::TooLarge,
                4 => RefuseReason::Unavailable,
                _ => return Err(WireError::Value("reason")),
            };
            Frame::Refused { key, reason }
        }
        FrameType::End => {
            let phase = match r.u8("phase")? {
                1 => Phase::WatermarkSummary,
                2 => Phase::DecodedSummary,
                3 => Phase::Response,
                4 => Phase::Answers,
                _ => return Err(WireError::Value("phase")),
            };
            Frame::End { phase }
        }
        FrameType::Done => Frame::Done {
            fingerprint: r.fingerprint()?,
            seq: r.varint("done seq")?,
        },
        FrameType::Error => {
            let code = match r.u8("error code")? {
                1 => ErrorCode::Protocol,
                2 => ErrorCode::Identity,
                3 => ErrorCode::Version,
                4 => ErrorCode::Limit,
                5 => ErrorCode::NotConverged,
                6 => ErrorCode::Store,
                _ => return Err(WireError::Value("error code")),
            };
            let len = r.count("error message bytes", MAX_ERROR_MESSAGE_LEN, 1)?;
            let message = std::str::from_utf8(r.take(len, "error message")?)
                .map_err(|_| WireError::Value("error message"))?
                .to_owned();
            Frame::Error { code, message }
        }
    })
}

/// Reads frames from a byte stream as they arrive, keeping partial frames between calls.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FrameReader({} bytes buffered)", self.buf.len())
    }
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the error that makes the
    /// stream unusable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        match decode(&self.buf) {
            Ok((frame, used)) => {
                self.buf.drain(..used);
                Ok(Some(frame))
            }
            Err(WireError::Incomplete { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::area::tests::arb_area;
    use crate::key::Kind;
    use proptest::prelude::*;

    fn arb_role() -> impl Strategy<Value = Role> {
        proptest::sample::select(vec![Role::Village, Role::Mule, Role::County, Role::Hub])
    }

    pub(crate) fn arb_key() -> impl Strategy<Value = DocKey> {
        (
            arb_area(),
            proptest::sample::select(Kind::ALL.to_vec()),
            "[A-Za-z0-9_-]{1,64}",
        )
            .prop_map(|(a, k, id)| DocKey::new(a, k, id).expect("valid id"))
    }

    fn arb_hash() -> impl Strategy<Value = ChangeHash> {
        any::<[u8; 32]>().prop_map(ChangeHash)
    }

    fn arb_fp() -> impl Strategy<Value = Fingerprint> {
        (any::<[u8; 16]>(), any::<u64>()).prop_map(|(xor, count)| Fingerprint { xor, count })
    }

    fn arb_heads_list() -> impl Strategy<Value = Vec<DocHeads>> {
        proptest::collection::vec(
            (arb_key(), proptest::collection::vec(arb_hash(), 0..4))
                .prop_map(|(key, heads)| DocHeads { key, heads }),
            0..5,
        )
    }

    fn arb_hello() -> impl Strategy<Value = Hello> {
        (
            any::<u8>(),
            any::<[u8; 16]>(),
            arb_role(),
            arb_area(),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
            any::<(u64, u64, u64)>(),
            arb_fp(),
            any::<u32>(),
        )
            .prop_map(
                |(version, id, role, area, wm, since, (my_seq, doc_count, estimate), fp, eager)| {
                    Hello {
                        version,
                        identity: NodeIdentity {
                            node_id: NodeId(id),
                            role,
                            scope: area.scope(),
                        },
                        watermark_for_you: wm,
                        summary_since: since,
                        my_seq,
                        doc_count,
                        estimate,
                        fingerprint: fp,
                        eager_cells: eager,
                    }
                },
            )
    }

    pub(crate) fn arb_frame() -> impl Strategy<Value = Frame> {
        let cell =
            (any::<[u8; 16]>(), any::<u64>(), any::<i64>()).prop_map(|(sum, checksum, count)| {
                Cell {
                    sum,
                    checksum,
                    count,
                }
            });
        prop_oneof![
            arb_hello().prop_map(Frame::Hello),
            (any::<u64>(), proptest::collection::vec(cell, 0..20))
                .prop_map(|(start, cells)| Frame::Sketch { start, cells }),
            any::<u64>().prop_map(|total| Frame::MoreCells { total }),
            (
                proptest::sample::select(vec![SummaryBasis::Watermark, SummaryBasis::Decoded]),
                arb_heads_list()
            )
                .prop_map(|(basis, entries)| Frame::Summary { basis, entries }),
            arb_heads_list().prop_map(|entries| Frame::Want { entries }),
            proptest::collection::vec(
                (
                    arb_key(),
                    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4)
                )
                    .prop_map(|(key, changes)| DocChanges { key, changes }),
                0..4
            )
            .prop_map(|docs| Frame::Changes { docs }),
            (
                arb_key(),
                proptest::sample::select(vec![
                    RefuseReason::OutOfScope,
                    RefuseReason::NotForRole,
                    RefuseReason::TooLarge,
                    RefuseReason::Unavailable
                ])
            )
                .prop_map(|(key, reason)| Frame::Refused { key, reason }),
            proptest::sample::select(vec![
                Phase::WatermarkSummary,
                Phase::DecodedSummary,
                Phase::Response,
                Phase::Answers
            ])
            .prop_map(|phase| Frame::End { phase }),
            (arb_fp(), any::<u64>())
                .prop_map(|(fingerprint, seq)| Frame::Done { fingerprint, seq }),
            (
                proptest::sample::select(vec![
                    ErrorCode::Protocol,
                    ErrorCode::Identity,
                    ErrorCode::Version,
                    ErrorCode::Limit,
                    ErrorCode::NotConverged,
                    ErrorCode::Store
                ]),
                "\\PC{0,60}"
            )
                .prop_map(|(code, message)| Frame::Error { code, message }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn round_trip(f in arb_frame()) {
            let bytes = encode(&f).expect("encodes");
            prop_assert_eq!(bytes.len(), encoded_len(&f));
            let (back, used) = decode(&bytes).expect("decodes");
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(back, f);
        }

        #[test]
        fn truncations_are_incomplete(f in arb_frame(), cut in any::<proptest::sample::Index>()) {
            let bytes = encode(&f).expect("encodes");
            let cut = cut.index(bytes.len());
            prop_assert!(
                matches!(decode(&bytes[..cut]), Err(WireError::Incomplete { .. })),
                "cut at {} of {}", cut, bytes.len()
            );
        }

        #[test]
        fn concatenated_frames_decode_in_order(fs in proptest::collection::vec(arb_frame(), 0..6)) {
            let mut stream = Vec::new();
            for f in &fs {
                encode_into(f, &mut stream).expect("encodes");
            }
            let mut reader = FrameReader::new();
            let mut back = Vec::new();
            // Feed in odd-sized pieces.
            for chunk in stream.chunks(7) {
                reader.push(chunk);
                while let Some(f) = reader.next_frame().expect("valid stream") {
                    back.push(f);
                }
            }
            prop_assert_eq!(reader.buffered(), 0);
            prop_assert_eq!(back, fs);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn arbitrary_payloads_never_panic(
            ty in 0u8..12, payload in proptest::collection::vec(any::<u8>(), 0..400)
        ) {
            // A well-formed header in front of garbage reaches every payload decoder.
            let mut bytes = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
            bytes.push(PROTOCOL_VERSION);
            bytes.push(ty);
            bytes.extend_from_slice(&payload);
            match decode(&bytes) {
                Ok((f, used)) => {
                    prop_assert_eq!(used, bytes.len());
                    // Whatever decodes re-encodes to the same bytes.
                    prop_assert_eq!(encode(&f).expect("re-encodes"), bytes);
                }
                Err(WireError::Incomplete { .. }) => prop_assert!(false, "whole frame given"),
                Err(_) => {}
            }
        }

        #[test]
        fn mutations_never_panic(f in arb_frame(), at in any::<proptest::sample::Index>(), b in any::<u8>()) {
            let mut bytes = encode(&f).expect("encodes");
            let i = at.index(bytes.len());
            bytes[i] = b;
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn rejects_oversized_and_bad_headers() {
        let mut big = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        big.extend_from_slice(&[1, 1]);
        assert_eq!(decode(&big), Err(WireError::TooLarge(MAX_FRAME_LEN + 1)));
        assert_eq!(decode(&[0, 0, 0, 1, 1]), Err(WireError::TooShort(1)));
        assert_eq!(decode(&[0, 0, 0, 2, 9, 1]), Err(WireError::Version(9)));
        assert_eq!(
            decode(&[0, 0, 0, 2, 1, 99]),
            Err(WireError::UnknownType(99))
        );
        assert_eq!(decode(&[0, 0]), Err(WireError::Incomplete { needed: 4 }));
        // A declared length is not allocated up front: a 4 MiB frame with 10 bytes present is
        // just incomplete.
        let mut partial = (MAX_FRAME_LEN as u32).to_be_bytes().to_vec();
        partial.extend_from_slice(&[1, 6, 0xff, 0xff, 0x03]);
        assert_eq!(
            decode(&partial),
            Err(WireError::Incomplete {
                needed: MAX_FRAME_LEN + 4
            })
        );
    }

    #[test]
    fn lying_counts_are_rejected_without_allocating() {
        // Sketch claiming 65,536 cells with 3 bytes of payload.
        let payload = [0u8, 0x80, 0x80, 0x04];
        let mut bytes = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[PROTOCOL_VERSION, FrameType::Sketch as u8]);
        bytes.extend_from_slice(&payload);
        assert_eq!(decode(&bytes), Err(WireError::Truncated("cells")));
        // Summary claiming more documents than the limit.
        let payload = [1u8, 0xff, 0xff, 0x03];
        let mut bytes = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[PROTOCOL_VERSION, FrameType::Summary as u8]);
        bytes.extend_from_slice(&payload);
        assert!(matches!(decode(&bytes), Err(WireError::Limit { .. })));
        // An 11-byte varint.
        let payload = [0xffu8; 11];
        let mut bytes = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[PROTOCOL_VERSION, FrameType::MoreCells as u8]);
        bytes.extend_from_slice(&payload);
        assert_eq!(decode(&bytes), Err(WireError::Varint("total cells")));
    }

    #[test]
    fn encode_enforces_limits() {
        let cells = vec![Cell::default(); MAX_CELLS_PER_FRAME + 1];
        assert!(matches!(
            encode(&Frame::Sketch { start: 0, cells }),
            Err(WireError::Limit { .. })
        ));
        let key = DocKey::parse("510122104201/hh/h1").expect("key");
        let huge = vec![0u8; MAX_FRAME_LEN];
        assert!(matches!(
            encode(&Frame::Changes {
                docs: vec![DocChanges {
                    key,
                    changes: vec![huge]
                }]
            }),
            Err(WireError::TooLarge(_))
        ));
    }
}
