//! The expert registry (科技所能) as the hub keeps it: `expert` documents keyed at the province
//! (`<province>/expert/<id>`), so each flows down to every node.
//!
//! This module owns the registry operations the operator API and the console call: list, add
//! (the same name and organisation is the same expert, id `e` + 16 hex digits of their BLAKE3),
//! edit (the id stays even when the name changes) and remove. Documents cannot be deleted from a
//! replicated store (a node would sync a deleted document straight back), so removal sets the
//! expert's `withdrawn` flag: the matcher never suggests a withdrawn expert and lists hide them.
//! Every change is made under the acting operator's Automerge author and is durable when a
//! function returns; invalid input changes nothing.

use crate::store::{HubStore, HubStoreError, HubWrite};
use automerge::{Author, Automerge};
use cunyun_protocol::area::AreaCode;
use cunyun_protocol::expert::Expert;
use cunyun_protocol::fields::FieldErrors;
use cunyun_protocol::key::{DocKey, Kind};
use serde::Serialize;
use serde_json::Value;

/// One registered expert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpertRecord {
    /// The document id (`e` + 16 hex digits).
    pub id: String,
    /// The public fields.
    pub expert: Expert,
    /// When the document last changed here, ms since the Unix epoch.
    pub updated_at_ms: u64,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExpertError {
    /// The input is invalid (every problem, in Chinese).
    #[error("专家信息有误，共{}处", .0.len())]
    Invalid(FieldErrors),
    /// No such expert.
    #[error("没有编号为“{0}”的专家")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] HubStoreError),
    /// A document could not be read or written.
    #[error("专家记录读写失败（{key}）：{message}")]
    Document {
        /// The document.
        key: String,
        /// What went wrong.
        message: String,
    },
}

use cunyun_platform::clock::now_ms;

/// Whether `id` has the form of an expert id.
pub fn valid_id(id: &str) -> bool {
    id.len() == 17
        && id.starts_with('e')
        && id[1..]
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The id of a new expert: the same name and organisation is the same expert.
pub fn id_for(expert: &Expert) -> String {
    let hash = blake3::hash(format!("{}\u{0}{}", expert.name, expert.organisation).as_bytes());
    format!("e{}", &hash.to_hex()[..16])
}

fn key(province: AreaCode, id: &str) -> Result<DocKey, ExpertError> {
    if !valid_id(id) {
        return Err(ExpertError::NotFound(id.to_string()));
    }
    DocKey::new(province, Kind::Expert, id).map_err(|_| ExpertError::NotFound(id.to_string()))
}

/// Every expert keyed at `province`, by id; withdrawn ones only when asked for.
pub fn list(
    store: &dyn HubStore,
    province: AreaCode,
    with_withdrawn: bool,
) -> Result<Vec<ExpertRecord>, ExpertError> {
    let mut out = Vec::new();
    for (k, entry) in store.entries(&province.scope(), Some(Kind::Expert))? {
        if k.area() != &province {
            continue;
        }
        let Some(doc) = store.get(&k)? else {
            continue;
        };
        match Expert::read_from(&doc) {
            Ok(expert) if with_withdrawn || !expert.withdrawn => out.push(ExpertRecord {
                id: k.id().to_string(),
                expert,
                updated_at_ms: entry.updated_at_ms,
            }),
            Ok(_) => {}
            Err(e) => tracing::warn!(key = %k, error = %e, "expert document unreadable"),
        }
    }
    Ok(out)
}

/// One expert (withdrawn ones too).
pub fn get(
    store: &dyn HubStore,
    province: AreaCode,
    id: &str,
) -> Result<ExpertRecord, ExpertError> {
    let k = key(province, id)?;
    let doc = store
        .get(&k)?
        .ok_or_else(|| ExpertError::NotFound(id.to_string()))?;
    let expert = Expert::read_from(&doc).map_err(|e| ExpertError::Document {
        key: k.to_string(),
        message: e.to_string(),
    })?;
    let updated_at_ms = store.entry(&k)?.map_or(0, |e| e.updated_at_ms);
    Ok(ExpertRecord {
        id: id.to_string(),
        expert,
        updated_at_ms,
    })
}

/// Adds an expert (`id` = `None`; an expert with the same name and organisation is updated, and
/// comes back if it was removed) or edits the expert `id` (which must exist; its id stays).
pub fn save(
    store: &dyn HubStore,
    province: AreaCode,
    id: Option<&str>,
    body: &Value,
    author: &str,
) -> Result<ExpertRecord, ExpertError> {
    let expert = Expert::from_json(body).map_err(ExpertError::Invalid)?;
    let id = match id {
        Some(id) => {
            let k = key(province, id)?;
            if store.get(&k)?.is_none() {
                return Err(ExpertError::NotFound(id.to_string()));
            }
            id.to_string()
        }
        None => id_for(&expert),
    };
    write(store, province, &id, &expert, author)?;
    get(store, province, &id)
}

/// Removes the expert `id` from the registry (sets `withdrawn`; see the module documentation).
pub fn withdraw(
    store: &dyn HubStore,
    province: AreaCode,
    id: &str,
    author: &str,
) -> Result<(), ExpertError> {
    let mut rec = get(store, province, id)?;
    if rec.expert.withdrawn {
        return Err(ExpertError::NotFound(id.to_string()));
    }
    rec.expert.withdrawn = true;
    write(store, province, id, &rec.expert, author)
}

fn write(
    store: &dyn HubStore,
    province: AreaCode,
    id: &str,
    expert: &Expert,
    author: &str,
) -> Result<(), ExpertError> {
    let k = key(province, id)?;
    let doc_err = |message: String| ExpertError::Document {
        key: k.to_string(),
        message,
    };
    let mut doc: Automerge = store.get(&k)?.unwrap_or_default();
    let heads = doc.get_heads();
    doc.set_author(Some(Author::from(author.as_bytes().to_vec())));
    let mut tx = doc.transaction();
    expert
        .write_to(&mut tx)
        .map_err(|e| doc_err(e.to_string()))?;
    tx.commit_with(
        automerge::transaction::CommitOptions::default()
            .with_message(format!("save expert by {author}"))
            .with_time((now_ms() / 1000) as i64),
    );
    if doc.get_heads() == heads {
        return Ok(());
    }
    let chunk = if heads.is_empty() {
        doc.save()
    } else {
        doc.save_after(&heads)
    };
    store.apply(
        vec![HubWrite {
            key: k.clone(),
            chunk,
        }],
        Vec::new(),
    )?;
    tracing::info!(target: "cunyun::_events::expert_saved", key = %k, author, withdrawn = expert.withdrawn);
    Ok(())
}
