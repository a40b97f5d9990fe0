//! Hub configuration: one documented serde struct, loaded from TOML, with development defaults.
//!
//! ```toml
//! # cunyun-hub.toml
//! data_dir = "/var/lib/cunyun-hub"
//! listen = "127.0.0.1:8090"
//! scope = "51"                 # the province
//! per_week = 3                 # new items per household per week
//! match_interval_ms = 2000     # how often a matching round looks for changes
//!
//! [store]
//! backend = "sled"             # or "postgres", with [store.postgres] url = "host=… dbname=…"
//!
//! [sync]
//! enabled = true
//! listen = "0.0.0.0:7447"
//! mdns = false
//!
//! [pushdown]
//! village_budget_mb = 2000     # files pushed to each village, MB (10^6 bytes)
//!
//! [pushdown.budget_mb]         # overrides: the longest matching area prefix wins
//! "511424" = 500               # every village of this county
//! "511424104201" = 100         # one village
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cunyun_platform::sync::SyncConfig;
use cunyun_protocol::area::{AreaCode, AreaScope};
use serde::Deserialize;

/// Everything the hub needs to start. Every field has a default (see [`HubConfig::default`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HubConfig {
    /// Directory holding the store, the content library, files and sync state.
    pub data_dir: PathBuf,
    /// Address of the operator HTTP API.
    pub listen: SocketAddr,
    /// The province the hub serves (its certificate must carry the same scope and role `hub`).
    pub scope: AreaScope,
    /// New items per household per week.
    pub per_week: usize,
    /// Milliseconds between matching rounds (a round with nothing changed costs almost nothing).
    pub match_interval_ms: u64,
    /// Fixes the matching date (demos and tests); default: today's date in China (UTC+8).
    pub today: Option<cunyun_protocol::fields::Date>,
    /// Largest operator request body, in bytes.
    pub max_body_bytes: usize,
    /// HTTP connections per source address (`[http_per_address]`: `per_minute`, `concurrent`,
    /// `exempt_loopback`; default 600 a minute, 64 at once, loopback exempt); see
    /// `cunyun_platform::ratelimit`.
    pub http_per_address: cunyun_platform::ratelimit::AddrLimits,
    /// Largest file the console's upload form (`POST /api/v1/content/upload`) accepts, in bytes;
    /// larger files are added with `cunyun-hub content add` on the hub itself.
    pub max_upload_bytes: u64,
    /// Document storage (`[store]`): the backend (`backend = "sled"` by default, or
    /// `"postgres"` with `[store.postgres]`) and the store tunables; see
    /// [`HubStoreConfig`](crate::store::HubStoreConfig).
    pub store: crate::store::HubStoreConfig,
    /// Sync settings (off unless `enabled`; needs `cunyun-hub init` first).
    pub sync: SyncConfig,
    /// The per-village byte budget of the content push-down.
    pub pushdown: PushdownConfig,
}

/// How many bytes of recommended files the hub plans to push to each village (the rest stays
/// recommended and is fetched when opened). The plan is written into the village's `rec`
/// documents as each item's `push` flag ([`cunyun_protocol::rec`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PushdownConfig {
    /// Budget of a village without an override, in MB (10^6 bytes). Default 2000: a village
    /// node's default content quota (`[content] quota_mb`, 4096) holds it with room to spare for
    /// files opened on demand.
    pub village_budget_mb: u64,
    /// Overrides by area prefix (a county, a township or one village), in MB; the longest prefix
    /// containing the village wins.
    pub budget_mb: BTreeMap<AreaScope, u64>,
}

impl Default for PushdownConfig {
    fn default() -> Self {
        PushdownConfig {
            village_budget_mb: 2_000,
            budget_mb: BTreeMap::new(),
        }
    }
}

impl PushdownConfig {
    /// The budget of `village`, in bytes.
    pub fn budget_bytes(&self, village: &AreaCode) -> u64 {
        self.budget_mb
            .iter()
            .filter(|(scope, _)| scope.contains(village))
            .max_by_key(|(scope, _)| scope.prefix().len())
            .map_or(self.village_budget_mb, |(_, mb)| *mb)
            .saturating_mul(1_000_000)
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            data_dir: PathBuf::from("./data/hub"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            scope: AreaScope::parse("51").expect("51 (Sichuan) is a valid province prefix"),
            per_week: cunyun_protocol::matching::DEFAULT_PER_WEEK,
            match_interval_ms: 2_000,
            today: None,
            max_body_bytes: 256 * 1024,
            http_per_address: cunyun_platform::ratelimit::AddrLimits::HTTP,
            max_upload_bytes: 200 * 1024 * 1024,
            store: crate::store::HubStoreConfig::default(),
            sync: SyncConfig::default(),
            pushdown: PushdownConfig::default(),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubConfigError {
    /// The file could not be read.
    #[error("无法读取配置文件 {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct.
    #[error("配置文件 {path} 有误: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

impl HubConfig {
    /// Loads a TOML file; missing fields take their defaults.
    pub fn load(path: &Path) -> Result<HubConfig, HubConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| HubConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| HubConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn module_example_parses_and_unknown_fields_are_refused() {
        let text = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let c: HubConfig = toml::from_str(&text).unwrap();
        assert_eq!(c.scope.prefix(), "51");
        assert_eq!(c.per_week, 3);
        assert!(c.sync.enabled);
        assert_eq!(c.store.backend, crate::store::StoreBackend::Sled);
        assert!(toml::from_str::<HubConfig>("colour = 1").is_err());
        let village = |s: &str| AreaCode::parse(s).unwrap();
        assert_eq!(
            c.pushdown.budget_bytes(&village("511424104201")),
            100_000_000
        );
        assert_eq!(
            c.pushdown.budget_bytes(&village("511424104202")),
            500_000_000
        );
        assert_eq!(
            c.pushdown.budget_bytes(&village("510101001001")),
            2_000_000_000
        );
        assert!(toml::from_str::<HubConfig>("[pushdown.budget_mb]\n\"51x\" = 1").is_err());
    }
}
