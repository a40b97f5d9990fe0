//! Finding peers on the LAN by multicast DNS: the service `_cunyun._tcp.local.`.
//!
//! A node announces its sync port with TXT records `id` (node id), `role`, `scope` and `pv`
//! (protocol version), and browses for everyone else's. What the TXT records say is only a hint
//! for whom to dial: the peer's real identity is what its certificate says during the TLS
//! handshake ([`crate::certs::tls`]), and a claimed scope never widens what is shared.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use cunyun_protocol::area::AreaScope;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::mpsc;

/// The DNS-SD service type of cunyun's sync endpoint.
pub const SERVICE_TYPE: &str = "_cunyun._tcp.local.";

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The mDNS daemon failed (e.g. no multicast-capable interface, socket refused).
    #[error("局域网发现（mDNS）启动失败: {0}")]
    Mdns(#[from] mdns_sd::Error),
}

/// A peer seen on the LAN. Its claims are unverified until a TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredPeer {
    /// The node id it announces.
    pub node_id: NodeId,
    /// The role it announces.
    pub role: Role,
    /// The scope it announces.
    pub scope: AreaScope,
    /// The sync protocol version it announces.
    pub protocol_version: u32,
    /// Where to dial it.
    pub addrs: Vec<SocketAddr>,
}

/// Something discovery noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A peer was found or its addresses changed.
    Found(DiscoveredPeer),
    /// A peer said goodbye (its announcement was withdrawn).
    Lost(NodeId),
}

/// A running mDNS announcer and browser. Dropping it withdraws the announcement.
pub struct MdnsDiscovery {
    daemon: ServiceDaemon,
    fullname: String,
    events: mpsc::Receiver<PeerEvent>,
}

/// Parses a resolved service into a peer; `None` if its TXT records are not cunyun's.
fn peer_from(info: &mdns_sd::ResolvedService, me: NodeId) -> Option<DiscoveredPeer> {
    let node_id: NodeId = info.get_property_val_str("id")?.parse().ok()?;
    if node_id == me {
        return None;
    }
    let role = Role::parse(info.get_property_val_str("role")?)?;
    let scope = AreaScope::parse(info.get_property_val_str("scope")?).ok()?;
    let protocol_version = info.get_property_val_str("pv")?.parse().ok()?;
    let port = info.get_port();
    let mut addrs: Vec<SocketAddr> = info
        .get_addresses()
        .iter()
        .map(|ip| ip.to_ip_addr())
        // Link-local IPv6 needs a scope id to dial; IPv4 is enough on a village LAN.
        .filter(|ip: &IpAddr| ip.is_ipv4())
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return None;
    }
    Some(DiscoveredPeer {
        node_id,
        role,
        scope,
        protocol_version,
        addrs,
    })
}

impl MdnsDiscovery {
    /// Announces `me` on `port` and starts browsing for other cunyun nodes.
    pub fn start(
        me: &NodeIdentity,
        port: u16,
        protocol_version: u32,
    ) -> Result<MdnsDiscovery, DiscoveryError> {
        let daemon = ServiceDaemon::new()?;
        let id = me.node_id.to_hex();
        let host = format!("cunyun-{}.local.", &id[..12]);
        let props = [
            ("id", id.clone()),
            ("role", me.role.as_str().to_string()),
            ("scope", me.scope.to_string()),
            ("pv", protocol_version.to_string()),
        ];
        let info =
            ServiceInfo::new(SERVICE_TYPE, &id, &host, "", port, &props[..])?.enable_addr_auto();
        let fullname = info.get_fullname().to_string();
        daemon.register(info)?;
        let browse = daemon.browse(SERVICE_TYPE)?;
        let (tx, events) = mpsc::channel(64);
        let my_id = me.node_id;
        // The daemon hands events to a flume channel; forward them on a thread of their own so
        // the browse receiver is always drained (mdns-sd closes slow subscriptions).
        std::thread::Builder::new()
            .name("cunyun-mdns".into())
            .spawn(move || {
                let mut names: std::collections::HashMap<String, NodeId> = Default::default();
                let mut seen: HashSet<(NodeId, Vec<SocketAddr>)> = HashSet::new();
                while let Ok(event) = browse.recv() {
                    let out = match event {
                        ServiceEvent::ServiceResolved(info) => match peer_from(&info, my_id) {
                            Some(peer) => {
                                names.insert(info.get_fullname().to_string(), peer.node_id);
                                if !seen.insert((peer.node_id, peer.addrs.clone())) {
                                    continue;
                                }
                                tracing::debug!(
                                    target: "cunyun::_events::peer_discovered",
                                    peer = %peer.node_id,
                                    addrs = ?peer.addrs
                                );
                                PeerEvent::Found(peer)
                            }
                            None => continue,
                        },
                        ServiceEvent::ServiceRemoved(_, fullname) => {
                            match names.remove(&fullname) {
                                Some(id) => {
                                    seen.retain(|(n, _)| *n != id);
                                    PeerEvent::Lost(id)
                                }
                                None => continue,
                            }
                        }
                        ServiceEvent::SearchStopped(_) => break,
                        _ => continue,
                    };
                    if tx.blocking_send(out).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| DiscoveryError::Mdns(mdns_sd::Error::Msg(e.to_string())))?;
        Ok(MdnsDiscovery {
            daemon,
            fullname,
            events,
        })
    }

    /// The next discovery event; `None` once discovery stopped.
    pub async fn next(&mut self) -> Option<PeerEvent> {
        self.events.recv().await
    }
}

impl Drop for MdnsDiscovery {
    fn drop(&mut self) {
        // Withdraw the announcement so peers forget us promptly, then stop the daemon.
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}
