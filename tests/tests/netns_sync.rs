//! Three nodes in their own network namespaces — a village node, a data mule and the county
//! node — find each other by real multicast DNS (no static peers) and converge over mutual TLS:
//! each ends with every household the others recorded, with identical heads.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use cunyun_protocol::area::AreaScope;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;
use cunyun_tests::netns::NetnsLan;

#[test]
fn three_namespaced_nodes_discover_each_other_and_converge_over_tls() {
    let lan = NetnsLan::create("sy", 3).expect("create namespaces (needs root and iproute2)");
    std::thread::sleep(Duration::from_millis(1500));
    let root = tempfile::tempdir().expect("tempdir");
    let village = "510116108203";
    let nodes = [
        (Role::Village, village, 20usize),
        (Role::Mule, village, 15),
        (Role::County, "510116", 10),
    ];
    // Every household is two documents (hh + hp), and seeding also records 5 local needs per
    // node — all in the one village all three may hold.
    let expect = nodes.iter().map(|n| 2 * n.2 + 5).sum::<usize>();
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut children = Vec::new();
    for (i, (role, scope, households)) in nodes.iter().enumerate() {
        let dir = root.path().join(format!("n{i}"));
        let id = NodeIdentity {
            node_id: NodeId([i as u8 + 1; 16]),
            role: *role,
            scope: AreaScope::parse(scope).expect("scope"),
        };
        cunyun_platform::certs::tls::init_dev_identity(
            &root.path().join("ca"),
            &dir.join("tls"),
            &id,
        )
        .expect("identity");
        let mut child = lan
            .command(i, std::path::Path::new(env!("CARGO_BIN_EXE_netns_node")))
            .arg("--dir")
            .arg(&dir)
            .args(["--scope", scope, "--village", village])
            .args(["--households", &households.to_string()])
            .args(["--expect", &expect.to_string(), "--seconds", "90"])
            .args(["--seed", &(i as u64 + 7).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn node");
        let out = child.stdout.take().expect("stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((i, line));
            }
        });
        children.push(child);
    }
    drop(tx);
    let mut converged: Vec<Option<String>> = vec![None; nodes.len()];
    let mut log = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while converged.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok((i, line)) = rx.recv_timeout(left) else {
            break;
        };
        if let Some(rest) = line.strip_prefix("CONVERGED ") {
            converged[i] = Some(rest.to_string());
        }
        log.push(format!("node {i}: {line}"));
    }
    for i in 0..nodes.len() {
        let _ = std::fs::write(root.path().join(format!("n{i}")).join("stop"), b"");
    }
    for mut c in children {
        let _ = c.wait();
    }
    assert!(
        converged.iter().all(Option::is_some),
        "not every node converged: {converged:?}\n{}",
        log.join("\n")
    );
    let first = converged[0].clone();
    for (i, c) in converged.iter().enumerate() {
        assert_eq!(
            c,
            &first,
            "node {i} holds a different set\n{}",
            log.join("\n")
        );
        assert!(
            c.as_deref()
                .is_some_and(|s| s.starts_with(&format!("{expect} "))),
            "{c:?}"
        );
    }
}
