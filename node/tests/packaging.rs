//! The configuration the .deb installs as /etc/cunyun/node.toml (firmware-notes/deb/node.toml)
//! loads and says what the install guide says: data in /var/lib/cunyun, the web app on 8080
//! and 8443 for phones on the village Wi-Fi, sync on 7447.

use cunyun_node::config::NodeConfig;

#[test]
fn the_packaged_config_loads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-notes/deb/node.toml");
    let c = NodeConfig::load(&path).expect("packaged config loads");
    assert_eq!(c.data_dir, std::path::PathBuf::from("/var/lib/cunyun"));
    assert_eq!(c.listen, "0.0.0.0:8080".parse().expect("addr"));
    assert!(c.sync.enabled);
    assert_eq!(c.sync.listen, "0.0.0.0:7447".parse().expect("addr"));
    assert!(c.web_tls.enabled);
    assert_eq!(c.web_tls.listen, "0.0.0.0:8443".parse().expect("addr"));
}
