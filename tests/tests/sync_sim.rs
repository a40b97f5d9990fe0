//! Deterministic multi-node simulation of the sync protocol: a county of villages, a county
//! node, a provincial hub and a data mule exchange real household documents over links that
//! break and heal, and must end up agreeing on everything they may share.
//!
//! No threads, sockets or clocks: every session runs in-process through
//! `cunyun_protocol::sync::mem::run_pair` (frames go through the real wire encoding), every
//! random choice comes from a seeded ChaCha8 generator, and every loop is bounded.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{AutoSerde, AutomergeError, ROOT};
use cunyun_node::sample::{sample_edit, sample_village};
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::household::HouseholdProfile;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::{DocKey, Kind, Role};
use cunyun_protocol::sync::mem::{run_pair, MemStore, PairReport};
use cunyun_protocol::sync::session::{Event, Mode, Outcome};
use cunyun_protocol::sync::{PeerMemory, SessionConfig, SharedScope};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const COUNTY: &str = "510122";
const TOWNSHIPS: [&str; 3] = ["510122104", "510122105", "510122106"];
const VILLAGES_PER_TOWNSHIP: usize = 6;
const HOUSEHOLDS_PER_VILLAGE: usize = 4;
const STEPS: usize = 24;
const MAX_HEAL_PASSES: usize = 10;

const NOTES: [&str; 5] = [
    "复访：老人身体尚可。",
    "已加入村微信群。",
    "儿子春节返乡。",
    "需要上门讲解猪瘟防控。",
    "",
];

struct Node {
    name: String,
    id: NodeIdentity,
    store: MemStore,
    /// Per peer: what this node remembers from the last converged session.
    memory: BTreeMap<NodeId, PeerMemory>,
}

impl Node {
    fn new(n: usize, name: String, role: Role, scope: &str) -> Node {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(n as u64 + 1).to_be_bytes());
        Node {
            store: MemStore::new(name.as_bytes()),
            name,
            id: NodeIdentity {
                node_id: NodeId(id),
                role,
                scope: AreaScope::parse(scope).expect("scope"),
            },
            memory: BTreeMap::new(),
        }
    }

    fn is_village(&self) -> bool {
        self.id.role == Role::Village
    }

    /// Household profile keys this node holds.
    fn households(&self) -> Vec<DocKey> {
        self.store
            .keys()
            .filter(|k| k.kind() == Kind::Hh)
            .cloned()
            .collect()
    }
}

#[derive(Default, Debug)]
struct Totals {
    sessions: usize,
    warm: usize,
    cold: usize,
    no_change: usize,
    bytes: u64,
    flights: u64,
    max_flights: u32,
    docs_applied: usize,
    profile_edits: usize,
    private_edits: usize,
    new_households: usize,
    hub_edits: usize,
}

struct Sim {
    rng: ChaCha8Rng,
    nodes: Vec<Node>,
    links: Vec<(usize, usize)>,
    totals: Totals,
    next_household: u32,
}

fn write_profile(store: &mut MemStore, key: &DocKey, profile: &HouseholdProfile) {
    store
        .edit(key, |tx| profile.write_to(tx))
        .unwrap_or_else(|e| panic!("write {key}: {e:?}"));
}

/// The profile as the node's copy of the document holds it, if it can be read back.
fn read_profile(store: &MemStore, key: &DocKey) -> Option<HouseholdProfile> {
    let doc = store.doc(key)?;
    let value = serde_json::to_value(AutoSerde::from(doc)).ok()?;
    HouseholdProfile::from_json(&value).ok()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut nodes = vec![
            Node::new(0, "county".into(), Role::County, COUNTY),
            Node::new(1, "hub".into(), Role::Hub, "51"),
            Node::new(2, "mule".into(), Role::Mule, COUNTY),
        ];
        let mut links = vec![(0, 1), (0, 2)];
        for (t, township) in TOWNSHIPS.iter().enumerate() {
            let first = nodes.len();
            for v in 0..VILLAGES_PER_TOWNSHIP {
                let code = format!("{township}{:03}", 201 + v);
                let n = nodes.len();
                let mut node = Node::new(n, format!("v{t}{v}"), Role::Village, &code);
                let area = AreaCode::parse(&code).expect("village code");
                for h in sample_village(area, HOUSEHOLDS_PER_VILLAGE, seed ^ (n as u64) << 8) {
                    let k = h.profile.key(&h.id).expect("key");
                    write_profile(&mut node.store, &k, &h.profile);
                    let hp = k.with_kind(Kind::Hp);
                    node.store
                        .edit(&hp, |tx| h.private.write_to(tx))
                        .expect("write hp");
                }
                nodes.push(node);
                links.push((n, 0)); // upstream to the county
                links.push((n, 2)); // the mule's round
                if v > 0 {
                    links.push((n - 1, n)); // neighbouring villages
                }
            }
            links.push((first, 1)); // one village per township reaches the hub directly
        }
        // Province-wide content and a county expert, written at the hub.
        let hub = &mut nodes[1].store;
        for c in 0..3 {
            let k = DocKey::parse(&format!("510000000000/content/c{c}")).expect("key");
            put(hub, &k, "title", c);
        }
        let expert = DocKey::parse("510122000000/expert/e1").expect("key");
        put(hub, &expert, "field", 1);
        Sim {
            rng: ChaCha8Rng::seed_from_u64(seed),
            nodes,
            links,
            totals: Totals::default(),
            next_household: 0,
        }
    }

    /// One random edit somewhere.
    fn edit(&mut self) {
        let n = self.rng.gen_range(0..self.nodes.len());
        let roll = self.rng.gen_range(0..10u8);
        let role = self.nodes[n].id.role;
        match role {
            Role::Hub => {
                if roll < 5 {
                    let c = self.rng.gen_range(0..5);
                    let k = DocKey::parse(&format!("510000000000/content/c{c}")).expect("key");
                    let v = self.rng.gen_range(0..1000);
                    put(&mut self.nodes[n].store, &k, "views", v);
                    self.totals.hub_edits += 1;
                } else if let Some(hh) = self.nodes[n].households().choose(&mut self.rng).cloned() {
                    // A recommendation for a household, keyed at its village.
                    let rec = hh.with_kind(Kind::Rec);
                    let v = self.rng.gen_range(0..1000);
                    put(&mut self.nodes[n].store, &rec, "content", v);
                    self.totals.hub_edits += 1;
                }
            }
            Role::Village if roll < 2 => {
                // A new household, recorded door to door.
                let village = self.nodes[n].id.scope.area();
                self.next_household += 1;
                let seed = self.rng.gen();
                if let Some(mut h) = sample_village(village, 1, seed).pop() {
                    h.id = format!("n{:07}", self.next_household);
                    let k = h.profile.key(&h.id).expect("key");
                    write_profile(&mut self.nodes[n].store, &k, &h.profile);
                    self.nodes[n]
                        .store
                        .edit(&k.with_kind(Kind::Hp), |tx| h.private.write_to(tx))
                        .expect("write hp");
                    self.totals.new_households += 1;
                }
            }
            _ => {
                // Revisit a household this node holds: the profile, or its private notes.
                let Some(k) = self.nodes[n].households().choose(&mut self.rng).cloned() else {
                    return;
                };
                if roll < 6 {
                    let Some(mut profile) = read_profile(&self.nodes[n].store, &k) else {
                        return;
                    };
                    sample_edit(&mut profile, &mut self.rng);
                    write_profile(&mut self.nodes[n].store, &k, &profile);
                    self.totals.profile_edits += 1;
                } else if role != Role::Hub {
                    let note = *NOTES.choose(&mut self.rng).unwrap_or(&"");
                    let hp = k.with_kind(Kind::Hp);
                    if self.nodes[n].store.doc(&hp).is_some() {
                        self.nodes[n]
                            .store
                            .edit(&hp, |tx| tx.put(ROOT, "visit_note", note).map(|_| ()))
                            .map_err(|e: AutomergeError| e)
                            .expect("edit hp");
                        self.totals.private_edits += 1;
                    }
                }
            }
        }
    }

    /// Runs one session over a link and checks it converged.
    fn sync(&mut self, a: usize, b: usize) -> PairReport {
        let (x, y) = if a < b { (a, b) } else { (b, a) };
        let (left, right) = self.nodes.split_at_mut(y);
        let (na, nb) = (&mut left[x], &mut right[0]);
        let estimate = Some(self.rng.gen_range(0..8u64)).filter(|e| *e > 0);
        let config = |me: &Node, peer: &Node| SessionConfig {
            local: me.id,
            peer: peer.id,
            memory: me.memory.get(&peer.id.node_id).copied(),
            estimate,
            max_rounds: 3,
        };
        let (ca, cb) = (config(na, nb), config(nb, na));
        let report = run_pair(&mut na.store, ca, &mut nb.store, cb).expect("sessions start");
        assert!(
            report.converged(),
            "{} <-> {}: {:?}",
            na.name,
            nb.name,
            report.outcome
        );
        assert_eq!(report.unencodable, [0, 0]);
        for (i, node) in [&mut *na, &mut *nb].into_iter().enumerate() {
            assert!(
                report.apply_errors[i].is_empty(),
                "{}: {:?}",
                node.name,
                report.apply_errors[i]
            );
            for e in &report.events[i] {
                assert!(
                    matches!(e, Event::Converged { .. }),
                    "{} <-> peer: unexpected {e:?}",
                    node.name
                );
            }
        }
        let peers = [nb.id.node_id, na.id.node_id];
        for (i, node) in [&mut *na, &mut *nb].into_iter().enumerate() {
            if let Some(Outcome::Converged(m)) = &report.outcome[i] {
                node.memory.insert(peers[i], *m);
            }
        }
        let t = &mut self.totals;
        t.sessions += 1;
        match report.stats[0].mode {
            Mode::Hello => t.no_change += 1,
            Mode::Watermark => t.warm += 1,
            Mode::Sketch => t.cold += 1,
        }
        t.bytes += report.total_bytes();
        t.flights += u64::from(report.flights);
        t.max_flights = t.max_flights.max(report.flights);
        t.docs_applied += report.applied[0] + report.applied[1];
        report
    }

    fn step(&mut self) {
        for _ in 0..self.rng.gen_range(2..8) {
            self.edit();
        }
        // A random partition: each link is up with a probability drawn for this step.
        let p = self.rng.gen_range(0.2..0.8);
        let mut up: Vec<(usize, usize)> = self
            .links
            .clone()
            .into_iter()
            .filter(|_| self.rng.gen_bool(p))
            .collect();
        up.shuffle(&mut self.rng);
        for (a, b) in up {
            self.sync(a, b);
        }
    }

    /// Heals every link and syncs until a whole pass moves nothing.
    fn heal(&mut self) -> usize {
        for pass in 1..=MAX_HEAL_PASSES {
            let mut links = self.links.clone();
            links.shuffle(&mut self.rng);
            let mut moved = 0;
            for (a, b) in links {
                let r = self.sync(a, b);
                moved += r.applied[0] + r.applied[1];
            }
            if moved == 0 {
                return pass;
            }
        }
        panic!("not quiet after {MAX_HEAL_PASSES} healed passes");
    }

    fn check(&self) {
        let may_hold = |n: &Node, k: &DocKey| k.kind().in_reach(k.area(), &n.id.scope, n.id.role);
        for n in &self.nodes {
            for k in n.store.keys() {
                assert!(may_hold(n, k), "{} holds {k} out of its reach", n.name);
                if n.id.role == Role::Hub {
                    assert_ne!(k.kind(), Kind::Hp, "the hub holds {k}");
                }
                if n.is_village() {
                    let own = n.id.scope.contains(k.area());
                    let flows = k.kind().reach().flows_down;
                    assert!(own || flows, "{} holds another village's {k}", n.name);
                }
            }
        }
        let mut compared = 0usize;
        for a in &self.nodes {
            for b in &self.nodes {
                if a.id.node_id >= b.id.node_id {
                    continue;
                }
                let shared = SharedScope::between(&a.id, &b.id);
                for k in a.store.keys().chain(b.store.keys()) {
                    if shared.contains(k) {
                        assert_eq!(
                            a.store.heads_of(k),
                            b.store.heads_of(k),
                            "{} and {} disagree on {k}",
                            a.name,
                            b.name
                        );
                        compared += 1;
                    }
                }
            }
        }
        assert!(compared > 1000, "only {compared} comparisons");
        // Every household reached the county, the mule and the hub; its private part only the
        // county and the mule.
        let county = &self.nodes[0];
        for v in self.nodes.iter().filter(|n| n.is_village()) {
            for k in v.store.keys() {
                assert!(county.store.doc(k).is_some() || !may_hold(county, k));
                if k.kind() == Kind::Hh {
                    assert!(self.nodes[1].store.doc(k).is_some(), "hub lacks {k}");
                }
            }
        }
    }
}

fn put(store: &mut MemStore, key: &DocKey, field: &str, v: i64) {
    store
        .edit(key, |tx| tx.put(ROOT, field, v).map(|_| ()))
        .map_err(|e: AutomergeError| e)
        .expect("edit");
}

#[test]
fn villages_county_hub_and_mule_converge_under_partitions() {
    for seed in [1u64, 2, 3] {
        let mut sim = Sim::new(seed);
        assert!(sim.nodes.len() >= 20);
        for _ in 0..STEPS {
            sim.step();
        }
        let passes = sim.heal();
        sim.check();
        let t = &sim.totals;
        println!(
            "seed {seed}: {} nodes, {} sessions ({} no-change, {} warm, {} cold), \
             {} docs applied, {:.1} KB, mean {:.2} flights (max {}), quiet after {passes} \
             healed pass(es); county holds {} docs, hub {}; edits: {} profile, {} private, \
             {} new households, {} at the hub",
            sim.nodes.len(),
            t.sessions,
            t.no_change,
            t.warm,
            t.cold,
            t.docs_applied,
            t.bytes as f64 / 1024.0,
            t.flights as f64 / t.sessions as f64,
            t.max_flights,
            sim.nodes[0].store.len(),
            sim.nodes[1].store.len(),
            t.profile_edits,
            t.private_edits,
            t.new_households,
            t.hub_edits,
        );
        assert!(passes <= 3, "healing took {passes} passes");
        assert!(t.warm > 0 && t.cold > 0 && t.no_change > 0, "{t:?}");
        assert!(
            t.profile_edits > 10 && t.private_edits > 5 && t.new_households > 0,
            "{t:?}"
        );
    }
}
