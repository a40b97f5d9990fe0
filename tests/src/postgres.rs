//! A private PostgreSQL server for tests: [`PgServer::start`] runs `initdb` into a fresh temp
//! directory and `pg_ctl start` with the server listening only on a Unix socket inside that
//! directory (no TCP port, so parallel tests never collide), `fsync=off`; dropping the
//! [`PgServer`] stops it (`pg_ctl stop -m fast`) and removes the directory.
//!
//! The binaries come from `PATH` or, failing that, the newest `/usr/lib/postgresql/*/bin`
//! (Debian's `postgresql` package; `.ci/run` installs it). `initdb` refuses to run as root, so
//! as root the server runs as the `postgres` OS user (`runuser -u postgres --`) in a directory
//! that user owns; the test process itself connects over the socket as the database superuser
//! `postgres` with `trust` authentication.
//!
//! Not for crash tests: `fsync=off` means a power cut may lose what the server acknowledged.
//!
//! ```no_run
//! let pg = cunyun_tests::postgres::PgServer::start()?;
//! let url = pg.create_database("conformance")?; // "host=/tmp/.tmpX user=postgres dbname=conformance"
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{bail, Context};

/// A running private PostgreSQL server (see the module documentation). Stopped on drop.
pub struct PgServer {
    /// Owns the directory: `data/` (the cluster), the socket, `server.log`.
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Run the server's programs as this OS user (`Some("postgres")` when the test runs as root).
    run_as: Option<String>,
    stopped: bool,
}

impl PgServer {
    /// Initialises a cluster in a new temp directory and starts a server on a Unix socket in it.
    /// Takes about 1–2 s. Fails (with the server log) if PostgreSQL is not installed or does
    /// not start.
    pub fn start() -> anyhow::Result<PgServer> {
        let began = Instant::now();
        let bin = find_bin_dir()?;
        let root = is_root()?;
        let dir = tempfile::Builder::new()
            .prefix("cunyun-pg-")
            .tempdir()
            .context("creating the PostgreSQL temp directory")?;
        let run_as = if root {
            let (uid, gid) = os_user_ids("postgres")?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .context("handing the temp directory to the postgres user")?;
            Some("postgres".to_string())
        } else {
            None
        };
        let mut server = PgServer {
            dir,
            bin,
            run_as,
            stopped: true,
        };
        let data = server.data_dir();
        server
            .run_server_tool(
                "initdb",
                [
                    OsStr::new("-D"),
                    data.as_os_str(),
                    OsStr::new("-A"),
                    OsStr::new("trust"),
                    OsStr::new("-U"),
                    OsStr::new("postgres"),
                    OsStr::new("-E"),
                    OsStr::new("UTF8"),
                    OsStr::new("--no-sync"),
                ],
            )
            .context("initdb")?;
        let socket_dir = server.socket_dir();
        let options = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            socket_dir.display()
        );
        let log = server.log_path();
        let started = server.run_server_tool(
            "pg_ctl",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-o"),
                OsStr::new(&options),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-w"),
                OsStr::new("start"),
            ],
        );
        if let Err(e) = started {
            bail!(
                "pg_ctl start failed: {e:#}\nserver log:\n{}",
                server.log_tail()
            );
        }
        server.stopped = false;
        eprintln!(
            "postgres: private server on {} ready in {:?}",
            socket_dir.display(),
            began.elapsed()
        );
        Ok(server)
    }

    /// The directory holding the server's Unix socket (the `host` of a connection string).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A libpq/tokio-postgres connection string for database `dbname` over the socket, as the
    /// superuser `postgres`.
    pub fn conn_str(&self, dbname: &str) -> String {
        format!(
            "host={} user=postgres dbname={dbname}",
            self.socket_dir().display()
        )
    }

    /// Creates database `name` (ASCII letters, digits and `_`) and returns its connection
    /// string. Where the server has ICU, the database's default collation is ICU `en-US`, whose
    /// order is not byte order, so a schema that relies on the default collation for key ranges
    /// fails its tests here instead of in production.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("database name {name:?} must be ASCII letters, digits or _");
        }
        let icu = format!(
            "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        );
        if self.psql("postgres", &icu).is_err() {
            self.psql(
                "postgres",
                &format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'"),
            )?;
        }
        Ok(self.conn_str(name))
    }

    /// Runs `sql` in database `dbname` with `psql` (stops at the first error) and returns its
    /// unaligned, tuples-only output.
    pub fn psql(&self, dbname: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .arg("-X")
            .arg("-q")
            .arg("-A")
            .arg("-t")
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("-h")
            .arg(self.socket_dir())
            .arg("-U")
            .arg("postgres")
            .arg("-d")
            .arg(dbname)
            .arg("-c")
            .arg(sql)
            .output()
            .context("running psql")?;
        check(&out, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Stops the server now (what drop does), reporting failure.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> anyhow::Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let data = self.data_dir();
        self.run_server_tool(
            "pg_ctl",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-m"),
                OsStr::new("fast"),
                OsStr::new("-w"),
                OsStr::new("stop"),
            ],
        )
        .map(|_| ())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The last 40 lines of the server log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Runs one of the server's programs (`initdb`, `pg_ctl`), as the postgres user when the
    /// test runs as root.
    fn run_server_tool<I, S>(&self, tool: &str, args: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&program);
                c
            }
            None => Command::new(&program),
        };
        cmd.args(args).current_dir(self.dir.path());
        let out = cmd
            .output()
            .with_context(|| format!("running {}", program.display()))?;
        check(&out, tool)?;
        Ok(out)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            eprintln!("postgres: stopping the private server failed: {e:#}");
        }
    }
}

fn check(out: &Output, what: &str) -> anyhow::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what} exited with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// The directory with `initdb`, `pg_ctl` and `psql`: from `PATH`, else the newest
/// `/usr/lib/postgresql/<major>/bin`.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let has_tools = |d: &Path| {
        ["initdb", "pg_ctl", "psql"]
            .iter()
            .all(|t| d.join(t).is_file())
    };
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(d) = std::env::split_paths(&path).find(|d| has_tools(d)) {
            return Ok(d);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((major, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "PostgreSQL is not installed: no initdb/pg_ctl/psql on PATH or in /usr/lib/postgresql/*/bin \
             (install Debian's `postgresql` package; .ci/run does)"
        ),
    }
}

fn is_root() -> anyhow::Result<bool> {
    Ok(id_output(&["-u"])? == "0")
}

/// The uid and gid of OS user `name`.
fn os_user_ids(name: &str) -> anyhow::Result<(u32, u32)> {
    let uid = id_output(&["-u", name])?;
    let gid = id_output(&["-g", name])?;
    let parse = |s: &str| {
        s.parse::<u32>()
            .with_context(|| format!("`id` printed {s:?} for user {name}"))
    };
    Ok((parse(&uid)?, parse(&gid)?))
}

fn id_output(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("id")
        .args(args)
        .output()
        .context("running id")?;
    check(
        &out,
        "id (is there a `postgres` OS user? the postgresql package creates it)",
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
