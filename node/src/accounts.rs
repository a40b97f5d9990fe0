//! Cadre accounts and login sessions.
//!
//! Accounts live in `<data_dir>/accounts.json`, written by `cunyun-node user add` (the node only
//! reads it, again at every login, so an account added while the node runs works at once).
//! Sessions live in `<data_dir>/sessions.json`, written by the node alone, so a restart keeps
//! cadres logged in. Both files are replaced atomically (write a temporary file, fsync, rename,
//! fsync the directory), so a crash leaves the old or the new version, never half of one.
//!
//! Passwords are stored only as Argon2id PHC strings. Session tokens are 32 random bytes sent in
//! an `HttpOnly; SameSite=Strict` cookie; only their BLAKE3 hash is stored. A name that fails to
//! log in [`MAX_FAILURES`] times within [`FAILURE_WINDOW_MS`] is refused for
//! [`LOCKOUT_MS`], whatever the password.
//!
//! ```json
//! {"version": 1, "accounts": [{"name": "wangli", "village": "510116104201",
//!   "password_hash": "$argon2id$v=19$…", "created_ms": 1764576000000}]}
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use cunyun_protocol::area::{AreaCode, Level};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::records::now_ms;

/// Name of the session cookie.
pub const COOKIE: &str = "cunyun_session";
/// How long a session lasts without logging in again (30 days: cadres work offline for days).
pub const SESSION_MS: u64 = 30 * 24 * 3600 * 1000;
/// Failed logins of one name tolerated within [`FAILURE_WINDOW_MS`].
pub const MAX_FAILURES: usize = 5;
/// Window in which failures are counted.
pub const FAILURE_WINDOW_MS: u64 = 5 * 60 * 1000;
/// How long a name is refused after too many failures.
pub const LOCKOUT_MS: u64 = 60 * 1000;
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;

const ACCOUNTS_FILE: &str = "accounts.json";
const SESSIONS_FILE: &str = "sessions.json";
const FILE_VERSION: u32 = 1;

/// Why an account operation failed. Messages are shown to operators and cadres.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// Reading or writing an account file failed.
    #[error("账户文件 {path} 读写失败: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// An account file is not valid.
    #[error("账户文件 {path} 格式错误: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The name is not acceptable.
    #[error("用户名应为2–32个字母、数字、下划线或连字符：{0}")]
    BadName(String),
    /// The village code is not a village.
    #[error("村代码应为12位村级代码：{0}")]
    BadVillage(String),
    /// The password is too short.
    #[error("密码至少{MIN_PASSWORD_CHARS}个字符")]
    WeakPassword,
    /// The name is taken.
    #[error("用户名“{0}”已存在")]
    Exists(String),
    /// Wrong name or password.
    #[error("用户名或密码错误")]
    BadCredentials,
    /// Too many failed attempts.
    #[error("登录失败次数过多，请{0}秒后再试")]
    Locked(u64),
    /// Hashing failed.
    #[error("密码处理失败: {0}")]
    Hash(String),
}

/// One cadre account as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// Login name, also the Automerge author of the cadre's changes.
    pub name: String,
    /// The village the cadre works in.
    pub village: AreaCode,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// When the account was created (ms since the epoch).
    pub created_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AccountsFile {
    version: u32,
    accounts: Vec<Account>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSession {
    token_hash: String,
    name: String,
    village: AreaCode,
    expires_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SessionsFile {
    version: u32,
    sessions: Vec<StoredSession>,
}

/// The logged-in cadre a request acts as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cadre {
    /// Login name (the Automerge author).
    pub name: String,
    /// The cadre's village.
    pub village: AreaCode,
}

/// Accounts and sessions of one node.
pub struct Accounts {
    dir: PathBuf,
    sessions: Mutex<HashMap<String, StoredSession>>,
    failures: Mutex<HashMap<String, Vec<u64>>>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AccountError + '_ {
    move |source| AccountError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with `bytes` atomically and durably.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AccountError> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

fn read_json<T: Default + serde::de::DeserializeOwned>(path: &Path) -> Result<T, AccountError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| AccountError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(AccountError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

fn valid_name(name: &str) -> bool {
    (2..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Accounts {
    /// Opens the accounts of the node whose data directory is `dir` (creating it if needed) and
    /// loads the unexpired sessions.
    pub fn open(dir: &Path) -> Result<Accounts, AccountError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let file: SessionsFile = read_json(&dir.join(SESSIONS_FILE))?;
        let now = now_ms();
        let sessions = file
            .sessions
            .into_iter()
            .filter(|s| s.expires_ms > now)
            .map(|s| (s.token_hash.clone(), s))
            .collect();
        Ok(Accounts {
            dir: dir.to_path_buf(),
            sessions: Mutex::new(sessions),
            failures: Mutex::new(HashMap::new()),
        })
    }

    fn accounts_path(&self) -> PathBuf {
        self.dir.join(ACCOUNTS_FILE)
    }

    /// Every account, read from disk.
    pub fn list(&self) -> Result<Vec<Account>, AccountError> {
        let file: AccountsFile = read_json(&self.accounts_path())?;
        Ok(file.accounts)
    }

    /// Adds an account; durable when it returns.
    pub fn add(&self, name: &str, village: &str, password: &str) -> Result<Account, AccountError> {
        if !valid_name(name) {
            return Err(AccountError::BadName(name.to_string()));
        }
        let village = AreaCode::parse(village)
            .ok()
            .filter(|a| a.level() == Level::Village)
            .ok_or_else(|| AccountError::BadVillage(village.to_string()))?;
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(AccountError::WeakPassword);
        }
        let path = self.accounts_path();
        let mut file: AccountsFile = read_json(&path)?;
        if file.accounts.iter().any(|a| a.name == name) {
            return Err(AccountError::Exists(name.to_string()));
        }
        let salt = SaltString::generate(&mut OsRng);
        let password_hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| AccountError::Hash(e.to_string()))?
            .to_string();
        let account = Account {
            name: name.to_string(),
            village,
            password_hash,
            created_ms: now_ms(),
        };
        file.version = FILE_VERSION;
        file.accounts.push(account.clone());
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| AccountError::Format {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes)?;
        Ok(account)
    }

    /// Checks a password (slow on purpose: run it off the async workers) and opens a session,
    /// returning its token. Too many failures for one name lock it out for a while.
    pub fn login(&self, name: &str, password: &str) -> Result<(String, Cadre), AccountError> {
        let now = now_ms();
        if let Ok(mut f) = self.failures.lock() {
            let times = f.entry(name.to_string()).or_default();
            times.retain(|&t| t + FAILURE_WINDOW_MS > now);
            if times.len() >= MAX_FAILURES {
                let last = times.iter().copied().max().unwrap_or(now);
                let wait = (last + LOCKOUT_MS).saturating_sub(now);
                if wait > 0 {
                    return Err(AccountError::Locked(wait.div_ceil(1000)));
                }
            }
        }
        let account = self.list()?.into_iter().find(|a| a.name == name);
        let ok = match &account {
            Some(a) => PasswordHash::new(&a.password_hash)
                .map(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false),
            None => false,
        };
        let account = match (ok, account) {
            (true, Some(a)) => a,
            _ => {
                if let Ok(mut f) = self.failures.lock() {
                    f.entry(name.to_string()).or_default().push(now);
                }
                tracing::warn!(target: "cunyun::_events::login_failed", name);
                return Err(AccountError::BadCredentials);
            }
        };
        if let Ok(mut f) = self.failures.lock() {
            f.remove(name);
        }
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let session = StoredSession {
            token_hash: token_hash(&token),
            name: account.name.clone(),
            village: account.village,
            expires_ms: now + SESSION_MS,
        };
        self.update_sessions(|s| {
            s.insert(session.token_hash.clone(), session.clone());
        })?;
        tracing::info!(target: "cunyun::_events::login", name = %account.name);
        Ok((
            token,
            Cadre {
                name: account.name,
                village: account.village,
            },
        ))
    }

    /// The cadre a session token belongs to, if the session is open and unexpired.
    pub fn session(&self, token: &str) -> Option<Cadre> {
        let sessions = self.sessions.lock().ok()?;
        let s = sessions.get(&token_hash(token))?;
        (s.expires_ms > now_ms()).then(|| Cadre {
            name: s.name.clone(),
            village: s.village,
        })
    }

    /// Ends a session; durable when it returns.
    pub fn logout(&self, token: &str) -> Result<(), AccountError> {
        let h = token_hash(token);
        self.update_sessions(|s| {
            s.remove(&h);
        })
    }

    /// Applies `f` to the sessions, drops expired ones and writes the file.
    fn update_sessions(
        &self,
        f: impl FnOnce(&mut HashMap<String, StoredSession>),
    ) -> Result<(), AccountError> {
        let path = self.dir.join(SESSIONS_FILE);
        let mut sessions = self.sessions.lock().map_err(|_| AccountError::Format {
            path: path.clone(),
            reason: "内部状态异常".into(),
        })?;
        f(&mut sessions);
        let now = now_ms();
        sessions.retain(|_, s| s.expires_ms > now);
        let file = SessionsFile {
            version: FILE_VERSION,
            sessions: sessions.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| AccountError::Format {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_login_session_logout_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = Accounts::open(dir.path()).expect("open");
        accounts
            .add("wangli", "510116104201", "村里的密码123")
            .expect("add");
        assert!(matches!(
            accounts.add("wangli", "510116104201", "another-password"),
            Err(AccountError::Exists(_))
        ));
        assert!(matches!(
            accounts.add("x", "510116104201", "long enough"),
            Err(AccountError::BadName(_))
        ));
        assert!(matches!(
            accounts.add("lisi", "510116", "long enough"),
            Err(AccountError::BadVillage(_))
        ));
        assert!(matches!(
            accounts.add("lisi", "510116104201", "short"),
            Err(AccountError::WeakPassword)
        ));
        assert!(matches!(
            accounts.login("wangli", "wrong-password"),
            Err(AccountError::BadCredentials)
        ));
        let (token, cadre) = accounts.login("wangli", "村里的密码123").expect("login");
        assert_eq!(cadre.name, "wangli");
        assert!(!std::fs::read_to_string(dir.path().join("accounts.json"))
            .expect("file")
            .contains("村里的密码123"));
        drop(accounts);
        let accounts = Accounts::open(dir.path()).expect("reopen");
        assert_eq!(accounts.session(&token), Some(cadre));
        assert_eq!(accounts.session("not-a-token"), None);
        accounts.logout(&token).expect("logout");
        assert_eq!(accounts.session(&token), None);
        let accounts = Accounts::open(dir.path()).expect("reopen");
        assert_eq!(accounts.session(&token), None);
    }

    #[test]
    fn repeated_failures_lock_the_name_even_with_the_right_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = Accounts::open(dir.path()).expect("open");
        accounts
            .add("zhangsan", "510116104201", "correct-horse")
            .expect("add");
        for _ in 0..MAX_FAILURES {
            assert!(matches!(
                accounts.login("zhangsan", "nope-nope"),
                Err(AccountError::BadCredentials)
            ));
        }
        assert!(matches!(
            accounts.login("zhangsan", "correct-horse"),
            Err(AccountError::Locked(_))
        ));
    }
}
