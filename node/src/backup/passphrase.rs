//! Where `cunyun-node backup` and `restore` take the passphrase from, in this order: the file
//! given with `--passphrase-file` (its first line), the environment variable
//! [`ENV_VAR`], or a prompt on the terminal (asked twice for a new backup). A technician
//! types it at the prompt; a scheduled backup (cron, a systemd timer) uses a root-only file.

use std::path::Path;

use age::secrecy::SecretString;

use super::BackupError;

/// Environment variable holding the passphrase.
pub const ENV_VAR: &str = "CUNYUN_BACKUP_PASSPHRASE";

/// The passphrase from `file`, else [`ENV_VAR`], else the terminal (`confirm`: asked twice).
pub fn obtain(file: Option<&Path>, confirm: bool) -> Result<SecretString, BackupError> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            BackupError::NoPassphrase(format!("无法读取口令文件 {}：{e}", file.display()))
        })?;
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            return Err(BackupError::NoPassphrase(format!(
                "口令文件 {} 的第一行是空的",
                file.display()
            )));
        }
        return Ok(SecretString::from(line));
    }
    if let Ok(p) = std::env::var(ENV_VAR) {
        if !p.is_empty() {
            return Ok(SecretString::from(p));
        }
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| {
            BackupError::NoPassphrase(format!(
                "无法在终端输入口令（{e}）；可用 --passphrase-file 文件 或环境变量 {ENV_VAR}"
            ))
        })
    };
    let first = ask("请输入备份口令：")?;
    if confirm && ask("请再输入一次：")? != first {
        return Err(BackupError::NoPassphrase(
            "两次输入的口令不一致".to_string(),
        ));
    }
    Ok(SecretString::from(first))
}
