//! A throwaway LAN of Linux network namespaces for network tests: one namespace holding a bridge,
//! and one namespace per host, each joined to the bridge by a veth pair, with addresses in
//! 10.231.<lan>.0/24. Everything is created by this process and removed on drop; no traffic
//! leaves these namespaces.
//!
//! Needs root (CAP_NET_ADMIN) and iproute2, as in CI.

use std::process::{Command, Output};

use anyhow::{bail, Context};

/// A LAN of `n` hosts in network namespaces.
pub struct NetnsLan {
    bridge_ns: String,
    /// Namespace name of each host.
    pub hosts: Vec<String>,
    /// IPv4 address of each host.
    pub addrs: Vec<std::net::Ipv4Addr>,
}

fn ip(args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

impl NetnsLan {
    /// Creates the LAN. `tag` keeps concurrent tests apart (keep it ≤ 4 characters).
    pub fn create(tag: &str, n: usize) -> anyhow::Result<NetnsLan> {
        let pid = std::process::id() % 100_000;
        let lan = (pid % 200) as u8 + 20;
        let bridge_ns = format!("cy{tag}{pid}br");
        let mut me = NetnsLan {
            bridge_ns: bridge_ns.clone(),
            hosts: Vec::new(),
            addrs: Vec::new(),
        };
        ip(&["netns", "add", &bridge_ns])?;
        ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"])?;
        ip(&["-n", &bridge_ns, "link", "set", "lo", "up"])?;
        for i in 0..n {
            let ns = format!("cy{tag}{pid}h{i}");
            ip(&["netns", "add", &ns])?;
            me.hosts.push(ns.clone());
            let outer = format!("v{i}");
            ip(&[
                "-n", &bridge_ns, "link", "add", &outer, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &bridge_ns, "link", "set", &outer, "master", "br0"])?;
            ip(&["-n", &bridge_ns, "link", "set", &outer, "up"])?;
            let addr = std::net::Ipv4Addr::new(10, 231, lan, (i + 10) as u8);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up", "multicast", "on"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            me.addrs.push(addr);
        }
        Ok(me)
    }

    /// A command that runs `program` inside host `i`'s namespace.
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i]]).arg(program);
        c
    }

    /// Cuts host `i` off the LAN (link down) or reconnects it.
    pub fn set_link(&self, i: usize, up: bool) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.hosts[i],
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ])?;
        Ok(())
    }
}

impl Drop for NetnsLan {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.bridge_ns)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
