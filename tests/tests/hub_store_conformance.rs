//! One conformance suite for the hub's storage seam ([`cunyun_hub::store::HubStore`]), run
//! against both backends: sled (a temp dir) and PostgreSQL (a private server from
//! [`cunyun_tests::postgres`], in a database whose default collation is ICU `en-US` where the
//! server has ICU, so key ranges that relied on it would break here).
//!
//! Plus what only PostgreSQL has: migrations under the advisory lock (idempotent reopen, a
//! newer schema refused), and two store handles — two hub processes — writing one document at
//! once and waking each other through `LISTEN`/`NOTIFY`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use cunyun_hub::store::postgres::PgHubStore;
use cunyun_hub::store::{
    self, FeedPos, HubStore, HubStoreConfig, HubStoreError, HubWrite, Limits, PostgresConfig,
    StoreBackend,
};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::digest::heads_digest;
use cunyun_protocol::key::{DocKey, Kind};
use cunyun_tests::postgres::PgServer;

fn key(s: &str) -> DocKey {
    DocKey::parse(s).expect("test key")
}

fn scope(s: &str) -> AreaScope {
    AreaScope::parse(s).expect("test scope")
}

/// A new document with `field = value`.
fn doc_with(field: &str, value: &str) -> Automerge {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, field, value).expect("put");
    tx.commit();
    doc
}

/// `doc` with one more change (`field = value`); returns the bytes of that change only.
fn change(doc: &mut Automerge, field: &str, value: &str) -> Vec<u8> {
    let before = doc.get_heads();
    let mut tx = doc.transaction();
    tx.put(ROOT, field, value).expect("put");
    tx.commit();
    doc.save_after(&before)
}

fn write(k: &DocKey, chunk: Vec<u8>) -> HubWrite {
    HubWrite {
        key: k.clone(),
        chunk,
    }
}

fn text(doc: &Automerge, field: &str) -> Option<String> {
    doc.get(ROOT, field)
        .expect("get")
        .map(|(v, _)| v.as_str().unwrap_or_default().to_string())
}

/// The suite: every backend must pass it unchanged.
fn conformance(store: Arc<dyn HubStore>) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut watch = store.watch_writes();
    watch.borrow_and_update();

    // Round trip.
    let k1 = key("511424104201/hh/h1");
    let d1 = doc_with("note", "一");
    let applied = store.apply(vec![write(&k1, d1.save())], vec![])?;
    assert_eq!(applied.len(), 1);
    assert!(applied[0].changed);
    assert_eq!(applied[0].digest, heads_digest(&d1.get_heads()));
    let got = store.get(&k1)?.expect("stored");
    assert_eq!(got.get_heads(), d1.get_heads());
    assert_eq!(text(&got, "note").as_deref(), Some("一"));
    let e1 = store.entry(&k1)?.expect("entry");
    assert_eq!(e1.digest, heads_digest(&d1.get_heads()));
    assert!(e1.bytes > 0 && e1.chunks >= 1);
    assert!(store.get(&key("511424104201/hh/none"))?.is_none());
    assert!(store.entry(&key("511424104201/hh/none"))?.is_none());
    assert!(watch.has_changed()?, "a write moves watch_writes");

    // The same bytes again add nothing: no change, same feed position.
    let again = store.apply(vec![write(&k1, d1.save())], vec![])?;
    assert!(!again[0].changed);
    assert_eq!(store.entry(&k1)?.expect("entry").pos, e1.pos);

    // Concurrent changes merge: two forks (two actors) change different fields; both stay, and
    // the digest names the merged heads.
    let mut a = d1.fork();
    let mut b = d1.fork();
    let ca = change(&mut a, "left", "a");
    let cb = change(&mut b, "right", "b");
    store.apply(vec![write(&k1, ca)], vec![])?;
    let applied = store.apply(vec![write(&k1, cb)], vec![])?;
    let mut merged = a.fork();
    merged.merge(&mut b.clone())?;
    assert_eq!(applied[0].digest, heads_digest(&merged.get_heads()));
    let got = store.get(&k1)?.expect("stored");
    assert_eq!(text(&got, "left").as_deref(), Some("a"));
    assert_eq!(text(&got, "right").as_deref(), Some("b"));
    assert_eq!(
        store.entry(&k1)?.expect("entry").digest,
        heads_digest(&merged.get_heads())
    );

    // Many writers of one document at once (threads on one handle): every change survives,
    // through compaction (more chunks than compact_after_chunks).
    let base = store.get(&k1)?.expect("stored");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            let k1 = k1.clone();
            let mut fork = base.fork();
            std::thread::spawn(move || -> Result<(), HubStoreError> {
                for i in 0..3 {
                    let c = change(&mut fork, &format!("t{t}"), &i.to_string());
                    store.apply(vec![write(&k1, c)], vec![])?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread")?;
    }
    let got = store.get(&k1)?.expect("stored");
    for t in 0..8 {
        assert_eq!(
            text(&got, &format!("t{t}")).as_deref(),
            Some("2"),
            "writer {t}"
        );
    }
    assert_eq!(
        store.entry(&k1)?.expect("entry").digest,
        heads_digest(&got.get_heads())
    );

    // Area prefixes: one range each, no neighbours. Keys carry the full 12-digit code, so
    // 5114 holds its counties 511424 and 511425 but never 5113… or 5115…; 511424 never 511425.
    let layout = [
        "511424104201/hh/h2",
        "511424104201/rec/h1",
        "511424104202/hh/h3",
        "511425001001/hh/n1",
        "511300000000/content/c1",
        "511500000000/expert/e1",
        "511399999999/hh/low",
        "510000000000/content/p1",
    ];
    let writes = layout
        .iter()
        .map(|k| write(&key(k), doc_with("k", k).save()))
        .collect();
    store.apply(writes, vec![])?;
    let names = |s: &str, kind: Option<Kind>| -> anyhow::Result<Vec<String>> {
        Ok(store
            .entries(&scope(s), kind)?
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect())
    };
    assert_eq!(
        names("5114", None)?,
        [
            "511424104201/hh/h1",
            "511424104201/hh/h2",
            "511424104201/rec/h1",
            "511424104202/hh/h3",
            "511425001001/hh/n1"
        ]
    );
    assert_eq!(
        names("511424", None)?,
        [
            "511424104201/hh/h1",
            "511424104201/hh/h2",
            "511424104201/rec/h1",
            "511424104202/hh/h3"
        ]
    );
    assert_eq!(
        names("511424104201", Some(Kind::Hh))?,
        ["511424104201/hh/h1", "511424104201/hh/h2"]
    );
    assert_eq!(
        names("5113", None)?,
        ["511300000000/content/c1", "511399999999/hh/low"]
    );
    assert_eq!(names("51", None)?.len(), 9);
    assert_eq!(names("51", Some(Kind::Hh))?.len(), 5);
    assert!(names("52", None)?.is_empty());
    for (k, e) in store.entries(&scope("51"), None)? {
        assert_eq!(Some(e), store.entry(&k)?, "{k}: entries agree with entry");
    }

    // The feed: from the start every document; then nothing until something changes; then
    // only what changed (rows the last read already covered are not listed again when no
    // writer was running).
    let all = store.changes_since(FeedPos::START)?;
    let listed: BTreeSet<String> = all.rows.iter().map(|r| r.key.to_string()).collect();
    assert_eq!(listed.len(), 9, "{listed:?}");
    for r in &all.rows {
        assert_eq!(Some(r.digest), store.entry(&r.key)?.map(|e| e.digest));
        assert!(r.pos < all.next, "{r:?} before {:?}", all.next);
    }
    let quiet = store.changes_since(all.next)?;
    assert!(quiet.rows.is_empty(), "nothing changed: {:?}", quiet.rows);
    assert!(quiet.next >= all.next);
    let k2 = key("511424104201/hh/h2");
    let mut d2 = store.get(&k2)?.expect("stored");
    let c2 = change(&mut d2, "k", "changed");
    let no_op = store.apply(vec![write(&k1, got.save())], vec![])?;
    assert!(!no_op[0].changed);
    store.apply(vec![write(&k2, c2)], vec![])?;
    let page = store.changes_since(quiet.next)?;
    let changed: Vec<String> = page.rows.iter().map(|r| r.key.to_string()).collect();
    assert_eq!(changed, ["511424104201/hh/h2"]);
    assert_eq!(page.rows[0].digest, heads_digest(&d2.get_heads()));
    assert!(store.changes_since(page.next)?.rows.is_empty());

    // The watermark now: nothing before it is listed again, a write after it is.
    let mark = store.watermark()?;
    assert!(mark >= page.next, "{mark:?} before {:?}", page.next);
    assert!(store.changes_since(mark)?.rows.is_empty());
    let c2b = change(&mut d2, "k", "after the mark");
    store.apply(vec![write(&k2, c2b)], vec![])?;
    let after: Vec<String> = store
        .changes_since(mark)?
        .rows
        .iter()
        .map(|r| r.key.to_string())
        .collect();
    assert_eq!(after, ["511424104201/hh/h2"]);

    // Removal: gone from get, entry and the area.
    store.apply(vec![], vec![key("511424104202/hh/h3")])?;
    assert!(store.get(&key("511424104202/hh/h3"))?.is_none());
    assert!(!names("511424", None)?.contains(&"511424104202/hh/h3".to_string()));

    // Bad input: a typed error with a zh-CN message, and nothing of the batch is stored.
    let k9 = key("511424104201/hh/bad");
    let good = write(&k9, doc_with("x", "y").save());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "数据为空"),
        (b"not automerge".to_vec(), "不是 Automerge 数据"),
        (vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3], "Automerge 无法读取"),
    ];
    for (bytes, words) in cases {
        let err = store
            .apply(
                vec![good.clone(), write(&k9.with_kind(Kind::Rec), bytes)],
                vec![],
            )
            .expect_err("bad bytes are refused");
        assert!(matches!(err, HubStoreError::InvalidWrite { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(words) && msg.contains("未存储任何内容"),
            "{msg}"
        );
        assert!(
            store.entry(&k9)?.is_none(),
            "nothing of a refused batch is stored"
        );
    }
    // A change whose dependency the store lacks cannot be stored.
    let mut orphan = doc_with("x", "1");
    let dangling = change(&mut orphan, "x", "2");
    let err = store
        .apply(vec![write(&k9, dangling)], vec![])
        .expect_err("missing dependencies");
    assert!(err.to_string().contains("缺少"), "{err}");
    let huge = vec![0u8; 2 * 1024 * 1024];
    let mut big = huge.clone();
    big[..4].copy_from_slice(&[0x85, 0x6f, 0x4a, 0x83]);
    let err = store
        .apply(vec![write(&k9, big)], vec![])
        .expect_err("too large");
    assert!(matches!(err, HubStoreError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("超过上限"), "{err}");
    assert!(store.entry(&k9)?.is_none());

    // Figures: documents and bytes agree with the entries; the writes counter moves after a
    // write and not after a no-op.
    let listed = store.entries(&scope("51"), None)?;
    let stats = store.stats()?;
    assert_eq!(stats.documents, listed.len() as u64, "{stats:?}");
    assert_eq!(
        stats.bytes,
        listed.iter().map(|(_, e)| e.bytes).sum::<u64>(),
        "{stats:?}"
    );
    assert!(stats.chunks >= stats.documents, "{stats:?}");
    let w0 = store.writes();
    let again = store.get(&k2)?.expect("stored");
    store.apply(vec![write(&k2, again.save())], vec![])?;
    assert_eq!(store.writes(), w0, "a no-op write moves nothing");
    let mut d2b = again;
    let c = change(&mut d2b, "k", "once more");
    store.apply(vec![write(&k2, c)], vec![])?;
    assert!(store.writes() > w0, "a write moves the counter");
    assert_eq!(store.stats()?.documents, stats.documents);

    // A key range: exactly the documents keyed at one area, none of the areas inside it.
    let at_area: Vec<String> = store
        .entries_range(b"511300000000/", b"5113000000000")?
        .into_iter()
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(at_area, ["511300000000/content/c1"]);
    let all_keys: Vec<String> = store
        .entries_range(b"", b"\xff")?
        .into_iter()
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(all_keys.len(), listed.len(), "{all_keys:?}");

    // Metadata: absent, stored, replaced; bad names and oversized values refused in Chinese.
    assert_eq!(store.meta_get("engine.watermark")?, None);
    store.meta_put("engine.watermark", b"12")?;
    store.meta_put("peer.abc", &[0, 1, 2, 255])?;
    assert_eq!(
        store.meta_get("engine.watermark")?.as_deref(),
        Some(&b"12"[..])
    );
    store.meta_put("engine.watermark", b"")?;
    assert_eq!(
        store.meta_get("engine.watermark")?.as_deref(),
        Some(&b""[..])
    );
    assert_eq!(
        store.meta_get("peer.abc")?.as_deref(),
        Some(&[0u8, 1, 2, 255][..])
    );
    for bad in ["", "../x", "Upper", "a/b", &"x".repeat(101)] {
        let err = store.meta_put(bad, b"v").expect_err("bad name");
        assert!(err.to_string().contains("元数据名称"), "{bad}: {err}");
    }
    let err = store
        .meta_put("big", &vec![0u8; store::MAX_META_BYTES + 1])
        .expect_err("too large");
    assert!(err.to_string().contains("超过上限"), "{err}");
    assert_eq!(store.meta_get("big")?, None);

    eprintln!(
        "{:?}: conformance passed in {:?}",
        store.backend(),
        started.elapsed()
    );
    Ok(())
}

#[test]
fn sled_backend_conforms() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store::open(&HubStoreConfig::default(), dir.path())?;
    assert_eq!(store.backend(), store::BackendName::Sled);
    conformance(store)
}

fn pg_config(url: String) -> HubStoreConfig {
    let mut cfg = HubStoreConfig::default();
    cfg.backend = StoreBackend::Postgres;
    cfg.postgres = PostgresConfig::with_url(url);
    cfg
}

#[test]
fn postgres_backend_conforms() -> anyhow::Result<()> {
    let pg = PgServer::start()?;
    let url = pg.create_database("conformance")?;
    eprintln!(
        "database collation: {}",
        pg.psql(
            "conformance",
            "SELECT datlocprovider::text || ' ' || coalesce(daticulocale, datcollate) FROM pg_database WHERE datname = current_database()"
        )?
    );
    let store = store::open(&pg_config(url), std::path::Path::new("/nonexistent"))?;
    assert_eq!(store.backend(), store::BackendName::Postgres);
    conformance(store)?;
    // Key columns compare as bytes whatever the database default is.
    assert_eq!(
        pg.psql(
            "conformance",
            "SELECT string_agg(attname || ':' || collname, ',' ORDER BY attname) FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation WHERE attrelid = 'documents'::regclass AND attname IN ('key', 'area')"
        )?,
        "area:C,key:C"
    );
    Ok(())
}

#[test]
fn postgres_migrations_two_processes_and_notify() -> anyhow::Result<()> {
    let pg = PgServer::start()?;
    let url = pg.create_database("twoproc")?;
    let cfg = PostgresConfig::with_url(url.clone());
    // Two processes opening at once migrate once (advisory lock); reopening applies nothing.
    let opens: Vec<_> = (0..2)
        .map(|_| {
            let cfg = cfg.clone();
            std::thread::spawn(move || PgHubStore::open(&cfg, Limits::default()))
        })
        .collect();
    let mut handles = Vec::new();
    for o in opens {
        handles.push(Arc::new(o.join().expect("open thread")?));
    }
    assert_eq!(
        pg.psql(
            "twoproc",
            "SELECT string_agg(version || ' ' || name, ',' ORDER BY version) FROM schema_migrations"
        )?,
        "1 documents,2 meta"
    );
    let (one, two) = (Arc::clone(&handles[0]), Arc::clone(&handles[1]));

    // A write through one handle wakes the other (NOTIFY), which then reads it.
    let mut watch = two.watch_writes();
    let start = Instant::now();
    while !watch.has_changed()? && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10)); // the LISTEN connection's first bump
    }
    watch.borrow_and_update();
    let k = key("511424104201/need/n1");
    let base = doc_with("status", "open");
    one.apply(vec![write(&k, base.save())], vec![])?;
    let start = Instant::now();
    while !watch.has_changed()? {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no notification from the other process"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(two.get(&k)?.is_some());

    // Both processes write one document at once: all changes survive.
    let writers: Vec<_> = [one, two]
        .into_iter()
        .enumerate()
        .map(|(p, store)| {
            let k = k.clone();
            let mut fork = base.fork();
            std::thread::spawn(move || -> Result<(), HubStoreError> {
                for i in 0..20 {
                    let c = change(&mut fork, &format!("p{p}"), &i.to_string());
                    store.apply(vec![write(&k, c)], vec![])?;
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer")?;
    }
    let got = handles[0].get(&k)?.expect("stored");
    assert_eq!(text(&got, "p0").as_deref(), Some("19"));
    assert_eq!(text(&got, "p1").as_deref(), Some("19"));
    assert_eq!(
        handles[1].entry(&k)?.expect("entry").digest,
        heads_digest(&got.get_heads())
    );
    drop(handles);

    // A database migrated by a newer binary is refused, in words an operator can act on.
    pg.psql(
        "twoproc",
        "INSERT INTO schema_migrations (version, name) VALUES (99, 'future')",
    )?;
    let err = PgHubStore::open(&cfg, Limits::default())
        .err()
        .expect("newer schema refused");
    assert!(
        matches!(err, HubStoreError::SchemaTooNew { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("请升级 cunyun-hub"), "{err}");

    // No server: a connection error naming where it tried, no password.
    let mut gone =
        PostgresConfig::with_url("host=/nonexistent-socket-dir dbname=x user=y password=secret");
    gone.connect_timeout_ms = 500;
    let err = PgHubStore::open(&gone, Limits::default())
        .err()
        .expect("no server");
    let msg = err.to_string();
    assert!(
        msg.contains("无法连接 PostgreSQL") && msg.contains("/nonexistent-socket-dir"),
        "{msg}"
    );
    assert!(!msg.contains("secret"), "{msg}");
    Ok(())
}
