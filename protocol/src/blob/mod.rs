//! Content blob transfer without I/O: a fetcher gets an item's signed manifest and the chunks
//! it lacks from a peer that holds them, verifying each chunk before the host stores it.
//!
//! - [`wire`]: the frames and their limited, versioned binary encoding.
//! - [`fetch`]: [`Fetcher`], the fetching side: manifests verified against trusted hub keys,
//!   chunks checked against the manifest's hashes, a credit window that keeps the link full
//!   without running far ahead, and the partial chunk handed back after a cut.
//! - [`serve`]: [`Server`], the serving side: answers in request order within the credit.
//!
//! # Exchange
//!
//! ```text
//! fetcher                                   server
//! GetManifests [id, ...]           ──▶
//!                                  ◀──      Manifest bytes | NotFound id   (in request order)
//! (host stores the verified manifest, lists missing chunks with any kept prefixes)
//! Want id [(rendition, chunk, offset), ...], Credit n   ──▶
//!                                  ◀──      Piece ... Piece (each chunk in order) | Missing
//! Credit n' (as pieces arrive)     ──▶
//! ```
//!
//! **Resumption.** Nothing is remembered per connection: a new transfer after a cut asks again
//! for whatever the host still lacks, and for the chunk that was cut, only the bytes after the
//! prefix the host kept ([`Fetcher::partial`]). The prefix is checked with the rest once the
//! chunk is whole; if the whole fails its hash, the chunk is asked for again from byte 0.
//!
//! **Trust.** A server is never trusted: manifests must verify under a trusted hub key and
//! match the id asked for, and chunks must match the signed hashes, so a county node (or any
//! node) can serve what it has cached to villages without being able to alter it.

pub mod fetch;
pub mod serve;
pub mod wire;

pub use fetch::{FetchConfig, FetchError, FetchEvent, FetchStats, Fetcher, MissingChunk};
pub use serve::{ServeError, ServeRequest, ServeStats, Server};
pub use wire::{BlobWireError, Frame, FrameReader, WantItem};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
