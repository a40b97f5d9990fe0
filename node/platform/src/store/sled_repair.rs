//! A check of sled 0.34's log that runs before sled opens it, so that one damaged record cannot
//! make sled destroy data.
//!
//! **Why.** When sled 0.34 opens, it re-reads the log from the segment holding its last
//! snapshot's `stable_lsn` onwards and takes the first record whose CRC fails as the torn end of
//! the log. It then overwrites the rest of that segment (and later segments) with zeros, and,
//! if that end lies below the snapshot's `stable_lsn`, refuses to open ("unexpected corruption
//! encountered in storage snapshot file"). So a single flipped bit in a recent record both
//! destroys the records after it and leaves the store unopenable (seen in a test; see
//! `pagecache/iterator.rs` and `pagecache/snapshot.rs` in sled 0.34.7). Records in older
//! segments are only checked when their page is read, which makes every key of that page
//! unreadable.
//!
//! **What this does.** Every record that lies entirely below the snapshot's `stable_lsn` was
//! validated by sled when it wrote that snapshot, so a CRC mismatch there now is damage after
//! the fact, not a torn write. For such a record whose header is still plausible (known kind,
//! the segment's own segment number, a length inside the segment), we rewrite the record's CRC
//! so sled accepts it again; the damaged bytes stay, and the store's own per-value checksums
//! then report exactly the document whose bytes were hit ([`StoreError::Corrupt`]) instead of
//! sled discarding the log. Each repair is logged with `tracing::error!` and appended to
//! `cunyun-log-repairs.txt` in the store directory (offset, old and new CRC), so it can be
//! undone. A damaged record below the snapshot that cannot be repaired makes the open fail with
//! a clear error *before* sled touches the files. Records above the snapshot (written since the
//! last open, i.e. before a crash) are left to sled: there a bad CRC really may be a torn write.
//!
//! By default only the segments sled itself re-reads at open are checked (the tail, usually one
//! 512 KiB segment after a clean close). When the backend has met a damaged page while running,
//! it leaves the [`FULL_CHECK_MARKER`] file, and the next open checks every segment.
//!
//! The format details (record header `crc32 LE, kind u8, len, segment number, page id` with
//! sled's variable-length integers; CRC over body then header after the CRC, inverted; 20-byte
//! segment headers; `snap.<stable_lsn as 16 hex digits>`; blob files `crc32 LE, kind, data`)
//! are sled 0.34.7's, which is not developed further.
//!
//! [`StoreError::Corrupt`]: super::StoreError::Corrupt

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Left in the store directory when a damaged page was met at run time; asks the next open to
/// check every segment.
pub(crate) const FULL_CHECK_MARKER: &str = "cunyun-check-log";

/// Left in the store directory after a repair, until the store has released the documents the
/// backend had quarantined for a whole page (see [`QuarantineRecord::from_backend`]).
///
/// [`QuarantineRecord::from_backend`]: super::QuarantineRecord::from_backend
pub(crate) const REPAIRED_MARKER: &str = "cunyun-log-repaired";

/// Where the store keeps a copy of sled's current snapshot.
pub(crate) const SNAPSHOT_COPY_DIR: &str = "cunyun-snapshot-copy";

/// Where repairs are recorded.
const REPAIR_LOG: &str = "cunyun-log-repairs.txt";

const SEG_HEADER_LEN: usize = 20;
const KIND_CORRUPTED: u8 = 0;
const KIND_CAP: u8 = 2;
const KIND_BATCH_MANIFEST: u8 = 3;
/// sled's `MAX_MSG_HEADER_LEN`.
const MAX_HEADER_LEN: usize = 32;
const KIND_MAX: u8 = 11;
/// Blob-stored kinds: meta, node, link. Their body is the blob's id.
const BLOB_KINDS: [u8; 3] = [7, 9, 11];

/// What the check did.
#[derive(Debug, Default)]
pub(crate) struct RepairReport {
    /// Segments checked.
    pub(crate) segments_checked: usize,
    /// Records whose CRC was rewritten, by file offset.
    pub(crate) healed_records: Vec<u64>,
    /// Blob files whose CRC was rewritten.
    pub(crate) healed_blobs: Vec<u64>,
}

/// Why the store must not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RepairError {
    /// Damage sled would turn into data loss, and that this check cannot repair.
    #[error("{0}")]
    Refuse(String),
    /// The store is open elsewhere.
    #[error("{0}")]
    Busy(String),
    /// Reading or writing the files failed.
    #[error("I/O error checking the sled log: {0}")]
    Io(#[from] std::io::Error),
}

/// sled's variable-length `u64`.
fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    match first {
        0..=240 => Some((u64::from(first), 1)),
        241..=248 => Some((
            240 + 256 * (u64::from(first) - 241) + u64::from(*buf.get(1)?),
            2,
        )),
        249 => Some((
            2288 + 256 * u64::from(*buf.get(1)?) + u64::from(*buf.get(2)?),
            3,
        )),
        other => {
            let sz = usize::from(other) - 247;
            let mut aligned = [0u8; 8];
            aligned[..sz].copy_from_slice(buf.get(1..=sz)?);
            Some((u64::from_le_bytes(aligned), sz + 1))
        }
    }
}

fn le_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

fn le_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?))
}

/// A parsed segment header.
struct SegmentHeader {
    lsn: u64,
    max_stable_lsn: u64,
}

fn parse_segment_header(b: &[u8]) -> Option<SegmentHeader> {
    let stored = le_u32(b)? ^ 0xFFFF_FFFF;
    let body = b.get(4..SEG_HEADER_LEN)?;
    if crc32fast::hash(body) != stored {
        return None;
    }
    // sled's LSNs are `i64`; a negative `max_stable_lsn` means "none yet".
    let lsn = (le_u64(body)? ^ 0x7FFF_FFFF_FFFF_FFFF) as i64;
    let max_stable_lsn = (le_u64(body.get(8..)?)? ^ 0x7FFF_FFFF_FFFF_FFFF) as i64;
    Some(SegmentHeader {
        lsn: u64::try_from(lsn).ok()?,
        max_stable_lsn: u64::try_from(max_stable_lsn).unwrap_or(0),
    })
}

/// A parsed record header.
struct Record {
    stored_crc: u32,
    kind: u8,
    len: usize,
    segment_number: u64,
    header_len: usize,
}

fn parse_record(b: &[u8]) -> Option<Record> {
    let stored_crc = le_u32(b)?;
    let kind = *b.get(4)?;
    let mut at = 5;
    let (len, n) = read_varint(b.get(at..)?)?;
    at += n;
    let (segment_number, n) = read_varint(b.get(at..)?)?;
    at += n;
    let (_pid, n) = read_varint(b.get(at..)?)?;
    at += n;
    Some(Record {
        stored_crc,
        kind,
        len: usize::try_from(len).ok()?,
        segment_number,
        header_len: at,
    })
}

/// sled's record CRC: body, then the header after its CRC field, inverted.
fn record_crc(header: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(body);
    h.update(header.get(4..).unwrap_or(&[]));
    h.finalize() ^ 0xFFFF_FFFF
}

/// What sled 0.34 writes to `conf` for the settings this store always uses (default segment
/// size, no compression), before its CRC32.
const CANONICAL_CONF: &str = "segment_size: 524288\nuse_compression: false\nversion: 0.34\n";

/// The segment size recorded in sled's `conf` file (text followed by its CRC32), and a fix if
/// the file is damaged: it is then rewritten with the only content this store ever gives it,
/// [`CANONICAL_CONF`] (sled would otherwise refuse to open). `Ok(None)` if there is no file.
fn segment_size(dir: &Path) -> Result<Option<(u64, Option<Fix>)>, RepairError> {
    let conf = match std::fs::read(dir.join("conf")) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let split = conf.len().saturating_sub(4);
    let (mut text, crc) = conf.split_at(split);
    let mut fix = None;
    if le_u32(crc) != Some(crc32fast::hash(text)) {
        fix = Some(Fix::Conf { old: conf.clone() });
        text = CANONICAL_CONF.as_bytes();
    }
    let size = String::from_utf8_lossy(text)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size: "))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&s: &u64| s as usize > SEG_HEADER_LEN + 64);
    Ok(size.map(|s| (s, fix)))
}

/// Whether `bytes` is an intact sled snapshot (`data, u64 len, u32 crc32(data)`).
fn snapshot_valid(bytes: &[u8]) -> bool {
    bytes.len() > 12 && {
        let (data, tail) = bytes.split_at(bytes.len() - 12);
        tail.get(8..).and_then(le_u32) == Some(crc32fast::hash(data))
    }
}

/// The snapshot file names in `dir`, in the order sled sorts them (it reads the last).
fn snapshot_names(dir: &Path) -> Result<Vec<String>, std::io::Error> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("snap.") && !n.ends_with(".in___motion"))
        .collect();
    names.sort();
    Ok(names)
}

/// The `stable_lsn` of the snapshot sled will read, after checking the snapshot's CRC, and a
/// fix restoring it from the store's copy ([`SNAPSHOT_COPY_DIR`]) if it is damaged or gone.
fn snapshot_lsn(dir: &Path) -> Result<Option<(u64, Option<Fix>)>, RepairError> {
    let live = snapshot_names(dir)?.pop();
    let copy = snapshot_names(&dir.join(SNAPSHOT_COPY_DIR))
        .unwrap_or_default()
        .pop();
    let Some(name) = live.clone().or(copy) else {
        return Ok(None);
    };
    let lsn_of = |name: &str| {
        name.strip_prefix("snap.")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
    };
    let live_ok = live.is_some() && snapshot_valid(&std::fs::read(dir.join(&name))?);
    match lsn_of(&name) {
        Some(lsn) if live_ok => return Ok(Some((lsn, None))),
        Some(lsn) => {
            let copied = dir.join(SNAPSHOT_COPY_DIR).join(&name);
            if copied.exists() && snapshot_valid(&std::fs::read(&copied)?) {
                return Ok(Some((lsn, Some(Fix::Snapshot { name }))));
            }
        }
        None => {}
    }
    Err(RepairError::Refuse(format!(
        "sled's snapshot file `{name}` is damaged and the store has no intact copy of it; sled cannot \
         open without it"
    )))
}

/// Keeps a copy of sled's current snapshot in [`SNAPSHOT_COPY_DIR`], so that a damaged snapshot
/// (which would stop sled from opening) can be restored. Call after sled has opened.
pub(crate) fn keep_snapshot_copy(dir: &Path) -> Result<(), std::io::Error> {
    let Some(name) = snapshot_names(dir)?.pop() else {
        return Ok(());
    };
    let copy_dir = dir.join(SNAPSHOT_COPY_DIR);
    std::fs::create_dir_all(&copy_dir)?;
    if copy_dir.join(&name).exists() {
        return Ok(());
    }
    let tmp = copy_dir.join("incoming");
    std::fs::copy(dir.join(&name), &tmp)?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, copy_dir.join(&name))?;
    for old in snapshot_names(&copy_dir)? {
        if old != name {
            std::fs::remove_file(copy_dir.join(old))?;
        }
    }
    File::open(&copy_dir)?.sync_all()?;
    File::open(dir)?.sync_all()
}

/// A repair to make.
enum Fix {
    Conf {
        old: Vec<u8>,
    },
    /// The snapshot is damaged or gone; restore the store's copy.
    Snapshot {
        name: String,
    },
    Record {
        offset: u64,
        old: u32,
        new: u32,
    },
    /// One flipped bit in a record header, put back.
    Bit {
        offset: u64,
        mask: u8,
    },
    /// A batch manifest below the snapshot whose body (its batch's last LSN) is damaged: the
    /// body is set to the manifest's own LSN, which says "complete" (every batch below the
    /// snapshot was), and the CRC recomputed.
    Manifest {
        offset: u64,
        body_at: u64,
        old_body: [u8; 8],
        new_body: [u8; 8],
        new_crc: u32,
    },
    Blob {
        id: u64,
        old: u32,
        new: u32,
    },
}

/// Checks the blob a record points to; returns a fix if its CRC is wrong but its kind matches.
fn check_blob(dir: &Path, kind: u8, body: &[u8]) -> Result<Option<Fix>, RepairError> {
    let Some(id) = le_u64(body) else {
        return Ok(None);
    };
    let bytes = match std::fs::read(dir.join("blobs").join(id.to_string())) {
        Ok(b) => b,
        // sled treats a missing blob as dangling and skips it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (Some(stored), Some(&blob_kind), Some(data)) =
        (le_u32(&bytes), bytes.get(4), bytes.get(5..))
    else {
        return Err(RepairError::Refuse(format!("sled blob {id} is truncated")));
    };
    let mut h = crc32fast::Hasher::new();
    h.update(&[blob_kind]);
    h.update(data);
    let actual = h.finalize();
    if actual == stored {
        return Ok(None);
    }
    if blob_kind != kind {
        return Err(RepairError::Refuse(format!(
            "sled blob {id} is damaged (kind {blob_kind}, expected {kind}) and cannot be repaired"
        )));
    }
    Ok(Some(Fix::Blob {
        id,
        old: stored,
        new: actual,
    }))
}

/// Lower-case hex.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The refusal for damage below the snapshot that cannot be repaired.
fn refuse_damaged(offset: u64, lsn: u64, stable: u64) -> RepairError {
    RepairError::Refuse(format!(
        "the sled log record at file offset {offset} (lsn {lsn}) is damaged beyond repair, below the last \
         snapshot (lsn {stable}); sled would discard every later record, so the store is not opened and \
         its files are left untouched"
    ))
}

/// The state of one check.
struct Checker<'a> {
    dir: &'a Path,
    seg_size: u64,
    /// The snapshot's `stable_lsn`.
    stable: u64,
    fixes: Vec<Fix>,
}

impl Checker<'_> {
    /// Walks the records of one segment (starting at file offset `base`), collecting fixes.
    /// `strict` means sled checks this segment's continuity at open, so unrepairable damage
    /// below the snapshot must stop the open.
    fn walk_segment(
        &mut self,
        seg: &[u8],
        base: u64,
        header: &SegmentHeader,
        strict: bool,
    ) -> Result<(), RepairError> {
        let stable = self.stable;
        let seg_number = header.lsn / self.seg_size;
        // Whether the log (as of the snapshot) goes on inside this segment after `lsn`.
        let seg_end = header.lsn + self.seg_size;
        let continues_here = |lsn: u64| lsn < stable && stable < seg_end;
        let mut pos = SEG_HEADER_LEN;
        while pos + 5 < seg.len() {
            let rest = &seg[pos..];
            let lsn = header.lsn + pos as u64;
            let offset = base + pos as u64;
            let kind = rest[4];
            let parsed = parse_record(rest).filter(|r| plausible(r, seg_number, rest.len()));
            let crc_ok = parsed.as_ref().is_some_and(|r| {
                record_crc(
                    &rest[..r.header_len],
                    &rest[r.header_len..r.header_len + r.len],
                ) == r.stored_crc
            });
            let end_marker = kind == KIND_CORRUPTED || kind == KIND_CAP;
            // What sled would take for the end of the segment, but the log went on: damage.
            let damaged_end =
                end_marker && lsn < stable && (kind == KIND_CORRUPTED || continues_here(lsn));
            if end_marker && !damaged_end {
                break;
            }
            // A record written before the snapshot and damaged since: a single flipped bit in
            // its header is found by its CRC and put back exactly.
            if (damaged_end || !crc_ok) && lsn < stable {
                if let Some((byte, mask, len)) = find_header_bit_flip(rest, seg_number) {
                    self.fixes.push(Fix::Bit {
                        offset: offset + byte as u64,
                        mask,
                    });
                    pos += len;
                    continue;
                }
            }
            if damaged_end {
                if strict {
                    return Err(refuse_damaged(offset, lsn, stable));
                }
                break;
            }
            let Some(rec) = parsed else {
                if strict && lsn < stable {
                    return Err(refuse_damaged(offset, lsn, stable));
                }
                break;
            };
            let header_bytes = &rest[..rec.header_len];
            let body = &rest[rec.header_len..rec.header_len + rec.len];
            let end = lsn + (rec.header_len + rec.len) as u64;
            if !crc_ok {
                if end > stable {
                    // Possibly a torn write since the last open: sled's to judge.
                    break;
                }
                self.damaged_record(offset, lsn, &rec, header_bytes, body, strict)?;
            }
            if BLOB_KINDS.contains(&rec.kind) && end <= stable {
                if let Some(fix) = check_blob(self.dir, rec.kind, body)? {
                    self.fixes.push(fix);
                }
            }
            pos += rec.header_len + rec.len;
        }
        Ok(())
    }

    /// A plausible record below the snapshot whose CRC fails: rewrite the CRC so the store's
    /// checksums judge the body. A batch manifest's body is read at open (the last LSN of its
    /// batch, which was complete before the snapshot): a damaged one is set to its own LSN,
    /// otherwise sled would think the batch torn and cut the log short.
    fn damaged_record(
        &mut self,
        offset: u64,
        lsn: u64,
        rec: &Record,
        header_bytes: &[u8],
        body: &[u8],
        strict: bool,
    ) -> Result<(), RepairError> {
        let stable = self.stable;
        if rec.kind == KIND_BATCH_MANIFEST {
            let body_ok =
                rec.len == 8 && le_u64(body).is_some_and(|last| last >= lsn && last <= stable);
            if !body_ok {
                let Ok(old_body) = <[u8; 8]>::try_from(body) else {
                    return if strict {
                        Err(refuse_damaged(offset, lsn, stable))
                    } else {
                        Ok(())
                    };
                };
                let new_body = lsn.to_le_bytes();
                self.fixes.push(Fix::Manifest {
                    offset,
                    body_at: offset + rec.header_len as u64,
                    old_body,
                    new_body,
                    new_crc: record_crc(header_bytes, &new_body),
                });
                return Ok(());
            }
        }
        self.fixes.push(Fix::Record {
            offset,
            old: rec.stored_crc,
            new: record_crc(header_bytes, body),
        });
        Ok(())
    }
}

/// Whether a parsed record header makes sense at this place: a known kind other than the end
/// markers, this segment's number, a length that fits.
fn plausible(r: &Record, seg_number: u64, room: usize) -> bool {
    r.kind != KIND_CORRUPTED
        && r.kind != KIND_CAP
        && r.kind <= KIND_MAX
        && r.segment_number == seg_number
        && r.header_len + r.len <= room
}

/// Looks for one flipped bit in the record header at the start of `rest` that, put back, gives
/// a plausible record with a matching CRC. Returns the byte, the bit mask and the record's
/// total length.
fn find_header_bit_flip(rest: &[u8], seg_number: u64) -> Option<(usize, u8, usize)> {
    let mut head = rest.get(..rest.len().min(MAX_HEADER_LEN))?.to_vec();
    for byte in 0..head.len() {
        for bit in 0..8 {
            let mask = 1u8 << bit;
            head[byte] ^= mask;
            let found = parse_record(&head)
                .filter(|r| byte < r.header_len && plausible(r, seg_number, rest.len()))
                .filter(|r| {
                    record_crc(
                        &head[..r.header_len],
                        &rest[r.header_len..r.header_len + r.len],
                    ) == r.stored_crc
                })
                .map(|r| (byte, mask, r.header_len + r.len));
            head[byte] ^= mask;
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

/// Checks sled's log in `dir` before it is opened and repairs damaged records below the last
/// snapshot (see the module docs). `full` checks every segment, not just the tail.
pub(crate) fn check_and_heal(dir: &Path, full: bool) -> Result<RepairReport, RepairError> {
    let mut report = RepairReport::default();
    let db_path = dir.join("db");
    let file = match OpenOptions::new().read(true).write(true).open(&db_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(e.into()),
    };
    // sled holds this lock (`flock`) while the database is open: never touch the files of a
    // store that is open elsewhere. Released when `file` is dropped, before sled opens.
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(RepairError::Busy(format!(
                "{} is open in another process (or another handle in this one)",
                db_path.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    let (Some((seg_size, conf_fix)), Some((stable, snapshot_fix))) =
        (segment_size(dir)?, snapshot_lsn(dir)?)
    else {
        // A new store, or files sled will judge itself.
        return Ok(report);
    };
    let file_len = file.metadata()?.len();
    let segments = file_len.div_ceil(seg_size);
    let mut headers = Vec::new();
    for idx in 0..segments {
        let mut buf = [0u8; SEG_HEADER_LEN];
        if file.read_exact_at(&mut buf, idx * seg_size).is_err() {
            continue;
        }
        if let Some(h) = parse_segment_header(&buf) {
            headers.push((idx * seg_size, h));
        }
    }
    let tail_start = stable / seg_size * seg_size;
    let strict_start = headers
        .iter()
        .filter(|(_, h)| h.lsn >= tail_start)
        .map(|(_, h)| h.max_stable_lsn)
        .fold(tail_start, u64::max)
        / seg_size
        * seg_size;
    // sled expects the segments from `strict_start` on to have consecutive LSNs; a missing one
    // below the snapshot would look like a tear to it.
    let mut expected = strict_start;
    let mut strict_lsns: Vec<u64> = headers
        .iter()
        .map(|(_, h)| h.lsn)
        .filter(|&l| l >= strict_start)
        .collect();
    strict_lsns.sort_unstable();
    for lsn in strict_lsns {
        if lsn != expected {
            if expected < stable {
                return Err(RepairError::Refuse(format!(
                    "the sled log segment with lsn {expected} is missing or its header is damaged, below the \
                     last snapshot (lsn {stable}); sled would discard every later segment, so the store is \
                     not opened and its files are left untouched"
                )));
            }
            break;
        }
        expected += seg_size;
    }
    let mut checker = Checker {
        dir,
        seg_size,
        stable,
        fixes: conf_fix.into_iter().chain(snapshot_fix).collect(),
    };
    let mut seg = vec![0u8; usize::try_from(seg_size).unwrap_or(usize::MAX)];
    for (base, h) in &headers {
        if !full && h.lsn < tail_start {
            continue;
        }
        let len = usize::try_from(seg_size.min(file_len - base)).unwrap_or(0);
        let buf = &mut seg[..len];
        file.read_exact_at(buf, *base)?;
        let strict = h.lsn >= strict_start;
        checker.walk_segment(buf, *base, h, strict)?;
        report.segments_checked += 1;
    }
    let fixes = checker.fixes;
    if fixes.is_empty() {
        return Ok(report);
    }
    let db = file;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(REPAIR_LOG))?;
    let when = crate::clock::now_ms();
    for fix in &fixes {
        match *fix {
            Fix::Record { offset, old, new } => {
                tracing::error!(
                    path = %db_path.display(),
                    offset,
                    old_crc = old,
                    new_crc = new,
                    "damaged sled log record below the last snapshot: rewrote its CRC so the store's own \
                     checksums judge the data instead of sled discarding the log"
                );
                writeln!(
                    log,
                    "{when} record db@{offset} len 4 crc {old:08x} -> {new:08x}"
                )?;
                db.write_all_at(&new.to_le_bytes(), offset)?;
                report.healed_records.push(offset);
            }
            Fix::Manifest {
                offset,
                body_at,
                old_body,
                new_body,
                new_crc,
            } => {
                tracing::error!(
                    path = %db_path.display(),
                    offset,
                    "damaged sled batch manifest below the last snapshot: marked its batch complete"
                );
                let len = body_at + 8 - offset;
                writeln!(
                    log,
                    "{when} record db@{offset} len {len} manifest body {} -> {} crc -> {new_crc:08x}",
                    hex(&old_body),
                    hex(&new_body)
                )?;
                db.write_all_at(&new_body, body_at)?;
                db.write_all_at(&new_crc.to_le_bytes(), offset)?;
                report.healed_records.push(offset);
            }
            Fix::Bit { offset, mask } => {
                let mut b = [0u8; 1];
                db.read_exact_at(&mut b, offset)?;
                tracing::error!(
                    path = %db_path.display(),
                    offset,
                    "flipped bit in a sled log record header below the last snapshot: restored it"
                );
                writeln!(
                    log,
                    "{when} record db@{offset} len 1 bit {:02x} -> {:02x}",
                    b[0],
                    b[0] ^ mask
                )?;
                db.write_all_at(&[b[0] ^ mask], offset)?;
                report.healed_records.push(offset);
            }
            Fix::Snapshot { ref name } => {
                tracing::error!(path = %dir.display(), snapshot = %name, "sled's snapshot is damaged; restored the store's copy");
                writeln!(
                    log,
                    "{when} snapshot {name} restored from {SNAPSHOT_COPY_DIR}"
                )?;
                let tmp = dir.join("snap.restoring.in___motion");
                std::fs::copy(dir.join(SNAPSHOT_COPY_DIR).join(name), &tmp)?;
                File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, dir.join(name))?;
            }
            Fix::Conf { ref old } => {
                let path = dir.join("conf");
                tracing::error!(path = %path.display(), "sled's configuration file is damaged; rewrote its standard content");
                writeln!(
                    log,
                    "{when} conf rewritten (was {:?})",
                    String::from_utf8_lossy(old)
                )?;
                let mut fresh = CANONICAL_CONF.as_bytes().to_vec();
                fresh.extend_from_slice(&crc32fast::hash(CANONICAL_CONF.as_bytes()).to_le_bytes());
                let mut f = File::create(&path)?;
                f.write_all(&fresh)?;
                f.sync_all()?;
            }
            Fix::Blob { id, old, new } => {
                let path = dir.join("blobs").join(id.to_string());
                tracing::error!(path = %path.display(), old_crc = old, new_crc = new, "damaged sled blob: rewrote its CRC");
                writeln!(log, "{when} blob {id} crc {old:08x} -> {new:08x}")?;
                let blob = OpenOptions::new().write(true).open(&path)?;
                blob.write_all_at(&new.to_le_bytes(), 0)?;
                blob.sync_all()?;
                report.healed_blobs.push(id);
            }
        }
    }
    db.sync_all()?;
    log.sync_all()?;
    File::create(dir.join(REPAIRED_MARKER))?.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_sled() {
        // Encodings from sled's `impl Serialize for u64`.
        assert_eq!(read_varint(&[7]), Some((7, 1)));
        assert_eq!(read_varint(&[240]), Some((240, 1)));
        assert_eq!(read_varint(&[241, 0]), Some((240, 2)));
        assert_eq!(read_varint(&[248, 255]), Some((2287, 2)));
        assert_eq!(read_varint(&[249, 0, 0]), Some((2288, 3)));
        assert_eq!(read_varint(&[250, 1, 2, 3]), Some((0x030201, 4)));
        assert_eq!(read_varint(&[255, 1, 0, 0, 0, 0, 0, 0, 0]), Some((1, 9)));
        assert_eq!(read_varint(&[255, 1]), None);
        assert_eq!(read_varint(&[]), None);
    }

    #[test]
    fn parsers_never_panic_on_garbage() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..200 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = parse_record(&buf);
            let _ = parse_segment_header(&buf);
            let _ = read_varint(&buf);
        }
    }
}
