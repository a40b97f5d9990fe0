//! The operator JSON API behind the console's forms: content upload and metadata edits, the
//! expert registry, and local needs with their status.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/content/upload` | multipart: part `meta` (the [`ContentMeta`](cunyun_protocol::library::ContentMeta) JSON), part `file` (the main file, at most `max_upload_bytes`) → 201 record |
//! | `PUT /api/v1/content/{id}` | `{"meta": {…}}`: new metadata, manifest re-signed, id kept → 200 record |
//! | `POST /api/v1/content/{id}/retire` | expires today (no longer recommended), record kept → 200 record |
//! | `GET /api/v1/experts` | registered experts (`?all=1`: removed ones too) |
//! | `POST /api/v1/experts` | add (same name and organisation = same expert) → 201 |
//! | `GET`/`PUT`/`DELETE /api/v1/experts/{id}` | one expert; edit (id kept); remove (withdrawn) |
//! | `GET /api/v1/needs?area=&status=` | local needs with suggested experts |
//! | `POST /api/v1/needs/{area}/{id}/status` | `{"status": "in_service"}` as the acting operator |
//!
//! Invalid input answers 422 `{"error": "invalid", "message", "fields": [{field, code,
//! message}]}` (every problem, in Chinese) and changes nothing; a write is answered only after it
//! is durable. Every write is authored by the acting [`Operator`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Multipart, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::fields::{FieldError, FieldErrors};
use cunyun_protocol::need::NeedStatus;
use serde_json::{json, Value};

use crate::experts::{self, ExpertError};
use crate::library::LibraryError;
use crate::needs::{self, NeedError, NeedFilter};
use crate::operator::Operator;
use crate::{error, Hub};

/// Largest `meta` part of an upload.
const MAX_META_BYTES: usize = 64 * 1024;

fn invalid(message: String, errs: &FieldErrors) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"error": "invalid", "message": message, "fields": errs.0})),
    )
        .into_response()
}

fn internal(what: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, what, "operator write failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("{what}失败，请查看枢纽日志"),
    )
}

fn library_error(e: LibraryError) -> Response {
    match e {
        LibraryError::Invalid(errs) => invalid(
            format!("资源信息有误，共{}处，请修改后重新提交", errs.len()),
            &errs,
        ),
        e @ (LibraryError::Files(_) | LibraryError::FileStore(_)) => {
            let errs = FieldErrors(vec![FieldError::new("file", "file", e.to_string())]);
            invalid(format!("文件有误：{e}"), &errs)
        }
        e @ LibraryError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        e => internal("资源保存", e),
    }
}

/// Removes an upload's temporary file however the request ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The file name's extension if it is short plain ASCII (it decides the file's MIME type).
fn extension(name: &str) -> String {
    std::path::Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| (1..=8).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| "bin".to_string())
}

/// `POST /api/v1/content/upload` (see the module documentation).
pub(crate) async fn upload_content(State(hub): State<Arc<Hub>>, mut form: Multipart) -> Response {
    let limit = hub.max_upload_bytes;
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "文件超过上传上限 {}；更大的文件请在枢纽上用 cunyun-hub content add 添加",
                crate::console::content::human_bytes(limit)
            ),
        )
    };
    let mut meta: Option<Value> = None;
    let mut file: Option<TempFile> = None;
    loop {
        let mut field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("上传内容无法读取：{e}"),
                )
            }
        };
        match field.name() {
            Some("meta") => {
                let mut buf = Vec::new();
                loop {
                    match field.chunk().await {
                        Ok(Some(c)) => {
                            buf.extend_from_slice(&c);
                            if buf.len() > MAX_META_BYTES {
                                return error(
                                    StatusCode::PAYLOAD_TOO_LARGE,
                                    "too_large",
                                    "资源信息过长",
                                );
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                "bad_request",
                                format!("资源信息无法读取：{e}"),
                            )
                        }
                    }
                }
                match serde_json::from_slice(&buf) {
                    Ok(v) => meta = Some(v),
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            format!("资源信息应为JSON：{e}"),
                        )
                    }
                }
            }
            Some("file") => {
                let ext = extension(field.file_name().unwrap_or(""));
                if let Err(e) = std::fs::create_dir_all(&hub.uploads) {
                    return internal("保存上传文件", e);
                }
                let name = format!(
                    "{}.{ext}",
                    &blake3::hash(&rand::random::<[u8; 16]>()).to_hex()[..16]
                );
                let tmp = TempFile(hub.uploads.join(name));
                let mut out = match std::fs::File::create(&tmp.0) {
                    Ok(f) => f,
                    Err(e) => return internal("保存上传文件", e),
                };
                let mut total: u64 = 0;
                loop {
                    match field.chunk().await {
                        Ok(Some(c)) => {
                            total += c.len() as u64;
                            if total > limit {
                                return too_big();
                            }
                            if let Err(e) = out.write_all(&c) {
                                return internal("保存上传文件", e);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                "bad_request",
                                format!("文件上传中断：{e}"),
                            )
                        }
                    }
                }
                if total == 0 {
                    let errs = FieldErrors(vec![FieldError::new(
                        "file",
                        "required",
                        "文件是空的，请选择有内容的文件",
                    )]);
                    return invalid("文件是空的，请选择有内容的文件".to_string(), &errs);
                }
                if let Err(e) = out.sync_all() {
                    return internal("保存上传文件", e);
                }
                file = Some(tmp);
            }
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "未知的上传字段“{}”，只能是 meta 和 file",
                        other.unwrap_or("")
                    ),
                )
            }
        }
    }
    let Some(meta) = meta else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "缺少资源信息 meta");
    };
    let Some(file) = file else {
        // Report the metadata's problems too, so the form shows every one at once (the size
        // would come from the file).
        let mut probe = meta.clone();
        if let Value::Object(m) = &mut probe {
            m.entry("bytes").or_insert(Value::from(1));
        }
        let mut errs = cunyun_protocol::library::ContentMeta::from_json(&probe)
            .err()
            .map_or(Vec::new(), |e| e.0);
        errs.push(FieldError::new("file", "required", "请选择要上传的文件"));
        let errs = FieldErrors(errs);
        return invalid(
            format!("资源信息有误，共{}处，请修改后重新提交", errs.len()),
            &errs,
        );
    };
    let h = hub.clone();
    let result = tokio::task::spawn_blocking(move || {
        let r = h.library.add(&meta, &file.0, &BTreeMap::new());
        drop(file);
        r
    })
    .await;
    match result {
        Ok(Ok(record)) => (StatusCode::CREATED, Json(json!(record))).into_response(),
        Ok(Err(e)) => library_error(e),
        Err(e) => internal("资源保存", e),
    }
}

/// `PUT /api/v1/content/{id}`: `{"meta": {…}}`.
pub(crate) async fn edit_content(
    State(hub): State<Arc<Hub>>,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<Value>>,
) -> Response {
    let Some(meta) = body.as_ref().and_then(|Json(b)| b.get("meta")).cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "请求内容应为JSON：{\"meta\": {…}}",
        );
    };
    let h = hub.clone();
    match tokio::task::spawn_blocking(move || h.library.update_meta(&id, &meta)).await {
        Ok(Ok(record)) => Json(json!(record)).into_response(),
        Ok(Err(e)) => library_error(e),
        Err(e) => internal("资源保存", e),
    }
}

/// `POST /api/v1/content/{id}/retire`: the item expires today (never recommended again); its
/// record stays, so it can be brought back by editing the expiry.
pub(crate) async fn retire_content(
    State(hub): State<Arc<Hub>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let today = hub.today();
    let h = hub.clone();
    let result = tokio::task::spawn_blocking(move || {
        let record = h
            .library
            .get(&id)
            .ok_or_else(|| LibraryError::NotFound(id.clone()))?;
        if !record.meta.is_live(today) {
            return Ok(record);
        }
        let mut meta = serde_json::to_value(&record.meta).map_err(|e| LibraryError::Corrupt {
            path: PathBuf::from(&id),
            message: e.to_string(),
        })?;
        meta["expires"] = Value::from(today.to_string());
        h.library.update_meta(&id, &meta)
    })
    .await;
    match result {
        Ok(Ok(record)) => Json(json!(record)).into_response(),
        Ok(Err(e)) => library_error(e),
        Err(e) => internal("资源下架", e),
    }
}

fn expert_error(e: ExpertError) -> Response {
    match e {
        ExpertError::Invalid(errs) => invalid(
            format!("专家信息有误，共{}处，请修改后重新提交", errs.len()),
            &errs,
        ),
        e @ ExpertError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        e => internal("专家信息保存", e),
    }
}

/// `GET /api/v1/experts[?all=1]`.
pub(crate) async fn list_experts(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let all = q.get("all").is_some_and(|v| v == "1" || v == "true");
    match experts::list(hub.store.as_ref(), hub.scope.area(), all) {
        Ok(list) => Json(json!({ "experts": list })).into_response(),
        Err(e) => internal("读取专家", e),
    }
}

/// `GET /api/v1/experts/{id}`.
pub(crate) async fn get_expert(
    State(hub): State<Arc<Hub>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    match experts::get(hub.store.as_ref(), hub.scope.area(), &id) {
        Ok(r) => Json(json!(r)).into_response(),
        Err(e) => expert_error(e),
    }
}

async fn save_expert(hub: Arc<Hub>, id: Option<String>, body: Value, op: Operator) -> Response {
    let h = hub.clone();
    let created = id.is_none();
    let result = tokio::task::spawn_blocking(move || {
        h.engine.exclusive(|| {
            experts::save(
                h.store.as_ref(),
                h.scope.area(),
                id.as_deref(),
                &body,
                &op.author(),
            )
        })
    })
    .await;
    match result {
        Ok(Ok(r)) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(json!(r))).into_response()
        }
        Ok(Err(e)) => expert_error(e),
        Err(e) => internal("专家信息保存", e),
    }
}

/// `POST /api/v1/experts`: adds an expert (the same name and organisation updates it).
pub(crate) async fn add_expert(
    State(hub): State<Arc<Hub>>,
    op: Operator,
    body: Option<Json<Value>>,
) -> Response {
    let Some(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "请求内容应为专家信息JSON",
        );
    };
    save_expert(hub, None, body, op).await
}

/// `PUT /api/v1/experts/{id}`: edits an expert; the id stays.
pub(crate) async fn edit_expert(
    State(hub): State<Arc<Hub>>,
    UrlPath(id): UrlPath<String>,
    op: Operator,
    body: Option<Json<Value>>,
) -> Response {
    let Some(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "请求内容应为专家信息JSON",
        );
    };
    save_expert(hub, Some(id), body, op).await
}

/// `DELETE /api/v1/experts/{id}`: removes the expert from the registry.
pub(crate) async fn remove_expert(
    State(hub): State<Arc<Hub>>,
    UrlPath(id): UrlPath<String>,
    op: Operator,
) -> Response {
    let h = hub.clone();
    let result = tokio::task::spawn_blocking(move || {
        h.engine
            .exclusive(|| experts::withdraw(h.store.as_ref(), h.scope.area(), &id, &op.author()))
    })
    .await;
    match result {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => expert_error(e),
        Err(e) => internal("专家删除", e),
    }
}

/// Parses `?area=<prefix>&status=<id>`; the error is the Chinese message.
pub(crate) fn need_filter(q: &BTreeMap<String, String>) -> Result<NeedFilter, String> {
    let mut f = NeedFilter::default();
    if let Some(a) = q.get("area").map(|a| a.trim()).filter(|a| !a.is_empty()) {
        f.area = Some(AreaScope::parse(a).map_err(|e| format!("地区“{a}”无效：{e}"))?);
    }
    if let Some(s) = q.get("status").filter(|s| !s.is_empty()) {
        f.status = Some(NeedStatus::parse(s).ok_or_else(|| {
            let ids: Vec<&str> = NeedStatus::ALL.iter().map(|s| s.id()).collect();
            format!("未知的需求状态“{s}”，可选 {}", ids.join("、"))
        })?);
    }
    Ok(f)
}

/// `GET /api/v1/needs?area=&status=`.
pub(crate) async fn list_needs(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let filter = match need_filter(&q) {
        Ok(f) => f,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_request", m),
    };
    match needs::list(hub.store.as_ref(), &hub.scope, hub.scope.area(), &filter) {
        Ok(rows) => Json(json!({ "needs": rows })).into_response(),
        Err(e) => internal("读取需求", e),
    }
}

/// `POST /api/v1/needs/{area}/{id}/status`: `{"status": "in_service"}`.
pub(crate) async fn set_need_status(
    State(hub): State<Arc<Hub>>,
    UrlPath((area, id)): UrlPath<(String, String)>,
    op: Operator,
    body: Option<Json<Value>>,
) -> Response {
    let Some(s) = body
        .as_ref()
        .and_then(|Json(b)| b.get("status"))
        .and_then(Value::as_str)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "请求内容应为JSON：{\"status\": \"in_service\"}",
        );
    };
    let Some(status) = NeedStatus::parse(s) else {
        let errs = FieldErrors(vec![FieldError::new(
            "status",
            "unknown_value",
            format!("未知的需求状态“{s}”"),
        )]);
        return invalid(format!("未知的需求状态“{s}”"), &errs);
    };
    let h = hub.clone();
    let today = hub.today();
    let result = tokio::task::spawn_blocking(move || {
        h.engine.exclusive(|| {
            needs::set_status(h.store.as_ref(), &area, &id, status, &op.author(), today)
        })
    })
    .await;
    match result {
        Ok(Ok(row)) => Json(json!(row)).into_response(),
        Ok(Err(NeedError::Invalid(errs))) => invalid(
            errs.iter()
                .next()
                .map_or("需求状态不能这样修改".to_string(), |e| {
                    e.message.clone()
                }),
            &errs,
        ),
        Ok(Err(e @ NeedError::NotFound(_))) => {
            error(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        Ok(Err(e)) => internal("需求状态保存", e),
        Err(e) => internal("需求状态保存", e),
    }
}
