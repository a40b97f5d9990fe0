//! The cadre web app in headless Chromium at 360×640, driven over WebDriver: log in; a household
//! with invalid fields shows the Chinese errors next to the fields; save it; go offline (DevTools
//! network emulation), edit two households, reload while still offline and see the edits; come
//! back online and find them on the node; two browsers edit the same household offline and both
//! edits survive (different fields kept, the same field resolved by the CRDT and reported).
//! Every step takes a screenshot. With `CUNYUN_SCREENSHOTS=docs` they replace the operator
//! guide's pictures in `docs/zh-CN/img/`; otherwise they go to the target directory, so a test
//! run leaves the work tree as it found it.
//!
//! Skips (loudly) only when Chromium is not installed and `CI` is unset.

use std::path::PathBuf;

use anyhow::Context;
use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_protocol::area::AreaScope;
use cunyun_tests::browser::{self, Driver, Session};
use serde_json::json;

const VILLAGE: &str = "510116108203";

fn img(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = if std::env::var("CUNYUN_SCREENSHOTS").as_deref() == Ok("docs") {
        root.join("../docs/zh-CN/img")
    } else {
        root.join("../target/screenshots")
    };
    dir.join(name)
}

async fn start_node(dir: &std::path::Path) -> anyhow::Result<RunningNode> {
    let accounts = cunyun_platform::accounts::Accounts::open(dir)?;
    accounts.add("wangli", VILLAGE, "wangli-password")?;
    accounts.add("zhaomin", VILLAGE, "zhaomin-password")?;
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse()?;
    c.scope = AreaScope::parse(VILLAGE)?;
    c.node_name = "测试村".into();
    Ok(server::start(&c, std::future::pending()).await?)
}

async fn seed(node: &RunningNode, name: &str, roster: &str) -> anyhow::Result<String> {
    let r = node
        .state
        .records
        .create_household(
            "seed",
            &json!({
                "profile": {"group": 2, "residents": 3, "age_18_59": 2, "age_60_69": 1, "smartphones": 1},
                "private": {"head_name": name, "roster_no": roster, "phone": "13800000001"}
            }),
        )
        .await?;
    Ok(r.id)
}

/// Sets a form field's value as a person would (clear, type), by CSS selector.
/// Writes a hub `rec` document (the real layout) for household `id` into the node's store.
fn write_rec(node: &RunningNode, id: &str) -> anyhow::Result<()> {
    let rec = cunyun_protocol::rec::Rec::from_json(&json!({
        "village": VILLAGE, "updated": "2026-04-15",
        "items": {"asf-10": {"title": "非洲猪瘟防控十要点", "rendition": "main", "bytes": 34000,
            "score": 1080, "week": "2026-W16", "tags": {"liv.asf": true},
            "reason": "家中养猪：防非洲猪瘟"}}
    }))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut doc = automerge::AutoCommit::new();
    rec.write_to(&mut doc)?;
    let key = cunyun_protocol::key::DocKey::new(
        cunyun_protocol::area::AreaCode::parse(VILLAGE)?,
        cunyun_protocol::key::Kind::Rec,
        id,
    )?;
    node.state
        .records
        .store()
        .commit(vec![cunyun_platform::store::DocWrite {
            key,
            chunk: doc.save(),
            heads: doc.get_heads(),
            updated_at_ms: 1,
        }])?;
    Ok(())
}

async fn set(s: &Session, css: &str, v: &str) -> anyhow::Result<()> {
    s.fill(css, v).await
}

async fn edit_household(
    s: &Session,
    url: &str,
    id: &str,
    fields: &[(&str, &str)],
) -> anyhow::Result<()> {
    s.goto(&format!("{url}/#/h/{id}/edit")).await?;
    s.wait("document.querySelector('#hform')", 20).await?;
    for (name, v) in fields {
        set(s, &format!("#hform [name='{name}']"), v).await?;
    }
    s.click("#hform button[type=submit]").await?;
    s.wait(&format!("location.hash === '#/h/{id}'"), 20).await?;
    Ok(())
}

/// Sends the page's queue and waits until it is empty (the `online` event may have started it).
async fn send_queue(s: &Session) -> anyhow::Result<()> {
    s.js_async("window.cunyun.flush().then(arguments[0])", json!([]))
        .await?;
    s.js("window.__n = undefined", json!([])).await?;
    s.wait(
        "(window.__p = window.cunyun.pending().then(n => { window.__n = n; }), window.__n === 0)",
        20,
    )
    .await?;
    Ok(())
}

async fn page_text(s: &Session) -> anyhow::Result<String> {
    Ok(s.js("return document.body.innerText", json!([]))
        .await?
        .as_str()
        .unwrap_or_default()
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cadre_app_login_validation_offline_edits_and_concurrent_merge() -> anyhow::Result<()> {
    if !browser::available() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set but {} or {} is missing (.ci/run installs chromium chromium-driver)",
                browser::CHROMIUM,
                browser::CHROMEDRIVER
            );
        }
        eprintln!("\n!!!!! SKIPPED webapp browser test: {} not installed (apt-get install chromium chromium-driver) !!!!!\n", browser::CHROMIUM);
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let node = start_node(&dir.path().join("node")).await?;
    // Each phone reaches the node through its own "Wi-Fi" (a loopback relay it can leave).
    let wifi_a = cunyun_tests::wifi::Wifi::start(node.addr).await?;
    let wifi_b = cunyun_tests::wifi::Wifi::start(node.addr).await?;
    let url = format!("http://127.0.0.1:{}", wifi_a.port);
    let url_b = format!("http://127.0.0.1:{}", wifi_b.port);
    let h1 = seed(&node, "张大爷", "2-001").await?;
    let h2 = seed(&node, "李大妈", "2-002").await?;
    let h3 = seed(&node, "陈家", "2-003").await?;

    let driver = Driver::start().await?;
    let a = driver.session(&dir.path().join("profile-a")).await?;

    // Log in.
    a.goto(&url).await?;
    a.wait("location.hash === '#/login'", 20).await?;
    a.screenshot(&img("login.png")).await?;
    browser::login(&a, &url, "wangli", "wangli-password").await?;
    // The overview is headed with the village's name, not the account's.
    a.wait(
        "document.querySelector('#view h1')?.textContent === '岷江村 · 本村概况'",
        20,
    )
    .await?;
    a.screenshot(&img("overview.png")).await?;
    assert!(page_text(&a).await?.contains("已登记农户"));

    // A household with invalid fields: the Chinese errors appear next to the fields.
    a.goto(&format!("{url}/#/new")).await?;
    a.wait("document.querySelector('#hform')", 20).await?;
    set(&a, "#hform [name='profile.group']", "0").await?;
    set(&a, "#hform [name='profile.residents']", "2").await?;
    set(&a, "#hform [name='profile.age_18_59']", "3").await?;
    set(&a, "#hform [name='private.phone']", "12345").await?;
    a.click("#hform button[type=submit]").await?;
    let errs = a
        .wait("Array.from(document.querySelectorAll('.field.bad')).map(e => e.id + '=' + e.querySelector('.err').textContent)", 10)
        .await?;
    let errs: Vec<String> = serde_json::from_value(errs)?;
    for want in [
        "f-profile-group=村民小组应在1到99之间",
        "f-profile-residents=各年龄段人数之和（3）超过家庭人口（2）",
        "f-private-phone",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{want} not in {errs:?}"
        );
    }
    a.screenshot(&img("form-errors.png")).await?;
    // Stated needs are picked from the tag tree in plain words.
    a.js(
        "const d = document.querySelector('#f-profile-stated_needs details'); d.open = true; \
         d.scrollIntoView({block: 'start'}); window.scrollBy(0, -56);",
        json!([]),
    )
    .await?;
    a.screenshot(&img("needs-picker.png")).await?;
    // An error only the server knows (留守儿童 needs someone working away): shown from the 422.
    set(&a, "#hform [name='profile.group']", "3").await?;
    set(&a, "#hform [name='profile.residents']", "4").await?;
    set(&a, "#hform [name='profile.age_6_14']", "1").await?;
    set(&a, "#hform [name='private.phone']", "13912345678").await?;
    set(&a, "#hform [name='private.head_name']", "王秀英").await?;
    set(&a, "#hform [name='private.roster_no']", "3-017").await?;
    a.click("#hform [name='profile.left_behind_children']")
        .await?;
    a.click("#hform button[type=submit]").await?;
    let server_err = a
        .wait(
            "document.querySelector('#f-profile-left_behind_children.bad .err')?.textContent",
            10,
        )
        .await?;
    assert!(
        server_err
            .as_str()
            .is_some_and(|s| s.contains("外出务工人数为0")),
        "{server_err}"
    );
    assert_eq!(
        node.state
            .records
            .list_households(&Default::default())?
            .len(),
        3,
        "nothing stored"
    );
    // Fix it and save.
    set(&a, "#hform [name='profile.working_away']", "1").await?;
    a.click("#hform button[type=submit]").await?;
    let hash = a
        .wait("location.hash.startsWith('#/h/h') && location.hash", 20)
        .await?;
    let new_id = hash
        .as_str()
        .context("hash")?
        .trim_start_matches("#/h/")
        .to_string();
    let stored = node.state.records.get_household(&new_id)?;
    assert_eq!(stored.private.head_name, "王秀英");
    assert_eq!(stored.profile.working_away, 1);
    a.wait("document.body.innerText.includes('需求标签及原因')", 10)
        .await?;
    a.screenshot(&img("household.png")).await?;

    // The list, and the two households opened once online so they are kept on the phone.
    a.goto(&format!("{url}/#/households")).await?;
    a.wait("document.querySelectorAll('#hlist li').length === 4", 20)
        .await?;
    a.screenshot(&img("list.png")).await?;
    for id in [&h1, &h2, &h3] {
        a.goto(&format!("{url}/#/h/{id}")).await?;
        a.wait("document.body.innerText.includes('需求标签及原因')", 20)
            .await?;
    }
    a.goto(&format!("{url}/#/print/{h1}")).await?;
    a.wait("document.querySelector('.qr img')?.complete && document.querySelector('.qr img').naturalWidth > 0", 20).await?;
    a.screenshot(&img("qr.png")).await?;
    a.wait("navigator.serviceWorker.controller !== null", 20)
        .await?;

    // Recommendations in the real rec layout: the household page lists them; opening one whose
    // file is not on the node yet says it is downloading. The villager page's 「有帮助」 writes the
    // household's fb document.
    write_rec(&node, &h1)?;
    a.goto(&format!("{url}/#/h/{h1}")).await?;
    a.wait("document.body.innerText.includes('非洲猪瘟防控十要点') && document.body.innerText.includes('家中养猪：防非洲猪瘟')", 20)
        .await?;
    let text = page_text(&a).await?;
    assert!(
        text.contains("推荐于2026年第16周（4月13日—4月19日）") && !text.contains("2026-W16"),
        "{text}"
    );
    a.click(".content button.show").await?;
    a.wait(
        "document.body.innerText.includes('内容正在下载，请稍后再看')",
        20,
    )
    .await?;
    a.goto(&format!("{url}/v/{h1}")).await?;
    a.wait("document.body.innerText.includes('非洲猪瘟防控十要点')", 20)
        .await?;
    a.click("article button.helpful").await?;
    a.wait("document.body.innerText.includes('已反馈：有帮助')", 20)
        .await?;
    let fb_key = cunyun_protocol::key::DocKey::new(
        cunyun_protocol::area::AreaCode::parse(VILLAGE)?,
        cunyun_protocol::key::Kind::Fb,
        h1.as_str(),
    )?;
    let fb_doc = node
        .state
        .records
        .store()
        .load(&fb_key)?
        .context("fb stored")?;
    let fb = cunyun_protocol::feedback::Feedback::read_from(&fb_doc)?;
    assert!(
        fb.items.get("asf-10").is_some_and(|i| i.is_helpful()),
        "{fb:?}"
    );

    // The villager page: no login, no personal data.
    let villager = reqwest::get(format!("{url}/v/{h1}")).await?.text().await?;
    assert!(
        villager.contains("为您家推荐")
            && !villager.contains("张大爷")
            && !villager.contains("13800000001")
    );

    // Offline: edit two households, reload while offline, the edits are there.
    wifi_a.set(false);
    a.set_offline(true).await?;
    edit_household(
        &a,
        &url,
        &h1,
        &[("private.notes", "离线时记录：需要柑橘技术")],
    )
    .await?;
    edit_household(
        &a,
        &url,
        &h2,
        &[("profile.residents", "4"), ("profile.age_0_5", "1")],
    )
    .await?;
    assert!(page_text(&a).await?.contains("离线"));
    // A household registered offline too.
    a.goto(&format!("{url}/#/new")).await?;
    a.wait("document.querySelector('#hform')", 20).await?;
    set(&a, "#hform [name='profile.group']", "4").await?;
    set(&a, "#hform [name='profile.residents']", "1").await?;
    set(&a, "#hform [name='private.head_name']", "刘奶奶").await?;
    a.click("#hform button[type=submit]").await?;
    a.wait("location.hash.startsWith('#/h/local-')", 20).await?;
    a.goto(&url).await?;
    a.wait(
        "document.querySelector('#net')?.textContent.includes('待上传3')",
        20,
    )
    .await?;
    a.screenshot(&img("offline.png")).await?;
    a.goto(&format!("{url}/#/h/{h2}")).await?;
    a.wait("document.body.innerText.includes('4人')", 20)
        .await?;
    a.goto(&format!("{url}/#/h/{h1}/edit")).await?;
    let notes = a
        .wait(
            "document.querySelector(\"[name='private.notes']\")?.value",
            20,
        )
        .await?;
    assert_eq!(notes, "离线时记录：需要柑橘技术");
    assert_eq!(
        node.state.records.get_household(&h1)?.private.notes,
        "",
        "not on the node yet"
    );

    // The sync page says what each queued change is (never a `local-…` id).
    a.goto(&format!("{url}/#/sync")).await?;
    a.wait("document.body.innerText.includes('本机待上传（3）')", 20)
        .await?;
    let text = page_text(&a).await?;
    for want in ["修改农户：张大爷", "修改农户：李大妈", "新登记农户：刘奶奶"]
    {
        assert!(text.contains(want), "{want} not in {text}");
    }
    assert!(!text.contains("local-") && !text.contains(&h1), "{text}");
    a.screenshot(&img("sync-pending.png")).await?;

    // Online again: the queue is sent (on the `online` event, or by this call) and the node
    // has the edits. The sync page, left open, follows: its count drops without a reload.
    wifi_a.set(true);
    a.set_offline(false).await?;
    a.wait(
        "document.body.innerText.includes('本机待上传（0）') && document.body.innerText.includes('全部已上传')",
        30,
    )
    .await?;
    send_queue(&a).await?;
    let all = node.state.records.list_households(&Default::default())?;
    assert!(
        all.iter().any(|h| h.head_name == "刘奶奶" && h.group == 4),
        "offline registration arrived"
    );
    assert_eq!(
        node.state.records.get_household(&h1)?.private.notes,
        "离线时记录：需要柑橘技术"
    );
    let r2 = node.state.records.get_household(&h2)?;
    assert_eq!((r2.profile.residents, r2.profile.age_0_5), (4, 1));
    let pending = a
        .js_async("window.cunyun.pending().then(arguments[0])", json!([]))
        .await?;
    assert_eq!(pending, json!(0));

    // Two cadres, two browsers, the same household, both offline.
    let b = driver.session(&dir.path().join("profile-b")).await?;
    browser::login(&b, &url_b, "zhaomin", "zhaomin-password").await?;
    a.goto(&format!("{url}/#/h/{h3}")).await?;
    a.wait("document.body.innerText.includes('需求标签及原因')", 20)
        .await?;
    b.goto(&format!("{url_b}/#/h/{h3}")).await?;
    b.wait("document.body.innerText.includes('需求标签及原因')", 20)
        .await?;
    wifi_a.set(false);
    a.set_offline(true).await?;
    wifi_b.set(false);
    b.set_offline(true).await?;
    edit_household(
        &a,
        &url,
        &h3,
        &[
            ("profile.smartphones", "2"),
            ("private.notes", "王丽：家里有大棚"),
        ],
    )
    .await?;
    edit_household(
        &b,
        &url_b,
        &h3,
        &[
            ("profile.smartphones", "3"),
            ("private.phone", "13700000003"),
        ],
    )
    .await?;
    wifi_a.set(true);
    a.set_offline(false).await?;
    send_queue(&a).await?;
    let ca = a
        .js_async("window.cunyun.conflicts().then(arguments[0])", json!([]))
        .await?;
    assert_eq!(ca, json!([]), "the first to arrive has no conflict");
    wifi_b.set(true);
    b.set_offline(false).await?;
    send_queue(&b).await?;
    let cb = b
        .js_async("window.cunyun.conflicts().then(arguments[0])", json!([]))
        .await?;
    let conflicts = cb[0]["fields"].as_array().context("conflicts")?.clone();
    assert_eq!(conflicts.len(), 1, "{cb}");
    assert_eq!(conflicts[0]["field"], "profile.smartphones");
    let r3 = node.state.records.get_household(&h3)?;
    assert_eq!(
        r3.private.notes, "王丽：家里有大棚",
        "A's different field kept"
    );
    assert_eq!(r3.private.phone, "13700000003", "B's different field kept");
    assert!([2, 3].contains(&r3.profile.smartphones));
    assert_eq!(
        conflicts[0]["kept"],
        json!(r3.profile.smartphones),
        "the CRDT's value is reported"
    );
    // The app says so.
    b.goto(&format!("{url_b}/#/households")).await?;
    b.wait("document.querySelectorAll('#hlist li').length === 5", 20)
        .await?;
    b.goto(&format!("{url_b}/#/h/{h3}")).await?;
    b.wait("document.body.innerText.includes('需求标签及原因') && !document.body.innerText.includes('上传前')", 20).await?;
    b.wait("document.body.innerText.includes('已自动合并')", 20)
        .await?;
    b.screenshot(&img("conflict.png")).await?;
    b.goto(&format!("{url_b}/#/sync")).await?;
    b.wait("document.body.innerText.includes('已自动解决的冲突')", 20)
        .await?;
    b.screenshot(&img("sync.png")).await?;

    // Local needs.
    a.goto(&format!("{url}/#/needs/new")).await?;
    a.wait("document.querySelector('#nform')", 20).await?;
    a.click("#nform button[type=submit]").await?;
    let need_err = a
        .wait(
            "document.querySelector('#f-need-title.bad .err')?.textContent",
            10,
        )
        .await?;
    assert!(need_err
        .as_str()
        .is_some_and(|s| s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))));
    set(&a, "#nform [name='need.title']", "柑橘黄龙病防治技术").await?;
    a.click("#nform button[type=submit]").await?;
    a.wait(
        "location.hash === '#/needs' && document.body.innerText.includes('柑橘黄龙病防治技术')",
        20,
    )
    .await?;
    a.screenshot(&img("needs.png")).await?;

    // Deletion on request: a reason and the typed confirmation are required; then the household
    // is gone from the node and from the phone.
    a.goto(&format!("{url}/#/h/{h2}")).await?;
    a.wait("document.querySelector('#delete')", 20).await?;
    a.click("#delete").await?;
    a.wait("document.querySelector('#delform')", 20).await?;
    a.click("#delform button[type=submit]").await?;
    a.wait(
        "!document.querySelector('#delerr').hidden && \
         document.querySelector('#delerr').textContent.includes('删除原因')",
        10,
    )
    .await?;
    assert!(
        node.state.records.get_household(&h2).is_ok(),
        "nothing deleted yet"
    );
    a.js(
        "document.querySelector(\"#delform [name='reason']\").value = 'withdrawn'",
        json!([]),
    )
    .await?;
    set(&a, "#delform [name='confirm']", "确认删除").await?;
    a.screenshot(&img("delete.png")).await?;
    a.click("#delform button[type=submit]").await?;
    a.wait("location.hash === '#/households'", 20).await?;
    assert!(
        node.state.records.get_household(&h2).is_err(),
        "deleted on the node"
    );
    let kept = a
        .js_async(
            "const id = arguments[0], cb = arguments[1]; const r = indexedDB.open('cunyun'); \
             r.onsuccess = () => { \
             const q = r.result.transaction('records').objectStore('records').get(id); \
             q.onsuccess = () => cb(q.result === undefined); };",
            json!([h2]),
        )
        .await?;
    assert_eq!(kept, json!(true), "the phone forgot the deleted household");

    // Logging out removes the records kept on the phone.
    a.goto(&format!("{url}/#/")).await?;
    a.wait("document.querySelector('#logout')", 20).await?;
    a.click("#logout").await?;
    a.wait(
        "location.hash === '#/login' && document.querySelector('#login')",
        20,
    )
    .await?;
    let kept = a
        .js_async(
            "const cb = arguments[0]; const r = indexedDB.open('cunyun'); r.onsuccess = () => { \
             const q = r.result.transaction('records').objectStore('records').count(); \
             q.onsuccess = () => cb(q.result); };",
            json!([]),
        )
        .await?;
    assert_eq!(kept, json!(0), "no household data left on the phone");

    a.close().await?;
    b.close().await?;
    drop(driver);
    node.stop().await?;
    Ok(())
}
