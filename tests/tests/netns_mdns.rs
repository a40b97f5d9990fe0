//! Three nodes in their own network namespaces, joined by a bridge, find each other by real
//! multicast DNS, and each sees the others at their namespace addresses.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use cunyun_tests::netns::NetnsLan;

#[test]
fn three_nodes_find_each_other_by_multicast_dns() {
    let lan = NetnsLan::create("md", 3).expect("create namespaces (needs root and iproute2)");
    // Give IPv6 duplicate-address detection and the bridge a moment to settle.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let ids: Vec<String> = (0..3u64)
        .map(|i| format!("{:032x}", 0xc0ff_ee00_u64 + i))
        .collect();
    let mut children = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let child = lan
            .command(i, std::path::Path::new(env!("CARGO_BIN_EXE_netns_peer")))
            .args([
                "--id",
                id,
                "--scope",
                "510116108203",
                "--expect",
                "2",
                "--seconds",
                "30",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn peer");
        children.push(child);
    }
    for (i, mut child) in children.into_iter().enumerate() {
        let out = child.stdout.take().expect("stdout");
        let lines: Vec<String> = BufReader::new(out).lines().map_while(Result::ok).collect();
        let status = child.wait().expect("wait");
        assert!(status.success(), "host {i}: {lines:?}");
        let found: Vec<&String> = lines.iter().filter(|l| l.starts_with("FOUND ")).collect();
        assert_eq!(found.len(), 2, "host {i} found {found:?}");
        for (j, id) in ids.iter().enumerate() {
            if j == i {
                assert!(
                    !found.iter().any(|l| l.contains(id.as_str())),
                    "found itself"
                );
            } else {
                let line = found
                    .iter()
                    .find(|l| l.contains(id.as_str()))
                    .unwrap_or_else(|| panic!("host {i} did not find {j}: {lines:?}"));
                assert!(
                    line.ends_with(&format!("{}:7447", lan.addrs[j])),
                    "host {i} saw {j} at the wrong address: {line}"
                );
            }
        }
    }
}
