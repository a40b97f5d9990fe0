//! Node configuration: one documented serde struct, loaded from TOML, with defaults that run a
//! development node out of the box.
//!
//! ```toml
//! # cunyun-node.toml
//! data_dir = "/var/lib/cunyun"
//! listen = "0.0.0.0:8080"
//! scope = "510116108203"      # the village this node serves (双流区 彭镇 岷江村)
//! role = "village"
//! node_name = "岷江村村委会"
//! default_author = "local-admin"
//!
//! [web_tls]                 # the cadre app over HTTPS (service worker on the LAN)
//! enabled = true
//! listen = "0.0.0.0:8443"
//! names = ["192.168.1.10", "cunyun.lan"]
//!
//! [store]
//! cache_capacity_bytes = 16777216
//!
//! [limits]                  # lists, paging and concurrency (defaults fit a 1 GB Pi)
//! page_size = 100
//! max_page_size = 500
//! scan_budget = 5000
//! lists = 4
//! reads = 32
//! writes = 8
//! queue_wait_ms = 2000
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cunyun_protocol::area::AreaScope;
use cunyun_protocol::key::Role;
use serde::Deserialize;

use cunyun_platform::blobs::ContentConfig;
use cunyun_platform::certs::webtls::WebTlsConfig;
use cunyun_platform::store::StoreConfig;
use cunyun_platform::sync::SyncConfig;

/// Everything a node needs to start. Every field has a default (see [`NodeConfig::default`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Directory holding the document store and the node's other state. Created if missing.
    pub data_dir: PathBuf,
    /// Address the HTTP API (and later the web app) listens on.
    pub listen: SocketAddr,
    /// The area this node serves: a village code for a village node, a county prefix for a
    /// county node. Records outside it are refused.
    pub scope: AreaScope,
    /// What kind of node this is.
    pub role: Role,
    /// Human-readable name shown on the status page, e.g. the village committee's name.
    pub node_name: String,
    /// Account recorded as the author of changes made through the API until cadre accounts
    /// exist.
    pub default_author: String,
    /// Largest request body the API accepts, in bytes.
    pub max_body_bytes: usize,
    /// HTTP connections per source address (`[http_per_address]`: `per_minute`, `concurrent`,
    /// `exempt_loopback`); see [`cunyun_platform::ratelimit`].
    pub http_per_address: cunyun_platform::ratelimit::AddrLimits,
    /// Document store settings.
    pub store: StoreConfig,
    /// Sync settings (off unless `enabled`; needs `cunyun-node init` first).
    pub sync: SyncConfig,
    /// Content files: blob store quota and the hub keys content must be signed by (used when
    /// sync is enabled).
    pub content: ContentConfig,
    /// HTTPS for the cadre web app (`[web_tls]`, off by default; see [`cunyun_platform::certs::webtls`]).
    pub web_tls: WebTlsConfig,
    /// Paging and per-route-class concurrency (`[limits]`, see [`Limits`]).
    pub limits: Limits,
}

/// `[limits]`: how much one list request may return and read, and how many requests of each
/// class run at once. A request that finds its class full waits up to `queue_wait_ms` for a
/// place, then is answered `503 {"error":"busy"}` with `Retry-After` (see [`crate::limits`]),
/// so a flood costs a queue slot, not memory.
///
/// The defaults fit a 1 GB Raspberry Pi serving a village: a page of 100 households is about
/// 25 KB of JSON, and 4 list pages at once read at most 20,000 index entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Limits {
    /// Items in a list page when the request gives no `limit`.
    pub page_size: usize,
    /// Largest `limit` a list request may ask for; more is a `400`.
    pub max_page_size: usize,
    /// Most index entries one list page reads; a page that reaches it answers the items found
    /// so far and a cursor to go on from (at least 2).
    pub scan_budget: usize,
    /// List requests (household and need lists, overview, coverage, audit log and its CSV)
    /// running at once.
    pub lists: usize,
    /// Other reads (`GET`) of the API, admin pages and villager pages running at once.
    pub reads: usize,
    /// Writes (`POST`, `PUT`, `PATCH`, `DELETE`, login included) running at once.
    pub writes: usize,
    /// How long a request waits for a place in its class before the `503`, in milliseconds.
    pub queue_wait_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            page_size: 100,
            max_page_size: 500,
            scan_budget: 5_000,
            lists: 4,
            reads: 32,
            writes: 8,
            queue_wait_ms: 2_000,
        }
    }
}

impl Limits {
    /// Checks the values make sense together; the message says which one is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.page_size == 0 || self.page_size > self.max_page_size {
            return Err(format!(
                "[limits] page_size 应在 1 到 max_page_size（{}）之间，实际为 {}",
                self.max_page_size, self.page_size
            ));
        }
        if self.scan_budget < 2 {
            return Err(format!(
                "[limits] scan_budget 至少为 2，实际为 {}",
                self.scan_budget
            ));
        }
        for (name, n) in [
            ("lists", self.lists),
            ("reads", self.reads),
            ("writes", self.writes),
        ] {
            if n == 0 {
                return Err(format!("[limits] {name} 至少为 1"));
            }
        }
        Ok(())
    }
}

/// The development default scope: 成都市双流区 (510116) 彭镇 岷江村, a village of the national
/// gazetteer (checked by a unit test).
pub const DEFAULT_VILLAGE: &str = "510116108203";

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("./data/node"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            scope: AreaScope::parse(DEFAULT_VILLAGE)
                .expect("DEFAULT_VILLAGE is a valid village code (see the unit test)"),
            role: Role::Village,
            node_name: "村云节点".to_string(),
            default_author: "local-admin".to_string(),
            max_body_bytes: 256 * 1024,
            http_per_address: cunyun_platform::ratelimit::AddrLimits::HTTP,
            store: StoreConfig::default(),
            sync: SyncConfig::default(),
            content: ContentConfig::default(),
            web_tls: WebTlsConfig::default(),
            limits: Limits::default(),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("无法读取配置文件 {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`NodeConfig`].
    #[error("配置文件 {path} 有误: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        source: toml::de::Error,
    },
}

impl NodeConfig {
    /// Loads a config file; fields it leaves out take their defaults.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        NodeConfig::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses a config from TOML text; `[limits]` values that do not fit together are an
    /// error too.
    pub fn from_toml(text: &str) -> Result<NodeConfig, toml::de::Error> {
        let c: NodeConfig = toml::from_str(text)?;
        c.limits
            .check()
            .map_err(<toml::de::Error as serde::de::Error>::custom)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = NodeConfig::default();
        assert_eq!(c.scope.to_string(), DEFAULT_VILLAGE);
        assert_eq!(c.role, Role::Village);
    }

    #[test]
    fn the_default_village_is_a_real_shuangliu_village() {
        let village = AreaScope::parse(DEFAULT_VILLAGE).expect("valid").area();
        let g = cunyun_protocol::gazetteer::sichuan();
        assert!(
            g.check(&village).is_ok(),
            "{DEFAULT_VILLAGE} is in the gazetteer"
        );
        assert_eq!(g.label(&village), "双流区 › 彭镇 › 岷江村");
        assert_eq!(&DEFAULT_VILLAGE[..6], "510116", "双流区");
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let c = NodeConfig::from_toml(include_str!("../../firmware-notes/node.example.toml"))
            .expect("firmware-notes/node.example.toml is valid");
        assert!(c.sync.enabled);
        assert_eq!(c.role, Role::Village);
    }

    #[test]
    fn toml_overrides_and_rejects_unknown() {
        let c = NodeConfig::from_toml(
            "scope = \"510122\"\nrole = \"county\"\nlisten = \"127.0.0.1:9000\"",
        )
        .expect("valid");
        assert_eq!(c.scope.to_string(), "510122");
        assert_eq!(c.role, Role::County);
        assert_eq!(c.listen.port(), 9000);
        assert!(NodeConfig::from_toml("scpoe = \"51\"").is_err());
        let c = NodeConfig::from_toml("[content]\nquota_mb = 512\ntrusted_hub_keys = [\"ab\"]")
            .expect("content table");
        assert_eq!(c.content.quota_mb, 512);
        assert_eq!(c.content.trusted_hub_keys, vec!["ab".to_string()]);
        let c = NodeConfig::from_toml("[web_tls]\nenabled = true\nnames = [\"cunyun.lan\"]")
            .expect("web_tls table");
        assert!(c.web_tls.enabled && c.web_tls.auto_issue);
        assert_eq!(c.web_tls.listen.port(), 8443);
        assert!(NodeConfig::from_toml("[web_tls]\nlisten_addr = \"x\"").is_err());
        let err = NodeConfig::from_toml("scope = \"5101\"x").expect_err("bad toml");
        assert!(!err.to_string().is_empty());
        assert!(NodeConfig::from_toml("scope = \"510022\"").is_err());
    }

    #[test]
    fn limits_default_to_a_pi_and_refuse_nonsense() {
        let c = NodeConfig::default();
        assert_eq!(c.limits.page_size, 100);
        assert_eq!(c.limits.max_page_size, 500);
        assert_eq!(c.limits.scan_budget, 5_000);
        assert_eq!(
            (c.limits.lists, c.limits.reads, c.limits.writes),
            (4, 32, 8)
        );
        assert_eq!(c.limits.queue_wait_ms, 2_000);
        assert!(c.limits.check().is_ok());
        let c = NodeConfig::from_toml("[limits]\nlists = 2\nqueue_wait_ms = 50").expect("valid");
        assert_eq!((c.limits.lists, c.limits.queue_wait_ms), (2, 50));
        assert_eq!(c.limits.page_size, 100, "the rest keep their defaults");
        for bad in [
            "[limits]\npage_size = 0",
            "[limits]\npage_size = 600",
            "[limits]\nscan_budget = 1",
            "[limits]\nwrites = 0",
            "[limits]\nlist = 3",
        ] {
            let err = NodeConfig::from_toml(bad).expect_err(bad);
            assert!(
                err.to_string().contains("limits") || err.to_string().contains("list"),
                "{err}"
            );
        }
    }
}
