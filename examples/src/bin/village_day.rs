//! A cadre's day at a village node, end to end through the library:
//! open a node's store in a temporary directory, record a sample village, edit a household the
//! way the web app will, list by need tag, restart, and find everything still there.
//!
//! Run: `cargo run -p cunyun-examples --bin village_day`

use anyhow::Context;
use cunyun_node::config::NodeConfig;
use cunyun_node::records::{HouseholdFilter, UpdateMode};
use cunyun_node::server;
use cunyun_protocol::area::AreaCode;
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let village = AreaCode::parse("510116108203")?;
    let mut config = NodeConfig::default();
    config.data_dir = dir.path().to_path_buf();
    config.listen = "127.0.0.1:0".parse()?;
    config.scope = village.scope();

    let node = server::start(&config, std::future::pending()).await?;
    let records = &node.state.records;
    let n = server::seed_sample_village(records, "cadre-zhang", village, 60, 7, |_, _| {}).await?;
    println!("recorded {n} sample households at {}", node.url());

    let pig_farms = records.list_households(&HouseholdFilter {
        tag: Some("liv.asf".into()),
        ..Default::default()
    })?;
    println!("{} households need 非洲猪瘟防控 (liv.asf)", pig_farms.len());

    let first = pig_farms
        .first()
        .context("the sample village raises pigs")?;
    let updated = records
        .update_household(
            "cadre-zhang",
            &first.id,
            &json!({"profile": {"smartphones": 2}, "private": {"notes": "已加入村微信群"}}),
            UpdateMode::MergePatch,
        )
        .await?;
    println!(
        "updated {}: {} smartphones, {} derived tags",
        updated.id,
        updated.profile.smartphones,
        updated.derived_tags.len()
    );
    node.stop().await?;

    let node = server::start(&config, std::future::pending()).await?;
    let again = node.state.records.get_household(&first.id)?;
    anyhow::ensure!(
        again.private.notes == "已加入村微信群",
        "the edit survived a restart"
    );
    println!(
        "after restart: {} still has note “{}”",
        again.id, again.private.notes
    );
    node.stop().await?;
    Ok(())
}
