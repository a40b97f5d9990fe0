//! A village node under load on loopback: a few thousand households, concurrent cadre clients
//! (lists 20 %, reads 50 %, patches 25 %, creates 5 %), bounded in requests and time. No answer
//! is a 5xx other than `503 busy` (with `Retry-After`); afterwards every household is reachable
//! by paging, exactly once. Prints the latency figures it saw.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cunyun_node::config::NodeConfig;
use cunyun_node::server;
use cunyun_protocol::area::{AreaCode, AreaScope};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const VILLAGE: &str = "510116108203";
const HOUSEHOLDS: usize = 2_000;
const CLIENTS: usize = 32;
const REQUESTS_PER_CLIENT: usize = 40;

async fn login(url: &str) -> anyhow::Result<reqwest::Client> {
    let anon = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    // A login is a write (and a slow hash): in a crowd it may be told to come back later.
    let mut attempts = 0;
    let resp = loop {
        let resp = anon
            .post(format!("{url}/api/v1/login"))
            .json(&json!({"name": "wangli", "password": "wangli-password"}))
            .send()
            .await?;
        attempts += 1;
        if resp.status() != 503 || attempts == 30 {
            break resp;
        }
        let wait = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(1);
        tokio::time::sleep(Duration::from_millis(200 * wait)).await;
    };
    anyhow::ensure!(resp.status() == 200, "login: {}", resp.status());
    let pairs: Vec<String> = resp
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
        .collect();
    let csrf = pairs
        .iter()
        .find_map(|p| p.strip_prefix("cunyun_csrf="))
        .unwrap_or_default()
        .to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::COOKIE, pairs.join("; ").parse()?);
    headers.insert("x-csrf-token", csrf.parse()?);
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()?)
}

#[derive(Default)]
struct Seen {
    list_ms: Vec<u64>,
    all_ms: Vec<u64>,
    busy: usize,
    statuses: Vec<u16>,
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_node_answers_or_says_busy_and_pages_every_household() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let accounts = cunyun_platform::accounts::Accounts::open(dir.path())?;
    accounts.add("wangli", VILLAGE, "wangli-password")?;
    drop(accounts);
    let mut c = NodeConfig::default();
    c.data_dir = dir.path().to_path_buf();
    c.listen = "127.0.0.1:0".parse()?;
    c.scope = AreaScope::parse(VILLAGE)?;
    // Tight places and a short wait, so the flood really meets the limits.
    c.limits = toml_limits("lists = 2\nreads = 8\nwrites = 4\nqueue_wait_ms = 300")?;
    let node = server::start(&c, std::future::pending()).await?;
    let seeded = Instant::now();
    server::seed_sample_village(
        &node.state.records,
        "seed",
        AreaCode::parse(VILLAGE)?,
        HOUSEHOLDS,
        5,
        |_, _| {},
    )
    .await?;
    eprintln!("seeded {HOUSEHOLDS} households in {:?}", seeded.elapsed());
    let ids: Arc<Vec<String>> = Arc::new(
        node.state
            .records
            .list_households(&Default::default())?
            .into_iter()
            .map(|h| h.id)
            .collect(),
    );
    let url = node.url();

    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (url, ids) = (url.clone(), ids.clone());
            tokio::spawn(async move {
                let http = login(&url).await?;
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(n as u64);
                let mut seen = Seen::default();
                for i in 0..REQUESTS_PER_CLIENT {
                    let roll = rng.gen_range(0..100);
                    let id = &ids[rng.gen_range(0..ids.len())];
                    let group = rng.gen_range(1..=8);
                    let req = match roll {
                        0..=19 => http.get(format!("{url}/api/v1/households?group={group}")),
                        20..=69 => http.get(format!("{url}/api/v1/households/{id}")),
                        70..=94 => http
                            .patch(format!("{url}/api/v1/households/{id}"))
                            .json(&json!({"private": {"notes": format!("负载测试 {n}-{i}")}})),
                        _ => http.post(format!("{url}/api/v1/households")).json(&json!({
                            "profile": {"group": 9, "residents": 1, "age_18_59": 1},
                            "private": {"head_name": format!("负载{n}-{i}")}
                        })),
                    };
                    let t = Instant::now();
                    let resp = req.send().await?;
                    let status = resp.status().as_u16();
                    let retry_after = resp.headers().contains_key(reqwest::header::RETRY_AFTER);
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    let ms = t.elapsed().as_millis() as u64;
                    if status == 503 {
                        anyhow::ensure!(
                            body["error"] == "busy" && retry_after,
                            "503 without busy/Retry-After: {body}"
                        );
                        seen.busy += 1;
                    } else {
                        anyhow::ensure!(status < 500, "{status}: {body}");
                        anyhow::ensure!(status < 300, "{status}: {body}");
                    }
                    if roll < 20 && status == 200 {
                        seen.list_ms.push(ms);
                    }
                    seen.all_ms.push(ms);
                    seen.statuses.push(status);
                }
                Ok::<_, anyhow::Error>(seen)
            })
        })
        .collect();
    let mut all = Seen::default();
    for t in tasks {
        let s = tokio::time::timeout(Duration::from_secs(300), t).await???;
        all.list_ms.extend(s.list_ms);
        all.all_ms.extend(s.all_ms);
        all.busy += s.busy;
        all.statuses.extend(s.statuses);
    }
    let secs = started.elapsed().as_secs_f64();
    let n = all.statuses.len();
    assert_eq!(n, CLIENTS * REQUESTS_PER_CLIENT, "every request answered");
    eprintln!(
        "{n} requests in {secs:.1} s ({:.0}/s), {} busy; list p50 {} ms p99 {} ms; all p50 {} ms p99 {} ms",
        n as f64 / secs,
        all.busy,
        pct(&mut all.list_ms, 0.5),
        pct(&mut all.list_ms, 0.99),
        pct(&mut all.all_ms, 0.5),
        pct(&mut all.all_ms, 0.99),
    );
    assert!(all.busy < n, "the node served most requests");

    // Every household (the seeded and the ones the load created) is reachable by paging, once.
    let http = login(&url).await?;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let mut u = format!("{url}/api/v1/households?limit=500");
        if let Some(c) = &cursor {
            u.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http.get(u).send().await?.error_for_status()?.json().await?;
        for h in page["items"].as_array().into_iter().flatten() {
            seen.push(h["id"].as_str().unwrap_or_default().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no household twice");
    assert!(ids.iter().all(|id| unique.contains(id)), "every seeded one");
    let stored = node
        .state
        .records
        .list_households(&Default::default())?
        .len();
    assert_eq!(seen.len(), stored, "and every created one");
    node.stop().await?;
    Ok(())
}

fn toml_limits(text: &str) -> anyhow::Result<cunyun_node::config::Limits> {
    Ok(NodeConfig::from_toml(&format!("[limits]\n{text}"))?.limits)
}
