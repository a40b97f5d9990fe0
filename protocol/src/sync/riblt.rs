//! Rateless invertible Bloom lookup tables (Yang, Gilad, Alizadeh, "Practical Rateless Set
//! Reconciliation", SIGCOMM 2024, arXiv 2402.02668) over 16-byte symbols.
//!
//! This module owns the set-reconciliation math of the sync protocol: what a document's
//! [`Symbol`] is, the coded [`Cell`] stream an [`Encoder`] produces for a set of symbols, the
//! index mapping that decides which cells a symbol lands in, subtracting two cell prefixes and
//! peeling a difference back into the symbols only one side holds ([`decode`]). It also owns the
//! [`Fingerprint`] of a whole set (XOR of its symbols and their number), which the session
//! compares to detect "nothing to do" and to confirm convergence.
//!
//! # The stream
//!
//! A set's coded stream is infinite; cell `i` is the XOR-sum of the symbols mapped to `i`, the
//! XOR of their checksums and their signed count. Every symbol is mapped to cell 0, and from an
//! index `j` to the next index `j + ceil((j + 1.5)·(1/√(1-u) − 1))` with `u` uniform in
//! `[0, 1)` drawn from a PRNG seeded by the symbol's checksum — so index `i` receives a symbol
//! with probability about `1/(1 + i/2)`, as in the paper and its reference implementation
//! (`yangl1996/riblt`, `mapping.go`). Any prefix of the stream is a valid sketch: two peers that
//! exchange `m` cells can peel a difference of about `m / 1.35` symbols, however large the sets.
//!
//! The mapping uses only IEEE-754 multiplication, division, square root and `ceil`, which are
//! correctly rounded on every platform, so two peers always agree on it.
//!
//! # Robustness
//!
//! Cells come from the network. [`decode`] never panics, does at most one peel per cell (a
//! genuine difference can never need more — each peel consumes a distinct pure cell), and
//! reports [`DecodeError::Inconsistent`] when the cells cannot have come from two sets.

use std::fmt;

use crate::digest::{HeadsDigest, HEADS_DIGEST_LEN};
use crate::key::{DocKey, MAX_KEY_LEN};

/// Size of a symbol, in bytes.
pub const SYMBOL_LEN: usize = 16;

/// One set element: the first 16 bytes of BLAKE3(document key bytes ‖ heads digest).
///
/// Two replicas of a document produce the same symbol exactly when they hold the same heads.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Symbol(pub [u8; SYMBOL_LEN]);

impl Symbol {
    /// The symbol of a document at a given state.
    pub fn of(key: &DocKey, digest: &HeadsDigest) -> Symbol {
        // The key's stored bytes (`<area>/<kind>/<id>`) and the digest, hashed in one call.
        let mut buf = [0u8; MAX_KEY_LEN + HEADS_DIGEST_LEN];
        let mut len = 0;
        for part in [
            key.area().as_bytes().as_slice(),
            b"/",
            key.kind().as_str().as_bytes(),
            b"/",
            key.id().as_bytes(),
            &digest.0,
        ] {
            let end = (len + part.len()).min(buf.len());
            buf[len..end].copy_from_slice(&part[..end - len]);
            len = end;
        }
        let mut out = [0u8; SYMBOL_LEN];
        out.copy_from_slice(&blake3::hash(&buf[..len]).as_bytes()[..SYMBOL_LEN]);
        Symbol(out)
    }

    /// The symbol's 64-bit checksum: tells a pure cell (exactly one symbol) from a mixed one,
    /// and seeds the symbol's index mapping.
    pub fn checksum(&self) -> u64 {
        checksum(&self.0)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Symbol(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// SplitMix64 finaliser: a bijective 64-bit mixer.
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A keyed, non-linear 128→64-bit hash of symbol bytes. Symbols are already uniformly random
/// (BLAKE3 output), so this only has to make the checksum of an XOR of several symbols
/// unrelated to the XOR of their checksums.
fn checksum(bytes: &[u8; SYMBOL_LEN]) -> u64 {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&bytes[..8]);
    hi.copy_from_slice(&bytes[8..]);
    let lo = u64::from_le_bytes(lo);
    let hi = u64::from_le_bytes(hi);
    mix64(mix64(lo.wrapping_add(0x6375_6e79_756e_2d31)) ^ hi)
}

/// One coded cell of the stream.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Cell {
    /// XOR of the symbols mapped here.
    pub sum: [u8; SYMBOL_LEN],
    /// XOR of their checksums.
    pub checksum: u64,
    /// How many symbols were added minus how many were removed (or, in a difference, how many
    /// more the local side has than the remote side).
    pub count: i64,
}

impl fmt::Debug for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Cell({:?}, {:016x}, {})",
            Symbol(self.sum),
            self.checksum,
            self.count
        )
    }
}

impl Cell {
    /// Adds (`direction` = 1) or removes (`direction` = −1) a symbol with its checksum.
    fn apply(&mut self, symbol: &[u8; SYMBOL_LEN], checksum: u64, direction: i64) {
        for (s, b) in self.sum.iter_mut().zip(symbol) {
            *s ^= b;
        }
        self.checksum ^= checksum;
        self.count = self.count.wrapping_add(direction);
    }

    /// Whether the cell holds nothing (all symbols cancelled).
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.checksum == 0 && self.sum == [0; SYMBOL_LEN]
    }

    /// `self − other`: the cell of the difference of the two sets.
    pub fn minus(&self, other: &Cell) -> Cell {
        let mut sum = self.sum;
        for (s, b) in sum.iter_mut().zip(&other.sum) {
            *s ^= b;
        }
        Cell {
            sum,
            checksum: self.checksum ^ other.checksum,
            count: self.count.wrapping_sub(other.count),
        }
    }

    /// If exactly one symbol is left in the cell, that symbol and its sign.
    fn pure(&self) -> Option<(Symbol, i64)> {
        if (self.count == 1 || self.count == -1) && checksum(&self.sum) == self.checksum {
            Some((Symbol(self.sum), self.count))
        } else {
            None
        }
    }
}

/// The sequence of cell indices a symbol is mapped to: 0, then increasing.
#[derive(Clone, Copy, Debug)]
pub struct Mapping {
    prng: u64,
    next: u64,
}

impl Mapping {
    /// The mapping of a symbol with this checksum, positioned at index 0.
    pub fn new(checksum: u64) -> Mapping {
        Mapping {
            prng: checksum,
            next: 0,
        }
    }

    /// The next index this mapping will yield (without advancing).
    pub fn peek(&self) -> u64 {
        self.next
    }

    /// Moves to the following index.
    fn advance(&mut self) {
        self.prng = self.prng.wrapping_mul(0xda94_2042_e4dd_58b5);
        let r = self.prng;
        // (1 − u)^(−1/2) with u = r / 2^64, computed as 2^32 / √(r + 1).
        let scale = 4_294_967_296.0 / ((r as f64) + 1.0).sqrt() - 1.0;
        let step = ((self.next as f64 + 1.5) * scale).ceil();
        // `as` saturates; a step of 0 can only come from rounding at r ≈ 2^64.
        let step = (step as u64).max(1);
        self.next = self.next.saturating_add(step);
    }
}

impl Iterator for Mapping {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        let i = self.next;
        if i == u64::MAX {
            return None;
        }
        self.advance();
        Some(i)
    }
}

/// One symbol held by an encoder, with where its mapping stands.
#[derive(Clone, Copy)]
struct Source {
    symbol: [u8; SYMBOL_LEN],
    checksum: u64,
    direction: i64,
    mapping: Mapping,
}

/// Produces the coded stream of a set, incrementally.
///
/// Cells `0..produced()` are materialised; [`Encoder::extend_to`] produces more. Symbols may be
/// added or removed at any time; the produced cells are updated in place, so a host can keep a
/// sketch of its index current as documents change.
#[derive(Clone, Default)]
pub struct Encoder {
    sources: Vec<Source>,
    cells: Vec<Cell>,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("sources", &self.sources.len())
            .field("produced", &self.cells.len())
            .finish()
    }
}

impl Encoder {
    /// An encoder of the empty set.
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// An encoder of the given symbols (which should be distinct).
    pub fn from_symbols(symbols: impl IntoIterator<Item = Symbol>) -> Encoder {
        let mut e = Encoder::new();
        for s in symbols {
            e.add(s);
        }
        e
    }

    /// Number of symbol records held (additions plus removals not yet compacted away).
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Number of cells produced so far.
    pub fn produced(&self) -> usize {
        self.cells.len()
    }

    /// The cells produced so far.
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    fn push(&mut self, symbol: Symbol, direction: i64) {
        let checksum = symbol.checksum();
        let mut mapping = Mapping::new(checksum);
        let produced = self.cells.len() as u64;
        while mapping.peek() < produced {
            let i = mapping.peek() as usize;
            if let Some(c) = self.cells.get_mut(i) {
                c.apply(&symbol.0, checksum, direction);
            }
            mapping.advance();
        }
        self.sources.push(Source {
            symbol: symbol.0,
            checksum,
            direction,
            mapping,
        });
    }

    /// Adds a symbol to the set.
    pub fn add(&mut self, symbol: Symbol) {
        self.push(symbol, 1);
    }

    /// Removes a symbol from the set (it must have been added). Recorded as a cancelling entry,
    /// so removal costs the same as addition; [`Encoder::compact`] drops cancelled pairs.
    pub fn remove(&mut self, symbol: Symbol) {
        self.push(symbol, -1);
    }

    /// Drops symbol records that cancel each other out. Produced cells are unchanged.
    pub fn compact(&mut self) {
        let mut net: std::collections::HashMap<[u8; SYMBOL_LEN], i64> =
            std::collections::HashMap::new();
        for s in &self.sources {
            *net.entry(s.symbol).or_insert(0) += s.direction;
        }
        self.sources.retain(|s| {
            let Some(n) = net.get_mut(&s.symbol) else {
                return false;
            };
            if *n != 0 && n.signum() == s.direction {
                *n -= s.direction;
                true
            } else {
                false
            }
        });
    }

    /// Produces cells up to (not including) index `n`.
    pub fn extend_to(&mut self, n: usize) {
        if n <= self.cells.len() {
            return;
        }
        self.cells.resize(n, Cell::default());
        let end = n as u64;
        for s in &mut self.sources {
            while s.mapping.peek() < end {
                let i = s.mapping.peek() as usize;
                if let Some(c) = self.cells.get_mut(i) {
                    c.apply(&s.symbol, s.checksum, s.direction);
                }
                s.mapping.advance();
            }
        }
    }
}

/// `a − b` cell by cell over their common prefix.
pub fn subtract(a: &[Cell], b: &[Cell]) -> Vec<Cell> {
    a.iter().zip(b).map(|(x, y)| x.minus(y)).collect()
}

/// The symbols only one side holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Difference {
    /// Symbols the local side (the minuend of the difference) holds and the remote does not.
    pub local_only: Vec<Symbol>,
    /// Symbols the remote side holds and the local does not.
    pub remote_only: Vec<Symbol>,
}

impl Difference {
    /// Total number of differing symbols.
    pub fn len(&self) -> usize {
        self.local_only.len() + self.remote_only.len()
    }

    /// Whether the sets are equal.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a difference could not be peeled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The prefix is too short for this difference; more cells are needed.
    #[error("集合差异尚未解出，需要更多编码单元 (need more cells: peeled {peeled} symbols, {stuck} cells left)")]
    NeedMore {
        /// Symbols peeled before getting stuck (a lower bound on the difference).
        peeled: usize,
        /// Cells that are still not empty.
        stuck: usize,
    },
    /// The cells cannot be the difference of two sets of distinct symbols.
    #[error("编码单元不一致 (cells are inconsistent)")]
    Inconsistent,
}

/// Peels the difference cells `local − remote` (a prefix of the stream, starting at index 0).
pub fn decode(diff: &[Cell]) -> Result<Difference, DecodeError> {
    let n = diff.len();
    let mut cells = diff.to_vec();
    let mut out = Difference::default();
    let mut stack: Vec<usize> = (0..n).filter(|&i| cells[i].pure().is_some()).collect();
    let mut peels = 0usize;
    while let Some(i) = stack.pop() {
        let Some((symbol, sign)) = cells.get(i).and_then(Cell::pure) else {
            continue;
        };
        peels += 1;
        if peels > n {
            return Err(DecodeError::Inconsistent);
        }
        if sign > 0 {
            out.local_only.push(symbol);
        } else {
            out.remote_only.push(symbol);
        }
        let sum = symbol.0;
        let cs = symbol.checksum();
        for j in Mapping::new(cs) {
            let Some(c) = usize::try_from(j).ok().and_then(|j| cells.get_mut(j)) else {
                break;
            };
            c.apply(&sum, cs, -sign);
            if c.count == 1 || c.count == -1 {
                // `j < n` because `cells.get_mut(j)` succeeded.
                stack.push(j as usize);
            }
        }
    }
    let stuck = cells.iter().filter(|c| !c.is_empty()).count();
    if stuck == 0 {
        Ok(out)
    } else {
        Err(DecodeError::NeedMore {
            peeled: out.len(),
            stuck,
        })
    }
}

/// Estimates how many symbols differ from a difference prefix that did not decode.
///
/// A differing symbol lands in cell `i` with probability `p_i = 1/(1 + i/2)`, so with `d`
/// differences about `Σ (1 − p_i)^d` cells stay empty. This solves that for `d` given the
/// empty cells seen. With no empty cell at all it returns the largest `d` for which seeing
/// none is still unlikely — a lower bound, not an estimate.
pub fn estimate_difference(diff: &[Cell]) -> u64 {
    let empty = diff.iter().filter(|c| c.is_empty()).count() as f64;
    let expected_empty = |d: f64| -> f64 {
        (0..diff.len())
            .map(|i| (1.0 - 1.0 / (1.0 + i as f64 / 2.0)).powf(d))
            .sum()
    };
    // Cell 0 is never empty for d > 0; `expected_empty` decreases in d.
    let target = empty.max(0.5);
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while expected_empty(hi) > target && hi < 1e9 {
        hi *= 2.0;
    }
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        if expected_empty(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi.ceil() as u64
}

/// Size of the XOR part of a fingerprint.
pub const FINGERPRINT_LEN: usize = SYMBOL_LEN;

/// A fingerprint of a whole set: the XOR of its symbols and how many there are. Equal sets have
/// equal fingerprints; unequal sets collide with probability about 2⁻¹²⁸.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Fingerprint {
    /// XOR of all symbols.
    pub xor: [u8; FINGERPRINT_LEN],
    /// Number of symbols.
    pub count: u64,
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({:?}, {})", Symbol(self.xor), self.count)
    }
}

impl Fingerprint {
    /// Adds a symbol to the set.
    pub fn add(&mut self, s: &Symbol) {
        for (x, b) in self.xor.iter_mut().zip(&s.0) {
            *x ^= b;
        }
        self.count = self.count.wrapping_add(1);
    }

    /// Removes a symbol from the set.
    pub fn remove(&mut self, s: &Symbol) {
        for (x, b) in self.xor.iter_mut().zip(&s.0) {
            *x ^= b;
        }
        self.count = self.count.wrapping_sub(1);
    }

    /// The fingerprint of a set of symbols.
    pub fn of<'a>(symbols: impl IntoIterator<Item = &'a Symbol>) -> Fingerprint {
        let mut f = Fingerprint::default();
        for s in symbols {
            f.add(s);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// A deterministic generator of random symbols (SplitMix64).
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix64(self.0)
        }
        fn symbol(&mut self) -> Symbol {
            let mut s = [0u8; SYMBOL_LEN];
            s[..8].copy_from_slice(&self.next().to_le_bytes());
            s[8..].copy_from_slice(&self.next().to_le_bytes());
            Symbol(s)
        }
    }

    /// Builds two sets sharing `common` symbols, with `only_a` and `only_b` private ones.
    fn sets(
        g: &mut Gen,
        common: usize,
        only_a: usize,
        only_b: usize,
    ) -> (Vec<Symbol>, Vec<Symbol>) {
        let shared: Vec<Symbol> = (0..common).map(|_| g.symbol()).collect();
        let mut a = shared.clone();
        let mut b = shared;
        a.extend((0..only_a).map(|_| g.symbol()));
        b.extend((0..only_b).map(|_| g.symbol()));
        (a, b)
    }

    /// The smallest prefix that decodes (decoding success is monotone in the prefix length).
    fn min_cells(a: &Encoder, b: &Encoder) -> Option<usize> {
        let diff = subtract(a.cells(), b.cells());
        let ok = |n: usize| decode(&diff[..n]).is_ok();
        // At least one cell: an empty prefix "decodes" trivially.
        let (mut lo, mut hi) = (1usize, diff.len());
        if !ok(hi) {
            return None;
        }
        while lo < hi {
            let mid = (lo + hi) / 2;
            if ok(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Some(lo)
    }

    #[test]
    fn symbol_is_blake3_of_key_and_digest() {
        let key = DocKey::parse("510122104201/content/abc-DEF_0").expect("key");
        let digest = crate::digest::heads_digest(&[automerge::ChangeHash([7; 32])]);
        let mut bytes = key.to_bytes();
        bytes.extend_from_slice(&digest.0);
        let want = blake3::hash(&bytes);
        assert_eq!(Symbol::of(&key, &digest).0, want.as_bytes()[..SYMBOL_LEN]);
    }

    #[test]
    fn mapping_starts_at_zero_and_increases_with_the_right_density() {
        let mut g = Gen(7);
        let n = 1000u64;
        let mut hits = vec![0u32; n as usize];
        let trials = 4000;
        for _ in 0..trials {
            let m = Mapping::new(g.symbol().checksum());
            let mut last = None;
            for i in m.take_while(|&i| i < n) {
                if let Some(l) = last {
                    assert!(i > l, "indices strictly increase");
                } else {
                    assert_eq!(i, 0, "every symbol maps to cell 0");
                }
                last = Some(i);
                hits[i as usize] += 1;
            }
        }
        // P(index i) ≈ 1/(1 + i/2).
        for i in [1usize, 10, 100, 500] {
            let p = f64::from(hits[i]) / f64::from(trials);
            let want = 1.0 / (1.0 + i as f64 / 2.0);
            assert!(
                (p - want).abs() < 0.25 * want + 0.01,
                "i={i}: {p} vs {want}"
            );
        }
    }

    #[test]
    fn equal_sets_decode_to_nothing() {
        let mut g = Gen(1);
        let (a, b) = sets(&mut g, 1000, 0, 0);
        let mut ea = Encoder::from_symbols(a);
        let mut eb = Encoder::from_symbols(b);
        ea.extend_to(1);
        eb.extend_to(1);
        let d = decode(&subtract(ea.cells(), eb.cells())).expect("decodes");
        assert!(d.is_empty());
    }

    #[test]
    fn incremental_add_remove_matches_fresh_encoding() {
        let mut g = Gen(2);
        let syms: Vec<Symbol> = (0..500).map(|_| g.symbol()).collect();
        let mut inc = Encoder::from_symbols(syms[..400].iter().copied());
        inc.extend_to(64);
        for s in &syms[400..] {
            inc.add(*s);
        }
        for s in &syms[..50] {
            inc.remove(*s);
        }
        inc.extend_to(200);
        let mut fresh = Encoder::from_symbols(syms[50..].iter().copied());
        fresh.extend_to(200);
        assert_eq!(inc.cells(), fresh.cells());
        inc.compact();
        assert_eq!(inc.sources(), 450);
        inc.extend_to(300);
        fresh.extend_to(300);
        assert_eq!(inc.cells(), fresh.cells());
    }

    #[test]
    fn decodes_both_directions() {
        let mut g = Gen(3);
        let (a, b) = sets(&mut g, 5000, 7, 5);
        let a_only: HashSet<Symbol> = a[5000..].iter().copied().collect();
        let b_only: HashSet<Symbol> = b[5000..].iter().copied().collect();
        let mut ea = Encoder::from_symbols(a);
        let mut eb = Encoder::from_symbols(b);
        ea.extend_to(60);
        eb.extend_to(60);
        let d = decode(&subtract(ea.cells(), eb.cells())).expect("decodes");
        assert_eq!(d.local_only.iter().copied().collect::<HashSet<_>>(), a_only);
        assert_eq!(
            d.remote_only.iter().copied().collect::<HashSet<_>>(),
            b_only
        );
        // And from the other side, mirrored.
        let d = decode(&subtract(eb.cells(), ea.cells())).expect("decodes");
        assert_eq!(d.local_only.iter().copied().collect::<HashSet<_>>(), b_only);
    }

    #[test]
    fn too_few_cells_asks_for_more() {
        let mut g = Gen(4);
        let (a, b) = sets(&mut g, 100, 40, 40);
        let mut ea = Encoder::from_symbols(a);
        let mut eb = Encoder::from_symbols(b);
        ea.extend_to(20);
        eb.extend_to(20);
        assert!(matches!(
            decode(&subtract(ea.cells(), eb.cells())),
            Err(DecodeError::NeedMore { .. })
        ));
    }

    /// The overhead measurement the protocol's batch sizing relies on: cells needed per
    /// differing symbol, for d ∈ {1, 10, 100, 1000} over sets of 50,000 symbols.
    #[test]
    fn overhead_over_50k() {
        let n = 50_000;
        let mut g = Gen(0x5eed);
        let mut report = Vec::new();
        for (d, trials) in [(1usize, 20usize), (10, 20), (100, 8), (1000, 2)] {
            let mut total = 0usize;
            let mut worst = 0usize;
            for _ in 0..trials {
                // Half the difference on each side; the common part makes the sets 50k large.
                let (a, b) = sets(&mut g, n - d / 2, d / 2, d - d / 2);
                let mut ea = Encoder::from_symbols(a);
                let mut eb = Encoder::from_symbols(b);
                let cap = 3 * d + 40;
                ea.extend_to(cap);
                eb.extend_to(cap);
                let m = min_cells(&ea, &eb).expect("decodes within 3d+40 cells");
                total += m;
                worst = worst.max(m);
            }
            let mean = total as f64 / trials as f64;
            let overhead = mean / d as f64;
            report.push(format!(
                "d={d}: mean {mean:.1} cells ({overhead:.2}×d), worst {worst}"
            ));
            // Small differences pay a constant; large ones approach the asymptotic ≈1.35.
            let bound = match d {
                1 => 3.0,
                10 => 2.6,
                _ => 1.75,
            };
            assert!(
                overhead <= bound,
                "d={d}: overhead {overhead:.2} exceeds {bound}"
            );
        }
        println!("RIBLT overhead over N={n}: {}", report.join("; "));
    }

    #[test]
    fn estimates_difference_from_too_short_prefixes() {
        let mut g = Gen(9);
        for (d, n) in [(40usize, 32usize), (200, 64), (1000, 256), (3000, 128)] {
            let (a, b) = sets(&mut g, 2000, d / 2, d - d / 2);
            let mut ea = Encoder::from_symbols(a);
            let mut eb = Encoder::from_symbols(b);
            ea.extend_to(n);
            eb.extend_to(n);
            let diff = subtract(ea.cells(), eb.cells());
            assert!(decode(&diff).is_err());
            let e = estimate_difference(&diff) as f64;
            println!("d={d}, {n} cells: estimate {e}");
            assert!(e <= 2.0 * d as f64, "d={d}: {e}");
            // With empty cells it is an estimate; without, a lower bound.
            if diff.iter().any(Cell::is_empty) {
                assert!(e >= d as f64 / 2.0, "d={d}: {e}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn decode_never_panics_on_adversarial_cells(
            raw in proptest::collection::vec(
                (any::<[u8; 16]>(), any::<u64>(), any::<i64>()), 0..200)
        ) {
            let cells: Vec<Cell> = raw
                .into_iter()
                .map(|(sum, checksum, count)| Cell { sum, checksum, count: count % 4 })
                .collect();
            let _ = decode(&cells);
        }

        #[test]
        fn decode_never_panics_on_crafted_pure_cells(
            syms in proptest::collection::vec(any::<[u8; 16]>(), 0..60),
            signs in proptest::collection::vec(any::<bool>(), 60),
        ) {
            // Every cell looks pure but none is consistent with the mapping.
            let cells: Vec<Cell> = syms
                .iter()
                .zip(&signs)
                .map(|(s, &pos)| Cell {
                    sum: *s,
                    checksum: checksum(s),
                    count: if pos { 1 } else { -1 },
                })
                .collect();
            let _ = decode(&cells);
        }

        #[test]
        fn random_differences_decode_exactly(
            seed in any::<u64>(), common in 0usize..300, da in 0usize..12, db in 0usize..12
        ) {
            let mut g = Gen(seed);
            let (a, b) = sets(&mut g, common, da, db);
            let mut ea = Encoder::from_symbols(a.clone());
            let mut eb = Encoder::from_symbols(b.clone());
            let mut m = 8;
            loop {
                ea.extend_to(m);
                eb.extend_to(m);
                match decode(&subtract(ea.cells(), eb.cells())) {
                    Ok(d) => {
                        let mut l = d.local_only.clone();
                        l.sort();
                        let mut want: Vec<Symbol> = a[common..].to_vec();
                        want.sort();
                        prop_assert_eq!(l, want);
                        prop_assert_eq!(d.remote_only.len(), db);
                        break;
                    }
                    Err(DecodeError::NeedMore { .. }) => {
                        prop_assert!(m < 1000, "did not decode with {} cells", m);
                        m *= 2;
                    }
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
        }
    }
}
