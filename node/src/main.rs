//! `cunyun-node`: runs a village or county node.
//!
//! ```text
//! cunyun-node demo                 # a sample village of 300 households on ./data/demo, prints the URL
//! cunyun-node run --config FILE    # a node as configured
//! cunyun-node check --data-dir DIR # reads every document and reports damaged ones
//! cunyun-node backup --data-dir DIR --to FILE    # encrypted backup, also while the node runs
//! cunyun-node restore --from FILE --data-dir DIR [--force]  # verified restore
//! cunyun-node ca-init | enroll-token | enroll-serve | enroll | enroll-village  # certificates
//! cunyun-node user add --data-dir DIR --name N [--role R --scope AREA]  # password on stdin
//! cunyun-node user list | passwd | disable | enable | remove --name N
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cunyun_node::config::{NodeConfig, DEFAULT_VILLAGE};
use cunyun_node::server;
use cunyun_platform::user_cli::UserCommand;
use cunyun_protocol::area::{AreaCode, AreaScope, Level};
use cunyun_protocol::gazetteer;
use cunyun_protocol::key::Kind;

#[derive(Parser)]
#[command(
    name = "cunyun-node",
    version,
    about = "村云节点：村/县级离线优先数据同步节点"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// 启动示例村节点：首次运行时生成示例农户数据，然后开始服务并打印地址。
    Demo {
        /// 数据目录。
        #[arg(long, default_value = "./data/demo")]
        data_dir: PathBuf,
        /// 监听地址。
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// 示例村代码（12位）。
        #[arg(long, default_value = DEFAULT_VILLAGE)]
        village: String,
        /// 首次运行时生成的示例农户数。
        #[arg(long, default_value_t = 300)]
        households: usize,
        /// 随机种子（同一种子生成同样的数据）。
        #[arg(long, default_value_t = 2026)]
        seed: u64,
    },
    /// 按配置文件启动节点。
    Run {
        /// 配置文件（TOML）；不给则全部使用默认值。
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// 初始化节点身份：生成节点编号，并用本地开发证书机构签发节点证书（正式部署改用注册流程）。
    Init {
        /// 数据目录；证书写入其中的 tls/ 子目录。
        #[arg(long, default_value = "./data/node")]
        data_dir: PathBuf,
        /// 服务范围：村代码（12位）或县级前缀（6位）等。
        #[arg(long, default_value = DEFAULT_VILLAGE)]
        scope: String,
        /// 节点角色：village、county、mule 或 hub。
        #[arg(long, default_value = "village")]
        role: String,
        /// 开发用证书机构目录（多个节点共用同一个，才能互相信任）。
        #[arg(long, default_value = "./data/dev-ca")]
        ca_dir: PathBuf,
    },
    /// 创建省级根证书机构（由省级平台管理员在平台上运行一次；私钥须妥善保管）。
    CaInit {
        /// 证书机构目录。
        #[arg(long, default_value = "./data/province-ca")]
        ca_dir: PathBuf,
        /// 省级范围（2位省代码，如 51）。
        #[arg(long, default_value = "51")]
        scope: String,
    },
    /// 签发一次性注册令牌（省级平台为县级节点签发，或县级节点为村节点签发）。
    EnrollToken {
        /// 签发令牌的证书机构目录。
        #[arg(long, default_value = "./data/province-ca")]
        ca_dir: PathBuf,
        /// 令牌允许注册的范围，如县级前缀 510116。
        #[arg(long)]
        scope: String,
        /// 令牌允许注册的角色：county、village、mule 或 hub。
        #[arg(long, default_value = "county")]
        role: String,
        /// 有效时长（小时）。
        #[arg(long, default_value_t = cunyun_platform::certs::enroll::DEFAULT_TOKEN_TTL_HOURS)]
        ttl_hours: u64,
    },
    /// 运行注册服务：持令牌的节点可在此领取证书。
    EnrollServe {
        /// 证书机构目录。
        #[arg(long, default_value = "./data/province-ca")]
        ca_dir: PathBuf,
        /// 监听地址。
        #[arg(long, default_value = "0.0.0.0:7448")]
        listen: SocketAddr,
        /// 每个来源地址每分钟最多连接次数（0 表示不限）。
        #[arg(long, default_value_t = cunyun_platform::ratelimit::AddrLimits::ENROLL.per_minute)]
        per_address_per_minute: u32,
        /// 每个来源地址最多同时连接数（0 表示不限）。
        #[arg(long, default_value_t = cunyun_platform::ratelimit::AddrLimits::ENROLL.concurrent)]
        per_address_concurrent: u32,
    },
    /// 用一次性令牌向上级注册本节点（县级节点得到县级证书机构和本节点证书）。
    Enroll {
        /// 注册服务地址（IP:端口）。
        #[arg(long)]
        server: SocketAddr,
        /// 上级管理员给出的一次性令牌。
        #[arg(long)]
        token: String,
        /// 省级根证书文件（随令牌一同取得）。
        #[arg(long)]
        root_cert: PathBuf,
        /// 本节点的数据目录。
        #[arg(long, default_value = "./data/node")]
        data_dir: PathBuf,
    },
    /// 县级节点离线为村节点或数据摆渡笔记本签发证书，写入目录后拷贝到该设备的 tls/ 目录。
    EnrollVillage {
        /// 县级证书机构目录（注册后位于县级节点数据目录的 ca/ 下）。
        #[arg(long, default_value = "./data/node/ca")]
        ca_dir: PathBuf,
        /// 村代码（12位）；摆渡笔记本可用县级前缀。
        #[arg(long)]
        scope: String,
        /// 角色：village 或 mule。
        #[arg(long, default_value = "village")]
        role: String,
        /// 输出目录（拷贝为村节点数据目录下的 tls/）。
        #[arg(long)]
        out: PathBuf,
        /// 续期：为已有节点（32位十六进制节点编号）签发新证书，节点编号不变。
        #[arg(long)]
        node_id: Option<String>,
        /// 新设立、尚未列入国家统计局 2023 年统计用区划代码的村：给出其名称（如 新民村），
        /// 所属乡镇仍须在区划代码中。不给出时，村代码须在区划代码中。
        #[arg(long)]
        new_village_name: Option<String>,
    },
    /// 吊销节点（如丢失的村节点）：签发吊销列表并写入本节点文档库，随同步传到所有节点。须先停止本节点。
    Revoke {
        /// 签发机构目录（县级节点为其数据目录下的 ca/）。
        #[arg(long, default_value = "./data/node/ca")]
        ca_dir: PathBuf,
        /// 本节点的数据目录（吊销列表写入其文档库）。
        #[arg(long, default_value = "./data/node")]
        data_dir: PathBuf,
        /// 要吊销的节点编号（32位十六进制，可多次给出）。
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
    },
    /// 应农户要求删除一户（须先停止本节点）：写入删除记录并删去该户全部文档，整理文档库使数据从磁盘上消失；节点启动后删除随同步传到所有存有该户数据的节点。需在标准输入中输入“确认删除”。
    DeleteHousehold {
        /// 本节点的数据目录。
        #[arg(long, default_value = "./data/node")]
        data_dir: PathBuf,
        /// 农户所属村代码（12位）。
        #[arg(long)]
        village: String,
        /// 农户编号。
        #[arg(long)]
        id: String,
        /// 删除原因：withdrawn（本人撤回同意）、moved（迁出本村）、duplicate（重复登记）、mistake（误录）、other（其他）。
        #[arg(long)]
        reason: String,
        /// 操作人（记入删除记录）。
        #[arg(long)]
        by: String,
    },
    /// 查看运行中节点的同步状态：对端、最近同步时间、交换的文档与流量、错误。
    Status {
        /// 节点的 HTTP 地址。
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
    },
    /// 签发（或重新签发）村干部应用的 https 网页证书：证书机构在数据目录中首次使用时生成，
    /// 手机只需安装一次它的证书（见节点的 /ca 页面）。
    WebCert {
        /// 配置文件（TOML）；用其中的 data_dir 与 [web_tls]。
        #[arg(long)]
        config: Option<PathBuf>,
        /// 证书包含的局域网地址或名称（可多次给出，如 --name 192.168.1.10 --name cunyun.lan）；
        /// 不给则用配置中的 [web_tls] names。
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// 管理账户（村干部、县级运维、管理员）。
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// 备份节点数据（证书、证书机构、账户、文档库等）到一个加密文件；节点运行时也可以备份。
    /// 口令依次取自 --passphrase-file、环境变量 CUNYUN_BACKUP_PASSPHRASE，或在终端输入。
    Backup {
        /// 节点的数据目录。
        #[arg(long, default_value = "./data/node")]
        data_dir: PathBuf,
        /// 备份文件（不能已存在），如 /media/U盘/村1-2026-12-08.cybak。
        #[arg(long)]
        to: PathBuf,
        /// 口令文件（第一行为口令）；不给则用环境变量或在终端输入。
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// 从备份文件恢复节点数据目录，恢复后逐份校验文档（须先停止节点）。
    Restore {
        /// 备份文件。
        #[arg(long)]
        from: PathBuf,
        /// 恢复到的数据目录（须为空或不存在）。
        #[arg(long, alias = "data")]
        data_dir: PathBuf,
        /// 目标目录不为空时仍然恢复：原有内容改名保留在旁边（<目录>.replaced-时间）。
        #[arg(long)]
        force: bool,
        /// 口令文件（第一行为口令）；不给则用环境变量或在终端输入。
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// 检查文档库：逐份读取文档，报告损坏并隔离的文档。
    Check {
        /// 数据目录。
        #[arg(long, default_value = "./data/node")]
        data_dir: PathBuf,
    },
}

/// Login of the demo cadre account that `cunyun-node demo` creates.
const DEMO_USER: (&str, &str) = ("demo", "demo-2026");

fn user(command: UserCommand) -> anyhow::Result<()> {
    cunyun_platform::user_cli::run(
        command,
        std::path::Path::new("./data/node"),
        Some(DEFAULT_VILLAGE),
    )?;
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("cunyun=info,cunyun_node=info,cunyun_platform=info,warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn shutdown_signal() {
    server::shutdown_signal().await;
    tracing::info!("收到退出信号，正在停止（进行中的写入会先完成）");
}

fn main() -> std::process::ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("无法启动运行时")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line, without a backtrace: operators
            // read this, not developers.
            eprintln!("错误：{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo {
            data_dir,
            listen,
            village,
            households,
            seed,
        } => demo(data_dir, listen, &village, households, seed).await,
        Command::Run { config } => {
            let config = match config {
                Some(path) => NodeConfig::load(&path)?,
                None => NodeConfig::default(),
            };
            let node = server::start(&config, shutdown_signal()).await?;
            cunyun_node::notify::announce_ready(node.addr);
            println!("村云节点已启动：{}", node.url());
            if let Some(https) = node.https_url() {
                println!(
                    "村干部应用（https）：{https}/ ；手机安装证书：{}/ca",
                    node.url()
                );
            }
            node.wait().await.context("服务异常退出")?;
            Ok(())
        }
        Command::Check { data_dir } => check(data_dir),
        Command::Backup {
            data_dir,
            to,
            passphrase_file,
        } => backup(data_dir, to, passphrase_file).await,
        Command::Restore {
            from,
            data_dir,
            force,
            passphrase_file,
        } => restore(from, data_dir, force, passphrase_file).await,
        Command::User { command } => user(command),
        Command::WebCert { config, names } => web_cert(config, names),
        Command::Status { addr } => status(addr).await,
        Command::Init {
            data_dir,
            scope,
            role,
            ca_dir,
        } => init(data_dir, &scope, &role, ca_dir),
        Command::CaInit { ca_dir, scope } => ca_init(ca_dir, &scope),
        Command::Revoke {
            ca_dir,
            data_dir,
            nodes,
        } => revoke(ca_dir, data_dir, &nodes),
        Command::DeleteHousehold {
            data_dir,
            village,
            id,
            reason,
            by,
        } => delete_household(data_dir, &village, &id, &reason, &by),
        Command::EnrollToken {
            ca_dir,
            scope,
            role,
            ttl_hours,
        } => enroll_token(ca_dir, &scope, &role, ttl_hours),
        Command::EnrollServe {
            ca_dir,
            listen,
            per_address_per_minute,
            per_address_concurrent,
        } => {
            let limits = cunyun_platform::ratelimit::AddrLimits {
                per_minute: per_address_per_minute,
                concurrent: per_address_concurrent,
                ..cunyun_platform::ratelimit::AddrLimits::ENROLL
            };
            enroll_serve(ca_dir, listen, limits).await
        }
        Command::Enroll {
            server,
            token,
            root_cert,
            data_dir,
        } => enroll(server, &token, root_cert, data_dir).await,
        Command::EnrollVillage {
            ca_dir,
            scope,
            role,
            out,
            node_id,
            new_village_name,
        } => enroll_village(
            ca_dir,
            &scope,
            &role,
            out,
            node_id.as_deref(),
            new_village_name.as_deref(),
        ),
    }
}

async fn demo(
    data_dir: PathBuf,
    listen: SocketAddr,
    village: &str,
    households: usize,
    seed: u64,
) -> anyhow::Result<()> {
    let village = AreaCode::parse(village).context("示例村代码无效")?;
    anyhow::ensure!(
        village.level() == Level::Village,
        "示例村代码应为村级（12位，后三位不为000）：{village}"
    );
    let mut config = NodeConfig::default();
    config.data_dir = data_dir;
    config.listen = listen;
    config.scope = village.scope();
    config.node_name = "示例村（村云演示）".to_string();
    {
        let accounts = cunyun_platform::accounts::Accounts::open(&config.data_dir)?;
        if !accounts.list()?.iter().any(|a| a.name == DEMO_USER.0) {
            accounts.add(DEMO_USER.0, &village.to_string(), DEMO_USER.1)?;
        }
    }
    let node = server::start(&config, shutdown_signal()).await?;
    let existing = node
        .state
        .records
        .store()
        .scan(&config.scope)
        .filter_map(Result::ok)
        .filter(|(k, _)| k.kind() == Kind::Hh)
        .count();
    if existing == 0 && households > 0 {
        eprintln!("首次运行：正在生成 {households} 户示例农户数据……");
        let started = std::time::Instant::now();
        let n = server::seed_sample_village(
            &node.state.records,
            &config.default_author,
            village,
            households,
            seed,
            |done, total| {
                let width = 30;
                let filled = done * width / total.max(1);
                eprint!(
                    "\r  [{}{}] {done}/{total}",
                    "#".repeat(filled),
                    "-".repeat(width - filled)
                );
                let _ = std::io::stderr().flush();
            },
        )
        .await?;
        eprintln!(
            "\n  已写入 {n} 户，用时 {:.1} 秒",
            started.elapsed().as_secs_f64()
        );
    } else {
        eprintln!(
            "数据目录中已有 {existing} 户，直接启动（删除 {} 可重新生成）",
            config.data_dir.display()
        );
    }
    println!("村云示例村节点已启动：{}", node.url());
    println!(
        "  村干部登录：用户名 {} / 密码 {}（演示账户）",
        DEMO_USER.0, DEMO_USER.1
    );
    println!(
        "  健康检查：{}/healthz    监控指标：{}/metrics",
        node.url(),
        node.url()
    );
    println!("按 Ctrl-C 停止。");
    node.wait().await.context("服务异常退出")?;
    Ok(())
}

fn init(data_dir: PathBuf, scope: &str, role: &str, ca_dir: PathBuf) -> anyhow::Result<()> {
    use cunyun_protocol::identity::{NodeId, NodeIdentity};
    use cunyun_protocol::key::Role;
    let scope = cunyun_protocol::area::AreaScope::parse(scope).context("服务范围无效")?;
    let role = Role::parse(role)
        .with_context(|| format!("未知的节点角色“{role}”，可选 village、county、mule、hub"))?;
    let tls_dir = data_dir.join("tls");
    anyhow::ensure!(
        !tls_dir.join("node.crt").exists(),
        "{} 已有节点证书；如需重新生成，请先删除该目录",
        tls_dir.display()
    );
    let identity = NodeIdentity {
        node_id: NodeId(rand::random()),
        role,
        scope,
    };
    let created = cunyun_platform::certs::tls::init_dev_identity(&ca_dir, &tls_dir, &identity)?;
    if created {
        println!("已创建开发用证书机构：{}", ca_dir.display());
    }
    println!("节点身份：{}", identity.to_uri());
    println!("证书已写入：{}", tls_dir.display());
    Ok(())
}

fn parse_role(role: &str) -> anyhow::Result<cunyun_protocol::key::Role> {
    cunyun_protocol::key::Role::parse(role)
        .with_context(|| format!("未知的节点角色“{role}”，可选 village、county、mule、hub"))
}

fn ca_init(ca_dir: PathBuf, scope: &str) -> anyhow::Result<()> {
    use cunyun_protocol::identity::{NodeId, NodeIdentity};
    let scope = cunyun_protocol::area::AreaScope::parse(scope).context("范围无效")?;
    anyhow::ensure!(
        scope.level() == Level::Province,
        "根证书机构的范围应为省级（2位），而不是 {scope}"
    );
    anyhow::ensure!(
        !ca_dir.join("ca.key").exists(),
        "{} 已有证书机构，不会覆盖",
        ca_dir.display()
    );
    let identity = NodeIdentity {
        node_id: NodeId(rand::random()),
        role: cunyun_protocol::key::Role::Hub,
        scope,
    };
    let ca = cunyun_platform::certs::tls::CertAuthority::create(
        "cunyun province CA (村云省级证书机构)",
        &identity,
    )?;
    std::fs::create_dir_all(&ca_dir).with_context(|| format!("无法创建 {}", ca_dir.display()))?;
    cunyun_platform::certs::enroll::CaDir::write(&ca_dir, &ca.pem, &ca.pem.cert_pem)?;
    println!("已创建省级根证书机构：{}", ca_dir.display());
    println!(
        "根证书（随注册令牌交给各县）：{}",
        ca_dir.join("root.crt").display()
    );
    println!("私钥 {} 须离线妥善保管。", ca_dir.join("ca.key").display());
    Ok(())
}

fn enroll_token(ca_dir: PathBuf, scope: &str, role: &str, ttl_hours: u64) -> anyhow::Result<()> {
    let scope = cunyun_protocol::area::AreaScope::parse(scope).context("范围无效")?;
    let role = parse_role(role)?;
    let ca = cunyun_platform::certs::enroll::CaDir::load(&ca_dir)?;
    // Refuse now what the CA would refuse at enrollment.
    anyhow::ensure!(
        ca.ca.identity.scope.contains_scope(&scope),
        "范围 {scope} 不在本证书机构的范围 {} 之内",
        ca.ca.identity.scope
    );
    anyhow::ensure!(
        cunyun_protocol::cert::may_issue(ca.ca.identity.role, role),
        "本证书机构（{}）不能签发 {} 角色",
        ca.ca.identity.role.as_str(),
        role.as_str()
    );
    anyhow::ensure!(
        ttl_hours > 0 && ttl_hours <= 24 * 30,
        "有效时长应在 1 到 720 小时之间"
    );
    let tokens = cunyun_platform::certs::enroll::TokenStore::open(&ca_dir);
    let t = tokens.issue(
        scope,
        role,
        ttl_hours * 3600,
        cunyun_platform::certs::trust::system_time_s(),
    )?;
    println!("一次性注册令牌（只能使用一次，{ttl_hours} 小时内有效）：");
    println!("{}", t.token);
    println!("范围：{}  角色：{}", t.scope, t.role.as_str());
    println!(
        "请与根证书 {} 一同交给对方。",
        ca_dir.join("root.crt").display()
    );
    Ok(())
}

async fn enroll_serve(
    ca_dir: PathBuf,
    listen: SocketAddr,
    limits: cunyun_platform::ratelimit::AddrLimits,
) -> anyhow::Result<()> {
    use std::sync::Arc;
    let ca = Arc::new(cunyun_platform::certs::enroll::CaDir::load(&ca_dir)?);
    let tokens = Arc::new(cunyun_platform::certs::enroll::TokenStore::open(&ca_dir));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("无法监听 {listen}"))?;
    println!(
        "注册服务已启动：{}（证书机构 {}，范围 {}）。按 Ctrl-C 停止。",
        listener.local_addr()?,
        ca.ca.identity.role.as_str(),
        ca.ca.identity.scope
    );
    tokio::select! {
        _ = cunyun_platform::certs::enroll::serve_limited(listener, ca, tokens, limits) => {}
        _ = shutdown_signal() => {}
    }
    Ok(())
}

async fn enroll(
    server: SocketAddr,
    token: &str,
    root_cert: PathBuf,
    data_dir: PathBuf,
) -> anyhow::Result<()> {
    let root_pem = std::fs::read_to_string(&root_cert)
        .with_context(|| format!("无法读取根证书 {}", root_cert.display()))?;
    let done =
        cunyun_platform::certs::enroll::enroll_node(server, &root_pem, token, &data_dir).await?;
    println!("注册成功。节点身份：{}", done.identity.to_uri());
    println!("节点证书已写入：{}", data_dir.join("tls").display());
    if let Some(ca) = done.ca_dir {
        println!(
            "县级证书机构已写入：{}（可离线为本县村节点签发证书：cunyun-node enroll-village）",
            ca.display()
        );
    }
    Ok(())
}

fn revoke(ca_dir: PathBuf, data_dir: PathBuf, nodes: &[String]) -> anyhow::Result<()> {
    let ids = nodes
        .iter()
        .map(|n| {
            n.parse::<cunyun_protocol::identity::NodeId>()
                .with_context(|| format!("节点编号“{n}”无效"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ca = cunyun_platform::certs::enroll::CaDir::load(&ca_dir)?;
    let mut config = NodeConfig::default();
    config.data_dir = data_dir;
    let store =
        server::open_store(&config).context("无法打开文档库（节点是否仍在运行？请先停止）")?;
    let host = cunyun_platform::host::NodeHost::new(store, &config.data_dir);
    let list = cunyun_platform::certs::revocation::publish(
        &host,
        ca.revocation_issuer(),
        &ids,
        &[],
        cunyun_platform::certs::trust::system_time_s(),
    )?;
    println!(
        "吊销列表已更新（第 {} 版，共吊销 {} 个节点）；节点启动后随同步传到所有节点。",
        list.seq,
        list.nodes.len()
    );
    Ok(())
}

fn delete_household(
    data_dir: PathBuf,
    village: &str,
    id: &str,
    reason: &str,
    by: &str,
) -> anyhow::Result<()> {
    use cunyun_protocol::deletion::DeletionReason;
    let village = AreaCode::parse(village).context("村代码无效")?;
    anyhow::ensure!(
        village.level() == Level::Village,
        "村代码应为12位村级代码：{village}"
    );
    let reason = DeletionReason::parse(reason).with_context(|| {
        let ids: Vec<&str> = DeletionReason::ALL.iter().map(|r| r.id()).collect();
        format!("删除原因“{reason}”无效，可选：{}", ids.join("、"))
    })?;
    let hh = cunyun_protocol::key::DocKey::new(village, cunyun_protocol::key::Kind::Hh, id)
        .context("农户编号无效")?;
    eprintln!(
        "将删除 {village} 村农户 {id}（原因：{}），删除后无法恢复。请输入“{}”并回车：",
        reason.zh_name(),
        cunyun_node::api::DELETE_CONFIRMATION
    );
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("无法读取确认")?;
    anyhow::ensure!(
        line.trim() == cunyun_node::api::DELETE_CONFIRMATION,
        "未确认，未做任何删除"
    );
    let mut config = NodeConfig::default();
    config.data_dir = data_dir;
    let store =
        server::open_store(&config).context("无法打开文档库（节点是否仍在运行？请先停止）")?;
    let tomb = cunyun_node::deletion::delete_in_store(&store, &hh, by, reason)
        .map_err(|e| anyhow::anyhow!("删除失败：{e}"))?;
    drop(store);
    let stats =
        cunyun_platform::store::DocStore::vacuum(&config.data_dir.join("store"), &config.store)
            .context("文档库整理失败（删除已生效，下次启动时会再次整理）")?;
    println!(
        "已删除 {} 村农户 {}（{}，{}），文档库已整理（{} → {} 字节）；节点启动后删除随同步传到所有存有该户数据的节点。",
        tomb.village,
        tomb.household,
        tomb.reason.zh_name(),
        tomb.date,
        stats.bytes_before,
        stats.bytes_after
    );
    Ok(())
}

fn enroll_village(
    ca_dir: PathBuf,
    scope: &str,
    role: &str,
    out: PathBuf,
    node_id: Option<&str>,
    new_village_name: Option<&str>,
) -> anyhow::Result<()> {
    let scope = cunyun_protocol::area::AreaScope::parse(scope).context("范围无效")?;
    let role = parse_role(role)?;
    let place = known_place(&scope, new_village_name)?;
    anyhow::ensure!(
        !out.join("node.crt").exists(),
        "{} 已有节点证书，不会覆盖",
        out.display()
    );
    let ca = cunyun_platform::certs::enroll::CaDir::load(&ca_dir)?;
    let node_id = node_id
        .map(|n| {
            n.parse::<cunyun_protocol::identity::NodeId>()
                .with_context(|| format!("节点编号“{n}”无效"))
        })
        .transpose()?;
    let id = ca.issue_node_files(scope, role, node_id, &out)?;
    println!("已签发节点证书：{}（{place}）", id.to_uri());
    println!(
        "请将 {} 整个目录拷贝到该设备数据目录下的 tls/。",
        out.display()
    );
    Ok(())
}

/// The gazetteer's label of `scope` ([`gazetteer::Gazetteer::label`]), or an error if the
/// national gazetteer does not know it; `new_village_name` names a village created since (its
/// township must be known).
fn known_place(scope: &AreaScope, new_village_name: Option<&str>) -> anyhow::Result<String> {
    let area = scope.area();
    let added;
    let names = match new_village_name {
        Some(name) => {
            anyhow::ensure!(
                area.level() == Level::Village,
                "只有村级代码（12位）可以补充名称：{scope}"
            );
            added = gazetteer::sichuan().with_added(&[gazetteer::AddedArea {
                code: area,
                name: name.to_string(),
            }])?;
            &added
        }
        None => gazetteer::sichuan(),
    };
    names.check(&area)?;
    Ok(names.label(&area))
}

/// Fetches `path` from the node over plain HTTP/1.1 and parses the JSON body.
async fn http_get_json(addr: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .context("连接节点超时")?
    .with_context(|| format!("无法连接节点 {addr}（节点是否在运行？）"))?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut raw),
    )
    .await
    .context("读取节点响应超时")??;
    let text = String::from_utf8_lossy(&raw);
    let (_, body) = text.split_once("\r\n\r\n").context("节点响应格式不正确")?;
    serde_json::from_str(body).context("节点响应不是JSON")
}

fn fmt_time(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => {
            let ago = cunyun_platform::clock::now_ms().saturating_sub(ms) / 1000;
            format!("{ago}秒前")
        }
        None => "从未".into(),
    }
}

async fn status(addr: SocketAddr) -> anyhow::Result<()> {
    let v = http_get_json(addr, "/api/v1/sync").await?;
    if v["enabled"] != serde_json::Value::Bool(true) {
        println!("{}", v["message"].as_str().unwrap_or("本节点未启用同步"));
        return Ok(());
    }
    let s = &v["status"];
    println!(
        "本节点：{}（{}，范围 {}），同步端口 {}",
        s["node"]["node_id"].as_str().unwrap_or("?"),
        s["node"]["role"].as_str().unwrap_or("?"),
        s["node"]["scope"].as_str().unwrap_or("?"),
        s["listen"].as_str().unwrap_or("?")
    );
    let t = &s["totals"];
    println!(
        "合计：成功 {} 次，失败 {} 次，收到文档 {} 份，拒收 {} 份，流量 收 {} 字节 / 发 {} 字节",
        t["sessions_ok"],
        t["sessions_failed"],
        t["docs_received"],
        t["refused"],
        t["bytes_in"],
        t["bytes_out"]
    );
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        println!("尚未发现其他节点。");
    }
    for p in peers {
        println!(
            "- {} [{} {}] 来源 {}，最近同步 {}，成功 {} / 失败 {}，收到文档 {}，收 {} 字节 / 发 {} 字节{}{}",
            p["node_id"].as_str().unwrap_or("?"),
            p["role"].as_str().unwrap_or("未知角色"),
            p["scope"].as_str().unwrap_or(""),
            p["source"].as_str().unwrap_or("?"),
            fmt_time(p["last_sync_ms"].as_u64()),
            p["sessions_ok"],
            p["sessions_failed"],
            p["docs_received"],
            p["bytes_in"],
            p["bytes_out"],
            if p["active"] == serde_json::Value::Bool(true) { "，正在同步" } else { "" },
            p["last_error"].as_str().map(|e| format!("，最近错误：{e}")).unwrap_or_default(),
        );
    }
    Ok(())
}

async fn backup(
    data_dir: PathBuf,
    to: PathBuf,
    passphrase_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    use cunyun_node::backup;
    let pass = backup::passphrase::obtain(passphrase_file.as_deref(), true)?;
    let started = std::time::Instant::now();
    let s =
        tokio::task::spawn_blocking(move || backup::backup(&data_dir, &to, pass).map(|s| (s, to)))
            .await
            .context("备份中断")?;
    let (s, to) = s?;
    println!(
        "备份完成：{}（{} 字节，文件 {} 个，文档 {} 份，用时 {:.1} 秒{}）",
        to.display(),
        s.bytes,
        s.files,
        s.docs,
        started.elapsed().as_secs_f64(),
        if s.from_running_node {
            "，由运行中的节点导出"
        } else {
            ""
        }
    );
    if !s.damaged.is_empty() {
        eprintln!(
            "注意：{} 份损坏文档未能备份（运行 cunyun-node check 查看）：{}",
            s.damaged.len(),
            s.damaged.join("、")
        );
    }
    println!("请把备份文件和口令分开保管：没有口令无法恢复。");
    Ok(())
}

async fn restore(
    from: PathBuf,
    data_dir: PathBuf,
    force: bool,
    passphrase_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    use cunyun_node::backup;
    let pass = backup::passphrase::obtain(passphrase_file.as_deref(), false)?;
    let started = std::time::Instant::now();
    let target = data_dir.clone();
    let s = tokio::task::spawn_blocking(move || backup::restore(&from, &data_dir, force, pass))
        .await
        .context("恢复中断")??;
    println!(
        "恢复完成：{}（文件 {} 个，文档 {} 份，已逐份校验，用时 {:.1} 秒）",
        target.display(),
        s.files,
        s.docs,
        started.elapsed().as_secs_f64()
    );
    if s.dropped_deleted > 0 {
        println!("已去掉备份中 {} 份已删除农户的文档。", s.dropped_deleted);
    }
    if let Some(old) = s.replaced {
        println!("原有内容已改名保留：{}", old.display());
    }
    Ok(())
}

fn check(data_dir: PathBuf) -> anyhow::Result<()> {
    let mut config = NodeConfig::default();
    config.data_dir = data_dir;
    let store = server::open_store(&config)?;
    // Every key starts with its 12 area digits, so ["0", ":") is the whole index.
    let (mut ok, mut bad) = (0usize, 0usize);
    let entries: Vec<_> = store.scan_range(b"0", b":").collect();
    let total = entries.len();
    for (done, item) in entries.into_iter().enumerate() {
        match item {
            Ok((key, _)) => match store.load(&key) {
                Ok(_) => ok += 1,
                Err(e) => {
                    bad += 1;
                    eprintln!("\n损坏：{key}：{e}");
                }
            },
            Err(e) => {
                bad += 1;
                eprintln!("\n索引读取失败：{e}");
            }
        }
        if done % 500 == 0 || done + 1 == total {
            eprint!("\r  已检查 {}/{total}", done + 1);
            let _ = std::io::stderr().flush();
        }
    }
    eprintln!();
    let report = store.verify()?;
    for p in &report.problems {
        bad += 1;
        eprintln!("一致性问题：{p}");
    }
    for q in store.quarantined() {
        eprintln!("已隔离：{q:?}");
    }
    println!("检查完成：正常 {ok} 份，损坏 {bad} 份");
    anyhow::ensure!(
        bad == 0,
        "发现 {bad} 份损坏文档，已隔离保存，请联系运维人员"
    );
    Ok(())
}

fn web_cert(config: Option<PathBuf>, names: Vec<String>) -> anyhow::Result<()> {
    let config = match config {
        Some(path) => NodeConfig::load(&path)?,
        None => NodeConfig::default(),
    };
    let names = if names.is_empty() {
        cunyun_platform::certs::webtls::cert_names(&config.web_tls)
    } else {
        names
    };
    let dir = cunyun_platform::certs::webtls::dir_of(&config.web_tls, &config.data_dir);
    let files = cunyun_platform::certs::webtls::issue(&dir, &names)?;
    println!(
        "已签发网页证书：{}（{}）",
        files.cert.display(),
        names.join("、")
    );
    println!("手机需安装的证书机构证书：{}", files.ca_cert.display());
    if config.web_tls.names.iter().any(|n| !names.contains(n)) {
        println!("注意：本次证书未包含配置文件 [web_tls] names 中的全部地址，节点启动时会按配置重新签发。");
    }
    Ok(())
}
