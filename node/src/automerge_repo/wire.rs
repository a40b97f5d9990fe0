//! The automerge-repo network protocol v1 messages and their CBOR encoding, as the stock
//! `@automerge/automerge-repo-network-websocket` client sends them: one CBOR map per WebSocket
//! binary frame, with a `type` string and camelCase fields (`senderId`, `targetId`,
//! `documentId`, `data` as a byte string, …). See the protocol's README ("Wire Protocol") in
//! `automerge/automerge-repo`, `packages/automerge-repo-network-websocket/`.
//!
//! Decoding never panics and refuses, with a [`WireError`], anything over [`MAX_MESSAGE_BYTES`],
//! strings over [`MAX_ID_BYTES`], lists over [`MAX_LIST_ITEMS`], maps over [`MAX_MAP_ENTRIES`],
//! duplicate or missing fields, wrong types and trailing bytes. Unknown fields are skipped (the
//! JS client adds some, e.g. `undefined` metadata); unknown message types are an error the caller
//! may ignore ([`WireError::UnknownType`]). The join/peer metadata is accepted under both names
//! in use (`peerMetadata`, which the JS code sends, and `metadata`, which the README's CDDL
//! names) and written as `peerMetadata`.

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

/// The only protocol version there is.
pub const PROTOCOL_VERSION: &str = "1";
/// Largest message accepted (a whole WebSocket frame).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest peer id, storage id, document id, session id, head or message type.
pub const MAX_ID_BYTES: usize = 256;
/// Largest `error` message text.
pub const MAX_ERROR_TEXT_BYTES: usize = 4096;
/// Most items in a list (protocol versions, storage ids, heads).
pub const MAX_LIST_ITEMS: usize = 256;
/// Most entries in any map.
pub const MAX_MAP_ENTRIES: usize = 64;

/// What a peer says about its storage in `join` and `peer`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerMetadata {
    /// The peer's persistent storage id, if it has one.
    pub storage_id: Option<String>,
    /// Whether the peer will not come back with this storage id.
    pub is_ephemeral: bool,
}

/// One storage id's heads in a `remote-heads-changed` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHeads {
    /// Whose heads.
    pub storage_id: String,
    /// The heads (bs58check change hashes, as the JS repo writes them).
    pub heads: Vec<String>,
    /// When they were seen (milliseconds since the Unix epoch).
    pub timestamp: u64,
}

/// A protocol v1 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client → server: the first message.
    Join {
        /// The client's (ephemeral) peer id.
        sender_id: String,
        /// Versions the client speaks.
        supported_protocol_versions: Vec<String>,
        /// Storage metadata.
        metadata: Option<PeerMetadata>,
    },
    /// Server → client: the answer to `join`.
    Peer {
        /// The server's peer id.
        sender_id: String,
        /// The client's peer id.
        target_id: String,
        /// Always [`PROTOCOL_VERSION`].
        selected_protocol_version: String,
        /// Storage metadata.
        metadata: Option<PeerMetadata>,
    },
    /// Advisory: the sender is about to disconnect.
    Leave {
        /// Who leaves.
        sender_id: String,
    },
    /// The first sync message for a document; answer `doc-unavailable` if it is not there.
    Request {
        /// Sender.
        sender_id: String,
        /// Recipient.
        target_id: String,
        /// bs58check document id.
        document_id: String,
        /// An automerge sync message.
        data: Vec<u8>,
    },
    /// A sync message for a document.
    Sync {
        /// Sender.
        sender_id: String,
        /// Recipient.
        target_id: String,
        /// bs58check document id.
        document_id: String,
        /// An automerge sync message.
        data: Vec<u8>,
    },
    /// The sender does not have (or will not share) the document.
    DocUnavailable {
        /// Sender.
        sender_id: String,
        /// Recipient.
        target_id: String,
        /// bs58check document id.
        document_id: String,
    },
    /// Presence data about a document; never stored.
    Ephemeral {
        /// Sender.
        sender_id: String,
        /// Recipient.
        target_id: String,
        /// Sequence number within the session.
        count: u64,
        /// The ephemeral session.
        session_id: String,
        /// bs58check document id.
        document_id: String,
        /// Arbitrary (CBOR) bytes.
        data: Vec<u8>,
    },
    /// A protocol error; the connection closes after it.
    Error {
        /// What went wrong.
        message: String,
        /// Sender, when given.
        sender_id: Option<String>,
        /// Recipient, when given.
        target_id: Option<String>,
    },
    /// Change the set of storage ids whose heads the sender wants forwarded.
    RemoteSubscriptionChange {
        /// Sender.
        sender_id: String,
        /// Recipient.
        target_id: String,
        /// Storage ids to add.
        add: Vec<String>,
        /// Storage ids to remove.
        remove: Vec<String>,
    },
    /// Heads of a document at other storages, gossiped across hops.
    RemoteHeadsChanged {
        /// Sender.
        sender_id: String,
        /// Recipient.
        target_id: String,
        /// bs58check document id.
        document_id: String,
        /// Heads per storage id.
        new_heads: Vec<RemoteHeads>,
    },
}

impl Message {
    /// The message's `type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Join { .. } => "join",
            Message::Peer { .. } => "peer",
            Message::Leave { .. } => "leave",
            Message::Request { .. } => "request",
            Message::Sync { .. } => "sync",
            Message::DocUnavailable { .. } => "doc-unavailable",
            Message::Ephemeral { .. } => "ephemeral",
            Message::Error { .. } => "error",
            Message::RemoteSubscriptionChange { .. } => "remote-subscription-change",
            Message::RemoteHeadsChanged { .. } => "remote-heads-changed",
        }
    }
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("message of {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not well-formed CBOR, or a value of the wrong CBOR type.
    #[error("bad CBOR: {0}")]
    Cbor(String),
    /// A field, list or map over its limit.
    #[error("{what} over its limit of {limit}")]
    Limit {
        /// Which field.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A required field is absent.
    #[error("{message_type} message without `{field}`")]
    Missing {
        /// The message type.
        message_type: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A field appears twice.
    #[error("field `{0}` appears twice")]
    Duplicate(String),
    /// A message type this codec does not know.
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    /// Bytes after the message.
    #[error("{0} bytes after the message")]
    Trailing(usize),
}

fn cbor(e: minicbor::decode::Error) -> WireError {
    WireError::Cbor(e.to_string())
}

/// Fields of a message as found, before they are checked against its type.
#[derive(Default)]
struct Fields {
    kind: Option<String>,
    sender_id: Option<String>,
    target_id: Option<String>,
    document_id: Option<String>,
    session_id: Option<String>,
    data: Option<Vec<u8>>,
    count: Option<u64>,
    message: Option<String>,
    versions: Option<Vec<String>>,
    selected: Option<String>,
    metadata: Option<PeerMetadata>,
    add: Option<Vec<String>>,
    remove: Option<Vec<String>>,
    new_heads: Option<Vec<RemoteHeads>>,
}

fn set<T>(slot: &mut Option<T>, name: &str, v: T) -> Result<(), WireError> {
    if slot.is_some() {
        return Err(WireError::Duplicate(name.to_string()));
    }
    *slot = Some(v);
    Ok(())
}

fn text(d: &mut Decoder<'_>, what: &'static str, limit: usize) -> Result<String, WireError> {
    let s = d.str().map_err(cbor)?;
    if s.len() > limit {
        return Err(WireError::Limit { what, limit });
    }
    Ok(s.to_string())
}

fn id(d: &mut Decoder<'_>, what: &'static str) -> Result<String, WireError> {
    text(d, what, MAX_ID_BYTES)
}

/// Reads a map or array header: `Some(n)` for definite, `None` for indefinite length.
fn checked_len(
    n: Option<u64>,
    what: &'static str,
    limit: usize,
) -> Result<Option<usize>, WireError> {
    match n {
        Some(n) if n > limit as u64 => Err(WireError::Limit { what, limit }),
        Some(n) => Ok(Some(n as usize)),
        None => Ok(None),
    }
}

/// Calls `item` once per element of a definite or indefinite container of `len`.
fn each(
    d: &mut Decoder<'_>,
    len: Option<usize>,
    what: &'static str,
    limit: usize,
    mut item: impl FnMut(&mut Decoder<'_>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut i = 0usize;
    loop {
        match len {
            Some(n) if i == n => return Ok(()),
            Some(_) => {}
            None => {
                if d.datatype().map_err(cbor)? == Type::Break {
                    d.skip().map_err(cbor)?;
                    return Ok(());
                }
                if i == limit {
                    return Err(WireError::Limit { what, limit });
                }
            }
        }
        item(d)?;
        i += 1;
    }
}

fn id_list(d: &mut Decoder<'_>, what: &'static str) -> Result<Vec<String>, WireError> {
    let len = checked_len(d.array().map_err(cbor)?, what, MAX_LIST_ITEMS)?;
    let mut out = Vec::new();
    each(d, len, what, MAX_LIST_ITEMS, |d| {
        out.push(id(d, what)?);
        Ok(())
    })?;
    Ok(out)
}

fn is_undefined_or_null(d: &Decoder<'_>) -> Result<bool, WireError> {
    Ok(matches!(
        d.datatype().map_err(cbor)?,
        Type::Undefined | Type::Null
    ))
}

fn metadata(d: &mut Decoder<'_>) -> Result<Option<PeerMetadata>, WireError> {
    if is_undefined_or_null(d)? {
        d.skip().map_err(cbor)?;
        return Ok(None);
    }
    let len = checked_len(d.map().map_err(cbor)?, "peerMetadata", MAX_MAP_ENTRIES)?;
    let mut m = PeerMetadata::default();
    let (mut seen_storage, mut seen_ephemeral) = (false, false);
    each(d, len, "peerMetadata", MAX_MAP_ENTRIES, |d| {
        let key = id(d, "field name")?;
        match key.as_str() {
            "storageId" if !seen_storage => {
                seen_storage = true;
                if is_undefined_or_null(d)? {
                    d.skip().map_err(cbor)?;
                } else {
                    m.storage_id = Some(id(d, "storageId")?);
                }
            }
            "isEphemeral" if !seen_ephemeral => {
                seen_ephemeral = true;
                if is_undefined_or_null(d)? {
                    d.skip().map_err(cbor)?;
                } else {
                    m.is_ephemeral = d.bool().map_err(cbor)?;
                }
            }
            "storageId" | "isEphemeral" => return Err(WireError::Duplicate(key)),
            _ => d.skip().map_err(cbor)?,
        }
        Ok(())
    })?;
    Ok(Some(m))
}

/// A JS number: an unsigned integer, or a float holding a non-negative whole number.
fn js_uint(d: &mut Decoder<'_>, what: &'static str) -> Result<u64, WireError> {
    match d.datatype().map_err(cbor)? {
        Type::F16 | Type::F32 | Type::F64 => {
            let f = d.f64().map_err(cbor)?;
            if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 9.007_199_254_740_992e15 {
                Ok(f as u64)
            } else {
                Err(WireError::Cbor(format!("{what} is not a whole number")))
            }
        }
        _ => d.u64().map_err(cbor),
    }
}

fn new_heads(d: &mut Decoder<'_>) -> Result<Vec<RemoteHeads>, WireError> {
    let len = checked_len(d.map().map_err(cbor)?, "newHeads", MAX_MAP_ENTRIES)?;
    let mut out: Vec<RemoteHeads> = Vec::new();
    each(d, len, "newHeads", MAX_MAP_ENTRIES, |d| {
        let storage_id = id(d, "storageId")?;
        if out.iter().any(|h| h.storage_id == storage_id) {
            return Err(WireError::Duplicate(storage_id));
        }
        let inner = checked_len(d.map().map_err(cbor)?, "newHeads entry", MAX_MAP_ENTRIES)?;
        let (mut heads, mut timestamp) = (None, None);
        each(d, inner, "newHeads entry", MAX_MAP_ENTRIES, |d| {
            let key = id(d, "field name")?;
            match key.as_str() {
                "heads" => set(&mut heads, "heads", id_list(d, "heads")?),
                "timestamp" => set(&mut timestamp, "timestamp", js_uint(d, "timestamp")?),
                _ => d.skip().map_err(cbor),
            }
        })?;
        out.push(RemoteHeads {
            storage_id,
            heads: heads.ok_or(WireError::Missing {
                message_type: "remote-heads-changed",
                field: "heads",
            })?,
            timestamp: timestamp.ok_or(WireError::Missing {
                message_type: "remote-heads-changed",
                field: "timestamp",
            })?,
        });
        Ok(())
    })?;
    Ok(out)
}

fn field(d: &mut Decoder<'_>, f: &mut Fields) -> Result<(), WireError> {
    let key = id(d, "field name")?;
    match key.as_str() {
        "type" => set(&mut f.kind, "type", id(d, "type")?),
        "senderId" => set(&mut f.sender_id, "senderId", id(d, "senderId")?),
        "targetId" => set(&mut f.target_id, "targetId", id(d, "targetId")?),
        "documentId" => set(&mut f.document_id, "documentId", id(d, "documentId")?),
        "sessionId" => set(&mut f.session_id, "sessionId", id(d, "sessionId")?),
        "data" => {
            let b = d.bytes().map_err(cbor)?;
            set(&mut f.data, "data", b.to_vec())
        }
        "count" => set(&mut f.count, "count", js_uint(d, "count")?),
        "message" => set(
            &mut f.message,
            "message",
            text(d, "message", MAX_ERROR_TEXT_BYTES)?,
        ),
        "supportedProtocolVersions" => set(
            &mut f.versions,
            "supportedProtocolVersions",
            id_list(d, "supportedProtocolVersions")?,
        ),
        "selectedProtocolVersion" => set(
            &mut f.selected,
            "selectedProtocolVersion",
            id(d, "selectedProtocolVersion")?,
        ),
        "peerMetadata" | "metadata" => {
            let m = metadata(d)?;
            if f.metadata.is_some() {
                return Err(WireError::Duplicate(key));
            }
            f.metadata = m;
            Ok(())
        }
        "add" => {
            if is_undefined_or_null(d)? {
                d.skip().map_err(cbor)
            } else {
                set(&mut f.add, "add", id_list(d, "add")?)
            }
        }
        "remove" => set(&mut f.remove, "remove", id_list(d, "remove")?),
        "newHeads" => set(&mut f.new_heads, "newHeads", new_heads(d)?),
        _ => d.skip().map_err(cbor),
    }
}

/// Decodes one message (a whole WebSocket binary frame).
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let mut d = Decoder::new(bytes);
    let len = checked_len(d.map().map_err(cbor)?, "message", MAX_MAP_ENTRIES)?;
    let mut f = Fields::default();
    each(&mut d, len, "message", MAX_MAP_ENTRIES, |d| {
        field(d, &mut f)
    })?;
    if d.position() != bytes.len() {
        return Err(WireError::Trailing(bytes.len() - d.position()));
    }
    build(f)
}

fn build(f: Fields) -> Result<Message, WireError> {
    let kind = f.kind.ok_or(WireError::Missing {
        message_type: "any",
        field: "type",
    })?;
    let t: &'static str = match kind.as_str() {
        "join" => "join",
        "peer" => "peer",
        "leave" => "leave",
        "request" => "request",
        "sync" => "sync",
        "doc-unavailable" => "doc-unavailable",
        "ephemeral" => "ephemeral",
        "error" => "error",
        "remote-subscription-change" => "remote-subscription-change",
        "remote-heads-changed" => "remote-heads-changed",
        _ => return Err(WireError::UnknownType(kind)),
    };
    fn need<T>(
        v: Option<T>,
        message_type: &'static str,
        field: &'static str,
    ) -> Result<T, WireError> {
        v.ok_or(WireError::Missing {
            message_type,
            field,
        })
    }
    let sender = || need(f.sender_id.clone(), t, "senderId");
    let target = || need(f.target_id.clone(), t, "targetId");
    let doc = || need(f.document_id.clone(), t, "documentId");
    let data = || need(f.data.clone(), t, "data");
    Ok(match t {
        "join" => Message::Join {
            sender_id: sender()?,
            supported_protocol_versions: need(f.versions.clone(), t, "supportedProtocolVersions")?,
            metadata: f.metadata.clone(),
        },
        "peer" => Message::Peer {
            sender_id: sender()?,
            target_id: target()?,
            selected_protocol_version: need(f.selected.clone(), t, "selectedProtocolVersion")?,
            metadata: f.metadata.clone(),
        },
        "leave" => Message::Leave {
            sender_id: sender()?,
        },
        "request" => Message::Request {
            sender_id: sender()?,
            target_id: target()?,
            document_id: doc()?,
            data: data()?,
        },
        "sync" => Message::Sync {
            sender_id: sender()?,
            target_id: target()?,
            document_id: doc()?,
            data: data()?,
        },
        "doc-unavailable" => Message::DocUnavailable {
            sender_id: sender()?,
            target_id: target()?,
            document_id: doc()?,
        },
        "ephemeral" => Message::Ephemeral {
            sender_id: sender()?,
            target_id: target()?,
            count: need(f.count, t, "count")?,
            session_id: need(f.session_id.clone(), t, "sessionId")?,
            document_id: doc()?,
            data: data()?,
        },
        "error" => Message::Error {
            message: need(f.message.clone(), t, "message")?,
            sender_id: f.sender_id.clone(),
            target_id: f.target_id.clone(),
        },
        "remote-subscription-change" => Message::RemoteSubscriptionChange {
            sender_id: sender()?,
            target_id: target()?,
            add: f.add.clone().unwrap_or_default(),
            remove: f.remove.clone().unwrap_or_default(),
        },
        _ => Message::RemoteHeadsChanged {
            sender_id: sender()?,
            target_id: target()?,
            document_id: doc()?,
            new_heads: need(f.new_heads.clone(), t, "newHeads")?,
        },
    })
}

type Enc = Encoder<Vec<u8>>;
type EncResult = Result<(), minicbor::encode::Error<std::convert::Infallible>>;

fn kv_str(e: &mut Enc, k: &str, v: &str) -> EncResult {
    e.str(k)?.str(v)?;
    Ok(())
}

fn kv_list(e: &mut Enc, k: &str, v: &[String]) -> EncResult {
    e.str(k)?.array(v.len() as u64)?;
    for s in v {
        e.str(s)?;
    }
    Ok(())
}

fn kv_metadata(e: &mut Enc, m: &PeerMetadata) -> EncResult {
    e.str("peerMetadata")?;
    e.map(1 + u64::from(m.storage_id.is_some()))?;
    if let Some(s) = &m.storage_id {
        kv_str(e, "storageId", s)?;
    }
    e.str("isEphemeral")?.bool(m.is_ephemeral)?;
    Ok(())
}

fn encode_into(m: &Message, e: &mut Enc) -> EncResult {
    let entries = |base: u64, opt: &[bool]| base + opt.iter().filter(|b| **b).count() as u64;
    match m {
        Message::Join {
            sender_id,
            supported_protocol_versions,
            metadata,
        } => {
            e.map(entries(3, &[metadata.is_some()]))?;
            kv_str(e, "type", "join")?;
            kv_str(e, "senderId", sender_id)?;
            kv_list(e, "supportedProtocolVersions", supported_protocol_versions)?;
            if let Some(md) = metadata {
                kv_metadata(e, md)?;
            }
        }
        Message::Peer {
            sender_id,
            target_id,
            selected_protocol_version,
            metadata,
        } => {
            e.map(entries(4, &[metadata.is_some()]))?;
            kv_str(e, "type", "peer")?;
            kv_str(e, "senderId", sender_id)?;
            kv_str(e, "targetId", target_id)?;
            kv_str(e, "selectedProtocolVersion", selected_protocol_version)?;
            if let Some(md) = metadata {
                kv_metadata(e, md)?;
            }
        }
        Message::Leave { sender_id } => {
            e.map(2)?;
            kv_str(e, "type", "leave")?;
            kv_str(e, "senderId", sender_id)?;
        }
        Message::Request {
            sender_id,
            target_id,
            document_id,
            data,
        }
        | Message::Sync {
            sender_id,
            target_id,
            document_id,
            data,
        } => {
            e.map(5)?;
            kv_str(e, "type", m.type_name())?;
            kv_str(e, "senderId", sender_id)?;
            kv_str(e, "targetId", target_id)?;
            kv_str(e, "documentId", document_id)?;
            e.str("data")?.bytes(data)?;
        }
        Message::DocUnavailable {
            sender_id,
            target_id,
            document_id,
        } => {
            e.map(4)?;
            kv_str(e, "type", "doc-unavailable")?;
            kv_str(e, "senderId", sender_id)?;
            kv_str(e, "targetId", target_id)?;
            kv_str(e, "documentId", document_id)?;
        }
        Message::Ephemeral {
            sender_id,
            target_id,
            count,
            session_id,
            document_id,
            data,
        } => {
            e.map(7)?;
            kv_str(e, "type", "ephemeral")?;
            kv_str(e, "senderId", sender_id)?;
            kv_str(e, "targetId", target_id)?;
            e.str("count")?.u64(*count)?;
            kv_str(e, "sessionId", session_id)?;
            kv_str(e, "documentId", document_id)?;
            e.str("data")?.bytes(data)?;
        }
        Message::Error {
            message,
            sender_id,
            target_id,
        } => {
            e.map(entries(2, &[sender_id.is_some(), target_id.is_some()]))?;
            kv_str(e, "type", "error")?;
            kv_str(e, "message", message)?;
            if let Some(s) = sender_id {
                kv_str(e, "senderId", s)?;
            }
            if let Some(t) = target_id {
                kv_str(e, "targetId", t)?;
            }
        }
        Message::RemoteSubscriptionChange {
            sender_id,
            target_id,
            add,
            remove,
        } => {
            e.map(5)?;
            kv_str(e, "type", "remote-subscription-change")?;
            kv_str(e, "senderId", sender_id)?;
            kv_str(e, "targetId", target_id)?;
            kv_list(e, "add", add)?;
            kv_list(e, "remove", remove)?;
        }
        Message::RemoteHeadsChanged {
            sender_id,
            target_id,
            document_id,
            new_heads,
        } => {
            e.map(5)?;
            kv_str(e, "type", "remote-heads-changed")?;
            kv_str(e, "senderId", sender_id)?;
            kv_str(e, "targetId", target_id)?;
            kv_str(e, "documentId", document_id)?;
            e.str("newHeads")?.map(new_heads.len() as u64)?;
            for h in new_heads {
                e.str(&h.storage_id)?.map(2)?;
                kv_list(e, "heads", &h.heads)?;
                e.str("timestamp")?.u64(h.timestamp)?;
            }
        }
    }
    Ok(())
}

/// Encodes a message as one CBOR map. Fails only if the result would be over
/// [`MAX_MESSAGE_BYTES`] (the peer would refuse it).
pub fn encode(m: &Message) -> Result<Vec<u8>, WireError> {
    let mut e = Encoder::new(Vec::new());
    // Writing into a Vec cannot fail.
    if let Err(err) = encode_into(m, &mut e) {
        return Err(WireError::Cbor(err.to_string()));
    }
    let out = e.into_writer();
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge {
            size: out.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_id() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_-]{0,40}"
    }

    fn arb_meta() -> impl Strategy<Value = Option<PeerMetadata>> {
        proptest::option::of((proptest::option::of(arb_id()), any::<bool>()).prop_map(
            |(storage_id, is_ephemeral)| PeerMetadata {
                storage_id,
                is_ephemeral,
            },
        ))
    }

    fn arb_list() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(arb_id(), 0..5)
    }

    fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..300)
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (arb_id(), arb_list(), arb_meta()).prop_map(|(s, v, m)| Message::Join {
                sender_id: s,
                supported_protocol_versions: v,
                metadata: m
            }),
            (arb_id(), arb_id(), arb_id(), arb_meta()).prop_map(|(s, t, v, m)| Message::Peer {
                sender_id: s,
                target_id: t,
                selected_protocol_version: v,
                metadata: m
            }),
            arb_id().prop_map(|s| Message::Leave { sender_id: s }),
            (arb_id(), arb_id(), arb_id(), arb_bytes()).prop_map(|(s, t, d, b)| Message::Request {
                sender_id: s,
                target_id: t,
                document_id: d,
                data: b
            }),
            (arb_id(), arb_id(), arb_id(), arb_bytes()).prop_map(|(s, t, d, b)| Message::Sync {
                sender_id: s,
                target_id: t,
                document_id: d,
                data: b
            }),
            (arb_id(), arb_id(), arb_id()).prop_map(|(s, t, d)| Message::DocUnavailable {
                sender_id: s,
                target_id: t,
                document_id: d
            }),
            (
                arb_id(),
                arb_id(),
                any::<u64>(),
                arb_id(),
                arb_id(),
                arb_bytes()
            )
                .prop_map(|(s, t, c, sess, d, b)| Message::Ephemeral {
                    sender_id: s,
                    target_id: t,
                    count: c,
                    session_id: sess,
                    document_id: d,
                    data: b
                }),
            (
                "\\PC{0,60}",
                proptest::option::of(arb_id()),
                proptest::option::of(arb_id())
            )
                .prop_map(|(m, s, t)| Message::Error {
                    message: m,
                    sender_id: s,
                    target_id: t
                }),
            (arb_id(), arb_id(), arb_list(), arb_list()).prop_map(|(s, t, a, r)| {
                Message::RemoteSubscriptionChange {
                    sender_id: s,
                    target_id: t,
                    add: a,
                    remove: r,
                }
            }),
            (
                arb_id(),
                arb_id(),
                arb_id(),
                proptest::collection::btree_map(arb_id(), (arb_list(), any::<u64>()), 0..4)
            )
                .prop_map(|(s, t, d, h)| Message::RemoteHeadsChanged {
                    sender_id: s,
                    target_id: t,
                    document_id: d,
                    new_heads: h
                        .into_iter()
                        .map(|(storage_id, (heads, timestamp))| RemoteHeads {
                            storage_id,
                            heads,
                            timestamp
                        })
                        .collect()
                }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(m in arb_message()) {
            let bytes = encode(&m).unwrap();
            prop_assert_eq!(decode(&bytes).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn truncated_messages_are_errors(m in arb_message(), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&m).unwrap();
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..cut]).is_err());
        }
    }

    /// A `join` exactly as cbor-x (`Encoder({tagUint8Array: false, useRecords: false})`) writes
    /// the stock client's message, with `storageId: undefined`.
    #[test]
    fn decodes_the_js_client_join() {
        let mut e = Encoder::new(Vec::new());
        e.map(4).unwrap();
        e.str("type").unwrap().str("join").unwrap();
        e.str("senderId").unwrap().str("peer-abc").unwrap();
        e.str("peerMetadata").unwrap().map(2).unwrap();
        e.str("storageId").unwrap().undefined().unwrap();
        e.str("isEphemeral").unwrap().bool(true).unwrap();
        e.str("supportedProtocolVersions")
            .unwrap()
            .array(1)
            .unwrap()
            .str("1")
            .unwrap();
        let m = decode(&e.into_writer()).unwrap();
        assert_eq!(
            m,
            Message::Join {
                sender_id: "peer-abc".into(),
                supported_protocol_versions: vec!["1".into()],
                metadata: Some(PeerMetadata {
                    storage_id: None,
                    is_ephemeral: true
                }),
            }
        );
    }

    #[test]
    fn indefinite_maps_and_unknown_fields_are_accepted() {
        let mut e = Encoder::new(Vec::new());
        e.begin_map().unwrap();
        e.str("type").unwrap().str("leave").unwrap();
        e.str("extra")
            .unwrap()
            .begin_array()
            .unwrap()
            .u8(1)
            .unwrap()
            .end()
            .unwrap();
        e.str("senderId").unwrap().str("p").unwrap();
        e.end().unwrap();
        assert_eq!(
            decode(&e.into_writer()).unwrap(),
            Message::Leave {
                sender_id: "p".into()
            }
        );
    }

    #[test]
    fn bad_messages_are_refused() {
        // Not a map.
        assert!(matches!(decode(&[0x01]), Err(WireError::Cbor(_))));
        // Missing type.
        let mut e = Encoder::new(Vec::new());
        e.map(1).unwrap().str("senderId").unwrap().str("p").unwrap();
        assert!(matches!(
            decode(&e.into_writer()),
            Err(WireError::Missing { .. })
        ));
        // Unknown type.
        let mut e = Encoder::new(Vec::new());
        e.map(1)
            .unwrap()
            .str("type")
            .unwrap()
            .str("gossip")
            .unwrap();
        assert_eq!(
            decode(&e.into_writer()),
            Err(WireError::UnknownType("gossip".into()))
        );
        // Duplicate field.
        let mut e = Encoder::new(Vec::new());
        e.map(3).unwrap();
        e.str("type").unwrap().str("leave").unwrap();
        e.str("senderId").unwrap().str("a").unwrap();
        e.str("senderId").unwrap().str("b").unwrap();
        assert!(matches!(
            decode(&e.into_writer()),
            Err(WireError::Duplicate(_))
        ));
        // Trailing bytes.
        let mut bytes = encode(&Message::Leave {
            sender_id: "p".into(),
        })
        .unwrap();
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(WireError::Trailing(1)));
        // Over the size limit.
        assert!(matches!(
            decode(&vec![0u8; MAX_MESSAGE_BYTES + 1]),
            Err(WireError::TooLarge { .. })
        ));
        // An id over its limit.
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let bytes = encode(&Message::Leave { sender_id: long }).unwrap();
        assert!(matches!(decode(&bytes), Err(WireError::Limit { .. })));
        // A map claiming more entries than allowed.
        let mut e = Encoder::new(Vec::new());
        e.map(1_000_000).unwrap();
        assert!(matches!(
            decode(&e.into_writer()),
            Err(WireError::Limit { .. })
        ));
        // A byte string claiming more bytes than there are.
        let mut bytes = vec![0xa1, 0x64];
        bytes.extend_from_slice(b"data");
        bytes.extend_from_slice(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(decode(&bytes).is_err());
    }
}
