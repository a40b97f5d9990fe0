//! The cadre web app's paged household list in headless Chromium: a village of 230 households
//! shows the node's first page of 100 and 「加载更多」; each click adds the next page until all
//! 230 are shown and the button goes; a group filter is asked of the node; offline, the list
//! shows the pages kept on the phone (filtered there) without the button.
//!
//! Skips (loudly) only when Chromium is not installed and `CI` is unset.

use cunyun_node::config::NodeConfig;
use cunyun_node::server;
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_tests::browser::{self, Driver};

const VILLAGE: &str = "510116108203";
const HOUSEHOLDS: usize = 230;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_household_list_loads_more_pages_and_keeps_them_offline() -> anyhow::Result<()> {
    if !browser::available() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but {} is missing", browser::CHROMIUM);
        }
        eprintln!(
            "\n!!!!! SKIPPED list paging browser test: {} not installed !!!!!\n",
            browser::CHROMIUM
        );
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let accounts = cunyun_platform::accounts::Accounts::open(&data)?;
    accounts.add("wangli", VILLAGE, "wangli-password")?;
    drop(accounts);
    let mut c = NodeConfig::default();
    c.data_dir = data;
    c.listen = "127.0.0.1:0".parse()?;
    c.scope = AreaScope::parse(VILLAGE)?;
    let node = server::start(&c, std::future::pending()).await?;
    server::seed_sample_village(
        &node.state.records,
        "seed",
        AreaCode::parse(VILLAGE)?,
        HOUSEHOLDS,
        11,
        |_, _| {},
    )
    .await?;
    let in_group_1 = node
        .state
        .records
        .list_households(&cunyun_node::records::HouseholdFilter {
            group: Some(1),
            ..Default::default()
        })?
        .len();
    assert!(in_group_1 > 0 && in_group_1 < 100, "{in_group_1}");
    let url = node.url();

    let driver = Driver::start().await?;
    let s = driver.session(&dir.path().join("profile")).await?;
    browser::login(&s, &url, "wangli", "wangli-password").await?;

    s.goto(&format!("{url}/#/households")).await?;
    let rows = "document.querySelectorAll('#hlist li').length";
    let more_shown = "!document.querySelector('#hmore').hidden";
    s.wait(&format!("{rows} === 100 && {more_shown}"), 20)
        .await?;
    assert!(s
        .js(
            "return document.querySelector('#hcount').textContent",
            serde_json::json!([])
        )
        .await?
        .as_str()
        .is_some_and(|t| t.contains("还有更多")));
    s.click("#hmore").await?;
    s.wait(&format!("{rows} === 200 && {more_shown}"), 20)
        .await?;
    s.click("#hmore").await?;
    s.wait(
        &format!("{rows} === {HOUSEHOLDS} && document.querySelector('#hmore').hidden"),
        20,
    )
    .await?;
    let ids = s
        .js(
            "return Array.from(document.querySelectorAll('#hlist li a')).map(a => a.getAttribute('href'))",
            serde_json::json!([]),
        )
        .await?;
    let ids: std::collections::BTreeSet<String> = ids
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), HOUSEHOLDS, "every household once");
    s.wait(
        &format!("document.querySelector('#hcount').textContent === '共 {HOUSEHOLDS} 户'"),
        5,
    )
    .await?;

    // A group filter is answered by the node: one page, no button.
    s.goto(&format!("{url}/#/households?group=1")).await?;
    s.wait(
        &format!("{rows} === {in_group_1} && document.querySelector('#hmore').hidden"),
        20,
    )
    .await?;

    // Offline: the kept pages (all three, loaded unfiltered), filtered on the phone.
    s.set_offline(true).await?;
    s.goto(&format!("{url}/#/")).await?;
    s.goto(&format!("{url}/#/households")).await?;
    s.wait(
        &format!("{rows} === {HOUSEHOLDS} && document.querySelector('#hmore').hidden"),
        20,
    )
    .await?;
    s.js(
        "const g = document.querySelector('#g'); g.value = '1'; g.dispatchEvent(new Event('change'));",
        serde_json::json!([]),
    )
    .await?;
    s.wait(&format!("{rows} === {in_group_1}"), 20).await?;
    s.set_offline(false).await?;
    s.close().await?;
    node.stop().await?;
    Ok(())
}
