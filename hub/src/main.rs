//! `cunyun-hub`: the provincial hub (`run`, `init`, `content add`, `content list`,
//! `content key`, `match`, `user …`). The commands that call the running hub log in first
//! (`--user NAME`, password from `CUNYUN_HUB_PASSWORD` or stdin).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use cunyun_hub::config::HubConfig;

#[derive(Parser)]
#[command(
    name = "cunyun-hub",
    version,
    about = "村云省级枢纽：资源库、需求匹配、推荐下发"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// 启动枢纽（同步、匹配、管理接口）。
    Run {
        /// 配置文件（TOML）；不给则使用默认配置。
        #[arg(long)]
        config: Option<PathBuf>,
        /// 数据目录（覆盖配置文件）。
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// 管理接口监听地址（覆盖配置文件）。
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// 初始化枢纽身份：用本地开发证书机构签发hub角色证书（正式部署改用注册流程）。
    Init {
        /// 数据目录；证书写入其中的 tls/ 子目录。
        #[arg(long, default_value = "./data/hub")]
        data_dir: PathBuf,
        /// 省级前缀。
        #[arg(long, default_value = "51")]
        scope: String,
        /// 开发用证书机构目录（与各节点共用）。
        #[arg(long, default_value = "./data/dev-ca")]
        ca_dir: PathBuf,
    },
    /// 资源库操作。
    Content {
        #[command(subcommand)]
        command: ContentCommand,
    },
    /// 立即运行一轮匹配。
    Match {
        /// 枢纽管理接口地址。
        #[arg(long, default_value = "http://127.0.0.1:8090")]
        hub: String,
        #[command(flatten)]
        login: LoginArgs,
    },
    /// 管理枢纽账户（省级运维、管理员）。
    User {
        #[command(subcommand)]
        command: cunyun_platform::user_cli::UserCommand,
    },
}

/// Copies of files placed in the hub's import directory for one `content add`; removed when
/// dropped.
#[derive(Default)]
struct StagedFiles(Vec<PathBuf>);

impl StagedFiles {
    /// Copies `file` into `import` under a fresh name and returns that name.
    fn stage(&mut self, import: &Path, file: &Path) -> anyhow::Result<String> {
        let base = file
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("文件名无效：{}", file.display()))?;
        let name = format!("cli-{:016x}-{base}", rand::random::<u64>());
        let dest = import.join(&name);
        std::fs::copy(file, &dest).with_context(|| {
            format!(
                "无法把 {} 复制到导入目录 {}",
                file.display(),
                import.display()
            )
        })?;
        self.0.push(dest);
        Ok(name)
    }
}

impl Drop for StagedFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Who the command logs in to the hub as.
#[derive(clap::Args)]
struct LoginArgs {
    /// 登录枢纽的账户（省级运维或管理员）；密码取自环境变量 CUNYUN_HUB_PASSWORD，没有则从标准输入读取一行。
    #[arg(long)]
    user: String,
}

/// Logs in to the hub at `hub` and returns a client sending the session cookie and CSRF header.
async fn operator_client(hub: &str, login: &LoginArgs) -> anyhow::Result<reqwest::Client> {
    let password = match std::env::var("CUNYUN_HUB_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("请输入“{}”的密码：", login.user);
            }
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("无法从标准输入读取密码")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/login", hub.trim_end_matches('/')))
        .json(&serde_json::json!({"name": login.user, "password": password}))
        .send()
        .await
        .with_context(|| format!("无法连接枢纽 {hub}"))?;
    let mut cookies = Vec::new();
    let mut csrf = String::new();
    for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
        let pair = v
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .to_string();
        if let Some(t) = pair.strip_prefix("cunyun_csrf=") {
            csrf = t.to_string();
        }
        cookies.push(pair);
    }
    if !resp.status().is_success() {
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        anyhow::bail!(
            "登录枢纽失败：{}",
            v["message"].as_str().unwrap_or("用户名或密码错误")
        );
    }
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::COOKIE, cookies.join("; ").parse()?);
    headers.insert("x-csrf-token", csrf.parse()?);
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

#[derive(Subcommand)]
enum ContentCommand {
    /// 添加（或更新）一条资源：资源信息JSON文件 + 主文件（+ 其他版本文件）。
    Add {
        /// 枢纽管理接口地址。
        #[arg(long, default_value = "http://127.0.0.1:8090")]
        hub: String,
        /// 资源信息（JSON文件：标题、标签、地区、月份、格式、审核日期等）。
        #[arg(long)]
        meta: PathBuf,
        /// 主文件路径（本机路径；命令先把它复制到枢纽的导入目录）。
        #[arg(long)]
        file: PathBuf,
        /// 其他版本的文件，格式“版本编号=路径”，可重复。
        #[arg(long = "rendition", value_name = "ID=PATH")]
        renditions: Vec<String>,
        /// 枢纽的数据目录：文件先复制到其中的导入目录（import/），枢纽只从那里读取文件。
        #[arg(long, default_value = "./data/hub")]
        data_dir: PathBuf,
        #[command(flatten)]
        login: LoginArgs,
    },
    /// 列出资源库中的资源。
    List {
        /// 枢纽管理接口地址。
        #[arg(long, default_value = "http://127.0.0.1:8090")]
        hub: String,
        #[command(flatten)]
        login: LoginArgs,
    },
    /// 显示枢纽的内容签名公钥（填入各节点配置 [content] trusted_hub_keys）；没有密钥时创建。
    Key {
        /// 数据目录。
        #[arg(long, default_value = "./data/hub")]
        data_dir: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("无法启动运行时")
        .and_then(|rt| rt.block_on(run()))
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("错误：{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("cunyun=info,warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Run {
            config,
            data_dir,
            listen,
        } => {
            let mut c = match config {
                Some(p) => HubConfig::load(&p)?,
                None => HubConfig::default(),
            };
            if let Some(d) = data_dir {
                c.data_dir = d;
            }
            if let Some(l) = listen {
                c.listen = l;
            }
            let running = cunyun_hub::start(&c, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            println!("村云省级枢纽已启动：{}/healthz", running.url());
            if let Some(s) = &running.hub.sync {
                println!("同步端口：{}", s.listen_addr());
            }
            running.wait().await?;
            Ok(())
        }
        Command::Init {
            data_dir,
            scope,
            ca_dir,
        } => {
            use cunyun_protocol::identity::{NodeId, NodeIdentity};
            let scope = cunyun_protocol::area::AreaScope::parse(&scope).context("省级前缀无效")?;
            let tls_dir = data_dir.join("tls");
            anyhow::ensure!(
                !tls_dir.join("node.crt").exists(),
                "{} 已有证书；如需重新生成，请先删除该目录",
                tls_dir.display()
            );
            let identity = NodeIdentity {
                node_id: NodeId(rand::random()),
                role: cunyun_protocol::key::Role::Hub,
                scope,
            };
            if cunyun_platform::certs::tls::init_dev_identity(&ca_dir, &tls_dir, &identity)? {
                println!("已创建开发用证书机构：{}", ca_dir.display());
            }
            println!("枢纽身份：{}", identity.to_uri());
            println!("证书已写入：{}", tls_dir.display());
            let key =
                cunyun_hub::files::load_or_create_key(&data_dir.join(cunyun_hub::files::KEY_FILE))?;
            println!(
                "内容签名公钥（填入节点 [content] trusted_hub_keys）：{}",
                cunyun_protocol::manifest::key_to_hex(&key.verifying_key())
            );
            Ok(())
        }
        Command::Content {
            command:
                ContentCommand::Add {
                    hub,
                    meta,
                    file,
                    renditions,
                    data_dir,
                    login,
                },
        } => {
            let text = std::fs::read_to_string(&meta)
                .with_context(|| format!("无法读取资源信息 {}", meta.display()))?;
            let meta: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("资源信息 {} 不是有效的JSON", meta.display()))?;
            // The hub reads files only from its import directory: stage copies there, and
            // remove them once the hub has chunked them into its blob store (or refused them).
            let import = data_dir.join(cunyun_hub::IMPORT_DIR);
            anyhow::ensure!(
                import.is_dir(),
                "找不到枢纽的导入目录 {}；本命令须在枢纽所在的机器上运行，并用 --data-dir 指明枢纽的数据目录",
                import.display()
            );
            let mut staged = StagedFiles::default();
            let main = staged.stage(&import, &file)?;
            let mut files = BTreeMap::new();
            for r in renditions {
                let (id, path) = r
                    .split_once('=')
                    .with_context(|| format!("“{r}”应为“版本编号=路径”"))?;
                files.insert(id.to_string(), staged.stage(&import, Path::new(path))?);
            }
            let body = serde_json::json!({
                "meta": meta, "file": main, "files": files,
            });
            let resp = operator_client(&hub, &login)
                .await?
                .post(format!("{}/api/v1/content", hub.trim_end_matches('/')))
                .json(&body)
                .send()
                .await
                .with_context(|| format!("无法连接枢纽 {hub}"))?;
            let status = resp.status();
            let v: serde_json::Value = resp.json().await.context("枢纽的回复无法解析")?;
            drop(staged);
            if status.is_success() {
                println!(
                    "已保存资源 {}：{}",
                    v["id"].as_str().unwrap_or("?"),
                    v["meta"]["title"].as_str().unwrap_or("")
                );
                Ok(())
            } else {
                let mut msg = v["message"].as_str().unwrap_or("保存失败").to_string();
                if let Some(fields) = v["fields"].as_array() {
                    for f in fields {
                        msg.push_str(&format!(
                            "\n  {}：{}",
                            f["field"].as_str().unwrap_or(""),
                            f["message"].as_str().unwrap_or("")
                        ));
                    }
                }
                anyhow::bail!(msg)
            }
        }
        Command::Content {
            command: ContentCommand::List { hub, login },
        } => {
            let v: serde_json::Value = operator_client(&hub, &login)
                .await?
                .get(format!("{}/api/v1/content", hub.trim_end_matches('/')))
                .send()
                .await
                .with_context(|| format!("无法连接枢纽 {hub}"))?
                .json()
                .await
                .context("枢纽的回复无法解析")?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            println!("资源库共{}条：", items.len());
            for i in items {
                println!(
                    "  {}  {}  {}",
                    i["id"].as_str().unwrap_or(""),
                    i["meta"]["format"].as_str().unwrap_or(""),
                    i["meta"]["title"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        Command::Content {
            command: ContentCommand::Key { data_dir },
        } => {
            let key =
                cunyun_hub::files::load_or_create_key(&data_dir.join(cunyun_hub::files::KEY_FILE))?;
            println!(
                "{}",
                cunyun_protocol::manifest::key_to_hex(&key.verifying_key())
            );
            Ok(())
        }
        Command::User { command } => {
            cunyun_platform::user_cli::run(command, std::path::Path::new("./data/hub"), None)?;
            Ok(())
        }
        Command::Match { hub, login } => {
            let v: serde_json::Value = operator_client(&hub, &login)
                .await?
                .post(format!("{}/api/v1/match", hub.trim_end_matches('/')))
                .send()
                .await
                .with_context(|| format!("无法连接枢纽 {hub}"))?
                .json()
                .await
                .context("枢纽的回复无法解析")?;
            println!(
                "本轮匹配：新增或变更农户{}户，匹配{}户，写入推荐{}份，新推荐{}条",
                v["households_changed"],
                v["households_matched"],
                v["recs_written"],
                v["items_added"]
            );
            Ok(())
        }
    }
}
