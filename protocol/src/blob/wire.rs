//! The blob transfer wire format: versioned, length-prefixed binary frames with hard limits.
//!
//! ```text
//! [u32 BE length][u8 version = 1][u8 frame type][payload]
//! ```
//! `length` counts the bytes after itself and is at most [`MAX_FRAME_LEN`]. Integers are LEB128
//! varints in their shortest form; a content id is its 32 raw bytes.
//!
//! | type | frame | direction | payload |
//! |---|---|---|---|
//! | 1 | `GetManifests` | fetcher → server | count, content ids |
//! | 2 | `Manifest` | server → fetcher | encoded signed manifest (length, bytes) |
//! | 3 | `NotFound` | server → fetcher | content id |
//! | 4 | `Want` | fetcher → server | content id, count, (rendition u8, chunk index, offset)* |
//! | 5 | `Credit` | fetcher → server | total piece bytes the server may have sent so far |
//! | 6 | `Piece` | server → fetcher | content id, rendition u8, chunk index, offset, length, data |
//! | 7 | `Missing` | server → fetcher | content id, rendition u8, chunk index |
//! | 8 | `Error` | either | UTF-8 message |
//!
//! A `Piece` carries at most [`MAX_PIECE_LEN`] bytes of one chunk, so per 32 KiB of data the
//! overhead is about 45 bytes (0.14 %).

use crate::codec::{CodecError, Reader, Writer};
use crate::manifest::{ContentId, MAX_MANIFEST_LEN};

/// The version this build speaks.
pub const BLOB_PROTOCOL_VERSION: u8 = 1;
/// Largest frame (a whole manifest plus a little).
pub const MAX_FRAME_LEN: usize = MAX_MANIFEST_LEN + 1024;
/// Most chunk data in one `Piece`.
pub const MAX_PIECE_LEN: usize = 32 * 1024;
/// Most ids in one `GetManifests`.
pub const MAX_IDS_PER_FRAME: usize = 1024;
/// Most items in one `Want`.
pub const MAX_WANT_ITEMS: usize = 4096;
/// Longest `Error` message.
pub const MAX_ERROR_LEN: usize = 1024;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 6;

/// One chunk (or the rest of one, from `offset`) that a fetcher asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WantItem {
    /// Index of the rendition in the manifest.
    pub rendition: u8,
    /// Chunk index within the rendition.
    pub chunk: u32,
    /// First byte wanted within the chunk (non-zero when resuming a cut chunk).
    pub offset: u32,
}

/// A blob transfer frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Asks for the manifests of these items.
    GetManifests(Vec<ContentId>),
    /// A signed manifest, encoded.
    Manifest(Vec<u8>),
    /// The server has no manifest for this id.
    NotFound(ContentId),
    /// Asks for chunks of one item, served in the order listed.
    Want {
        /// The item.
        id: ContentId,
        /// The chunks.
        items: Vec<WantItem>,
    },
    /// Flow control: the server may send piece data up to this many bytes in total over the
    /// connection (cumulative; never decreases).
    Credit(u64),
    /// Part of a chunk.
    Piece {
        /// The item.
        id: ContentId,
        /// Rendition index.
        rendition: u8,
        /// Chunk index.
        chunk: u32,
        /// Offset of `data` within the chunk.
        offset: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The server cannot serve this chunk (does not hold it, or its copy was corrupt).
    Missing {
        /// The item.
        id: ContentId,
        /// Rendition index.
        rendition: u8,
        /// Chunk index.
        chunk: u32,
    },
    /// The sender gives up; a message for logs.
    Error(String),
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlobWireError {
    /// Not all of the frame has arrived.
    #[error("帧不完整 (incomplete frame: need {needed} bytes)")]
    Incomplete {
        /// Bytes needed from the start of the frame.
        needed: usize,
    },
    /// The length field is out of range.
    #[error("帧长度无效：{0}")]
    Length(usize),
    /// Unsupported version.
    #[error("不支持的传输协议版本 {0}")]
    Version(u8),
    /// Unknown frame type.
    #[error("未知的帧类型 {0}")]
    UnknownType(u8),
    /// A field is malformed or over its limit.
    #[error("帧内容无效：{0}")]
    Malformed(String),
}

impl From<CodecError> for BlobWireError {
    fn from(e: CodecError) -> BlobWireError {
        BlobWireError::Malformed(e.to_string())
    }
}

/// Appends the encoding of `frame` to `out`. Fails only if a field exceeds its limit.
pub fn encode_into(frame: &Frame, out: &mut Vec<u8>) -> Result<(), BlobWireError> {
    let mut w = Writer::default();
    let too_many = |what: &str| Err(BlobWireError::Malformed(format!("{what}超过上限")));
    let ty = match frame {
        Frame::GetManifests(ids) => {
            if ids.len() > MAX_IDS_PER_FRAME {
                return too_many("内容编号数量");
            }
            w.varint(ids.len() as u64);
            for id in ids {
                w.bytes(&id.0);
            }
            1
        }
        Frame::Manifest(bytes) => {
            if bytes.len() > MAX_MANIFEST_LEN {
                return too_many("内容清单长度");
            }
            w.varint(bytes.len() as u64);
            w.bytes(bytes);
            2
        }
        Frame::NotFound(id) => {
            w.bytes(&id.0);
            3
        }
        Frame::Want { id, items } => {
            if items.len() > MAX_WANT_ITEMS {
                return too_many("请求分块数量");
            }
            w.bytes(&id.0);
            w.varint(items.len() as u64);
            for i in items {
                w.u8(i.rendition);
                w.varint(u64::from(i.chunk));
                w.varint(u64::from(i.offset));
            }
            4
        }
        Frame::Credit(total) => {
            w.varint(*total);
            5
        }
        Frame::Piece {
            id,
            rendition,
            chunk,
            offset,
            data,
        } => {
            if data.len() > MAX_PIECE_LEN {
                return too_many("分片长度");
            }
            w.bytes(&id.0);
            w.u8(*rendition);
            w.varint(u64::from(*chunk));
            w.varint(u64::from(*offset));
            w.varint(data.len() as u64);
            w.bytes(data);
            6
        }
        Frame::Missing {
            id,
            rendition,
            chunk,
        } => {
            w.bytes(&id.0);
            w.u8(*rendition);
            w.varint(u64::from(*chunk));
            7
        }
        Frame::Error(msg) => {
            if msg.len() > MAX_ERROR_LEN {
                return too_many("错误信息长度");
            }
            w.varint(msg.len() as u64);
            w.bytes(msg.as_bytes());
            8
        }
    };
    let len = w.buf.len() + 2;
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(BLOB_PROTOCOL_VERSION);
    out.push(ty);
    out.extend_from_slice(&w.buf);
    Ok(())
}

/// The encoding of `frame`.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, BlobWireError> {
    let mut out = Vec::new();
    encode_into(frame, &mut out)?;
    Ok(out)
}

fn u32_field(r: &mut Reader<'_>, field: &'static str) -> Result<u32, BlobWireError> {
    u32::try_from(r.varint(field)?)
        .map_err(|_| BlobWireError::Malformed(format!("{field} 超出范围")))
}

fn len_field(r: &mut Reader<'_>, field: &'static str, max: usize) -> Result<usize, BlobWireError> {
    let n = r.varint(field)?;
    if n > max as u64 {
        return Err(BlobWireError::Malformed(format!(
            "{field} {n} 超过上限 {max}"
        )));
    }
    Ok(n as usize)
}

/// Decodes one frame from the front of `buf`; returns it and the bytes it took.
pub fn decode(buf: &[u8]) -> Result<(Frame, usize), BlobWireError> {
    if buf.len() < 4 {
        return Err(BlobWireError::Incomplete { needed: 4 });
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(2..=MAX_FRAME_LEN).contains(&len) {
        return Err(BlobWireError::Length(len));
    }
    if buf.len() < 4 + len {
        return Err(BlobWireError::Incomplete { needed: 4 + len });
    }
    if buf[4] != BLOB_PROTOCOL_VERSION {
        return Err(BlobWireError::Version(buf[4]));
    }
    let ty = buf[5];
    let mut r = Reader::new(&buf[HEADER_LEN..4 + len]);
    let frame = match ty {
        1 => {
            let n = len_field(&mut r, "内容编号数量", MAX_IDS_PER_FRAME)?;
            let mut ids = Vec::with_capacity(n.min(r.buf.len() / 32));
            for _ in 0..n {
                ids.push(ContentId(r.array("content id")?));
            }
            Frame::GetManifests(ids)
        }
        2 => {
            let n = len_field(&mut r, "内容清单长度", MAX_MANIFEST_LEN)?;
            Frame::Manifest(r.take(n, "manifest")?.to_vec())
        }
        3 => Frame::NotFound(ContentId(r.array("content id")?)),
        4 => {
            let id = ContentId(r.array("content id")?);
            let n = len_field(&mut r, "请求分块数量", MAX_WANT_ITEMS)?;
            let mut items = Vec::with_capacity(n.min(r.buf.len() / 3));
            for _ in 0..n {
                items.push(WantItem {
                    rendition: r.u8("rendition")?,
                    chunk: u32_field(&mut r, "chunk")?,
                    offset: u32_field(&mut r, "offset")?,
                });
            }
            Frame::Want { id, items }
        }
        5 => Frame::Credit(r.varint("credit")?),
        6 => {
            let id = ContentId(r.array("content id")?);
            let rendition = r.u8("rendition")?;
            let chunk = u32_field(&mut r, "chunk")?;
            let offset = u32_field(&mut r, "offset")?;
            let n = len_field(&mut r, "分片长度", MAX_PIECE_LEN)?;
            let data = r.take(n, "piece")?.to_vec();
            Frame::Piece {
                id,
                rendition,
                chunk,
                offset,
                data,
            }
        }
        7 => Frame::Missing {
            id: ContentId(r.array("content id")?),
            rendition: r.u8("rendition")?,
            chunk: u32_field(&mut r, "chunk")?,
        },
        8 => {
            let n = len_field(&mut r, "错误信息长度", MAX_ERROR_LEN)?;
            let msg = String::from_utf8(r.take(n, "message")?.to_vec())
                .map_err(|_| BlobWireError::Malformed("错误信息不是 UTF-8".into()))?;
            Frame::Error(msg)
        }
        other => return Err(BlobWireError::UnknownType(other)),
    };
    if !r.is_empty() {
        return Err(BlobWireError::Malformed(format!(
            "帧末尾有多余的 {} 字节",
            r.buf.len()
        )));
    }
    Ok((frame, 4 + len))
}

/// Collects bytes from a stream and yields whole frames.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `None` if more bytes are needed, or the error that ends the stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, BlobWireError> {
        match decode(&self.buf[self.start..]) {
            Ok((frame, used)) => {
                self.start += used;
                if self.start > 1 << 20 {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                Ok(Some(frame))
            }
            Err(BlobWireError::Incomplete { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_id() -> impl Strategy<Value = ContentId> {
        any::<[u8; 32]>().prop_map(ContentId)
    }

    pub(crate) fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            proptest::collection::vec(arb_id(), 0..5).prop_map(Frame::GetManifests),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Frame::Manifest),
            arb_id().prop_map(Frame::NotFound),
            (
                arb_id(),
                proptest::collection::vec(
                    (any::<u8>(), any::<u32>(), any::<u32>()).prop_map(
                        |(rendition, chunk, offset)| {
                            WantItem {
                                rendition,
                                chunk,
                                offset,
                            }
                        }
                    ),
                    0..20
                )
            )
                .prop_map(|(id, items)| Frame::Want { id, items }),
            any::<u64>().prop_map(Frame::Credit),
            (
                arb_id(),
                any::<u8>(),
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..2000)
            )
                .prop_map(|(id, rendition, chunk, offset, data)| Frame::Piece {
                    id,
                    rendition,
                    chunk,
                    offset,
                    data
                }),
            (arb_id(), any::<u8>(), any::<u32>()).prop_map(|(id, rendition, chunk)| {
                Frame::Missing {
                    id,
                    rendition,
                    chunk,
                }
            }),
            "\\PC{0,100}".prop_map(Frame::Error),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(frames in proptest::collection::vec(arb_frame(), 1..6), split in 1usize..50) {
            let mut bytes = Vec::new();
            for f in &frames {
                encode_into(f, &mut bytes).unwrap();
            }
            // Fed in pieces, as a socket delivers it.
            let mut reader = FrameReader::new();
            let mut got = Vec::new();
            for part in bytes.chunks(split) {
                reader.push(part);
                while let Some(f) = reader.next_frame().unwrap() {
                    got.push(f);
                }
            }
            prop_assert_eq!(got, frames);
            prop_assert_eq!(reader.buffered(), 0);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..500)) {
            if let Ok((f, used)) = decode(&bytes) {
                prop_assert_eq!(encode(&f).unwrap(), bytes[..used].to_vec());
            }
        }
    }

    #[test]
    fn limits_are_enforced() {
        let big = Frame::Piece {
            id: ContentId([0; 32]),
            rendition: 0,
            chunk: 0,
            offset: 0,
            data: vec![0; MAX_PIECE_LEN + 1],
        };
        assert!(encode(&big).is_err());
        let mut huge = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&[1, 1]);
        assert!(matches!(decode(&huge), Err(BlobWireError::Length(_))));
        assert!(matches!(
            decode(&[0, 0, 0, 2, 9, 1]),
            Err(BlobWireError::Version(9))
        ));
    }
}
