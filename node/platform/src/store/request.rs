//! The messages the writer thread takes ([`Request`]) and where a commit's outcome goes
//! ([`Ack`]): the one channel between the store's handles and its writer.

use std::sync::mpsc::{Sender, SyncSender};

use cunyun_protocol::key::DocKey;

use super::error::StoreError;
use super::types::{CompactStats, DocWrite, QuarantineRecord, VerifyReport};

/// A message to the writer thread.
pub(crate) enum Request {
    /// Store these writes atomically and durably, then acknowledge.
    Commit {
        /// The writes.
        writes: Vec<DocWrite>,
        /// Documents to remove whole (chunks and index entry), in the same atomic batch.
        removes: Vec<DocKey>,
        /// Where to send the outcome.
        ack: Ack,
    },
    /// Persist a quarantine record found by a reader.
    Quarantine(QuarantineRecord),
    /// Compact every document with more than one chunk, then reply.
    CompactAll(Sender<Result<CompactStats, StoreError>>),
    /// Check index, chunks and totals against each other, then reply.
    Verify(Sender<Result<VerifyReport, StoreError>>),
}

/// Where a commit's outcome goes.
pub(crate) enum Ack {
    /// A thread blocked in `commit`.
    Blocking(SyncSender<Result<(), StoreError>>),
    /// A task awaiting `commit_async`.
    Async(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
}

impl Ack {
    pub(crate) fn send(self, result: Result<(), StoreError>) {
        // A caller that gave up waiting is not an error.
        match self {
            Ack::Blocking(tx) => {
                let _ = tx.send(result);
            }
            Ack::Async(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}
