//! A minimal WebDriver client for headless Debian Chromium (`chromedriver` on loopback), plus
//! the Chrome DevTools commands the web-app tests need (network emulation, device metrics).
//!
//! Plain HTTP+JSON over `reqwest`: no browser-automation crate to compile. Every wait is bounded.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// Where Debian installs Chromium and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether Chromium and chromedriver are installed.
pub fn available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

/// A running chromedriver; sessions (each its own Chromium) are opened on it. Dropping it ends
/// every session still open (so their browsers quit) and kills chromedriver's process group.
pub struct Driver {
    child: Child,
    url: String,
    port: u16,
    http: reqwest::Client,
    open: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Sends `DELETE /session/{id}` with plain blocking I/O (usable from `Drop`), bounded in time.
fn delete_session(port: u16, id: &str) {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(5)));
    let req = format!(
        "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if tcp.write_all(req.as_bytes()).is_ok() {
        let mut sink = Vec::new();
        let _ = tcp.read_to_end(&mut sink);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let open = self.open.lock().map(|v| v.clone()).unwrap_or_default();
        for id in open {
            delete_session(self.port, &id);
        }
        // chromedriver leads its own process group (see `start`); browsers it started and did
        // not reap are in it too.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits until it answers.
    pub async fn start() -> anyhow::Result<Driver> {
        Driver::start_with_home(None).await
    }

    /// Like [`Driver::start`], with `HOME` set to `home` for chromedriver and the browsers it
    /// starts: Chromium on Linux reads the user's certificate trust from `$HOME/.pki/nssdb`
    /// (see [`trust_ca`]), as a phone reads its user-installed CA certificates.
    pub async fn start_with_home(home: Option<&Path>) -> anyhow::Result<Driver> {
        let port = free_port()?;
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(CHROMEDRIVER);
        if let Some(home) = home {
            cmd.env("HOME", home);
        }
        let child = cmd
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting chromedriver")?;
        let driver = Driver {
            child,
            port,
            open: Default::default(),
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(driver);
                }
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not start within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens a headless Chromium with a fresh profile in `profile_dir`, sized as a 360×640 phone.
    pub async fn session(&self, profile_dir: &Path) -> anyhow::Result<Session> {
        self.session_with_args(profile_dir, &[]).await
    }

    /// Like [`Driver::session`], with extra Chromium arguments (e.g. `--host-resolver-rules`
    /// mapping a LAN name to 127.0.0.1).
    pub async fn session_with_args(
        &self,
        profile_dir: &Path,
        extra: &[String],
    ) -> anyhow::Result<Session> {
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--lang=zh-CN",
            "--disable-crash-reporter",
            "--disable-breakpad",
            "--window-size=360,640",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile_dir.display()));
        args.extend(extra.iter().cloned());
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
            }
        }}});
        let v: Value = self
            .http
            .post(format!("{}/session", self.url))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let id = v["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no session: {v}"))?
            .to_string();
        if let Ok(mut open) = self.open.lock() {
            open.push(id.clone());
        }
        let s = Session {
            base: format!("{}/session/{id}", self.url),
            http: self.http.clone(),
            profile: profile_dir.to_path_buf(),
            id,
            open: self.open.clone(),
        };
        s.setup_tab().await?;
        Ok(s)
    }
}

/// Makes `$HOME/.pki/nssdb` under `home` trust the CA certificate `ca_pem` for websites, with
/// NSS's `certutil` (Debian `libnss3-tools`), as installing a CA certificate on a phone does.
pub fn trust_ca(home: &Path, ca_pem: &Path) -> anyhow::Result<()> {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db)?;
    let db_arg = format!("sql:{}", db.display());
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("certutil")
            .args(args)
            .output()
            .context("running certutil (apt-get install libnss3-tools)")?;
        if !out.status.success() {
            bail!(
                "certutil {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    if !db.join("cert9.db").exists() {
        run(&["-N", "-d", &db_arg, "--empty-password"])?;
    }
    let ca = ca_pem.display().to_string();
    run(&[
        "-A",
        "-d",
        &db_arg,
        "-n",
        "cunyun-web-ca",
        "-t",
        "C,,",
        "-i",
        &ca,
    ])
}

/// One browser (its own profile, cookies, IndexedDB and service worker).
pub struct Session {
    base: String,
    http: reqwest::Client,
    /// The profile directory.
    pub profile: PathBuf,
    id: String,
    open: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Session {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if !body.is_null() {
            req = req.json(&body);
        }
        let v: Value = req.send().await?.json().await?;
        if let Some(err) = v["value"]["error"].as_str() {
            bail!("webdriver {path}: {err}: {}", v["value"]["message"]);
        }
        Ok(v["value"].clone())
    }

    /// Navigates and waits for the load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await
            .map(|_| ())
    }

    /// Runs `script` (a function body; `arguments` as given) and returns its value.
    pub async fn js(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Runs an async script: its last argument is the callback to call with the result.
    pub async fn js_async(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/async",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Sends a DevTools command to the page.
    pub async fn cdp(&self, cmd: &str, params: Value) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            json!({ "cmd": cmd, "params": params }),
        )
        .await
    }

    /// Phone-sized viewport and network events for the current tab.
    async fn setup_tab(&self) -> anyhow::Result<()> {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 360, "height": 640, "deviceScaleFactor": 1, "mobile": true}),
        )
        .await?;
        self.cdp("Network.enable", json!({})).await?;
        Ok(())
    }

    /// Closes the current tab and continues in a fresh one (same browser and profile: same
    /// cookies, IndexedDB and service worker), showing `about:blank` until the next `goto`.
    /// With `offline_probe` (a URL of the server, e.g. `https://host:port`), the new tab has no
    /// network before its first navigation: returns once a request to it fails.
    pub async fn fresh_tab(&self, offline_probe: Option<&str>) -> anyhow::Result<()> {
        let new = self
            .call(
                reqwest::Method::POST,
                "/window/new",
                json!({ "type": "tab" }),
            )
            .await?;
        let handle = new["handle"]
            .as_str()
            .context("no new window handle")?
            .to_string();
        self.call(reqwest::Method::DELETE, "/window", Value::Null)
            .await?;
        self.call(
            reqwest::Method::POST,
            "/window",
            json!({ "handle": handle }),
        )
        .await?;
        self.setup_tab().await?;
        let Some(probe) = offline_probe else {
            return Ok(());
        };
        self.cdp(
            "Network.emulateNetworkConditions",
            json!({ "offline": true, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 }),
        )
        .await?;
        self.wait_offline(Some(probe)).await
    }

    /// Emulates losing (or regaining) the network for this page. Going offline returns only
    /// once a request from the page really fails (the emulation reaches the network stack
    /// asynchronously; a request sent in between would still go out), bounded to 10 s.
    pub async fn set_offline(&self, offline: bool) -> anyhow::Result<()> {
        self.cdp(
            "Network.emulateNetworkConditions",
            json!({ "offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 }),
        )
        .await?;
        if !offline {
            return Ok(());
        }
        self.wait_offline(None).await
    }

    /// Waits (at most 10 s) until a request from the page fails: to `probe` (an `http(s)://`
    /// URL; needed on `about:blank`) or else to the page's own origin.
    pub async fn wait_offline(&self, probe: Option<&str>) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self
                .js_async(
                    "const cb = arguments[1]; const base = arguments[0] || (location.protocol.startsWith('http') ? location.origin : null); \
                     if (!base) { cb('no probe'); } \
                     else fetch(base + '/healthz?probe=' + Date.now(), {cache: 'no-store', mode: 'no-cors'}) \
                       .then(() => cb('online'), () => cb('offline'))",
                    json!([probe]),
                )
                .await?;
            if v == json!("no probe") {
                bail!("wait_offline on a page without an origin needs a probe URL");
            }
            if v == json!("offline") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("network emulation did not take the page offline within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the JS expression `cond` is truthy, for at most `secs`.
    pub async fn wait(&self, cond: &str, secs: u64) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let script = format!("try {{ return ({cond}) || null; }} catch (e) {{ return null; }}");
        loop {
            let v = self.js(&script, json!([])).await?;
            if !v.is_null() && v != Value::Bool(false) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                let page = self
                    .js(
                        "return document.body ? document.body.innerText.slice(0, 600) : ''",
                        json!([]),
                    )
                    .await
                    .unwrap_or_default();
                bail!("timed out after {secs} s waiting for `{cond}`; page: {page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Finds the element matching `css` (waiting up to 5 s for it to appear) and returns its
    /// WebDriver id.
    pub async fn find(&self, css: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.find_once(css).await {
                Err(e)
                    if Instant::now() < deadline && e.to_string().contains("no such element") =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    async fn find_once(&self, css: &str) -> anyhow::Result<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("no element {css}"))
    }

    /// Clicks the element matching `css` (scrolled into view first). If the layout moved it
    /// under another element or replaced it meanwhile, scrolls and tries again, at most 3 times.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let mut tries = 0;
        loop {
            match self.click_once(css).await {
                Err(e)
                    if tries < 3
                        && (e.to_string().contains("click intercepted")
                            || e.to_string().contains("stale element")) =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                other => return other,
            }
        }
    }

    async fn click_once(&self, css: &str) -> anyhow::Result<()> {
        self.js(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'center'})",
            json!([css]),
        )
        .await?;
        let id = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await
        .map(|_| ())
    }

    /// Clears the field matching `css` and types `text` into it. If the page replaced the
    /// element meanwhile (a re-render), finds it again, at most three times.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let mut tries = 0;
        loop {
            match self.fill_once(css, text).await {
                Err(e) if tries < 3 && e.to_string().contains("stale element") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    async fn fill_once(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            json!({}),
        )
        .await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await
        .map(|_| ())
    }

    /// Saves a PNG screenshot of the viewport.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        use base64::Engine as _;
        let v = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().context("screenshot data")?)
            .context("screenshot base64")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Closes the browser.
    pub async fn close(self) -> anyhow::Result<()> {
        self.http.delete(&self.base).send().await?;
        if let Ok(mut open) = self.open.lock() {
            open.retain(|i| *i != self.id);
        }
        Ok(())
    }
}

/// Logs `session` in at the app on `url` as `name` and waits for the overview.
pub async fn login(session: &Session, url: &str, name: &str, password: &str) -> anyhow::Result<()> {
    session.goto(&format!("{url}/#/login")).await?;
    session.wait("document.querySelector('#login')", 20).await?;
    session.fill("#login input[name=name]", name).await?;
    session
        .fill("#login input[name=password]", password)
        .await?;
    session.click("#login button[type=submit]").await?;
    session
        .wait(
            "location.hash === '#/' && document.querySelector('.stats')",
            20,
        )
        .await?;
    Ok(())
}
