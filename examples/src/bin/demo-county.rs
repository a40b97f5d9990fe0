//! `demo-county`: the README's first command — a demo county on this machine, in one process.
//!
//! ```text
//! cargo run --release -p cunyun-examples --bin demo-county [-- --data-dir DIR --port 8090]
//! ```
//!
//! On first run it creates `./data/demo-county/`: a province CA, the hub's certificate issued by
//! it, a county CA (issued by the province root, as enrollment does) with the county node's
//! certificate, three village certificates issued offline by the county CA, the seed content
//! library (`cunyun_examples::seed_library`) in the hub, generated households in each village and
//! a demo cadre account per village. It then starts the hub (console + sync listener), the county
//! node and the three village nodes on 127.0.0.1 (HTTP on `--port`, `--port`+1, … ; sync on
//! ephemeral ports), with sync as upstream links village → county → hub and short intervals, and
//! prints the URLs and progress (「已同步」「已生成推荐 N 条」「已下载资源 N 份」). The nodes trust the
//! hub's content key, so the files of recommended items (within each village's byte budget)
//! are pushed down hub → county → village. A second run reuses everything.
//! Ctrl-C stops every node cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use cunyun_hub::config::HubConfig;
use cunyun_hub::RunningHub;
use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_platform::certs::enroll::CaDir;
use cunyun_platform::certs::tls::{CertAuthority, CertKeyPem};
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::gazetteer;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::{Kind, Role};

/// 丹棱县 (眉山市, 四川): a citrus county (不知火/丑柑) that also raises pigs.
const COUNTY: (&str, &str) = ("511424", "丹棱县");
/// The three demo villages of the county: real codes of the NBS 2023 gazetteer (齐乐镇 龙鹄村,
/// 齐乐镇 梅湾村, 顺龙乡 幸福村); their names are read from it ([`village_name`]).
const VILLAGES: [&str; 3] = ["511424109208", "511424109201", "511424204201"];

/// The short gazetteer name of demo village `i`, e.g. 「龙鹄村」.
fn village_name(i: usize) -> String {
    AreaCode::parse(VILLAGES[i])
        .ok()
        .and_then(|a| gazetteer::sichuan().name_of(&a).map(gazetteer::short_name))
        .unwrap_or(VILLAGES[i])
        .to_string()
}
/// Login of the demo cadre account of every village.
const DEMO_USER: (&str, &str) = ("demo", "demo-2026");
/// Login of the demo hub operator (the console).
const DEMO_OPERATOR: (&str, &str) = ("sheng", "sheng-demo-2026");

#[derive(Parser)]
#[command(
    name = "demo-county",
    about = "村云演示县：在本机启动省级枢纽、县级节点和三个村节点"
)]
struct Args {
    /// 数据目录（首次运行时创建，之后重复使用）。
    #[arg(long, default_value = "./data/demo-county")]
    data_dir: PathBuf,
    /// 起始端口：枢纽控制台用此端口，县级节点用下一个，三个村节点依次再往后；0 表示随机端口。
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// 首次运行时每个村生成的示例农户数。
    #[arg(long, default_value_t = 120)]
    households: usize,
    /// 随机种子（同一种子生成同样的农户）。
    #[arg(long, default_value_t = 2026)]
    seed: u64,
}

fn http_addr(port: u16, offset: u16) -> SocketAddr {
    let p = if port == 0 { 0 } else { port + offset };
    SocketAddr::from(([127, 0, 0, 1], p))
}

fn loopback_any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn scope(s: &str) -> anyhow::Result<AreaScope> {
    AreaScope::parse(s).with_context(|| format!("范围 {s} 无效"))
}

/// Creates whatever part of the certificate chain is missing: province CA → hub certificate,
/// province CA → county CA → county node, county CA → village certificates. Returns whether
/// anything was created.
fn prepare_certificates(dir: &Path) -> anyhow::Result<bool> {
    let mut created = false;
    let province_dir = dir.join("province-ca");
    if !province_dir.join("ca.key").exists() {
        let identity = NodeIdentity {
            node_id: NodeId(rand::random()),
            role: Role::Hub,
            scope: scope("51")?,
        };
        let ca = CertAuthority::create("cunyun demo province CA (演示省级证书机构)", &identity)?;
        CaDir::write(&province_dir, &ca.pem, &ca.pem.cert_pem)?;
        created = true;
    }
    let province = CaDir::load(&province_dir)?;
    let hub_tls = dir.join("hub").join("tls");
    if !hub_tls.join("node.crt").exists() {
        province.issue_node_files(scope("51")?, Role::Hub, None, &hub_tls)?;
        created = true;
    }
    let county_ca_dir = dir.join("county").join("ca");
    if !county_ca_dir.join("ca.crt").exists() {
        let identity = NodeIdentity {
            node_id: NodeId(rand::random()),
            role: Role::County,
            scope: scope(COUNTY.0)?,
        };
        let key = rcgen::KeyPair::generate().context("无法生成县级密钥")?;
        let cert_pem = province.ca.issue_county_ca(&identity, &key)?;
        let ca_pem = CertKeyPem {
            cert_pem,
            key_pem: key.serialize_pem(),
        };
        let county = CertAuthority::from_pem(ca_pem.clone())?;
        let node = county.issue(&identity)?;
        CaDir::write(&county_ca_dir, &ca_pem, &province.root_pem)?;
        cunyun_platform::certs::tls::write_node_files(
            &dir.join("county").join("tls"),
            &node,
            &province.root_pem,
        )?;
        created = true;
    }
    let county = CaDir::load(&county_ca_dir)?;
    for code in VILLAGES {
        let tls = dir.join(format!("village-{code}")).join("tls");
        if !tls.join("node.crt").exists() {
            county.issue_node_files(scope(code)?, Role::Village, None, &tls)?;
            created = true;
        }
    }
    Ok(created)
}

async fn start_hub(dir: &Path, port: u16) -> anyhow::Result<RunningHub> {
    let mut c = HubConfig::default();
    c.data_dir = dir.join("hub");
    c.listen = http_addr(port, 0);
    c.match_interval_ms = 1_000;
    c.sync.enabled = true;
    c.sync.listen = loopback_any();
    c.sync.mdns = false;
    c.sync.interval_s = 5;
    c.sync.debounce_ms = 200;
    c.sync.backoff_ms = 500;
    let hub = cunyun_hub::start(&c, std::future::pending())
        .await
        .context("省级枢纽无法启动")?;
    let accounts = &hub.hub.accounts;
    if !accounts.list()?.iter().any(|a| a.name == DEMO_OPERATOR.0) {
        accounts.create(
            "demo-county",
            DEMO_OPERATOR.0,
            cunyun_platform::accounts::Role::HubOperator,
            "51",
            DEMO_OPERATOR.1,
        )?;
    }
    if hub.hub.library.list().is_empty() {
        let n = cunyun_examples::seed_library::add_to(&hub.hub.library, &dir.join("seed-content"))?;
        eprintln!("首次运行：已向资源库加入 {n} 条示例科普资源");
    }
    let province = c.scope.area();
    if cunyun_hub::experts::list(hub.hub.store.as_ref(), province, true)?.is_empty() {
        let seeds = cunyun_examples::seed_experts::experts();
        for body in &seeds {
            cunyun_hub::experts::save(hub.hub.store.as_ref(), province, None, body, "hub:demo")?;
        }
        eprintln!("首次运行：已向专家库加入 {} 位示例专家", seeds.len());
    }
    Ok(hub)
}

fn node_config(
    data_dir: PathBuf,
    listen: SocketAddr,
    role: Role,
    scope: AreaScope,
    name: String,
    upstream: SocketAddr,
    hub_key: &str,
) -> NodeConfig {
    let mut c = NodeConfig::default();
    c.data_dir = data_dir;
    c.listen = listen;
    c.role = role;
    c.scope = scope;
    c.node_name = name;
    c.sync.enabled = true;
    c.sync.listen = loopback_any();
    c.sync.mdns = false;
    c.sync.upstream = Some(upstream);
    c.sync.interval_s = 5;
    c.sync.debounce_ms = 200;
    c.sync.backoff_ms = 500;
    c.sync.backoff_max_s = 5;
    c.content.trusted_hub_keys = vec![hub_key.to_string()];
    c.content.pushdown_interval_s = 5;
    c
}

fn sync_addr(node: &RunningNode) -> anyhow::Result<SocketAddr> {
    Ok(node
        .state
        .sync
        .as_ref()
        .context("同步服务未启动")?
        .listen_addr())
}

async fn start_village(
    dir: &Path,
    port: u16,
    i: usize,
    upstream: SocketAddr,
    hub_key: &str,
    households: usize,
    seed: u64,
) -> anyhow::Result<RunningNode> {
    let (code, name) = (VILLAGES[i], village_name(i));
    let village = AreaCode::parse(code).with_context(|| format!("村代码 {code} 无效"))?;
    let c = node_config(
        dir.join(format!("village-{code}")),
        http_addr(port, 2 + i as u16),
        Role::Village,
        village.scope(),
        format!("{}{name}", COUNTY.1),
        upstream,
        hub_key,
    );
    {
        let accounts = cunyun_platform::accounts::Accounts::open(&c.data_dir)?;
        if !accounts.list()?.iter().any(|a| a.name == DEMO_USER.0) {
            accounts.add(DEMO_USER.0, code, DEMO_USER.1)?;
        }
    }
    let node = server::start(&c, std::future::pending())
        .await
        .with_context(|| format!("村节点 {name} 无法启动"))?;
    let existing = node
        .state
        .records
        .store()
        .scan(&c.scope)
        .filter_map(Result::ok)
        .filter(|(k, _)| k.kind() == Kind::Hh)
        .count();
    if existing == 0 && households > 0 {
        let n = server::seed_sample_village(
            &node.state.records,
            &c.default_author,
            village,
            households,
            seed.wrapping_add(i as u64),
            |_, _| {},
        )
        .await?;
        eprintln!("首次运行：{name} 已生成 {n} 户示例农户");
    } else {
        eprintln!("{name}：数据目录中已有 {existing} 户，直接使用");
    }
    Ok(node)
}

/// Counts `rec` documents in a node's scope.
fn rec_count(node: &RunningNode) -> usize {
    let records = &node.state.records;
    records
        .store()
        .scan(&records.scope())
        .filter_map(Result::ok)
        .filter(|(k, _)| k.kind() == Kind::Rec)
        .count()
}

/// Whether the node has completed a sync session with its upstream (county or hub) since
/// `since_ms` (ms since the Unix epoch; peer state survives restarts).
fn synced_upstream(node: &RunningNode, since_ms: u64) -> bool {
    node.state.sync.as_ref().is_some_and(|s| {
        s.status().peers.iter().any(|p| {
            matches!(p.role, Some(Role::County) | Some(Role::Hub))
                && p.last_sync_ms.is_some_and(|t| t >= since_ms)
        })
    })
}

/// Content items complete in a node's blob store among those recommended there.
fn files_present(node: &RunningNode) -> usize {
    node.state
        .pushdown
        .as_ref()
        .map_or(0, |p| p.status().complete)
}

/// Prints 「已同步」 once per village, and 「已生成推荐 N 条」 and 「已下载资源 N 份」 whenever N
/// changes.
async fn progress(villages: std::sync::Arc<Vec<RunningNode>>, started: std::time::Instant) {
    let since_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .saturating_sub(started.elapsed().as_millis() as u64);
    let mut synced = vec![false; villages.len()];
    let mut recs = vec![0usize; villages.len()];
    let mut files = vec![0usize; villages.len()];
    loop {
        for (i, v) in villages.iter().enumerate() {
            let name = village_name(i);
            if !synced[i] && synced_upstream(v, since_ms) {
                synced[i] = true;
                println!(
                    "[{name}] 已同步（村 → 县 → 省，启动后 {} 秒）",
                    started.elapsed().as_secs()
                );
            }
            let n = rec_count(v);
            if n != recs[i] {
                recs[i] = n;
                println!(
                    "[{name}] 已生成推荐 {n} 条（启动后 {} 秒）",
                    started.elapsed().as_secs()
                );
            }
            let f = files_present(v);
            if f != files[i] {
                files[i] = f;
                println!(
                    "[{name}] 已下载资源 {f} 份（启动后 {} 秒）",
                    started.elapsed().as_secs()
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("无法创建 {}", dir.display()))?;
    if prepare_certificates(dir)? {
        eprintln!(
            "首次运行：已在 {} 创建省级、县级证书机构和各节点证书",
            dir.display()
        );
    } else {
        eprintln!("使用 {} 中已有的证书和数据", dir.display());
    }
    let hub = start_hub(dir, args.port).await?;
    let hub_sync = hub
        .hub
        .sync
        .as_ref()
        .context("枢纽同步未启动")?
        .listen_addr();
    let hub_key = hub.hub.files.public_key_hex();
    let county = server::start(
        &node_config(
            dir.join("county"),
            http_addr(args.port, 1),
            Role::County,
            scope(COUNTY.0)?,
            format!("{}（演示县级节点）", COUNTY.1),
            hub_sync,
            &hub_key,
        ),
        std::future::pending(),
    )
    .await
    .context("县级节点无法启动")?;
    let county_sync = sync_addr(&county)?;
    let mut villages = Vec::new();
    for i in 0..VILLAGES.len() {
        villages.push(
            start_village(
                dir,
                args.port,
                i,
                county_sync,
                &hub_key,
                args.households,
                args.seed,
            )
            .await?,
        );
    }
    println!("村云演示县已启动（四川省眉山市{}）：", COUNTY.1);
    println!(
        "  省级枢纽控制台：{}/    登录：{} / {}（资源库 {} 条）",
        hub.url(),
        DEMO_OPERATOR.0,
        DEMO_OPERATOR.1,
        hub.hub.library.list().len()
    );
    println!("  县级节点状态页：{}/status", county.url());
    for (i, v) in villages.iter().enumerate() {
        println!(
            "  {} 村干部应用：{}/    登录：{} / {}",
            village_name(i),
            v.url(),
            DEMO_USER.0,
            DEMO_USER.1
        );
    }
    println!(
        "同步：村 → 县 → 省（每 5 秒一轮）；推荐由省级枢纽生成，约一分钟内出现在村干部应用中。"
    );
    println!("按 Ctrl-C 停止。");
    let villages = std::sync::Arc::new(villages);
    let ticker = tokio::spawn(progress(villages.clone(), started));
    cunyun_node::server::shutdown_signal().await;
    ticker.abort();
    let _ = ticker.await;
    println!("正在停止……");
    let villages =
        std::sync::Arc::try_unwrap(villages).map_err(|_| anyhow::anyhow!("进度任务仍在运行"))?;
    for v in villages {
        v.stop().await.context("村节点停止异常")?;
    }
    county.stop().await.context("县级节点停止异常")?;
    hub.stop().await.context("省级枢纽停止异常")?;
    println!("已停止。");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("无法启动运行时")
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("错误：{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
