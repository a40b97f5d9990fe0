//! Idempotent creates as a phone on a flaky link sees them: a household or need create whose
//! answer is lost on the way back is sent again with the same `client_id`, and the node ends up
//! with exactly one record.
//!
//! Between the client and a real node sits a small TCP proxy on loopback (its listener bound
//! once and kept for the whole test). It forwards every request to the node; for the first
//! create it waits until the node has started answering (an API write is answered only after
//! its durable flush) and then closes the client's connection without passing the answer on.
//! Every request loop is bounded in count and time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::key::Kind;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const VILLAGE: &str = "510116108203";
const CADRE: &str = "wangli";
const PASSWORD: &str = "村干部的密码2026";
/// Most attempts of one create; each is bounded by the client's timeout.
const ATTEMPTS: usize = 5;
const STEP: Duration = Duration::from_secs(10);

async fn start(dir: &std::path::Path) -> RunningNode {
    let accounts = cunyun_platform::accounts::Accounts::open(dir).expect("accounts");
    accounts.add(CADRE, VILLAGE, PASSWORD).expect("add cadre");
    drop(accounts);
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = AreaScope::parse(VILLAGE).expect("scope");
    server::start(&c, std::future::pending())
        .await
        .expect("node starts")
}

/// A logged-in client (session and CSRF cookies as default headers) that opens a new connection
/// for every request, so a lost answer is never retried by the connection pool behind our back.
async fn client(node_url: &str) -> reqwest::Client {
    let anon = reqwest::Client::builder()
        .timeout(STEP)
        .build()
        .expect("client");
    let resp = anon
        .post(format!("{node_url}/api/v1/login"))
        .json(&json!({"name": CADRE, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status().as_u16(), 200, "login succeeds");
    let pairs: Vec<String> = resp
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next())
        .map(str::to_string)
        .collect();
    let csrf = pairs
        .iter()
        .find_map(|p| p.strip_prefix("cunyun_csrf="))
        .expect("csrf cookie")
        .to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::COOKIE,
        reqwest::header::HeaderValue::from_str(&pairs.join("; ")).expect("header"),
    );
    headers.insert(
        "x-csrf-token",
        reqwest::header::HeaderValue::from_str(&csrf).expect("header"),
    );
    reqwest::Client::builder()
        .timeout(STEP)
        .pool_max_idle_per_host(0)
        .default_headers(headers)
        .build()
        .expect("client")
}

/// The proxy: its address, and how many answers it still drops / has dropped.
struct Proxy {
    addr: SocketAddr,
    drop_next: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl Proxy {
    /// Binds the proxy's listener once (kept until the test ends) and serves it in a task.
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let drop_next = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let (d, n) = (drop_next.clone(), dropped.clone());
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(relay(conn, upstream, d.clone(), n.clone()));
            }
        });
        Proxy {
            addr,
            drop_next,
            dropped,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Relays one client connection to the node. A create (`POST` of households or needs) while
/// `drop_next` > 0 is forwarded, and once the node has begun to answer, the client's connection
/// is closed without the answer.
async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    drop_next: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
) {
    let Ok(mut node) = TcpStream::connect(upstream).await else {
        return;
    };
    // The request line, to tell a create from anything else.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 64 * 1024 {
        match tokio::time::timeout(STEP, client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let create =
        head.starts_with(b"POST /api/v1/households ") || head.starts_with(b"POST /api/v1/needs ");
    let lose_answer = create
        && drop_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if node.write_all(&head).await.is_err() {
        return;
    }
    if !lose_answer {
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::copy_bidirectional(&mut client, &mut node),
        )
        .await;
        return;
    }
    let (mut client_rx, client_tx) = client.into_split();
    let (mut node_rx, mut node_tx) = node.into_split();
    let upload = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_rx, &mut node_tx).await;
    });
    // The node answers only after the write is durable: its first byte means it is done.
    let mut first = [0u8; 1];
    let answered = matches!(
        tokio::time::timeout(STEP, node_rx.read(&mut first)).await,
        Ok(Ok(1))
    );
    upload.abort();
    let _ = upload.await;
    drop(client_tx);
    if answered {
        dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// Sends `body` to `url` until an answer arrives, at most [`ATTEMPTS`] times: the statuses of
/// the answers (`None` for a lost one) and the last answer's body.
async fn create_with_retries(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
) -> (Vec<Option<u16>>, Value) {
    let mut seen = Vec::new();
    for _ in 0..ATTEMPTS {
        match http.post(url).json(body).send().await {
            Ok(resp) => {
                seen.push(Some(resp.status().as_u16()));
                let body = resp.json::<Value>().await.unwrap_or(Value::Null);
                return (seen, body);
            }
            Err(_) => {
                seen.push(None);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (seen, Value::Null)
}

fn count(node: &RunningNode, kind: Kind) -> usize {
    let records = &node.state.records;
    records
        .store()
        .scan(&records.scope())
        .filter_map(Result::ok)
        .filter(|(k, _)| k.kind() == kind)
        .count()
}

fn has_chinese(s: &str) -> bool {
    s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

fn household(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "profile": {"group": 3, "residents": 2, "age_18_59": 1, "age_60_69": 1, "smartphones": 1},
        "private": {"head_name": "王秀英", "phone": "13800000000", "roster_no": "3-017"}
    })
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_made_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let proxy = Proxy::start(node.addr).await;
    let http = client(&node.url()).await;
    let run = async {
        // Household: the first answer is lost, the resend with the same client_id gets the
        // record the first request made.
        let cid = "6f1d2c3b-4a59-4e8f-9d7c-0b1a2c3d4e5f";
        proxy.drop_next.store(1, Ordering::SeqCst);
        let url = format!("{}/api/v1/households", proxy.url());
        let (seen, rec) = create_with_retries(&http, &url, &household(cid)).await;
        assert_eq!(seen, vec![None, Some(200)], "{rec}");
        assert_eq!(proxy.dropped.load(Ordering::SeqCst), 1);
        assert_eq!(count(&node, Kind::Hh), 1, "exactly one household");
        assert_eq!(count(&node, Kind::Hp), 1);
        let id = rec["id"].as_str().expect("id");
        assert_eq!(rec["private"]["head_name"], "王秀英");
        let list: Value = http
            .get(format!("{}/api/v1/households", node.url()))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
        assert_eq!(list["items"][0]["id"], id);

        // Once more (the phone did not see the 200 either): still one, same heads.
        let (seen, again) = create_with_retries(&http, &url, &household(cid)).await;
        assert_eq!(seen, vec![Some(200)]);
        assert_eq!(again["id"], rec["id"]);
        assert_eq!(again["heads"], rec["heads"]);
        assert_eq!(count(&node, Kind::Hh), 1);

        // A need, likewise.
        let need = json!({
            "client_id": "0a9b8c7d-6e5f-4a3b-8c1d-2e3f4a5b6c7d",
            "requester": "coop",
            "title": "柑橘大实蝇绿色防控技术指导",
            "tags": {"plt.citrus": true}
        });
        proxy.drop_next.store(1, Ordering::SeqCst);
        let url = format!("{}/api/v1/needs", proxy.url());
        let (seen, made) = create_with_retries(&http, &url, &need).await;
        assert_eq!(seen, vec![None, Some(200)], "{made}");
        assert_eq!(proxy.dropped.load(Ordering::SeqCst), 2);
        assert_eq!(count(&node, Kind::Need), 1, "exactly one need");
        assert_eq!(made["need"]["title"], "柑橘大实蝇绿色防控技术指导");

        // Without a lost answer, a new client_id is a 201.
        let (seen, _) = create_with_retries(
            &http,
            &format!("{}/api/v1/households", proxy.url()),
            &household("1b2c3d4e-5f60-4718-a9b0-c1d2e3f4a5b6"),
        )
        .await;
        assert_eq!(seen, vec![Some(201)]);
        assert_eq!(count(&node, Kind::Hh), 2);
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the scenario ends in time");
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn a_bad_or_reused_client_id_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let http = client(&node.url()).await;
    let url = node.url();
    let run = async {
        let docs = node.state.records.store().stats().documents;
        for bad in [
            json!("not-a-uuid"),
            json!("6F1D2C3B-4A59-4E8F-9D7C-0B1A2C3D4E5F"),
            json!("6f1d2c3b-4a59-1e8f-9d7c-0b1a2c3d4e5f"),
            json!(12345),
            json!(null),
        ] {
            let mut hh = household("x");
            hh["client_id"] = bad.clone();
            let need = json!({"client_id": bad, "requester": "coop", "title": "柑橘技术"});
            for (path, body) in [("households", hh), ("needs", need)] {
                let resp = http
                    .post(format!("{url}/api/v1/{path}"))
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(resp.status().as_u16(), 400, "{path} {bad}");
                let err: Value = resp.json().await.expect("json");
                assert_eq!(err["error"], "bad_client_id", "{err}");
                let msg = err["message"].as_str().unwrap_or_default();
                assert!(has_chinese(msg) && msg.contains("client_id"), "{msg}");
            }
        }
        assert_eq!(
            node.state.records.store().stats().documents,
            docs,
            "nothing stored"
        );

        // The same client_id with another body: 409, the stored record unchanged.
        let cid = "2c3d4e5f-6071-4829-8a0b-1c2d3e4f5a6b";
        let first = http
            .post(format!("{url}/api/v1/households"))
            .json(&household(cid))
            .send()
            .await
            .expect("create");
        assert_eq!(first.status().as_u16(), 201);
        let first: Value = first.json().await.expect("json");
        let mut other = household(cid);
        other["profile"]["residents"] = json!(5);
        other["profile"]["age_18_59"] = json!(4);
        let resp = http
            .post(format!("{url}/api/v1/households"))
            .json(&other)
            .send()
            .await
            .expect("resend");
        assert_eq!(resp.status().as_u16(), 409);
        let err: Value = resp.json().await.expect("json");
        assert_eq!(err["error"], "client_id_reused", "{err}");
        assert!(err["message"].as_str().is_some_and(has_chinese), "{err}");
        let now: Value = http
            .get(format!(
                "{url}/api/v1/households/{}",
                first["id"].as_str().expect("id")
            ))
            .send()
            .await
            .expect("read")
            .json()
            .await
            .expect("json");
        assert_eq!(now["profile"]["residents"], 2);
        assert_eq!(now["heads"], first["heads"]);
        assert_eq!(count(&node, Kind::Hh), 1);
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the scenario ends in time");
    node.stop().await.expect("stop");
}
