//! Fuzzes the session state machine: whatever frames a peer sends after its hello, a session
//! never panics, never queues a frame it cannot encode, and never hands the host a document
//! outside the shared scope.
#![no_main]

use automerge::transaction::Transactable;
use automerge::{AutomergeError, ROOT};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::{DocKey, Role};
use cunyun_protocol::sync::session::{Event, Session, SessionConfig};
use cunyun_protocol::sync::wire::{decode, encode};
use cunyun_protocol::sync::{MemStore, SharedScope};
use libfuzzer_sys::fuzz_target;

fn ident(n: u8, role: Role, scope: &str) -> NodeIdentity {
    NodeIdentity {
        node_id: NodeId([n; 16]),
        role,
        scope: AreaScope::parse(scope).expect("scope"),
    }
}

fuzz_target!(|data: &[u8]| {
    let village = ident(1, Role::Village, "510122104201");
    let county = ident(2, Role::County, "510122");
    let mut store = MemStore::new(b"fuzz");
    for i in 0..3 {
        let k = DocKey::parse(&format!("510122104201/hh/h{i}")).expect("key");
        store
            .edit(&k, |tx| tx.put(ROOT, "n", i as i64).map(|_| ()))
            .map_err(|e: AutomergeError| e)
            .expect("edit");
    }
    let peer_store = MemStore::new(b"peer");
    let shared = SharedScope::between(&village, &county);
    let mut s = Session::new(SessionConfig::new(village, county), &store).expect("session");
    let mut peer = Session::new(SessionConfig::new(county, village), &peer_store).expect("peer");
    let hello = peer.poll_outgoing().expect("hello");
    let _ = s.handle(&store, hello);
    let mut rest = data;
    while let Ok((frame, used)) = decode(rest) {
        rest = &rest[used..];
        let _ = s.handle(&store, frame);
        while let Some(e) = s.poll_event() {
            if let Event::Apply { key, .. } = e {
                assert!(shared.contains(&key));
            }
        }
        while let Some(f) = s.poll_outgoing() {
            assert!(encode(&f).is_ok());
        }
    }
});
