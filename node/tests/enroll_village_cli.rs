//! `cunyun-node enroll-village` checks the village code against the national gazetteer: an
//! unknown code is refused in Chinese and writes nothing; a real code is issued and named; a
//! village created since the gazetteer is accepted with `--new-village-name`.

use std::path::Path;
use std::process::Command;

use cunyun_platform::certs::enroll::CaDir;
use cunyun_platform::certs::tls::{CertAuthority, CertKeyPem};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;

/// A county CA for 丹棱县 (511424) under a fresh province root, written to `dir`.
fn county_ca(dir: &Path) {
    let root_id = NodeIdentity {
        node_id: NodeId([1; 16]),
        role: Role::Hub,
        scope: AreaScope::parse("51").expect("scope"),
    };
    let root = CertAuthority::create("test province CA", &root_id).expect("root");
    let county_id = NodeIdentity {
        node_id: NodeId([2; 16]),
        role: Role::County,
        scope: AreaScope::parse("511424").expect("scope"),
    };
    let key = rcgen::KeyPair::generate().expect("key");
    let cert_pem = root.issue_county_ca(&county_id, &key).expect("county CA");
    let pem = CertKeyPem {
        cert_pem,
        key_pem: key.serialize_pem(),
    };
    CaDir::write(dir, &pem, &root.pem.cert_pem).expect("write CA dir");
}

fn enroll(ca: &Path, scope: &str, out: &Path, extra: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_cunyun-node"))
        .arg("enroll-village")
        .arg("--ca-dir")
        .arg(ca)
        .args(["--scope", scope, "--out"])
        .arg(out)
        .args(extra)
        .output()
        .expect("run cunyun-node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn village_codes_are_checked_against_the_gazetteer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    county_ca(&ca);

    let unknown = tmp.path().join("unknown");
    let (ok, text) = enroll(&ca, "511424102999", &unknown, &[]);
    assert!(!ok, "an unknown village code must be refused: {text}");
    assert!(
        text.contains("511424102999") && text.contains("不在国家统计局"),
        "{text}"
    );
    assert!(!unknown.exists(), "nothing is written for a refused code");

    let real = tmp.path().join("real");
    let (ok, text) = enroll(&ca, "511424102202", &real, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("丹棱县 › 仁美镇 › 雄义村"), "{text}");
    assert!(real.join("node.crt").exists());

    let new = tmp.path().join("new");
    let (ok, text) = enroll(&ca, "511424102999", &new, &["--new-village-name", "新民村"]);
    assert!(ok, "{text}");
    assert!(text.contains("丹棱县 › 仁美镇 › 新民村"), "{text}");

    let orphan = tmp.path().join("orphan");
    let (ok, text) = enroll(
        &ca,
        "511424999001",
        &orphan,
        &["--new-village-name", "某村"],
    );
    assert!(
        !ok,
        "a new village in an unknown township is refused: {text}"
    );
    assert!(text.contains("所属乡镇 511424999"), "{text}");
    assert!(!orphan.exists());
}
