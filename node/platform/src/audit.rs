//! The append-only audit log of a node or hub: `<data_dir>/audit.jsonl`, one JSON object per line.
//!
//! Logged here: logins (ok and failed), logouts, account changes, enrollment tokens issued and
//! used, certificates issued, revocations. Record changes are not copied here: every change
//! carries its author in the Automerge history, and the audit view reads them from there
//! ([`record_changes`]).
//!
//! An event is appended with one `write` on a file opened `O_APPEND` (so the node and a CLI
//! command writing at once never interleave lines) and fsync'd before [`Audit::record`] returns:
//! an action is acknowledged only after its audit line is durable. Lines are never rewritten;
//! an unreadable line (a torn write after a power cut) is skipped when reading.
//!
//! ```json
//! {"ts_ms":1764576000000,"actor":"wangli","action":"login","target":"wangli","ok":true,"detail":""}
//! ```

use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::store::DocStore;

/// File name of the audit log inside a data directory.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// Longest line kept (longer details are cut), so one event is one small write.
const MAX_DETAIL_CHARS: usize = 512;
/// Longest actor kept (a failed login logs the name as typed).
const MAX_NAME_CHARS: usize = 64;

/// Why the audit log could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("审计日志 {path} 读写失败: {source}")]
pub struct AuditError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub source: std::io::Error,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When (ms since the epoch).
    pub ts_ms: u64,
    /// Who did it: an account name, `cli` for a command run on the machine, a node id for a peer.
    pub actor: String,
    /// What: `login`, `login_failed`, `logout`, `account_add`, `account_passwd`,
    /// `account_disable`, `account_enable`, `account_remove`, `enroll_token_issued`,
    /// `enroll_token_used`, `cert_issued`, `revoke`, `record_change`.
    pub action: String,
    /// What it was done to (an account, a node id, a document key).
    pub target: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Free text (in Chinese or an id), cut to 512 characters (the actor to 64, the target to 512).
    #[serde(default)]
    pub detail: String,
}

impl AuditEvent {
    /// A successful event now.
    pub fn now(actor: &str, action: &str, target: &str, detail: impl Into<String>) -> AuditEvent {
        AuditEvent {
            ts_ms: crate::clock::now_ms(),
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            ok: true,
            detail: detail.into(),
        }
    }

    /// The same event marked failed.
    pub fn failed(mut self) -> AuditEvent {
        self.ok = false;
        self
    }
}

/// Which events to show.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditFilter {
    /// Only this actor (exact).
    pub who: Option<String>,
    /// Only actions or targets containing this text.
    pub what: Option<String>,
    /// Only events at or after this time (ms).
    pub from_ms: Option<u64>,
    /// Only events before this time (ms).
    pub to_ms: Option<u64>,
}

impl AuditFilter {
    /// Whether `e` passes every set filter.
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.who.as_ref().is_none_or(|w| &e.actor == w)
            && self
                .what
                .as_ref()
                .is_none_or(|w| e.action.contains(w.as_str()) || e.target.contains(w.as_str()))
            && self.from_ms.is_none_or(|t| e.ts_ms >= t)
            && self.to_ms.is_none_or(|t| e.ts_ms < t)
    }
}

/// The audit log of one data directory.
pub struct Audit {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Audit {
    /// The audit log of the node or hub whose data directory is `dir`.
    pub fn open(dir: &Path) -> Audit {
        Audit {
            path: dir.join(AUDIT_FILE),
            lock: Mutex::new(()),
        }
    }

    /// Appends `event` and fsyncs it; durable when it returns.
    pub fn record(&self, mut event: AuditEvent) -> Result<(), AuditError> {
        for (field, max) in [
            (&mut event.detail, MAX_DETAIL_CHARS),
            (&mut event.actor, MAX_NAME_CHARS),
            (&mut event.target, MAX_DETAIL_CHARS),
        ] {
            if field.chars().count() > max {
                *field = field.chars().take(max).collect();
            }
        }
        let err = |source| AuditError {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(&event)
            .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        line.push(b'\n');
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        // A line torn by a power cut is closed first, so it cannot swallow this one.
        let len = f.metadata().map_err(err)?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            std::os::unix::fs::FileExt::read_at(
                &std::fs::File::open(&self.path).map_err(err)?,
                &mut last,
                len - 1,
            )
            .map_err(err)?;
            if last[0] != b'\n' {
                line.insert(0, b'\n');
            }
        }
        f.write_all(&line).map_err(err)?;
        f.sync_data().map_err(err)?;
        tracing::info!(
            target: "cunyun::_events::audit",
            actor = %event.actor,
            action = %event.action,
            target_ = %event.target,
            ok = event.ok,
        );
        Ok(())
    }

    /// Every readable event matching `filter`, oldest first.
    pub fn read(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, AuditError> {
        let mut out = Vec::new();
        self.for_each(filter, |e| {
            out.push(e);
            true
        })?;
        Ok(out)
    }

    /// Calls `each` with every readable event matching `filter`, oldest first, reading the log
    /// one line at a time (memory does not grow with the log); stops when `each` returns
    /// `false`.
    pub fn for_each(
        &self,
        filter: &AuditFilter,
        mut each: impl FnMut(AuditEvent) -> bool,
    ) -> Result<(), AuditError> {
        let f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(AuditError {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
            let Ok(e) = serde_json::from_str::<AuditEvent>(&line) else {
                continue;
            };
            if filter.matches(&e) && !each(e) {
                break;
            }
        }
        Ok(())
    }
}

/// The newest `limit` of the events pushed into it, and how many were pushed: memory is
/// bounded by `limit`, whatever the number of events.
#[derive(Debug)]
pub struct NewestEvents {
    limit: usize,
    heap: std::collections::BinaryHeap<ByAge>,
    seen: usize,
}

/// An event ordered so that the heap's top is the oldest (the one to drop first).
#[derive(Debug)]
struct ByAge(AuditEvent);

impl PartialEq for ByAge {
    fn eq(&self, other: &Self) -> bool {
        self.0.ts_ms == other.0.ts_ms
    }
}
impl Eq for ByAge {}
impl PartialOrd for ByAge {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByAge {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.ts_ms.cmp(&self.0.ts_ms)
    }
}

impl NewestEvents {
    /// Keeps at most `limit` events.
    pub fn new(limit: usize) -> NewestEvents {
        NewestEvents {
            limit,
            heap: std::collections::BinaryHeap::new(),
            seen: 0,
        }
    }

    /// Offers one event.
    pub fn push(&mut self, e: AuditEvent) {
        self.seen += 1;
        if self.limit == 0 {
            return;
        }
        if self.heap.len() == self.limit {
            match self.heap.peek() {
                Some(oldest) if oldest.0.ts_ms < e.ts_ms => {
                    self.heap.pop();
                }
                _ => return,
            }
        }
        self.heap.push(ByAge(e));
    }

    /// Events offered so far (kept or not).
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// The kept events, newest first.
    pub fn into_newest_first(self) -> Vec<AuditEvent> {
        let mut v: Vec<AuditEvent> = self.heap.into_iter().map(|b| b.0).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.ts_ms));
        v
    }
}

/// Who changed which record when, from the Automerge history of every document in `scope`
/// (each change's actor is its author: the account for the API and `/automerge`, the node id
/// for a node's own writes, `hub` for the hub's), filtered by `filter`; at most `limit` newest.
pub fn record_changes(
    store: &DocStore,
    scope: &cunyun_protocol::area::AreaScope,
    filter: &AuditFilter,
    limit: usize,
) -> Vec<AuditEvent> {
    let docs = store.scan(scope).filter_map(|item| {
        let (key, _) = item.ok()?;
        let doc = store.load(&key).ok()??;
        Some((key, doc))
    });
    record_changes_of(docs, filter, limit)
}

/// [`record_changes`] over any documents (the hub's stores hand them over one at a time); the
/// newest `limit` are kept in a bounded heap while reading.
pub fn record_changes_of(
    docs: impl Iterator<Item = (cunyun_protocol::key::DocKey, automerge::Automerge)>,
    filter: &AuditFilter,
    limit: usize,
) -> Vec<AuditEvent> {
    let mut newest = NewestEvents::new(limit);
    for (key, doc) in docs {
        let target = key.to_string();
        for change in doc.get_changes(&[]) {
            let actor = match change.author() {
                Some(a) => match std::str::from_utf8(a.as_bytes()) {
                    Ok(s) if !s.is_empty() && !s.chars().any(char::is_control) => s.to_string(),
                    _ => a.to_hex_string(),
                },
                None => format!("actor:{}", change.actor_id()),
            };
            let event = AuditEvent {
                ts_ms: u64::try_from(change.timestamp()).unwrap_or(0) * 1000,
                actor,
                action: "record_change".into(),
                target: target.clone(),
                ok: true,
                detail: change.message().unwrap_or_default().to_string(),
            };
            if filter.matches(&event) {
                newest.push(event);
            }
        }
    }
    newest.into_newest_first()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_events_keeps_the_newest_within_its_limit() {
        let mut n = NewestEvents::new(3);
        for ts in [5u64, 1, 9, 3, 7, 2, 8] {
            let mut e = AuditEvent::now("a", "login", "a", "");
            e.ts_ms = ts;
            n.push(e);
        }
        assert_eq!(n.seen(), 7);
        let ts: Vec<u64> = n.into_newest_first().iter().map(|e| e.ts_ms).collect();
        assert_eq!(ts, vec![9, 8, 7]);
        let mut none = NewestEvents::new(0);
        none.push(AuditEvent::now("a", "login", "a", ""));
        assert_eq!((none.seen(), none.into_newest_first().len()), (1, 0));
    }

    #[test]
    fn events_append_durably_and_filter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = Audit::open(dir.path());
        audit
            .record(AuditEvent::now("wangli", "login", "wangli", ""))
            .expect("record");
        audit
            .record(AuditEvent::now("x", "login_failed", "x", "").failed())
            .expect("record");
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(AUDIT_FILE))
            .and_then(|mut f| f.write_all(b"{torn"))
            .expect("torn line");
        audit
            .record(AuditEvent::now("wangli", "logout", "wangli", ""))
            .expect("record after a torn line");
        let all = audit.read(&AuditFilter::default()).expect("read");
        assert_eq!(all.len(), 3);
        assert!(!all[1].ok);
        let f = AuditFilter {
            who: Some("wangli".into()),
            ..Default::default()
        };
        assert_eq!(audit.read(&f).expect("read").len(), 2);
        audit
            .record(AuditEvent::now(&"x".repeat(10_000), "login_failed", "", "").failed())
            .expect("record");
        let long = audit.read(&AuditFilter::default()).expect("read");
        assert_eq!(long.last().expect("event").actor.len(), MAX_NAME_CHARS);
        let f = AuditFilter {
            who: Some("x".into()),
            what: Some("failed".into()),
            ..Default::default()
        };
        assert_eq!(audit.read(&f).expect("read")[0].actor, "x");
    }
}
