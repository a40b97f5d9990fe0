//! A Markdown article from the hub's library, in headless Chromium at 360×640: the hub matches
//! it to a pig-raising household of the village, the village pushes it down over mutual TLS on
//! loopback, and both the cadre app (household page, 「查看内容」) and the villager page
//! (`/v/<id>`) show it rendered — headings, quote, list, line breaks as elements, no raw `#`,
//! nothing of the script, event handler or `javascript:` link the file carries, and no
//! horizontal scrolling on the phone. A second, long article (over what the villager page
//! embeds) is fetched already rendered when the villager opens it. Screenshots `article-cadre.png` and `article-villager.png`
//! go to the target directory (with `CUNYUN_SCREENSHOTS=docs`, to `docs/zh-CN/img/`).
//!
//! The same hub and village also carry the hub's expert suggestions to the village's need page:
//! the cadre sees who (name, title, organisation), what they offer and how to reach them, chooses
//! one (「选定这位专家」) or asks for another (「请换一位」); the answer travels up and the hub's next
//! round stops suggesting the declined expert. Screenshot `need-expert.png`.
//!
//! Skips (loudly) only when Chromium is not installed and `CI` is unset.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cunyun_hub::config::HubConfig;
use cunyun_hub::RunningHub;
use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::fields::Date;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;
use cunyun_protocol::manifest::ContentId;
use cunyun_tests::browser::{self, Driver, Session};
use serde_json::json;

const VILLAGE: &str = "511424104201";
const TITLE: &str = "非洲猪瘟防控十要点";
const LONG_TITLE: &str = "生猪养殖场消毒要点";
const ARTICLE: &str = "# 非洲猪瘟防控十要点\n\n> 来源：四川省农业农村厅\n\n## 第一步：封闭管理\n\n\
    - 外来人员、车辆不进猪场\n- 不用泔水喂猪\n\n早上喂料\n中午清粪\n晚上消毒\n\n\
    ## 第二步：发现异常立即报告\n\n猪只突然死亡、高烧不吃食，请马上联系村防疫员。\n\n\
    <script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">\n\n\
    [点这里](javascript:window.__xss=3)\n";

fn img(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = if std::env::var("CUNYUN_SCREENSHOTS").as_deref() == Ok("docs") {
        root.join("../docs/zh-CN/img")
    } else {
        root.join("../target/screenshots")
    };
    dir.join(name)
}

fn identity(n: u8, role: Role, scope: &str) -> anyhow::Result<NodeIdentity> {
    Ok(NodeIdentity {
        node_id: NodeId([n; 16]),
        role,
        scope: AreaScope::parse(scope)?,
    })
}

async fn start_hub(root: &Path) -> anyhow::Result<RunningHub> {
    let id = identity(9, Role::Hub, "51")?;
    let dir = root.join("hub");
    cunyun_platform::certs::tls::init_dev_identity(&root.join("ca"), &dir.join("tls"), &id)?;
    let mut c = HubConfig::default();
    c.data_dir = dir;
    c.listen = "127.0.0.1:0".parse()?;
    c.today = Date::parse("2026-04-15");
    c.match_interval_ms = 300;
    c.sync.enabled = true;
    c.sync.listen = "127.0.0.1:0".parse()?;
    c.sync.mdns = false;
    c.sync.interval_s = 1;
    c.sync.debounce_ms = 100;
    c.sync.backoff_ms = 200;
    Ok(cunyun_hub::start(&c, std::future::pending()).await?)
}

async fn start_village(
    root: &Path,
    peer: std::net::SocketAddr,
    hub_key: &str,
) -> anyhow::Result<RunningNode> {
    let id = identity(1, Role::Village, VILLAGE)?;
    let dir = root.join("village");
    cunyun_platform::certs::tls::init_dev_identity(&root.join("ca"), &dir.join("tls"), &id)?;
    cunyun_platform::accounts::Accounts::open(&dir)?.add("wangli", VILLAGE, "wangli-password")?;
    let mut c = NodeConfig::default();
    c.data_dir = dir;
    c.listen = "127.0.0.1:0".parse()?;
    c.scope = id.scope;
    c.role = id.role;
    c.sync.enabled = true;
    c.sync.listen = "127.0.0.1:0".parse()?;
    c.sync.mdns = false;
    c.sync.static_peers = vec![peer];
    c.sync.interval_s = 1;
    c.sync.debounce_ms = 100;
    c.sync.backoff_ms = 200;
    c.content.trusted_hub_keys = vec![hub_key.to_string()];
    c.content.pushdown_interval_s = 1;
    Ok(server::start(&c, std::future::pending()).await?)
}

/// Checks the rendered article under `root` (a CSS selector) in the page: its elements, no raw
/// Markdown, no script run, no horizontal scrolling at phone width.
async fn check_article(s: &Session, root: &str) -> anyhow::Result<()> {
    let v = s
        .js(
            "const a = document.querySelector(arguments[0]); \
             return {h1: a.querySelector('h1')?.textContent, h2: a.querySelectorAll('h2').length, \
               quote: a.querySelector('blockquote')?.textContent.trim(), li: a.querySelectorAll('li').length, \
               br: a.querySelectorAll('br').length, text: a.innerText, \
               scripts: a.querySelectorAll('script, [onerror], a[href^=\"javascript\"]').length, \
               xss: typeof window.__xss, \
               overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth};",
            json!([root]),
        )
        .await?;
    assert_eq!(v["h1"], TITLE, "{v}");
    assert_eq!(v["h2"], 2, "{v}");
    assert_eq!(v["quote"], "来源：四川省农业农村厅", "{v}");
    assert_eq!(v["li"], 2, "{v}");
    assert!(v["br"].as_u64().is_some_and(|n| n >= 2), "{v}");
    let text = v["text"].as_str().unwrap_or_default();
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with('#') || l.trim_start().starts_with('>')),
        "raw Markdown shown: {text}"
    );
    assert!(text.contains("早上喂料\n中午清粪"), "{text}");
    assert_eq!(v["scripts"], 0, "{v}");
    assert_eq!(v["xss"], "undefined", "{v}");
    assert_eq!(v["overflow"], 0, "the page scrolls sideways at 360 px: {v}");
    Ok(())
}

fn skip_without_chromium(what: &str) -> bool {
    if browser::available() {
        return false;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set but {} or {} is missing (.ci/run installs chromium chromium-driver)",
            browser::CHROMIUM,
            browser::CHROMEDRIVER
        );
    }
    eprintln!("\n!!!!! SKIPPED {what} browser test: {} not installed (apt-get install chromium chromium-driver) !!!!!\n", browser::CHROMIUM);
    true
}

/// Polls `done` every 200 ms for at most `secs` seconds.
async fn until(
    secs: u64,
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done()? {
        anyhow::ensure!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_village_need_page_names_the_suggested_expert_and_the_cadres_answer_reaches_the_hub(
) -> anyhow::Result<()> {
    use cunyun_protocol::area::AreaCode;
    use cunyun_protocol::expert::NeedMatch;
    use cunyun_protocol::key::{DocKey, Kind};
    use cunyun_protocol::need::{ExpertChoice, LocalNeed, NeedStatus};
    if skip_without_chromium("need expert") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let hub = start_hub(dir.path()).await?;
    let province = AreaCode::parse("510000000000")?;
    let mut ids = Vec::new();
    for (name, org, contact) in [
        (
            "唐晓梅",
            "眉山市柑橘产业技术研究院",
            "丹棱县科技服务中心柑橘专家工作站，每周三坐班",
        ),
        ("何玉兰", "四川农业大学园艺学院", ""),
    ] {
        let e = cunyun_hub::experts::save(
            hub.hub.store.as_ref(),
            province,
            None,
            &json!({"name": name, "organisation": org, "title": "高级农艺师",
                "fields": {"plt.citrus": true, "plt.pesticide": true},
                "regions": {"5114": true}, "services": {"onsite": true, "testing": true},
                "contact": contact}),
            "hub:test",
        )?;
        ids.push(e.id);
    }
    let hub_addr = hub
        .hub
        .sync
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("hub sync"))?
        .listen_addr();
    let village = start_village(dir.path(), hub_addr, &hub.hub.files.public_key_hex()).await?;
    let need = village
        .state
        .records
        .create_need(
            "wangli",
            &json!({"area": VILLAGE, "requester": "coop", "title": "柑橘大实蝇绿色防控",
                "tags": {"plt.citrus": true, "plt.pesticide": true}, "contact_role": "合作社理事长"}),
        )
        .await?;
    let nid = need.key.id().to_string();
    let records = village.state.records.clone();
    let suggested = |records: &cunyun_node::records::Records| -> anyhow::Result<usize> {
        let r = records.get_need(&nid)?;
        Ok(cunyun_node::need_experts::suggestions(records.store(), &r.key, &r.need)?.len())
    };
    until(60, "the hub's two suggestions reach the village", || {
        Ok(records.get_need(&nid)?.need.status == NeedStatus::Matched && suggested(&records)? == 2)
    })
    .await?;

    let url = village.url();
    let driver = Driver::start().await?;
    let s = driver.session(&dir.path().join("profile-need")).await?;
    browser::login(&s, &url, "wangli", "wangli-password").await?;
    s.goto(&format!("{url}/#/needs/{nid}")).await?;
    s.wait(
        "document.querySelectorAll('.experts li.expert').length === 2",
        30,
    )
    .await?;
    let text = s
        .js(
            "return document.querySelector('.experts').innerText",
            json!([]),
        )
        .await?;
    let text = text.as_str().unwrap_or_default().to_string();
    for want in [
        "对接专家",
        "唐晓梅",
        "高级农艺师",
        "眉山市柑橘产业技术研究院",
        "现场指导",
        "检测化验",
        "丹棱县科技服务中心柑橘专家工作站",
        "请通过其单位联系",
    ] {
        assert!(text.contains(want), "{want} missing from: {text}");
    }
    for id in &ids {
        assert!(!text.contains(id.as_str()), "an expert id is shown: {text}");
    }
    let overflow = s
        .js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            json!([]),
        )
        .await?;
    assert_eq!(overflow, 0, "the need page scrolls sideways at 360 px");
    s.js(
        "document.querySelector('.experts').scrollIntoView({block: 'start'}); window.scrollBy(0, -56);",
        json!([]),
    )
    .await?;
    s.screenshot(&img("need-expert.png")).await?;

    // Accept the first, ask for another instead of the second.
    let first = &ids[0];
    let second = &ids[1];
    s.click(&format!("[data-expert='{first}'][data-choice='accepted']"))
        .await?;
    s.wait(
        "document.querySelector('.experts').innerText.includes('已选定')",
        20,
    )
    .await?;
    s.click(&format!("[data-expert='{second}'][data-choice='declined']"))
        .await?;
    s.wait(
        "document.querySelector('.experts').innerText.includes('已请换人')",
        20,
    )
    .await?;
    let on_node = records.get_need(&nid)?.need;
    assert_eq!(on_node.accepted_expert(), Some(first.as_str()));
    assert_eq!(
        on_node.expert_choice.get(second),
        Some(&ExpertChoice::Declined)
    );

    // Up at the hub: the answer arrived, and the next round no longer suggests the declined one.
    let key = DocKey::new(AreaCode::parse(VILLAGE)?, Kind::Need, nid.as_str())?;
    let store = hub.hub.store.clone();
    until(
        60,
        "the answer reaches the hub and its match drops the declined expert",
        || {
            let Some(doc) = store.get(&key)? else {
                return Ok(false);
            };
            let at_hub = LocalNeed::read_from(&doc)?;
            let Some(m) = store.get(&key.with_kind(Kind::Match))? else {
                return Ok(false);
            };
            let m = NeedMatch::read_from(&m)?;
            Ok(at_hub.accepted_expert() == Some(first.as_str())
                && m.suggestions.contains_key(first)
                && !m.suggestions.contains_key(second))
        },
    )
    .await?;
    // And back down: the village's page lists only the chosen expert.
    until(60, "the new match reaches the village", || {
        Ok(suggested(&records)? == 1)
    })
    .await?;

    s.close().await?;
    drop(driver);
    village.stop().await?;
    hub.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_down_article_reads_rendered_in_the_cadre_app_and_the_villager_page(
) -> anyhow::Result<()> {
    if skip_without_chromium("article") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let hub = start_hub(dir.path()).await?;
    let file = dir.path().join("asf.md");
    std::fs::write(&file, ARTICLE)?;
    let item = hub.hub.library.add(
        &json!({"title": TITLE, "tags": ["liv.asf"], "format": "article",
            "review_date": "2026-03-01"}),
        &file,
        &Default::default(),
    )?;
    let cid: ContentId = item
        .content
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("no content id"))?
        .parse()?;
    // A long article (over what the villager page embeds): fetched rendered when opened.
    let long = dir.path().join("long.md");
    std::fs::write(
        &long,
        format!(
            "# {LONG_TITLE}\n\n{}",
            "栏舍、器具、车辆每周消毒一次，消毒后晾干再进猪。\n\n".repeat(1500)
        ),
    )?;
    let long_item = hub.hub.library.add(
        &json!({"title": LONG_TITLE, "tags": ["liv.asf"], "format": "article",
            "review_date": "2026-03-01"}),
        &long,
        &Default::default(),
    )?;
    let long_cid: ContentId = long_item
        .content
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("no content id"))?
        .parse()?;
    let hub_addr = hub
        .hub
        .sync
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("hub sync"))?
        .listen_addr();
    let village = start_village(dir.path(), hub_addr, &hub.hub.files.public_key_hex()).await?;
    let hh = village
        .state
        .records
        .create_household(
            "seed",
            &json!({"profile": {"group": 1, "residents": 2, "age_18_59": 2,
                "livestock": {"pig": {"herd_band": 1}}},
                "private": {"head_name": "张大爷"}}),
        )
        .await?
        .id;
    let pd = village
        .state
        .pushdown
        .clone()
        .ok_or_else(|| anyhow::anyhow!("push-down"))?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(pd.blobs().is_complete(&cid)
        && pd.content_of(&item.id) == Some(cid)
        && pd.blobs().is_complete(&long_cid)
        && pd.content_of(&long_item.id) == Some(long_cid))
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the article did not reach the village in 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let url = village.url();
    let driver = Driver::start().await?;
    let s = driver.session(&dir.path().join("profile")).await?;
    browser::login(&s, &url, "wangli", "wangli-password").await?;

    // The cadre app: the household's recommended article, opened.
    s.goto(&format!("{url}/#/h/{hh}")).await?;
    s.wait(
        &format!("document.body.innerText.includes('{TITLE}') && document.querySelector('.content button.show')"),
        30,
    )
    .await?;
    s.js(
        "document.querySelectorAll('.content').forEach(c => { if (c.querySelector('h3').textContent === arguments[0]) c.id = 'asf'; })",
        json!([TITLE]),
    )
    .await?;
    s.click("#asf button.show").await?;
    s.wait("document.querySelector('#asf .article h1')", 20)
        .await?;
    check_article(&s, "#asf .article").await?;
    s.js(
        "const e = document.querySelector('#asf .article'); e.scrollIntoView({block: 'start'}); window.scrollBy(0, -56);",
        json!([]),
    )
    .await?;
    s.screenshot(&img("article-cadre.png")).await?;

    // The villager page: the short article came rendered with the page, the long one did not;
    // 「查看内容」 shows each.
    let page = reqwest::get(format!("{url}/v/{hh}")).await?.text().await?;
    assert!(page.contains(&format!("<h1>{TITLE}</h1>")), "{page}");
    assert!(!page.contains(&format!("<h1>{LONG_TITLE}</h1>")), "{page}");
    s.goto(&format!("{url}/v/{hh}")).await?;
    let asf = format!("article[data-title='{TITLE}']");
    let long = format!("article[data-title='{LONG_TITLE}']");
    s.wait(
        &format!("document.querySelector(\"{long} button.show\")"),
        20,
    )
    .await?;
    s.click(&format!("{asf} button.show")).await?;
    s.wait(
        &format!("(() => {{ const v = document.querySelector(\"{asf} .viewer\"); return !v.hidden && !!v.querySelector('.article h1'); }})()"),
        20,
    )
    .await?;
    check_article(&s, &format!("{asf} .article")).await?;
    s.js(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'start'})",
        json!([format!("{asf} h2")]),
    )
    .await?;
    s.screenshot(&img("article-villager.png")).await?;
    s.click(&format!("{long} button.show")).await?;
    let h1 = s
        .wait(
            &format!("document.querySelector(\"{long} .viewer .article h1\")?.textContent"),
            20,
        )
        .await?;
    assert_eq!(h1, LONG_TITLE);
    let paragraphs = s
        .js(
            "return document.querySelectorAll(arguments[0]).length",
            json!([format!("{long} .article p")]),
        )
        .await?;
    assert_eq!(paragraphs, 1500, "the long article's paragraphs");

    s.close().await?;
    drop(driver);
    village.stop().await?;
    hub.stop().await?;
    Ok(())
}
