//! Accounts (with their [`Role`] and scope), login sessions, and account management.
//!
//! Accounts live in `<data_dir>/accounts.json`, written by `cunyun-node user …` / `cunyun-hub
//! user …` and the admin page. The node re-reads it whenever it changes on disk (checked on every
//! request), so an account added, disabled or changed while the node runs takes effect at once:
//! every request's session is checked against the current account, and a session opened before
//! the account was disabled or its password reset is dead.
//! Sessions live in `<data_dir>/sessions.json`, written by the node alone, so a restart keeps
//! cadres logged in. Both files are replaced atomically (write a temporary file, fsync, rename,
//! fsync the directory), so a crash leaves the old or the new version, never half of one.
//!
//! Passwords are stored only as Argon2id PHC strings. Session tokens are 32 random bytes sent in
//! an `HttpOnly; SameSite=Strict` cookie; only their BLAKE3 hash is stored. A name that fails to
//! log in [`MAX_FAILURES`] times within [`FAILURE_WINDOW_MS`] is refused for
//! [`LOCKOUT_MS`], whatever the password.
//!
//! Roles and scopes: a `cadre` works in one village (a 12-digit code), a `county_operator`
//! oversees a county (6 digits), a `hub_operator` the province (2 digits), an `admin` manages the
//! accounts and reads the audit log of its node or hub (any area: the one its node serves).
//! Logins, logouts and account changes are written to the audit log ([`crate::audit`]).
//!
//! ```json
//! {"version": 2, "accounts": [{"name": "wangli", "role": "cadre", "scope": "510116108203",
//!   "password_hash": "$argon2id$v=19$…", "created_ms": 1764576000000, "disabled": false,
//!   "sessions_from_ms": 0}]}
//! ```
//!
//! Version 1 files (`"village"` instead of `"scope"`, no role) are still read: their accounts are
//! cadres.

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

use crate::clock::now_ms;

/// Name of the session cookie.
pub const COOKIE: &str = "cunyun_session";
/// Name of the CSRF cookie (readable by the page; sent back as `x-csrf-token`).
pub const CSRF_COOKIE: &str = "cunyun_csrf";
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
const FILE_VERSION: u32 = 2;

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
    /// The scope does not fit the role.
    #[error("{role}的管辖范围应为{expected}：{got}")]
    BadScope {
        /// The role's Chinese name.
        role: &'static str,
        /// What the scope should be.
        expected: &'static str,
        /// What was given.
        got: String,
    },
    /// The role is unknown.
    #[error("未知角色“{0}”（可选：cadre 村干部、county_operator 县级运维、hub_operator 省级运维、admin 管理员）")]
    BadRole(String),
    /// No such account.
    #[error("没有账户“{0}”")]
    NoSuchAccount(String),
    /// The account is disabled.
    #[error("账户已停用，请联系管理员")]
    Disabled,
    /// The audit log could not be written, so the action was not done.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
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

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 村干部: reads and writes the records of one village.
    #[default]
    Cadre,
    /// 县级运维: reads the records of one county.
    CountyOperator,
    /// 省级运维: runs the hub (the province).
    HubOperator,
    /// 管理员: manages accounts and reads the audit log of its node or hub.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [
        Role::Cadre,
        Role::CountyOperator,
        Role::HubOperator,
        Role::Admin,
    ];

    /// The id used in files, the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Cadre => "cadre",
            Role::CountyOperator => "county_operator",
            Role::HubOperator => "hub_operator",
            Role::Admin => "admin",
        }
    }

    /// The Chinese name shown to users.
    pub fn zh_name(self) -> &'static str {
        match self {
            Role::Cadre => "村干部",
            Role::CountyOperator => "县级运维",
            Role::HubOperator => "省级运维",
            Role::Admin => "管理员",
        }
    }

    /// Parses a role id.
    pub fn parse(s: &str) -> Result<Role, AccountError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| AccountError::BadRole(s.to_string()))
    }

    /// The level a scope of this role must have (`None`: any level).
    pub fn scope_level(self) -> Option<Level> {
        match self {
            Role::Cadre => Some(Level::Village),
            Role::CountyOperator => Some(Level::County),
            Role::HubOperator => Some(Level::Province),
            Role::Admin => None,
        }
    }

    /// Parses `scope` for this role: a full 12-digit code or the prefix of the role's level.
    pub fn parse_scope(self, scope: &str) -> Result<AreaCode, AccountError> {
        let expected = match self.scope_level() {
            Some(Level::Village) => "12位村级代码",
            Some(Level::County) => "6位县级代码",
            Some(_) => "2位省级代码",
            None => "地区代码（2、4、6、9或12位）",
        };
        let bad = || {
            if self == Role::Cadre {
                AccountError::BadVillage(scope.to_string())
            } else {
                AccountError::BadScope {
                    role: self.zh_name(),
                    expected,
                    got: scope.to_string(),
                }
            }
        };
        let area = if scope.len() == 12 {
            AreaCode::parse(scope).ok()
        } else {
            cunyun_protocol::area::AreaScope::parse(scope)
                .ok()
                .map(|s| s.area())
        }
        .ok_or_else(bad)?;
        match self.scope_level() {
            Some(level) if area.level() != level => Err(bad()),
            _ => Ok(area),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One account as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// Login name, also the Automerge author of the account's changes.
    pub name: String,
    /// What the account may do (version 1 files: always a cadre).
    #[serde(default)]
    pub role: Role,
    /// The area the account works in (version 1 files: `village`).
    #[serde(alias = "village")]
    pub scope: AreaCode,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// When the account was created (ms since the epoch).
    pub created_ms: u64,
    /// A disabled account cannot log in and its sessions are dead.
    #[serde(default)]
    pub disabled: bool,
    /// Sessions opened before this time are dead (set when the password is reset).
    #[serde(default)]
    pub sessions_from_ms: u64,
}

impl Account {
    /// The account as a request's [`User`].
    pub fn user(&self) -> User {
        User {
            name: self.name.clone(),
            role: self.role,
            scope: self.scope,
        }
    }
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
    expires_ms: u64,
    /// When the session was opened (0 in files from before version 2).
    #[serde(default)]
    created_ms: u64,
    /// The CSRF token of the session (none in files from before version 2).
    #[serde(default)]
    csrf: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SessionsFile {
    version: u32,
    sessions: Vec<StoredSession>,
}

/// The logged-in account a request acts as (its role and scope as they are now on disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Login name (the Automerge author).
    pub name: String,
    /// What the account may do.
    pub role: Role,
    /// The area it works in.
    pub scope: AreaCode,
}

/// The older name of [`User`], from when every account was a cadre.
pub type Cadre = User;

impl User {
    /// The areas this user may read: their scope.
    pub fn area_scope(&self) -> cunyun_protocol::area::AreaScope {
        self.scope.scope()
    }

    /// Whether the user may read records of `area`.
    pub fn may_read(&self, area: &AreaCode) -> bool {
        self.role != Role::Admin && self.scope.contains(area)
    }

    /// Whether the user may change records of `area` (cadres, in their village only).
    pub fn may_write(&self, area: &AreaCode) -> bool {
        self.role == Role::Cadre && self.scope.contains(area)
    }
}

/// A session opened by [`Accounts::login`].
#[derive(Debug, Clone)]
pub struct Login {
    /// The session token (the `cunyun_session` cookie).
    pub token: String,
    /// The CSRF token (the `cunyun_csrf` cookie, echoed in `x-csrf-token`).
    pub csrf: String,
    /// Who logged in.
    pub user: User,
}

/// Identity of the accounts file on disk, to notice when it changed.
type FileStamp = (std::time::SystemTime, u64, u64);

/// Accounts and sessions of one node.
pub struct Accounts {
    dir: PathBuf,
    sessions: Mutex<HashMap<String, StoredSession>>,
    failures: Mutex<HashMap<String, Vec<u64>>>,
    cache: Mutex<Option<(FileStamp, Vec<Account>)>>,
    audit: crate::audit::Audit,
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

fn random_token() -> String {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| AccountError::Hash(e.to_string()))?
        .to_string())
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
            cache: Mutex::new(None),
            audit: crate::audit::Audit::open(dir),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The audit log of the same data directory.
    pub fn audit(&self) -> &crate::audit::Audit {
        &self.audit
    }

    fn accounts_path(&self) -> PathBuf {
        self.dir.join(ACCOUNTS_FILE)
    }

    /// Every account, read from disk.
    pub fn list(&self) -> Result<Vec<Account>, AccountError> {
        let file: AccountsFile = read_json(&self.accounts_path())?;
        Ok(file.accounts)
    }

    /// The accounts as they are on disk now, re-read only when the file changed.
    fn current(&self) -> Result<Vec<Account>, AccountError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.accounts_path();
        let stamp = match std::fs::metadata(&path) {
            Ok(m) => Some((m.modified().map_err(io_err(&path))?, m.len(), m.ino())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let Some(stamp) = stamp else {
            return Ok(Vec::new());
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, accounts)) = cache.as_ref() {
            if *s == stamp {
                return Ok(accounts.clone());
            }
        }
        let accounts = self.list()?;
        *cache = Some((stamp, accounts.clone()));
        Ok(accounts)
    }

    /// Adds a cadre of `village`; durable when it returns (kept for callers from before roles).
    pub fn add(&self, name: &str, village: &str, password: &str) -> Result<Account, AccountError> {
        self.create("cli", name, Role::Cadre, village, password)
    }

    /// Reads, changes and writes the accounts file under one lock.
    fn update_file<T>(
        &self,
        f: impl FnOnce(&mut Vec<Account>) -> Result<T, AccountError>,
    ) -> Result<T, AccountError> {
        static FILE_LOCK: Mutex<()> = Mutex::new(());
        let _guard = FILE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.accounts_path();
        let mut file: AccountsFile = read_json(&path)?;
        let out = f(&mut file.accounts)?;
        file.version = FILE_VERSION;
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| AccountError::Format {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes)?;
        Ok(out)
    }

    /// Creates an account with `role` over `scope`, on behalf of `actor`; audited, durable when
    /// it returns.
    pub fn create(
        &self,
        actor: &str,
        name: &str,
        role: Role,
        scope: &str,
        password: &str,
    ) -> Result<Account, AccountError> {
        if !valid_name(name) {
            return Err(AccountError::BadName(name.to_string()));
        }
        let scope = role.parse_scope(scope)?;
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(AccountError::WeakPassword);
        }
        let password_hash = hash_password(password)?;
        let account = Account {
            name: name.to_string(),
            role,
            scope,
            password_hash,
            created_ms: now_ms(),
            disabled: false,
            sessions_from_ms: 0,
        };
        let a = account.clone();
        self.update_file(move |accounts| {
            if accounts.iter().any(|x| x.name == a.name) {
                return Err(AccountError::Exists(a.name.clone()));
            }
            accounts.push(a);
            Ok(())
        })?;
        self.audit.record(crate::audit::AuditEvent::now(
            actor,
            "account_add",
            name,
            format!("{} {}", role.as_str(), scope),
        ))?;
        Ok(account)
    }

    /// Changes one account by name; audited as `action`.
    fn change(
        &self,
        actor: &str,
        name: &str,
        action: &str,
        f: impl FnOnce(&mut Account),
    ) -> Result<(), AccountError> {
        self.update_file(|accounts| {
            let a = accounts
                .iter_mut()
                .find(|a| a.name == name)
                .ok_or_else(|| AccountError::NoSuchAccount(name.to_string()))?;
            f(a);
            Ok(())
        })?;
        self.end_sessions(name)?;
        self.audit
            .record(crate::audit::AuditEvent::now(actor, action, name, ""))?;
        Ok(())
    }

    /// Sets a new password; every session of the account ends.
    pub fn set_password(
        &self,
        actor: &str,
        name: &str,
        password: &str,
    ) -> Result<(), AccountError> {
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(AccountError::WeakPassword);
        }
        let hash = hash_password(password)?;
        self.change(actor, name, "account_passwd", |a| {
            a.password_hash = hash;
            a.sessions_from_ms = now_ms() + 1;
        })
    }

    /// Disables (or enables) an account; a disabled account's sessions end at once.
    pub fn set_disabled(
        &self,
        actor: &str,
        name: &str,
        disabled: bool,
    ) -> Result<(), AccountError> {
        let action = if disabled {
            "account_disable"
        } else {
            "account_enable"
        };
        self.change(actor, name, action, |a| {
            a.disabled = disabled;
            if disabled {
                a.sessions_from_ms = now_ms() + 1;
            }
        })
    }

    /// Removes an account; its sessions end at once. Its past changes keep its name as author.
    pub fn remove(&self, actor: &str, name: &str) -> Result<(), AccountError> {
        self.update_file(|accounts| {
            let before = accounts.len();
            accounts.retain(|a| a.name != name);
            if accounts.len() == before {
                return Err(AccountError::NoSuchAccount(name.to_string()));
            }
            Ok(())
        })?;
        self.end_sessions(name)?;
        self.audit.record(crate::audit::AuditEvent::now(
            actor,
            "account_remove",
            name,
            "",
        ))?;
        Ok(())
    }

    /// Ends this process's open sessions of `name` (the checks of [`Accounts::session`] end them
    /// in any other process that holds the same files).
    fn end_sessions(&self, name: &str) -> Result<(), AccountError> {
        // Memory only: the file may be shared with a running node, whose own next write drops
        // them; until then they are refused anyway (the account is gone, disabled or reset).
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, x| x.name != name);
        Ok(())
    }

    /// Checks a password (slow on purpose: run it off the async workers) and opens a session.
    /// Too many failures for one name lock it out for a while. Audited (ok and failed).
    pub fn login(&self, name: &str, password: &str) -> Result<Login, AccountError> {
        let result = self.login_inner(name, password);
        let event = crate::audit::AuditEvent::now(name, "login", name, "");
        match &result {
            Ok(_) => self.audit.record(event)?,
            Err(e) => {
                let event = crate::audit::AuditEvent {
                    action: "login_failed".into(),
                    detail: e.to_string(),
                    ..event
                };
                self.audit.record(event.failed())?;
            }
        }
        result
    }

    fn login_inner(&self, name: &str, password: &str) -> Result<Login, AccountError> {
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
        let account = self.current()?.into_iter().find(|a| a.name == name);
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
        if account.disabled {
            return Err(AccountError::Disabled);
        }
        if let Ok(mut f) = self.failures.lock() {
            f.remove(name);
        }
        let token = random_token();
        let csrf = random_token();
        let session = StoredSession {
            token_hash: token_hash(&token),
            name: account.name.clone(),
            expires_ms: now + SESSION_MS,
            created_ms: now.max(account.sessions_from_ms),
            csrf: csrf.clone(),
        };
        self.update_sessions(|s| {
            s.insert(session.token_hash.clone(), session.clone());
        })?;
        tracing::info!(target: "cunyun::_events::login", name = %account.name);
        Ok(Login {
            token,
            csrf,
            user: account.user(),
        })
    }

    /// The user a session token belongs to, if the session is open and unexpired and its account
    /// still exists, is enabled and was not reset since the session opened.
    pub fn session(&self, token: &str) -> Option<User> {
        self.session_with_csrf(token).map(|(u, _)| u)
    }

    /// Like [`Accounts::session`], also returning the session's CSRF token.
    pub fn session_with_csrf(&self, token: &str) -> Option<(User, String)> {
        let s = {
            let sessions = self.sessions.lock().ok()?;
            sessions.get(&token_hash(token))?.clone()
        };
        if s.expires_ms <= now_ms() {
            return None;
        }
        let accounts = match self.current() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "accounts file unreadable; session refused");
                return None;
            }
        };
        let a = accounts.iter().find(|a| a.name == s.name)?;
        (!a.disabled && s.created_ms >= a.sessions_from_ms).then(|| (a.user(), s.csrf))
    }

    /// Ends a session; durable and audited when it returns.
    pub fn logout(&self, token: &str) -> Result<(), AccountError> {
        let h = token_hash(token);
        let mut name = None;
        self.update_sessions(|s| {
            name = s.remove(&h).map(|x| x.name);
        })?;
        if let Some(name) = name {
            self.audit
                .record(crate::audit::AuditEvent::now(&name, "logout", &name, ""))?;
        }
        Ok(())
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
            .add("wangli", "510116108203", "村里的密码123")
            .expect("add");
        assert!(matches!(
            accounts.add("wangli", "510116108203", "another-password"),
            Err(AccountError::Exists(_))
        ));
        assert!(matches!(
            accounts.add("x", "510116108203", "long enough"),
            Err(AccountError::BadName(_))
        ));
        assert!(matches!(
            accounts.add("lisi", "510116", "long enough"),
            Err(AccountError::BadVillage(_))
        ));
        assert!(matches!(
            accounts.add("lisi", "510116108203", "short"),
            Err(AccountError::WeakPassword)
        ));
        assert!(matches!(
            accounts.login("wangli", "wrong-password"),
            Err(AccountError::BadCredentials)
        ));
        let login = accounts.login("wangli", "村里的密码123").expect("login");
        let (token, cadre) = (login.token, login.user);
        assert_eq!(cadre.name, "wangli");
        assert_eq!(cadre.role, Role::Cadre);
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
            .add("zhangsan", "510116108203", "correct-horse")
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

    #[test]
    fn roles_scopes_and_version_1_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("accounts.json"),
            format!(
                r#"{{"version": 1, "accounts": [{{"name": "old", "village": "510116108203",
                "password_hash": "{}", "created_ms": 1}}]}}"#,
                hash_password("old-password").expect("hash")
            ),
        )
        .expect("v1 file");
        let accounts = Accounts::open(dir.path()).expect("open");
        let old = accounts
            .login("old", "old-password")
            .expect("v1 login")
            .user;
        assert_eq!(
            (old.role, old.scope.as_str()),
            (Role::Cadre, "510116108203")
        );
        let op = accounts
            .create(
                "admin1",
                "xian",
                Role::CountyOperator,
                "510116",
                "county-pass",
            )
            .expect("county operator");
        assert_eq!(op.scope.level(), Level::County);
        assert!(matches!(
            accounts.create(
                "admin1",
                "x2",
                Role::CountyOperator,
                "510116108203",
                "county-pass"
            ),
            Err(AccountError::BadScope { .. })
        ));
        assert!(matches!(
            accounts.create("admin1", "x3", Role::HubOperator, "510116", "hub-password"),
            Err(AccountError::BadScope { .. })
        ));
        assert!(matches!(Role::parse("boss"), Err(AccountError::BadRole(_))));
        accounts
            .create("admin1", "sheng", Role::HubOperator, "51", "hub-password")
            .expect("hub operator");
        let u = accounts.login("xian", "county-pass").expect("login").user;
        assert!(u.may_read(&AreaCode::parse("510116108203").expect("area")));
        assert!(!u.may_read(&AreaCode::parse("510117104201").expect("area")));
        assert!(!u.may_write(&AreaCode::parse("510116108203").expect("area")));
        // The file is rewritten as version 2 and the old account is still there.
        let text = std::fs::read_to_string(dir.path().join("accounts.json")).expect("file");
        assert!(text.contains("\"version\": 2") && text.contains("\"old\""));
    }

    #[test]
    fn disable_passwd_remove_end_sessions_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Accounts::open(dir.path()).expect("open");
        node.add("wangli", "510116108203", "first-password")
            .expect("add");
        let t1 = node.login("wangli", "first-password").expect("login").token;
        assert!(node.session(&t1).is_some());
        // Another process (the CLI) disables the account: the node's session dies at once.
        let cli = Accounts::open(dir.path()).expect("cli");
        cli.set_disabled("cli", "wangli", true).expect("disable");
        assert_eq!(node.session(&t1), None);
        assert!(matches!(
            node.login("wangli", "first-password"),
            Err(AccountError::Disabled)
        ));
        cli.set_disabled("cli", "wangli", false).expect("enable");
        assert_eq!(
            node.session(&t1),
            None,
            "enabling does not revive old sessions"
        );
        let t2 = node.login("wangli", "first-password").expect("login").token;
        cli.set_password("cli", "wangli", "second-password")
            .expect("passwd");
        assert_eq!(node.session(&t2), None);
        assert!(node.login("wangli", "first-password").is_err());
        let t3 = node
            .login("wangli", "second-password")
            .expect("login")
            .token;
        assert!(node.session(&t3).is_some());
        cli.remove("cli", "wangli").expect("remove");
        assert_eq!(node.session(&t3), None);
        assert!(matches!(
            cli.remove("cli", "wangli"),
            Err(AccountError::NoSuchAccount(_))
        ));
        let events = node
            .audit()
            .read(&crate::audit::AuditFilter::default())
            .expect("audit");
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        for a in [
            "account_add",
            "login",
            "account_disable",
            "login_failed",
            "account_enable",
            "account_passwd",
            "account_remove",
        ] {
            assert!(actions.contains(&a), "{a} missing from {actions:?}");
        }
    }
}
