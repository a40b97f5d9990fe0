//! Paged, bounded listing: the opaque list cursor ([`Cursor`]) and the key-order walk over one
//! document kind inside a key range that reads at most a budget of index entries
//! ([`walk_kind`]).
//!
//! A page never builds the whole list: it walks the index from where the previous page stopped
//! and stops when it has `limit` items or has read `scan_budget` index entries, whichever comes
//! first. A filter that matches little therefore answers fewer items (maybe none) and a cursor,
//! never a scan of the whole store in one request.
//!
//! Keys are `<12 area digits>/<kind>/<id>`, so the documents of one kind in one area are one
//! contiguous key range. The walk jumps over the other kinds of an area with a fresh range read
//! (counted as one entry of the budget) instead of reading them one by one.
//!
//! The cursor is a position in key order, so paging is keyset paging: a record that exists for
//! the whole paging is returned exactly once, whatever is created or deleted meanwhile; a
//! record created behind the cursor is seen by the next paging from the start.
//!
//! Wire form: URL-safe base64 (no padding) of `[version][list][8-byte filter fingerprint]
//! [resume key][4-byte BLAKE3 check]`. Decoding checks the version, the check bytes, that the
//! cursor belongs to the same list and filter, and that the resume key lies inside the range
//! being listed; anything else is a [`CursorError`] (a zh-CN `400`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cunyun_platform::store::{DocStore, IndexEntry, StoreError};
use cunyun_protocol::key::{DocKey, Kind};

/// The cursor format this node writes and reads.
pub const CURSOR_VERSION: u8 = 1;

/// Longest resume key a cursor may carry (area, kind and a 64-byte id fit well inside).
const MAX_CURSOR_KEY: usize = 128;

/// Which list a cursor pages through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `GET /api/v1/households`.
    Households,
    /// `GET /api/v1/needs`.
    Needs,
}

impl ListKind {
    fn byte(self) -> u8 {
        match self {
            ListKind::Households => b'h',
            ListKind::Needs => b'n',
        }
    }
}

/// Why a cursor was refused. Nothing is read for a refused cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Not a cursor this node made (wrong characters, length or check bytes).
    #[error("翻页标记（cursor）无效，请从第一页重新加载")]
    Malformed,
    /// A cursor of another format version (made by an older or newer node).
    #[error("翻页标记（cursor）的版本不受支持，请从第一页重新加载")]
    Version,
    /// A cursor of another list, filter or area than this request's.
    #[error("翻页标记（cursor）与本次的查询条件不符，请从第一页重新加载")]
    Mismatch,
}

/// A position in a list: where the next page starts (inclusive) in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The list.
    pub list: ListKind,
    /// Fingerprint of the filter and range ([`fingerprint`]).
    pub filter: [u8; 8],
    /// The first index key the next page may read.
    pub from: Vec<u8>,
}

fn check(body: &[u8]) -> [u8; 4] {
    let h = blake3::hash(body);
    let mut out = [0u8; 4];
    out.copy_from_slice(&h.as_bytes()[..4]);
    out
}

impl Cursor {
    /// The opaque token sent to the client.
    pub fn encode(&self) -> String {
        let mut b = Vec::with_capacity(14 + self.from.len());
        b.push(CURSOR_VERSION);
        b.push(self.list.byte());
        b.extend_from_slice(&self.filter);
        b.extend_from_slice(&self.from);
        let c = check(&b);
        b.extend_from_slice(&c);
        URL_SAFE_NO_PAD.encode(b)
    }

    /// Reads a token back for `list` with `filter`, listing keys in `[start, end)`.
    pub fn decode(
        token: &str,
        list: ListKind,
        filter: [u8; 8],
        (start, end): (&[u8], &[u8]),
    ) -> Result<Cursor, CursorError> {
        if token.len() > 4 * (MAX_CURSOR_KEY + 14) / 3 + 4 {
            return Err(CursorError::Malformed);
        }
        let b = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| CursorError::Malformed)?;
        if b.len() < 2 + 8 + 1 + 4 {
            return Err(CursorError::Malformed);
        }
        let (body, sum) = b.split_at(b.len() - 4);
        if check(body) != sum {
            return Err(CursorError::Malformed);
        }
        if body[0] != CURSOR_VERSION {
            return Err(CursorError::Version);
        }
        if body[1] != list.byte() || body[2..10] != filter {
            return Err(CursorError::Mismatch);
        }
        let from = body[10..].to_vec();
        if from.len() > MAX_CURSOR_KEY || from.as_slice() < start || from.as_slice() >= end {
            return Err(CursorError::Mismatch);
        }
        Ok(Cursor { list, filter, from })
    }
}

/// Fingerprint of a list's filter: every part length-prefixed, so `("a", "bc")` and
/// `("ab", "c")` differ.
pub fn fingerprint(parts: &[&str]) -> [u8; 8] {
    let mut h = blake3::Hasher::new_derive_key("cunyun 2026 list cursor filter");
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

/// What a visitor of [`walk_kind`] tells the walk after each document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Go on.
    More,
    /// The page is full: stop after this document.
    Full,
}

/// Where a walk stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walked {
    /// Where the next page starts, or `None` when the range is exhausted.
    pub resume: Option<Vec<u8>>,
    /// Index entries read (range reads included).
    pub read: usize,
}

/// The first key after `key` in byte order.
fn after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// Where the next document of `kind` can be, seen from `key` (of another kind): the start of
/// `kind`'s range in the same area when it comes later, else the next area.
fn skip_target(key: &DocKey, kind: Kind) -> Vec<u8> {
    let area = key.area().as_str();
    if key.kind().as_str() < kind.as_str() {
        format!("{area}/{kind}/").into_bytes()
    } else {
        // '0' sorts after '/', and every later area's 12 digits sort after `area` + "0".
        format!("{area}0").into_bytes()
    }
}

/// Walks the documents of `kind` with keys in `[from, end)` in key order, calling `visit` for
/// each, reading at most `budget` index entries (at least 2, so that every walk moves on).
/// After [`Visit::Full`] it reads on only to see whether another document of `kind` follows:
/// `resume` is `None` when none does.
///
/// Damaged index entries are skipped (the store quarantines and logs them); a store error other
/// than damage, or an error of `visit`, ends the walk with that error.
pub fn walk_kind<E: From<StoreError>>(
    store: &DocStore,
    kind: Kind,
    from: Vec<u8>,
    end: &[u8],
    budget: usize,
    mut visit: impl FnMut(DocKey, IndexEntry) -> Result<Visit, E>,
) -> Result<Walked, E> {
    let budget = budget.max(2);
    let mut read = 0usize;
    let mut pos = from;
    // Set once `visit` said the page is full: the walk then only looks (within the budget)
    // whether another document of `kind` follows, so the last page says so (no cursor).
    let mut full = false;
    'range: while pos.as_slice() < end {
        if read >= budget {
            return Ok(Walked {
                resume: Some(pos),
                read,
            });
        }
        read += 1;
        let mut it = store.scan_range(&pos, end);
        loop {
            if read >= budget {
                return Ok(Walked {
                    resume: Some(pos),
                    read,
                });
            }
            let Some(item) = it.next() else {
                break 'range;
            };
            read += 1;
            let (key, entry) = match item {
                Ok(ke) => ke,
                Err(StoreError::Corrupt { key, reason }) => {
                    tracing::warn!(key, reason, "damaged index entry skipped in listing");
                    // The damaged key (when it is one) is behind us; resume after it.
                    if key.as_bytes() >= pos.as_slice() && key.as_bytes() < end {
                        pos = after(key.as_bytes());
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if key.kind() != kind {
                pos = skip_target(&key, kind);
                continue 'range;
            }
            if full {
                // The page is full and another document follows: the next page starts here.
                return Ok(Walked {
                    resume: Some(key.to_bytes()),
                    read,
                });
            }
            pos = after(&key.to_bytes());
            if visit(key, entry)? == Visit::Full {
                full = true;
            }
        }
    }
    Ok(Walked { resume: None, read })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: (&[u8], &[u8]) = (b"510116108203", b"510116108203:");

    fn cursor() -> Cursor {
        Cursor {
            list: ListKind::Households,
            filter: fingerprint(&["group", "3"]),
            from: b"510116108203/hh/h0001\0".to_vec(),
        }
    }

    #[test]
    fn a_cursor_round_trips_and_every_change_is_refused() {
        let c = cursor();
        let t = c.encode();
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(Cursor::decode(&t, c.list, c.filter, RANGE).as_ref(), Ok(&c));
        // Another list, filter or range.
        assert_eq!(
            Cursor::decode(&t, ListKind::Needs, c.filter, RANGE),
            Err(CursorError::Mismatch)
        );
        assert_eq!(
            Cursor::decode(&t, c.list, fingerprint(&["group", "4"]), RANGE),
            Err(CursorError::Mismatch)
        );
        assert_eq!(
            Cursor::decode(&t, c.list, c.filter, (b"510116108204", b"510116108204:")),
            Err(CursorError::Mismatch)
        );
        // Every single flipped byte is caught.
        let raw = URL_SAFE_NO_PAD.decode(&t).expect("b64");
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x20;
            let token = URL_SAFE_NO_PAD.encode(&bad);
            assert!(
                Cursor::decode(&token, c.list, c.filter, RANGE).is_err(),
                "flip at {i} accepted"
            );
        }
        for junk in [
            "",
            "x",
            "!!!!",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &"A".repeat(5000),
        ] {
            assert_eq!(
                Cursor::decode(junk, c.list, c.filter, RANGE),
                Err(CursorError::Malformed),
                "{junk}"
            );
        }
        // Another version, well formed otherwise.
        let mut v2 = raw[..raw.len() - 4].to_vec();
        v2[0] = 2;
        let sum = check(&v2);
        v2.extend_from_slice(&sum);
        assert_eq!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode(&v2), c.list, c.filter, RANGE),
            Err(CursorError::Version)
        );
        assert_ne!(fingerprint(&["a", "bc"]), fingerprint(&["ab", "c"]));
    }

    #[test]
    fn skipping_lands_on_the_kind_or_the_next_area() {
        let del = DocKey::parse("510116108203/del/h1").expect("key");
        assert_eq!(skip_target(&del, Kind::Hh), b"510116108203/hh/".to_vec());
        let hp = DocKey::parse("510116108203/hp/h1").expect("key");
        let next = skip_target(&hp, Kind::Hh);
        assert_eq!(next, b"5101161082030".to_vec());
        assert!(next.as_slice() > hp.to_bytes().as_slice());
        assert!(next.as_slice() < b"510116108204/del/x".as_slice());
    }
}
