//! The cadre web app: its embedded static assets (`node/web/`), the villager page, and the API
//! routes only the app uses (form schema, derived tags, queued edits, recommendations, QR codes,
//! coverage).
//!
//! | method | path | login | what |
//! |---|---|---|---|
//! | GET | `/`, `/app/{file}`, `/sw.js` | no | the app shell (hash-routed single page), service worker |
//! | GET | `/v/{id}` | no | villager page: that household's recommended content only, no personal data; articles already on the node come rendered in the page ([`crate::markdown`]) |
//! | POST | `/v/{id}/items/{item}/view`, `/v/{id}/items/{item}/helpful` | no | feedback: the villager opened an item / rated it 「有帮助」 (items of the household's `rec` only; helpful once a day) |
//! | POST | `/api/v1/households/{id}/items/{item}/view` | yes | feedback: a cadre opened the item for the household |
//! | GET | `/api/v1/schema` | yes | every form field with label, kind, limits, options ([`schema`]) |
//! | POST | `/api/v1/derive-tags` | yes | `{profile}` → derived tags with reasons |
//! | POST | `/api/v1/households/{id}/edits` | yes | a queued edit, applied at its base heads and merged ([`crate::edits`]) |
//! | GET | `/api/v1/households/{id}/recommendations` | yes | recommended content from the `rec` document: id, title, reason, week, rendition, content links |
//! | GET | `/api/v1/households/{id}/qr.svg` | yes | QR code of the villager link (plain HTTP even when the app is on HTTPS) |
//! | GET | `/api/v1/households/{id}/villager-link` | yes | `{link}`: the villager link the QR code holds |
//! | GET | `/api/v1/coverage` | yes | overview: households by group, recommendation coverage, records not yet synced upstream |
//!
//! Assets are compiled in with `include_str!`, so the binary needs nothing beside it and building
//! needs no npm. They are sent with an `ETag` and `Cache-Control: no-cache` (the service worker
//! keeps the offline copy); compression is the router's (`CompressionLayer`, gzip and brotli).

pub mod schema;

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cunyun_protocol::feedback::Recorded;
use cunyun_protocol::household::HouseholdProfile;
use cunyun_protocol::key::{Kind, Role};
use cunyun_protocol::rec::{Rec, RecItem};
use cunyun_protocol::triggers::derive_tags;
use serde_json::{json, Value};

use crate::edits::OfflineEdit;
use crate::feedback::Event;
use crate::records::{prefixed, RecordError};
use crate::state::{blocking, count_write, AppState};
use cunyun_platform::accounts::Cadre;
use cunyun_platform::certs::webtls::PlainHttpPort;
use cunyun_platform::html::esc;
use cunyun_platform::http::{json_body, ApiError};

/// One embedded asset.
struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static str,
}

/// Every file of the app shell. The service worker caches exactly these.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        mime: "text/html; charset=utf-8",
        body: include_str!("../../web/index.html"),
    },
    Asset {
        path: "/app/app.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("../../web/app.js"),
    },
    Asset {
        path: "/app/db.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("../../web/db.js"),
    },
    Asset {
        path: "/app/form.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("../../web/form.js"),
    },
    Asset {
        path: "/app/style.css",
        mime: "text/css; charset=utf-8",
        body: include_str!("../../web/style.css"),
    },
    Asset {
        path: "/sw.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("../../web/sw.js"),
    },
];

/// Paths of the app shell, for the service worker and the shell-size benchmark.
pub fn shell_paths() -> Vec<&'static str> {
    ASSETS.iter().map(|a| a.path).collect()
}

fn etags() -> &'static Vec<String> {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", &blake3::hash(a.body.as_bytes()).to_hex()[..16]))
            .collect()
    })
}

/// Version of the whole shell (changes when any asset does); the service worker's cache name.
fn shell_version() -> String {
    let mut h = blake3::Hasher::new();
    for a in ASSETS {
        h.update(a.body.as_bytes());
    }
    h.finalize().to_hex()[..12].to_string()
}

fn serve_asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "没有这个文件").into_response();
    };
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag.clone())]).into_response();
    }
    let body = if path == "/sw.js" {
        asset
            .body
            .replace("__SHELL_VERSION__", &shell_version())
            .replace(
                "__SHELL_PATHS__",
                &serde_json::to_string(&shell_paths()).unwrap_or_default(),
            )
    } else {
        asset.body.to_string()
    };
    (
        [
            (header::CONTENT_TYPE, asset.mime.to_string()),
            (header::CACHE_CONTROL, "no-cache".to_string()),
            (header::ETAG, etag.clone()),
        ],
        body,
    )
        .into_response()
}

async fn index(headers: HeaderMap) -> Response {
    serve_asset("/", &headers)
}

async fn app_file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve_asset(&format!("/app/{file}"), &headers)
}

async fn service_worker(headers: HeaderMap) -> Response {
    serve_asset("/sw.js", &headers)
}

/// Routes open to everyone: the shell and the villager page.
pub fn public_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/app/{file}", get(app_file))
        .route("/sw.js", get(service_worker))
        .route("/v/{id}", get(villager_page))
        .route("/v/{id}/items/{item}/view", post(villager_view))
        .route("/v/{id}/items/{item}/helpful", post(villager_helpful))
}

/// Routes behind the login (the caller adds the guard).
pub fn api_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/schema", get(form_schema))
        .route("/api/v1/derive-tags", post(derive))
        .route("/api/v1/households/{id}/edits", post(apply_edit))
        .route(
            "/api/v1/households/{id}/recommendations",
            get(recommendations),
        )
        .route(
            "/api/v1/households/{id}/items/{item}/view",
            post(cadre_view),
        )
        .route("/api/v1/households/{id}/qr.svg", get(qr_svg))
        .route(
            "/api/v1/households/{id}/villager-link",
            get(villager_link_json),
        )
        .route("/api/v1/coverage", get(coverage))
}

async fn form_schema() -> Response {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    Json(SCHEMA.get_or_init(schema::schema)).into_response()
}

async fn derive(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let mut body = json_body(&body)?;
    let mut profile = body
        .get_mut("profile")
        .map(Value::take)
        .unwrap_or(Value::Object(Default::default()));
    state.records.default_village(&mut profile);
    let profile = HouseholdProfile::from_json(&profile).map_err(|e| {
        RecordError::Invalid(cunyun_protocol::fields::FieldErrors(prefixed("profile", e)))
    })?;
    let tags: Vec<Value> = derive_tags(&profile)
        .into_iter()
        .map(|(t, r)| json!({ "tag": t.id(), "name": t.zh_name(), "reason": r.message() }))
        .collect();
    Ok(Json(json!({ "derived_tags": tags })).into_response())
}

async fn apply_edit(
    State(state): State<Arc<AppState>>,
    Extension(cadre): Extension<Cadre>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let edit: OfflineEdit = serde_json::from_value(json_body(&body)?).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("修改内容格式错误：{e}"),
        )
    })?;
    let result = state
        .records
        .apply_household_edit(&cadre.name, &id, &edit)
        .await;
    Ok(Json(count_write(&state, "hh", "edit", result)?).into_response())
}

/// Recommended content of a household, newest week first, then by score: each item of its
/// `rec` document (written by the hub, [`cunyun_protocol::rec`]) with its id and the links of the
/// content contract (`/v/content/{item}` for the description, `/content/{item}/{rendition}` for
/// the file); empty before the hub wrote one. `None` for an unknown household.
fn household_recommendations(
    state: &AppState,
    id: &str,
) -> Result<Option<Vec<Value>>, RecordError> {
    let Some(hh) = state.records.find_household(id)? else {
        return Ok(None);
    };
    let key = hh.with_kind(Kind::Rec);
    let Some(doc) = state.records.store().load(&key)? else {
        return Ok(Some(Vec::new()));
    };
    let rec = Rec::read_from(&doc)?;
    let mut items: Vec<(&String, &RecItem)> = rec.items.iter().collect();
    items.sort_by(|a, b| b.1.week.cmp(&a.1.week).then(b.1.score.cmp(&a.1.score)));
    Ok(Some(
        items
            .into_iter()
            .map(|(item, i)| {
                json!({
                    "id": item,
                    "title": i.title,
                    "reason": i.reason,
                    "week": i.week,
                    "week_zh": cunyun_platform::timefmt::week_zh(&i.week.to_string()),
                    "rendition": i.rendition,
                    "bytes": i.bytes,
                    "tags": i.tags.iter().map(|t| json!({"tag": t.id(), "name": t.zh_name()})).collect::<Vec<_>>(),
                    "content": format!("/v/content/{item}"),
                    "file": format!("/content/{item}/{}", i.rendition),
                })
            })
            .collect(),
    ))
}

async fn recommendations(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id2 = id.clone();
    let st = state.clone();
    let items = tokio::task::spawn_blocking(move || household_recommendations(&st, &id2))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "服务器内部错误",
            )
        })??
        .ok_or_else(|| RecordError::NotFound(id.clone()))?;
    Ok(Json(json!({ "household": id, "items": items })).into_response())
}

/// Records a feedback event for one recommended item and answers `{"recorded": bool}`.
async fn feedback_event(
    state: &AppState,
    id: &str,
    item: &str,
    event: Event,
) -> Result<Response, ApiError> {
    let day = cunyun_platform::clock::today_cst().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "本机日期无效，请检查时钟",
        )
    })?;
    let result = state.records.record_feedback(id, item, event, day).await;
    let recorded = count_write(state, "fb", "record", result)?;
    Ok(Json(json!({ "recorded": recorded == Recorded::Changed })).into_response())
}

/// `POST /v/{id}/items/{item}/view` (no login): the villager opened an item.
async fn villager_view(
    State(state): State<Arc<AppState>>,
    Path((id, item)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    feedback_event(&state, &id, &item, Event::View).await
}

/// `POST /v/{id}/items/{item}/helpful` (no login): 「有帮助」, once a day at most.
async fn villager_helpful(
    State(state): State<Arc<AppState>>,
    Path((id, item)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    feedback_event(&state, &id, &item, Event::Helpful).await
}

/// `POST /api/v1/households/{id}/items/{item}/view` (login): a cadre opened the item for the
/// household.
async fn cadre_view(
    State(state): State<Arc<AppState>>,
    Path((id, item)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    feedback_event(&state, &id, &item, Event::View).await
}

/// The villager page's script: opens an item — an article rendered into the page is shown as it
/// is; otherwise its viewer is chosen by the rendition's mime type from the content description
/// (an article is fetched already rendered, `/content/{item}/{rendition}/html`) — records the
/// open, and sends 「有帮助」.
const VILLAGER_JS: &str = r#"
const HH = document.body.dataset.hh;
function post(path) { return fetch(path, {method: 'POST'}).then(r => r.ok ? r.json() : null).catch(() => null); }
async function fill(art, box) {
  const item = art.dataset.item, rendition = art.dataset.rendition;
  box.textContent = '正在打开…';
  let meta = null;
  try { const r = await fetch('/v/content/' + encodeURIComponent(item)); if (r.ok) meta = await r.json(); } catch (e) {}
  const r = meta && (meta.renditions || []).find(x => x.name === rendition);
  if (!r || !r.available) { box.innerHTML = '<p class=wait>内容正在下载，请稍后再看</p>'; return false; }
  const src = '/content/' + encodeURIComponent(item) + '/' + encodeURIComponent(rendition);
  const mime = r.mime || '';
  box.textContent = '';
  let el;
  if (mime.startsWith('image/')) { el = document.createElement('img'); el.alt = art.dataset.title; }
  else if (mime.startsWith('audio/')) { el = document.createElement('audio'); el.controls = true; }
  else if (mime.startsWith('video/')) { el = document.createElement('video'); el.controls = true; }
  else if (mime === 'application/pdf') { el = document.createElement('iframe'); el.title = art.dataset.title; }
  else if (mime.startsWith('text/')) {
    el = document.createElement('div'); el.className = 'article';
    try {
      const resp = await fetch(src + '/html');
      if (resp.ok) el.innerHTML = await resp.text();
      else el.textContent = ((await resp.json().catch(() => null)) || {}).message || '暂时无法显示，请稍后再试。';
    } catch (e) { el.textContent = '暂时无法显示，请稍后再试。'; }
  }
  else { el = document.createElement('a'); el.className = 'open'; el.href = src; el.textContent = '打开文件'; }
  if (['IMG', 'AUDIO', 'VIDEO', 'IFRAME'].includes(el.tagName)) el.src = src;
  box.appendChild(el);
  return true;
}
async function openItem(art, button) {
  const box = art.querySelector('.viewer');
  if (!box.hidden && box.dataset.ready) { box.hidden = true; button.textContent = '查看内容'; return; }
  box.hidden = false;
  if (!box.dataset.ready && !(await fill(art, box))) return;
  box.dataset.ready = '1';
  button.textContent = '收起';
  post('/v/' + HH + '/items/' + encodeURIComponent(art.dataset.item) + '/view');
}
document.querySelectorAll('article[data-item]').forEach(art => {
  const show = art.querySelector('button.show');
  show.addEventListener('click', () => openItem(art, show));
  const h = art.querySelector('button.helpful');
  h.addEventListener('click', async () => {
    const res = await post('/v/' + HH + '/items/' + encodeURIComponent(art.dataset.item) + '/helpful');
    if (res) { h.textContent = '已反馈：有帮助'; h.disabled = true; }
  });
});
"#;

/// Largest article source embedded in the villager page; a longer one is fetched, rendered,
/// when it is opened, so the page stays light on a slow link.
const EMBED_MAX_BYTES: u64 = 64 * 1024;

/// The rendered article of recommended item `i` (one entry of [`household_recommendations`])
/// when its rendition is an article already whole on this node; `None` otherwise (not an
/// article, not here yet, over [`EMBED_MAX_BYTES`]): the page's script then opens it on request.
fn prerendered(state: &AppState, i: &Value) -> Option<String> {
    let p = state.pushdown.as_ref()?;
    let (item, rendition) = (i["id"].as_str()?, i["rendition"].as_str()?);
    crate::content_api::local_article(p, item, rendition, EMBED_MAX_BYTES).ok()
}

/// The villager page: no login, no personal data — only the household's recommended content.
async fn villager_page(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let st = state.clone();
    let id2 = id.clone();
    let found = tokio::task::spawn_blocking(move || {
        household_recommendations(&st, &id2).map(|items| {
            items.map(|items| {
                let articles = items
                    .iter()
                    .map(|i| prerendered(&st, i))
                    .collect::<Vec<_>>();
                (items, articles)
            })
        })
    })
    .await;
    let (status, body) = match found {
        Ok(Ok(Some((items, _)))) if items.is_empty() => (
            StatusCode::OK,
            "<p class=empty>暂时还没有为您家推荐的内容。<br>省级平台接入后，这里会显示适合您家的科普文章、图片、音频和视频。</p>".to_string(),
        ),
        Ok(Ok(Some((items, articles)))) => (
            StatusCode::OK,
            items
                .iter()
                .zip(articles)
                .map(|(i, article)| {
                    let s = |k: &str| esc(i[k].as_str().unwrap_or(""));
                    let (item, title, reason, rendition) =
                        (s("id"), s("title"), s("reason"), s("rendition"));
                    let week = s("week_zh");
                    let viewer = match article {
                        Some(html) => format!(
                            "<div class=viewer hidden data-ready=1><div class=article>{html}</div></div>"
                        ),
                        None => "<div class=viewer hidden></div>".to_string(),
                    };
                    format!(
                        "<article data-item=\"{item}\" data-rendition=\"{rendition}\" data-title=\"{title}\">\
<h2>{title}</h2><p class=reason>{reason}</p><p class=week>推荐于{week}</p>\
<button class=show>查看内容</button> <button class=helpful>有帮助</button>{viewer}</article>"
                    )
                })
                .collect(),
        ),
        Ok(Ok(None)) => (
            StatusCode::NOT_FOUND,
            "<p class=empty>没有找到这个链接对应的内容，请向村干部确认二维码。</p>".to_string(),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "<p class=empty>暂时无法显示，请稍后再试。</p>".to_string(),
        ),
    };
    let hh = esc(&id);
    let page = format!(
        r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>村云科普 · 为您推荐</title>
<style>body{{font:18px/1.6 sans-serif;margin:0;padding:1rem;color:#222;background:#f6f7f4}}h1{{font-size:1.4rem;color:#1d6b3a}}
article{{background:#fff;border-radius:12px;padding:1rem;margin:0 0 1rem}}img,video,iframe{{max-width:100%;width:100%}}iframe{{height:70vh;border:0}}audio{{width:100%}}
.week{{color:#666;font-size:.9rem}}.wait{{color:#8a5a00}}.viewer{{margin-top:.8rem}}
.article{{overflow-wrap:anywhere}}.article h1{{font-size:1.3rem;color:#222;margin:.6rem 0}}.article h2{{font-size:1.15rem;margin:1rem 0 .4rem}}.article h3{{font-size:1.05rem}}
.article p,.article li{{margin:.5rem 0}}.article ul,.article ol{{padding-left:1.4rem}}.article img{{width:auto;max-width:100%;height:auto}}.article a:not([href]){{color:inherit}}
.article blockquote{{margin:.8rem 0;padding:.3rem .8rem;border-left:4px solid #9cc8a9;background:#f1f7f2;color:#444}}
.article table{{display:block;overflow-x:auto;border-collapse:collapse}}.article td,.article th{{border:1px solid #ddd;padding:.3rem .5rem}}.article pre{{white-space:pre-wrap}}
button{{font:inherit;padding:.6rem 1rem;border-radius:8px;border:0;background:#1d6b3a;color:#fff}}button.helpful{{background:#b85c00}}
.empty{{background:#fff;border-radius:12px;padding:1.2rem}}a.open{{display:inline-block;padding:.7rem 1.2rem;background:#1d6b3a;color:#fff;border-radius:8px;text-decoration:none}}</style>
</head><body data-hh="{hh}"><h1>村云科普 · 为您家推荐</h1>{body}<script>{VILLAGER_JS}</script></body></html>"#
    );
    (status, Html(page)).into_response()
}

/// The villager link of household `id` as reached through `headers`' host: always plain HTTP,
/// on the plain listener's port when the request came over HTTPS ([`cunyun_platform::certs::webtls`]).
fn villager_link(headers: &HeaderMap, plain: Option<PlainHttpPort>, id: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .unwrap_or("127.0.0.1");
    match plain {
        Some(PlainHttpPort(port)) => {
            format!(
                "http://{}:{port}/v/{id}",
                cunyun_platform::certs::webtls::host_only(host)
            )
        }
        None => format!("http://{host}/v/{id}"),
    }
}

async fn villager_link_json(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    plain: Option<Extension<PlainHttpPort>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id2 = id.clone();
    blocking(&state, move |r| r.get_household(&id2)).await?;
    Ok(Json(json!({ "link": villager_link(&headers, plain.map(|e| e.0), &id) })).into_response())
}

async fn qr_svg(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    plain: Option<Extension<PlainHttpPort>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Only for households that exist here.
    let id2 = id.clone();
    blocking(&state, move |r| r.get_household(&id2)).await?;
    let link = villager_link(&headers, plain.map(|e| e.0), &id);
    let code = qrcode::QrCode::new(link.as_bytes()).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("二维码生成失败：{e}"),
        )
    })?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build();
    Ok((
        [(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8")],
        svg,
    )
        .into_response())
}

/// Overview counts. "Not yet synced upstream" counts the `hh`, `hp` and `need` documents updated
/// after the last successful sync session with a county or hub peer (all of them when there has
/// been none); it is an upper bound, since a document may have reached the county through
/// another village node. "With recommendations" counts `rec` documents in scope.
async fn coverage(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let last_upstream = state.sync.as_ref().and_then(|s| {
        s.status()
            .peers
            .iter()
            .filter(|p| matches!(p.role, Some(Role::County) | Some(Role::Hub)))
            .filter_map(|p| p.last_sync_ms)
            .max()
    });
    let sync_enabled = state.sync.is_some();
    let v = blocking(&state, move |r| {
        let o = r.overview()?;
        let (mut recs, mut unsynced) = (0usize, 0usize);
        for item in r.store().scan(&r.scope()) {
            let (key, entry) = item?;
            match key.kind() {
                Kind::Rec => recs += 1,
                Kind::Hh | Kind::Hp | Kind::Need
                    if last_upstream.is_none_or(|t| entry.updated_at_ms > t) =>
                {
                    unsynced += 1;
                }
                _ => {}
            }
        }
        Ok(json!({
            "place": crate::places::own_name(&r.scope()),
            "place_label": crate::places::label(&r.scope()),
            "households": o.households,
            "by_group": o.by_group,
            "needs": o.needs,
            "with_recommendations": recs,
            "unsynced_upstream": unsynced,
            "last_upstream_sync_ms": last_upstream,
            "sync_enabled": sync_enabled,
        }))
    })
    .await?;
    Ok(Json(v).into_response())
}
