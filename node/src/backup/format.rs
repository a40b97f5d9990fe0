//! The backup file's byte format: a plaintext first line naming the format and its version,
//! then an age stream (scrypt passphrase recipient) whose plaintext is a sequence of records.
//!
//! ```text
//! file      = "cunyun-backup v1\n" age-stream
//! plaintext = manifest record, file records…, doc records…, end record
//! record    = tag:u8  name_len:u32 BE  name  body_len:u64 BE  body
//!   tag 'M' manifest: name "", body JSON [`Manifest`]
//!   tag 'F' file:     name = path relative to the data dir ('/'-separated), body = contents
//!   tag 'D' document: name = document key (`<area>/<kind>/<id>`),
//!                     body = updated_at_ms:u64 BE ++ automerge `save()`
//!   tag 'E' end:      name "", body JSON [`EndRecord`] (counts, checked on restore)
//! ```
//!
//! age authenticates every 64 KiB chunk and marks the last one, so a tampered or truncated file
//! fails to decrypt; the end record additionally proves the producer finished (a node that died
//! mid-export never writes it).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// The plaintext first line of every backup file (format version 1).
pub const MAGIC_LINE: &[u8] = b"cunyun-backup v1\n";
/// The prefix shared by every version's first line.
pub const MAGIC_PREFIX: &[u8] = b"cunyun-backup v";
/// The archive format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Longest record name accepted (paths and document keys are far shorter).
const MAX_NAME: u32 = 4096;
/// Largest record body accepted: 1 GiB (a document or a file in the data dir).
const MAX_BODY: u64 = 1 << 30;

/// What a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// The manifest (first record).
    Manifest,
    /// A file of the data directory.
    File,
    /// One store document.
    Doc,
    /// The end record (last record).
    End,
}

impl Tag {
    fn byte(self) -> u8 {
        match self {
            Tag::Manifest => b'M',
            Tag::File => b'F',
            Tag::Doc => b'D',
            Tag::End => b'E',
        }
    }

    fn from_byte(b: u8) -> Option<Tag> {
        Some(match b {
            b'M' => Tag::Manifest,
            b'F' => Tag::File,
            b'D' => Tag::Doc,
            b'E' => Tag::End,
            _ => return None,
        })
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What it is.
    pub tag: Tag,
    /// Path or document key (empty for manifest and end).
    pub name: String,
    /// Contents.
    pub body: Vec<u8>,
}

/// The first record: what made the backup and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format: u32,
    /// `cunyun-node` version that wrote it.
    pub software: String,
    /// When the backup started, ms since the Unix epoch.
    pub created_ms: u64,
    /// The node's identity URI from `tls/node.crt`, if it has one.
    pub node: Option<String>,
}

/// The last record: counts the reader checks against what it read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndRecord {
    /// File records written.
    pub files: u64,
    /// Document records written.
    pub docs: u64,
    /// Documents the store reported damaged (quarantined) and that were left out.
    pub damaged: Vec<String>,
}

/// Writes one record.
pub fn write_record(w: &mut impl Write, tag: Tag, name: &str, body: &[u8]) -> io::Result<()> {
    let name_len = u32::try_from(name.len())
        .ok()
        .filter(|n| *n <= MAX_NAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record name too long"))?;
    w.write_all(&[tag.byte()])?;
    w.write_all(&name_len.to_be_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&(body.len() as u64).to_be_bytes())?;
    w.write_all(body)
}

/// Reads one record; `Ok(None)` at a clean end of input (before a record's first byte).
pub fn read_record(r: &mut impl Read) -> io::Result<Option<Record>> {
    let mut tag = [0u8; 1];
    loop {
        match r.read(&mut tag) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let tag = Tag::from_byte(tag[0]).ok_or_else(|| bad("unknown record tag"))?;
    let mut len4 = [0u8; 4];
    r.read_exact(&mut len4)?;
    let name_len = u32::from_be_bytes(len4);
    if name_len > MAX_NAME {
        return Err(bad("record name too long"));
    }
    let mut name = vec![0u8; name_len as usize];
    r.read_exact(&mut name)?;
    let name = String::from_utf8(name).map_err(|_| bad("record name is not UTF-8"))?;
    let mut len8 = [0u8; 8];
    r.read_exact(&mut len8)?;
    let body_len = u64::from_be_bytes(len8);
    if body_len > MAX_BODY {
        return Err(bad("record body too large"));
    }
    let mut body = Vec::new();
    r.by_ref().take(body_len).read_to_end(&mut body)?;
    if body.len() as u64 != body_len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "record body cut short",
        ));
    }
    Ok(Some(Record { tag, name, body }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_cut_records_are_errors() {
        let mut buf = Vec::new();
        write_record(&mut buf, Tag::File, "tls/node.crt", b"pem").expect("write");
        write_record(&mut buf, Tag::Doc, "510116108203/hh/1", &[1, 2, 3]).expect("write");
        let mut r = &buf[..];
        let a = read_record(&mut r).expect("read").expect("record");
        assert_eq!(
            (a.tag, a.name.as_str(), &a.body[..]),
            (Tag::File, "tls/node.crt", &b"pem"[..])
        );
        let b = read_record(&mut r).expect("read").expect("record");
        assert_eq!(b.tag, Tag::Doc);
        assert!(read_record(&mut r).expect("end").is_none());
        let first_len = 1 + 4 + "tls/node.crt".len() + 8 + 3;
        for cut in (1..buf.len()).filter(|c| *c != first_len) {
            let mut r = &buf[..cut];
            let whole = read_record(&mut r).and_then(|_| read_record(&mut r));
            assert!(
                whole.is_err(),
                "a cut at {cut} must not read as whole records"
            );
        }
    }
}
