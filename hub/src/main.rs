//! `cunyun-hub`: the provincial hub (a thin skeleton: store, `/healthz`, `/metrics`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "cunyun-hub",
    version,
    about = "村云省级枢纽（骨架：文档库、健康检查、监控指标）"
)]
struct Cli {
    /// 数据目录。
    #[arg(long, default_value = "./data/hub")]
    data_dir: PathBuf,
    /// 监听地址。
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
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
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("无法创建数据目录 {}", cli.data_dir.display()))?;
    let hub = Arc::new(cunyun_hub::Hub::open(&cli.data_dir).context("无法打开文档库")?);
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("无法监听 {}", cli.listen))?;
    println!(
        "村云省级枢纽已启动：http://{}/healthz",
        listener.local_addr()?
    );
    axum::serve(listener, cunyun_hub::router(hub))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
