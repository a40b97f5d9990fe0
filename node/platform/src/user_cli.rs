//! `user …` subcommands shared by `cunyun-node` and `cunyun-hub`: add (with role and scope),
//! list, passwd, disable, enable, remove. They change `<data_dir>/accounts.json` directly (a
//! running node or hub sees the change at its next request; a disabled or removed account's
//! sessions are refused at once) and write each change to the audit log as actor `cli`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::accounts::{AccountError, Accounts, Role};

/// The `user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// 新建账户；密码从标准输入读取一行（至少8个字符）。
    Add {
        /// 数据目录（默认 ./data/node，枢纽为 ./data/hub）。
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// 用户名（2–32个字母、数字、下划线或连字符），也是其修改记录的作者。
        #[arg(long)]
        name: String,
        /// 角色：cadre 村干部（默认）、county_operator 县级运维、hub_operator 省级运维、admin 管理员。
        #[arg(long, default_value = "cadre")]
        role: String,
        /// 管辖范围：村干部为12位村代码，县级运维为6位县代码，省级运维为2位省代码，管理员为本节点的地区代码。
        #[arg(long)]
        scope: Option<String>,
        /// 所在村代码（12位；旧参数，等同于 --scope）。
        #[arg(long)]
        village: Option<String>,
        /// 从标准输入读取密码且不显示提示（脚本使用）。
        #[arg(long)]
        password_stdin: bool,
    },
    /// 列出账户。
    List {
        /// 数据目录。
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// 重置密码（新密码从标准输入读取）；该账户已登录的会话立即失效。
    Passwd {
        /// 数据目录。
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// 用户名。
        #[arg(long)]
        name: String,
        /// 从标准输入读取密码且不显示提示。
        #[arg(long)]
        password_stdin: bool,
    },
    /// 停用账户；其已登录的会话立即失效。
    Disable {
        /// 数据目录。
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// 用户名。
        #[arg(long)]
        name: String,
    },
    /// 重新启用已停用的账户（需重新登录）。
    Enable {
        /// 数据目录。
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// 用户名。
        #[arg(long)]
        name: String,
    },
    /// 删除账户；其已登录的会话立即失效，已有修改记录仍保留其作者名。
    Remove {
        /// 数据目录。
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// 用户名。
        #[arg(long)]
        name: String,
    },
}

/// Why a `user` command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserCliError {
    /// An account operation failed.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The password could not be read.
    #[error("无法从标准输入读取密码: {0}")]
    Stdin(std::io::Error),
    /// No scope was given.
    #[error("请用 --scope 给出管辖范围（地区代码）")]
    NoScope,
}

fn read_password(name: &str, quiet: bool) -> Result<String, UserCliError> {
    if !quiet && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("请输入“{name}”的密码（至少8个字符，输入内容会显示）：");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(UserCliError::Stdin)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Runs a `user` command; `default_dir` is the binary's default data directory and
/// `default_scope` the scope used when an add gives none (the node's village).
pub fn run(
    command: UserCommand,
    default_dir: &Path,
    default_scope: Option<&str>,
) -> Result<(), UserCliError> {
    let open = |d: &Option<PathBuf>| Accounts::open(d.as_deref().unwrap_or(default_dir));
    match command {
        UserCommand::Add {
            data_dir,
            name,
            role,
            scope,
            village,
            password_stdin,
        } => {
            let role = Role::parse(&role)?;
            let scope = scope
                .or(village)
                .or_else(|| {
                    (role == Role::Cadre)
                        .then(|| default_scope.map(str::to_string))
                        .flatten()
                })
                .ok_or(UserCliError::NoScope)?;
            // Check the role and scope before asking for a password.
            role.parse_scope(&scope)?;
            let password = read_password(&name, password_stdin)?;
            let a = open(&data_dir)?.create("cli", &name, role, &scope, &password)?;
            println!(
                "已创建账户：{}（{}，管辖范围 {}）",
                a.name,
                a.role.zh_name(),
                a.scope.scope()
            );
        }
        UserCommand::List { data_dir } => {
            let list = open(&data_dir)?.list()?;
            if list.is_empty() {
                println!("还没有账户。用 user add 创建。");
            }
            for a in list {
                println!(
                    "{}\t{}\t{}\t{}",
                    a.name,
                    a.role.zh_name(),
                    a.scope.scope(),
                    if a.disabled { "已停用" } else { "正常" }
                );
            }
        }
        UserCommand::Passwd {
            data_dir,
            name,
            password_stdin,
        } => {
            let accounts = open(&data_dir)?;
            if !accounts.list()?.iter().any(|a| a.name == name) {
                return Err(AccountError::NoSuchAccount(name).into());
            }
            let password = read_password(&name, password_stdin)?;
            accounts.set_password("cli", &name, &password)?;
            println!("已重置“{name}”的密码；其已登录的会话均已失效。");
        }
        UserCommand::Disable { data_dir, name } => {
            open(&data_dir)?.set_disabled("cli", &name, true)?;
            println!("已停用账户“{name}”；其已登录的会话均已失效。");
        }
        UserCommand::Enable { data_dir, name } => {
            open(&data_dir)?.set_disabled("cli", &name, false)?;
            println!("已启用账户“{name}”（需重新登录）。");
        }
        UserCommand::Remove { data_dir, name } => {
            open(&data_dir)?.remove("cli", &name)?;
            println!("已删除账户“{name}”。");
        }
    }
    Ok(())
}
