//! `cunyun-node backup` / `restore`: a backup taken while households are being written holds
//! every household acknowledged before it started (profile and private parts), the data
//! directory's files byte for byte, and restores to a store whose `verify` is clean; a wrong
//! passphrase, a truncated or altered file and a non-empty target are refused with nothing
//! written.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use age::secrecy::SecretString;
use cunyun_node::backup::{self, BackupError};
use cunyun_node::config::NodeConfig;
use cunyun_node::server;
use cunyun_platform::store::{DocStore, StoreConfig};
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::{Kind, Role};

const VILLAGE: &str = "510116108203";
const PASS: &str = "县里保管的口令-2026";

fn pass() -> SecretString {
    SecretString::from(PASS.to_string())
}

/// A data dir with a node certificate (tls/), a dev CA (ca/) and a cadre account.
fn prepare(dir: &Path) {
    let id = NodeIdentity {
        node_id: NodeId([7; 16]),
        role: Role::Village,
        scope: AreaScope::parse(VILLAGE).expect("scope"),
    };
    cunyun_platform::certs::tls::init_dev_identity(&dir.join("ca"), &dir.join("tls"), &id)
        .expect("identity");
    let accounts = cunyun_platform::accounts::Accounts::open(dir).expect("accounts");
    accounts
        .add("wangli", VILLAGE, "村干部的密码2026")
        .expect("cadre");
}

fn config(dir: &Path) -> NodeConfig {
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = AreaScope::parse(VILLAGE).expect("scope");
    c
}

fn household_ids(store: &DocStore) -> std::collections::BTreeSet<String> {
    store
        .scan(&AreaScope::parse(VILLAGE).expect("scope"))
        .filter_map(Result::ok)
        .filter(|(k, _)| k.kind() == Kind::Hh)
        .map(|(k, _)| k.id().to_string())
        .collect()
}

/// Every regular file outside store/ and blobs/, relative path → bytes.
fn files_of(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let e = e.expect("entry");
            let rel = e
                .path()
                .strip_prefix(dir)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            if rel == "store" || rel == "blobs" || rel == "backup.sock" {
                continue;
            }
            if e.file_type().expect("type").is_dir() {
                stack.push(e.path());
            } else {
                out.insert(rel, std::fs::read(e.path()).expect("read"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_while_writing_restores_every_acknowledged_household() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("node");
    std::fs::create_dir_all(&data).expect("dir");
    prepare(&data);
    let node = server::start(&config(&data), std::future::pending())
        .await
        .expect("node starts");
    let village = AreaCode::parse(VILLAGE).expect("village");
    let records = node.state.records.clone();
    server::seed_sample_village(&records, "wangli", village, 150, 1, |_, _| {})
        .await
        .expect("seed");

    // A writer that keeps creating households, noting which were acknowledged before the
    // backup started.
    let started = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (records, started, stop) = (records.clone(), started.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut before, mut during) = (Vec::new(), Vec::new());
            for h in cunyun_node::sample::sample_village(village, 400, 2) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let was_started = started.load(Ordering::SeqCst);
                let body = serde_json::json!({ "profile": h.profile, "private": h.private });
                let r = records
                    .create_household("wangli", &body)
                    .await
                    .expect("create");
                if was_started {
                    during.push(r);
                } else {
                    before.push(r);
                }
            }
            (before, during)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let file = tmp.path().join("村1.cybak");
    let summary = {
        let (data, file, started) = (data.clone(), file.clone(), started.clone());
        tokio::task::spawn_blocking(move || {
            started.store(true, Ordering::SeqCst);
            backup::backup(&data, &file, pass())
        })
        .await
        .expect("join")
        .expect("backup")
    };
    stop.store(true, Ordering::SeqCst);
    let (before, during) = writer.await.expect("writer");
    assert!(
        summary.from_running_node,
        "the running node exported its store"
    );
    assert!(summary.damaged.is_empty());
    assert!(
        !before.is_empty(),
        "households were written before the backup"
    );
    let acked: std::collections::BTreeSet<String> = household_ids(node.state.records.store());
    let original_files = files_of(&data);
    node.stop().await.expect("stop");

    let restored_dir = tmp.path().join("restored");
    let r = backup::restore(&file, &restored_dir, false, pass()).expect("restore");
    assert_eq!(r.docs, summary.docs);
    assert!(r.replaced.is_none());
    assert_eq!(
        files_of(&restored_dir),
        original_files,
        "tls/, ca/, accounts restored"
    );
    let store = DocStore::open(&restored_dir.join("store"), StoreConfig::default()).expect("open");
    assert!(store.verify().expect("verify").is_ok());
    let restored = household_ids(&store);
    let seeded = 150;
    assert!(restored.len() >= seeded + before.len());
    for h in &before {
        assert!(
            restored.contains(&h.id),
            "acknowledged household {} restored",
            h.id
        );
        assert!(
            store.load(&h.private_key).expect("load").is_some(),
            "private part of {}",
            h.id
        );
    }
    assert!(
        restored.is_subset(&acked),
        "nothing in the backup that was never written"
    );
    eprintln!(
        "backup: {} docs, {} bytes; {} households acknowledged before it, {} during it",
        summary.docs,
        summary.bytes,
        before.len(),
        during.len()
    );

    // The restored node starts and serves them.
    drop(store);
    let again = server::start(&config(&restored_dir), std::future::pending())
        .await
        .expect("restored node starts");
    for h in before.iter().take(5) {
        again
            .state
            .records
            .get_household(&h.id)
            .expect("household readable");
    }
    again.stop().await.expect("stop");
}

/// A stopped node with a few households, backed up to `file`.
async fn stopped_backup(dir: &Path, file: &Path) {
    std::fs::create_dir_all(dir).expect("dir");
    prepare(dir);
    let node = server::start(&config(dir), std::future::pending())
        .await
        .expect("node");
    let village = AreaCode::parse(VILLAGE).expect("village");
    server::seed_sample_village(&node.state.records, "wangli", village, 20, 3, |_, _| {})
        .await
        .expect("seed");
    node.stop().await.expect("stop");
    let (dir, file) = (dir.to_path_buf(), file.to_path_buf());
    let s = tokio::task::spawn_blocking(move || backup::backup(&dir, &file, pass()))
        .await
        .expect("join")
        .expect("backup");
    assert!(!s.from_running_node);
    assert!(s.docs >= 40);
}

fn nothing_written(parent: &Path, target: &Path) {
    assert!(!target.exists(), "the target was not created");
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .expect("read")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restoring"))
        .collect();
    assert!(leftovers.is_empty(), "no staging left: {leftovers:?}");
}

#[tokio::test]
async fn a_wrong_passphrase_is_refused_in_chinese_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("b.cybak");
    stopped_backup(&tmp.path().join("node"), &file).await;
    let target = tmp.path().join("new");
    let e = backup::restore(
        &file,
        &target,
        false,
        SecretString::from("不是这个口令".to_string()),
    )
    .expect_err("wrong passphrase");
    assert!(matches!(e, BackupError::WrongPassphrase), "{e:?}");
    assert!(e.to_string().contains("口令不正确"), "{e}");
    nothing_written(tmp.path(), &target);
    // The right one works.
    backup::restore(&file, &target, false, pass()).expect("restore");
}

#[tokio::test]
async fn truncated_or_altered_files_are_refused_and_write_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("b.cybak");
    stopped_backup(&tmp.path().join("node"), &file).await;
    let bytes = std::fs::read(&file).expect("read");
    let target = tmp.path().join("new");
    let bad = tmp.path().join("bad.cybak");
    let len = bytes.len();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [len - 1, len - 17, len / 2, 300, 20] {
        cases.push((format!("cut at {cut}"), bytes[..cut].to_vec()));
    }
    for at in [len - 1, len / 2, len - 70_000.min(len / 3)] {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        cases.push((format!("bit flipped at {at}"), b));
    }
    let mut appended = bytes.clone();
    appended.extend_from_slice(b"extra");
    cases.push(("bytes appended".to_string(), appended));
    for (what, b) in cases {
        std::fs::write(&bad, &b).expect("write");
        let e = backup::restore(&bad, &target, false, pass()).expect_err(&what);
        assert!(
            matches!(e, BackupError::Damaged(_)),
            "{what}: refused as damaged, got {e:?}"
        );
        assert!(e.to_string().contains("未写入任何内容"), "{what}: {e}");
        nothing_written(tmp.path(), &target);
    }
    std::fs::write(&bad, b"PK\x03\x04 not a backup").expect("write");
    let e = backup::restore(&bad, &target, false, pass()).expect_err("not a backup");
    assert!(matches!(e, BackupError::NotABackup(_)), "{e:?}");
    nothing_written(tmp.path(), &target);
}

#[tokio::test]
async fn a_non_empty_target_needs_force_and_its_old_contents_are_kept() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("b.cybak");
    stopped_backup(&tmp.path().join("node"), &file).await;
    let target = tmp.path().join("busy");
    std::fs::create_dir_all(&target).expect("dir");
    std::fs::write(target.join("keep.txt"), "旧数据").expect("write");
    let e = backup::restore(&file, &target, false, pass()).expect_err("non-empty");
    assert!(matches!(e, BackupError::NotEmpty(_)), "{e:?}");
    assert_eq!(
        std::fs::read_to_string(target.join("keep.txt")).expect("kept"),
        "旧数据"
    );
    let r = backup::restore(&file, &target, true, pass()).expect("forced restore");
    let old = r.replaced.expect("old contents kept");
    assert_eq!(
        std::fs::read_to_string(old.join("keep.txt")).expect("kept aside"),
        "旧数据"
    );
    assert!(target.join("store").is_dir() && target.join("tls").join("node.key").is_file());
    // Nor is a backup written inside the directory it backs up.
    let e =
        backup::backup(&target, &target.join("tls").join("b.cybak"), pass()).expect_err("inside");
    assert!(matches!(e, BackupError::InsideDataDir(_)), "{e:?}");
    assert!(!target.join("tls").join("b.cybak.partial").exists());
    // An existing backup file is not overwritten.
    let e = backup::backup(&target, &file, pass()).expect_err("exists");
    assert!(matches!(e, BackupError::TargetExists(_)), "{e:?}");
}

// The CLI blocks this thread while the node answers on its socket: the node needs other threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_backs_up_and_restores_with_the_passphrase_from_a_file_or_the_environment() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("node");
    std::fs::create_dir_all(&data).expect("dir");
    prepare(&data);
    let node = server::start(&config(&data), std::future::pending())
        .await
        .expect("node");
    let village = AreaCode::parse(VILLAGE).expect("village");
    server::seed_sample_village(&node.state.records, "wangli", village, 10, 4, |_, _| {})
        .await
        .expect("seed");
    let bin = env!("CARGO_BIN_EXE_cunyun-node");
    let file = tmp.path().join("cli.cybak");
    let passfile = tmp.path().join("pass.txt");
    std::fs::write(&passfile, format!("{PASS}\n")).expect("pass file");
    // While the node runs (its socket answers).
    let o = std::process::Command::new(bin)
        .args(["backup", "--data-dir"])
        .arg(&data)
        .arg("--to")
        .arg(&file)
        .arg("--passphrase-file")
        .arg(&passfile)
        .output()
        .expect("run backup");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("备份完成") && out.contains("由运行中的节点导出"),
        "{out}"
    );
    node.stop().await.expect("stop");

    let target = tmp.path().join("restored");
    let o = std::process::Command::new(bin)
        .args(["restore", "--from"])
        .arg(&file)
        .arg("--data")
        .arg(&target)
        .env(backup::passphrase::ENV_VAR, "错误的口令12345")
        .output()
        .expect("run restore");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("错误：备份口令不正确，未写入任何内容"),
        "{err}"
    );
    assert!(!target.exists());
    let o = std::process::Command::new(bin)
        .args(["restore", "--from"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&target)
        .env(backup::passphrase::ENV_VAR, PASS)
        .output()
        .expect("run restore");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("恢复完成"), "{out}");
    let o = std::process::Command::new(bin)
        .args(["check", "--data-dir"])
        .arg(&target)
        .output()
        .expect("run check");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
