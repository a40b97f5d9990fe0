//! A test host for network-namespace tests: announces a node on mDNS, browses, and prints one
//! line `FOUND <node id> <addr>` per peer it discovers, until it has seen `--expect` peers or
//! `--seconds` pass. Run inside a namespace by the tests in `tests/tests/`.

use std::time::Duration;

use cunyun_platform::discovery::{MdnsDiscovery, PeerEvent};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;
use cunyun_tests::cli_arg;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| cli_arg(&args, name);
    let me = NodeIdentity {
        node_id: get("--id")?.parse::<NodeId>()?,
        role: Role::Village,
        scope: AreaScope::parse(&get("--scope")?)?,
    };
    let expect: usize = get("--expect")?.parse()?;
    let seconds: u64 = get("--seconds")?.parse()?;
    let mut discovery = MdnsDiscovery::start(&me, 7447, 1)?;
    println!("STARTED {}", me.node_id);
    let mut found = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while found.len() < expect {
        match tokio::time::timeout_at(deadline, discovery.next()).await {
            Ok(Some(PeerEvent::Found(peer))) => {
                if found.insert(peer.node_id) {
                    println!("FOUND {} {}", peer.node_id, peer.addrs[0]);
                }
            }
            Ok(Some(PeerEvent::Lost(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    // Stay announced a little longer so slower peers can still find us.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("DONE {}", found.len());
    Ok(())
}
