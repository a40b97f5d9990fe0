//! The cadre web app over HTTPS, as in the field: the node serves the app on its HTTPS listener
//! with a certificate from its node-local web CA for a LAN name (`cunyun.lan`, which Chromium
//! resolves to 127.0.0.1 through `--host-resolver-rules`, so the origin is *not* loopback and
//! only HTTPS makes it a secure context). The browser trusts the CA the way a phone does: the CA
//! certificate downloaded from the node's `/ca.crt` is imported into the NSS database Chromium
//! reads (`$HOME/.pki/nssdb`, with `certutil`). Then: log in over HTTPS, open records, go
//! offline, edit, close the tab and open a fresh one at the app's URL: the app loads from the
//! service worker with the records readable and the queued edit intact; local needs are created
//! and changed offline and survive a fresh tab; back online the queue is sent and the node has
//! it all (out of range = a loopback relay in front of the node refusing connections, plus
//! DevTools offline emulation; a need field changed at the node meanwhile is kept; one the cadre changed too gets
//! the cadre's value and is reported). Need status offers only the allowed transitions; the
//! rating appears only for 已解决. The plain HTTP listener keeps the villager pages (and the QR
//! links made over HTTPS point there), refuses the cadre API, and sends cadres to HTTPS.
//!
//! Skips (loudly) only when Chromium or certutil is not installed and `CI` is unset.

use std::path::PathBuf;

use anyhow::Context;
use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_tests::browser::{self, Driver, Session};
use serde_json::json;

const VILLAGE: &str = "510116108203";
const HOST: &str = "cunyun.lan";

fn img(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = if std::env::var("CUNYUN_SCREENSHOTS").as_deref() == Ok("docs") {
        root.join("../docs/zh-CN/img")
    } else {
        root.join("../target/screenshots")
    };
    dir.join(name)
}

fn tools_available() -> bool {
    browser::available()
        && std::process::Command::new("certutil")
            .arg("-H")
            .output()
            .is_ok()
}

async fn start_node(dir: &std::path::Path) -> anyhow::Result<RunningNode> {
    let accounts = cunyun_platform::accounts::Accounts::open(dir)?;
    accounts.add("wangli", VILLAGE, "wangli-password")?;
    let c = NodeConfig::from_toml(&format!(
        "data_dir = {dir:?}\nlisten = \"127.0.0.1:0\"\nscope = \"{VILLAGE}\"\nnode_name = \"测试村\"\n\
         [web_tls]\nenabled = true\nlisten = \"127.0.0.1:0\"\nnames = [\"{HOST}\", \"127.0.0.1\"]\n",
        dir = dir.display().to_string()
    ))?;
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

/// Sends the page's queue and waits until it is empty.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cadre_app_over_https_reopens_offline_in_a_fresh_tab() -> anyhow::Result<()> {
    if !tools_available() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but chromium, chromedriver or certutil is missing (.ci/run installs chromium chromium-driver libnss3-tools)");
        }
        eprintln!("\n!!!!! SKIPPED webapp HTTPS test: chromium or certutil not installed (apt-get install chromium chromium-driver libnss3-tools) !!!!!\n");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let node = start_node(&dir.path().join("node")).await?;
    let http_port = node.addr.port();
    let https_port = node.https_addr.context("https listener")?.port();
    let wifi = cunyun_tests::wifi::Wifi::start(node.https_addr.context("https listener")?).await?;
    let app = format!("https://{HOST}:{}", wifi.port);
    let plain = format!("http://{HOST}:{http_port}");
    let h1 = seed(&node, "张大爷", "2-001").await?;
    let h2 = seed(&node, "李大妈", "2-002").await?;
    let need = node
        .state
        .records
        .create_need(
            "seed",
            &json!({"requester": "coop", "title": "猕猴桃溃疡病防治"}),
        )
        .await?;
    let need_id = need.key.id().to_string();
    let need2 = node
        .state
        .records
        .create_need(
            "seed",
            &json!({"requester": "village_collective", "title": "生猪疫病防控培训", "status": "open"}),
        )
        .await?;
    let need2_id = need2.key.id().to_string();
    node.state
        .records
        .update_need(
            "seed",
            &need2_id,
            &json!({"status": "matched"}),
            cunyun_node::records::UpdateMode::MergePatch,
        )
        .await?;

    // The plain HTTP listener, as a phone without the CA sees it (loopback, Host: cunyun.lan).
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http_port}");
    let host_hdr = format!("{HOST}:{http_port}");
    let front = http
        .get(format!("{base}/"))
        .header("host", &host_hdr)
        .send()
        .await?
        .text()
        .await?;
    assert!(
        front.contains(&format!("https://{HOST}:{https_port}/")) && front.contains("/ca"),
        "{front}"
    );
    let api = http
        .get(format!("{base}/api/v1/me"))
        .header("host", &host_hdr)
        .send()
        .await?;
    assert_eq!(api.status(), 403, "no cadre API over plain HTTP");
    let body: serde_json::Value = api.json().await?;
    assert_eq!(body["error"], "https_required");
    let login = http
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"name": "wangli", "password": "wangli-password"}))
        .send()
        .await?;
    assert_eq!(login.status(), 403, "no password over plain HTTP");
    let villager = http.get(format!("{base}/v/{h1}")).send().await?;
    assert_eq!(villager.status(), 200, "villager pages stay on HTTP");
    let ca_pem = http.get(format!("{base}/ca.crt")).send().await?;
    assert_eq!(
        ca_pem
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-x509-ca-cert")
    );
    let ca_pem = ca_pem.text().await?;
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let guide = http.get(format!("{base}/ca")).send().await?.text().await?;
    assert!(guide.contains("加密与凭据") && guide.contains("SHA-256"));

    // "Install" the downloaded CA certificate, as on a phone.
    let home = dir.path().join("home");
    let ca_file = dir.path().join("cunyun-ca.crt");
    std::fs::write(&ca_file, &ca_pem)?;
    browser::trust_ca(&home, &ca_file)?;
    let driver = Driver::start_with_home(Some(&home)).await?;
    let a = driver
        .session_with_args(
            &dir.path().join("profile-a"),
            &[format!("--host-resolver-rules=MAP {HOST} 127.0.0.1")],
        )
        .await?;

    // Over plain HTTP the LAN name is not a secure context: no service worker possible.
    a.goto(&format!("{plain}/")).await?;
    a.wait("document.querySelector('#https')", 20).await?;
    let secure = a.js("return window.isSecureContext", json!([])).await?;
    assert_eq!(secure, json!(false));
    a.screenshot(&img("https-redirect.png")).await?;
    a.goto(&format!("{plain}/ca")).await?;
    a.wait("document.body.innerText.includes('安装证书')", 20)
        .await?;
    a.screenshot(&img("ca-install.png")).await?;

    // Over HTTPS it is, and the app works.
    a.goto(&format!("{app}/")).await?;
    a.wait("location.hash === '#/login'", 20).await?;
    let secure = a.js("return window.isSecureContext", json!([])).await?;
    assert_eq!(secure, json!(true), "the certificate is trusted");
    browser::login(&a, &app, "wangli", "wangli-password").await?;
    for id in [&h1, &h2] {
        a.goto(&format!("{app}/#/h/{id}")).await?;
        a.wait("document.body.innerText.includes('需求标签及原因')", 20)
            .await?;
    }
    // The QR page made over HTTPS points villagers to plain HTTP.
    a.goto(&format!("{app}/#/print/{h1}")).await?;
    a.wait(
        &format!(
            "document.body.innerText.includes({})",
            json!(format!("http://{HOST}:{http_port}/v/{h1}"))
        ),
        20,
    )
    .await?;
    a.goto(&format!("{app}/#/needs")).await?;
    a.wait("document.body.innerText.includes('猕猴桃溃疡病防治')", 20)
        .await?;
    a.goto(&format!("{app}/#/needs/{need_id}")).await?;
    a.wait("document.querySelector('#nform')", 20).await?;
    a.goto(&format!("{app}/#/needs/{need2_id}")).await?;
    a.wait("document.querySelector('#nform')", 20).await?;
    a.wait("navigator.serviceWorker.controller !== null", 20)
        .await?;

    // Offline: a household edit, a new need and a need status change, all queued.
    a.set_offline(true).await?;
    wifi.set(false);
    a.goto(&format!("{app}/#/h/{h1}/edit")).await?;
    a.wait("document.querySelector('#hform')", 20).await?;
    a.fill("#hform [name='private.notes']", "离线记录：想学猕猴桃修剪")
        .await?;
    a.click("#hform button[type=submit]").await?;
    a.wait(&format!("location.hash === '#/h/{h1}'"), 20).await?;
    a.goto(&format!("{app}/#/needs/new")).await?;
    a.wait("document.querySelector('#nform')", 20).await?;
    a.fill("#nform [name='need.title']", "离线新建：茶叶病虫害绿色防控")
        .await?;
    a.click("#nform button[type=submit]").await?;
    a.wait(
        "location.hash === '#/needs' && document.querySelector('ul.list') && document.body.innerText.includes('离线新建：茶叶病虫害绿色防控')",
        20,
    )
    .await?;
    a.goto(&format!("{app}/#/needs/{need_id}")).await?;
    a.wait(
        "document.querySelector(\"#nform [name='need.title']\")?.value === '猕猴桃溃疡病防治'",
        20,
    )
    .await?;
    // Only the allowed transitions are offered: open → matched, closed.
    let options = a
        .js(
            "return Array.from(document.querySelectorAll(\"#nform [name='need.status'] option\")).map(o => o.value)",
            json!([]),
        )
        .await?;
    assert_eq!(options, json!(["open", "matched", "closed"]));
    // No rating unless resolved.
    let rating_shown = a
        .js(
            "return !document.querySelector('#f-need-satisfaction').hidden",
            json!([]),
        )
        .await?;
    assert_eq!(rating_shown, json!(false));
    a.js(
        "const s = document.querySelector(\"#nform [name='need.status']\"); s.value = 'matched'; s.dispatchEvent(new Event('change', {bubbles: true}));",
        json!([]),
    )
    .await?;
    a.fill("#nform [name='need.contact_role']", "合作社理事长")
        .await?;
    a.click("#nform button[type=submit]").await?;
    a.wait(
        "location.hash === '#/needs' && document.querySelector('ul.list') && document.body.innerText.includes('已匹配')",
        20,
    )
    .await?;
    a.goto(&format!("{app}/#/needs/{need2_id}")).await?;
    a.wait(
        "document.querySelector(\"#nform [name='need.title']\")?.value === '生猪疫病防控培训'",
        20,
    )
    .await?;
    a.js(
        "const s = document.querySelector(\"#nform [name='need.status']\"); s.value = 'open'; s.dispatchEvent(new Event('change', {bubbles: true}));",
        json!([]),
    )
    .await?;
    a.click("#nform button[type=submit]").await?;
    a.wait(
        "location.hash === '#/needs' && document.querySelector('ul.list')",
        20,
    )
    .await?;
    a.screenshot(&img("needs-offline.png")).await?;

    // Close the tab; a fresh one, still offline, opens the app from the service worker.
    a.fresh_tab(Some(&app)).await?;
    a.goto(&format!("{app}/#/h/{h1}/edit")).await?;
    let reach = a
        .js_async(
            "const cb = arguments[0]; fetch('/healthz').then(r => cb('reached ' + r.status + ' online=' + navigator.onLine), e => cb('offline'))",
            json!([]),
        )
        .await?;
    assert_eq!(reach, json!("offline"), "the fresh tab has no network");
    let notes = a
        .wait(
            "document.querySelector(\"[name='private.notes']\")?.value",
            20,
        )
        .await?;
    assert_eq!(notes, "离线记录：想学猕猴桃修剪");
    a.goto(&format!("{app}/#/h/{h2}")).await?;
    a.wait("document.body.innerText.includes('李大妈')", 20)
        .await?;
    a.goto(&format!("{app}/#/needs")).await?;
    a.wait(
        "document.body.innerText.includes('离线新建：茶叶病虫害绿色防控') && document.body.innerText.includes('已匹配')",
        20,
    )
    .await?;
    a.wait(
        "document.querySelector('#net')?.textContent.includes('待上传4')",
        20,
    )
    .await?;
    a.screenshot(&img("https-offline.png")).await?;
    assert_eq!(node.state.records.get_household(&h1)?.private.notes, "");

    // Meanwhile someone else changes the same need at the node: one field the cadre did not
    // touch, and one the cadre changed too.
    node.state
        .records
        .update_need(
            "zhaomin",
            &need_id,
            &json!({"description": "县农技站已联系", "contact_role": "村支书"}),
            cunyun_node::records::UpdateMode::MergePatch,
        )
        .await?;

    node.state
        .records
        .update_need(
            "hub",
            &need2_id,
            &json!({"status": "in_service"}),
            cunyun_node::records::UpdateMode::MergePatch,
        )
        .await?;

    // Online again: the queue is sent; the change the node can no longer accept (服务中 cannot go
    // back to 待对接) is kept on the phone, marked refused with the node's reason.
    wifi.set(true);
    a.set_offline(false).await?;
    a.js_async("window.cunyun.flush().then(arguments[0])", json!([]))
        .await?;
    a.js("window.__n = undefined", json!([])).await?;
    a.wait(
        "(window.__p = window.cunyun.pending().then(n => { window.__n = n; }), window.__n === 1)",
        20,
    )
    .await?;
    assert_eq!(
        node.state.records.get_need(&need2_id)?.need.status.id(),
        "in_service",
        "a refused transition changes nothing"
    );
    a.goto(&format!("{app}/#/")).await?;
    a.goto(&format!("{app}/#/needs")).await?;
    a.wait(
        "document.body.innerText.includes('上传被拒') && document.body.innerText.includes('服务中')",
        20,
    )
    .await?;
    a.goto(&format!("{app}/#/sync")).await?;
    a.wait(
        "document.querySelector('[data-drop]') && document.body.innerText.includes('被拒')",
        20,
    )
    .await?;
    a.click("[data-drop]").await?;
    send_queue(&a).await?;
    let n = node.state.records.get_need(&need_id)?;
    assert_eq!(
        n.need.description, "县农技站已联系",
        "the other change kept"
    );
    assert_eq!(
        n.need.contact_role, "合作社理事长",
        "the cadre's queued change applied"
    );
    let conflicts = a
        .js_async("window.cunyun.conflicts().then(arguments[0])", json!([]))
        .await?;
    let fields: Vec<&str> = conflicts[0]["fields"]
        .as_array()
        .context("need conflict reported")?
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(fields, vec!["need.contact_role"], "{conflicts}");
    assert!(
        conflicts[0]["msg"]
            .as_str()
            .is_some_and(|m| m.contains("村支书") && m.contains("联系人职务")),
        "{conflicts}"
    );
    assert_eq!(
        node.state.records.get_household(&h1)?.private.notes,
        "离线记录：想学猕猴桃修剪"
    );
    let needs = node.state.records.list_needs(&Default::default())?;
    assert!(
        needs
            .iter()
            .any(|n| n.need.title == "离线新建：茶叶病虫害绿色防控"),
        "the need created offline arrived"
    );
    let n = node.state.records.get_need(&need_id)?;
    assert_eq!(n.need.status.id(), "matched");

    // Status onwards: in service (the hub's side, here written directly), then resolved with a
    // rating, which is offered only once resolved is chosen.
    node.state
        .records
        .update_need(
            "hub",
            &need_id,
            &json!({"status": "in_service"}),
            cunyun_node::records::UpdateMode::MergePatch,
        )
        .await?;
    a.goto(&format!("{app}/#/")).await?;
    a.goto(&format!("{app}/#/needs")).await?;
    a.wait(
        "document.body.innerText.includes('服务中') && !document.body.innerText.includes('待上传')",
        20,
    )
    .await?;
    a.goto(&format!("{app}/#/needs/{need_id}")).await?;
    a.wait(
        "document.querySelector(\"#nform [name='need.title']\")?.value === '猕猴桃溃疡病防治'",
        20,
    )
    .await?;
    a.js(
        "const s = document.querySelector(\"#nform [name='need.status']\"); s.value = 'resolved'; s.dispatchEvent(new Event('change', {bubbles: true}));",
        json!([]),
    )
    .await?;
    a.wait("!document.querySelector('#f-need-satisfaction').hidden", 10)
        .await?;
    a.js(
        "const s = document.querySelector(\"#nform [name='need.satisfaction']\"); s.value = '4'; s.dispatchEvent(new Event('change', {bubbles: true}));",
        json!([]),
    )
    .await?;
    a.js(
        "document.querySelector('#f-need-status').scrollIntoView({block: 'start'}); window.scrollBy(0, -56);",
        json!([]),
    )
    .await?;
    a.screenshot(&img("need-status.png")).await?;
    a.click("#nform button[type=submit]").await?;
    a.wait(
        "location.hash === '#/needs' && document.querySelector('ul.list') && document.body.innerText.includes('已解决') && document.body.innerText.includes('满意度4')",
        20,
    )
    .await?;
    let n = node.state.records.get_need(&need_id)?;
    assert_eq!(
        (n.need.status.id(), n.need.satisfaction),
        ("resolved", Some(4))
    );

    a.close().await?;
    drop(driver);
    node.stop().await?;
    Ok(())
}
