//! `/nodes`: the peers that synced with the hub, from the sync service's records — node id,
//! role, scope, how it was found, the protocol version and shared-scope document count of its
//! last hello (the sync wire carries no software version), last contact and attempt, sessions, documents and bytes each
//! way, the last error — and a backlog per peer: documents in its scope (or keyed at the
//! province, which flow down to every node) that changed at the hub after its last successful
//! session, counted from the store index (no document is loaded; counting stops at
//! [`BACKLOG_SCAN_LIMIT`] index entries).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cunyun_platform::sync::service::PeerStatus;
use cunyun_protocol::area::AreaScope;

use super::{ago, esc, page, place};
use crate::store::{HubEntry, HubStore};
use crate::Hub;

/// Most index entries read to count one peer's backlog.
pub const BACKLOG_SCAN_LIMIT: usize = 200_000;

/// A peer's backlog: `(count, whether counting stopped at the limit)`, or `None` when the peer
/// never completed a session or its scope is unknown.
pub fn backlog(
    store: &dyn HubStore,
    province: &AreaScope,
    peer: &PeerStatus,
) -> Option<(u64, bool)> {
    let since = peer.last_sync_ms?;
    let scope = AreaScope::parse(peer.scope.as_deref()?).ok()?;
    let mut n = 0u64;
    let mut read = 0usize;
    let mut count = |entry: &HubEntry| {
        read += 1;
        if entry.updated_at_ms > since {
            n += 1;
        }
        read <= BACKLOG_SCAN_LIMIT
    };
    for (_, e) in store.entries(&scope, None).ok()? {
        if !count(&e) {
            return Some((n, true));
        }
    }
    if scope.prefix().len() > province.prefix().len() {
        // Documents keyed at the province itself (experts, revocation lists) flow down to every
        // node: the key range `<province code>/…`.
        let start = format!("{}/", province.area());
        let end = format!("{}0", province.area());
        for (_, e) in store.entries_range(start.as_bytes(), end.as_bytes()).ok()? {
            if !count(&e) {
                return Some((n, true));
            }
        }
    }
    Some((n, false))
}

/// The peers table.
pub fn render(peers: &[(PeerStatus, Option<(u64, bool)>)]) -> String {
    let mut html = format!(
        "<p>共{}个节点。「待下发」：该节点范围内在它最近一次成功同步之后枢纽上有变更的文档数，下次同步时发出。</p>",
        peers.len()
    );
    html.push_str("<div class=\"scroll\"><table id=\"node-table\"><tr><th>节点编号</th><th>角色</th><th>地区</th><th>来源</th><th>协议版本</th><th>对方文档数</th><th>最近同步</th><th>最近尝试</th><th>成功/失败</th><th>收到/发出文档</th><th>收到/发出字节</th><th>待下发</th><th>最近错误</th></tr>");
    for (p, backlog) in peers {
        let role = p.role.map_or("—", cunyun_protocol::key::Role::zh_name);
        html.push_str(&format!(
            "<tr><td><code>{id}</code>{active}</td><td>{role}</td><td>{scope}</td><td>{source}</td><td>{version}</td><td>{docs}</td><td>{last}</td><td>{attempt}</td><td>{ok}/{failed}</td><td>{rx}/{tx}</td><td>{bin}/{bout}</td><td>{backlog}</td><td class=\"bad\">{err}</td></tr>",
            id = esc(&p.node_id),
            active = if p.active { " <small>（同步中）</small>" } else { "" },
            role = esc(role),
            scope = p.scope.as_deref().map_or("—".to_string(), place),
            source = esc(match p.source.as_str() {
                "mdns" => "局域网发现",
                "static" => "配置指定",
                "upstream" => "上级节点",
                "inbound" => "对方连入",
                other => other,
            }),
            version = p.protocol_version.map_or("—".to_string(), |v| format!("v{v}")),
            docs = p.documents.map_or("—".to_string(), |d| d.to_string()),
            last = p.last_sync_ms.map_or("从未".to_string(), ago),
            attempt = p.last_attempt_ms.map_or("—".to_string(), ago),
            ok = p.sessions_ok,
            failed = p.sessions_failed,
            rx = p.docs_received,
            tx = p.docs_sent,
            bin = super::content::human_bytes(p.bytes_in),
            bout = super::content::human_bytes(p.bytes_out),
            backlog = match backlog {
                None => "—".to_string(),
                Some((n, false)) => n.to_string(),
                Some((n, true)) => format!("≥{n}"),
            },
            err = esc(p.last_error.as_deref().unwrap_or("")),
        ));
    }
    if peers.is_empty() {
        html.push_str("<tr><td colspan=\"13\">还没有节点来同步过。</td></tr>");
    }
    html.push_str("</table></div>");
    html
}

pub(crate) async fn page_handler(State(hub): State<Arc<Hub>>) -> Response {
    let Some(sync) = &hub.sync else {
        return page(
            "节点",
            "/nodes",
            "<p>本枢纽未启用同步（配置 [sync] enabled = true）。</p>",
        )
        .into_response();
    };
    let peers = sync.status().peers;
    let h = hub.clone();
    let rows = tokio::task::spawn_blocking(move || {
        peers
            .into_iter()
            .map(|p| {
                let b = backlog(h.store.as_ref(), &h.scope, &p);
                (p, b)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    page("节点", "/nodes", &render(&rows)).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cunyun_platform::store::{DocStore, DocWrite, StoreConfig};
    use cunyun_protocol::key::DocKey;

    fn put(store: &DocStore, key: &str, at: u64) {
        let mut doc = automerge::AutoCommit::new();
        automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "v", 1).unwrap();
        store
            .commit(vec![DocWrite {
                key: key.parse::<DocKey>().unwrap(),
                chunk: doc.save(),
                heads: doc.get_heads(),
                updated_at_ms: at,
            }])
            .unwrap();
    }

    #[test]
    fn peers_are_shown_with_their_role_and_place() {
        let mut county = PeerStatus::default();
        county.node_id = "47a3132f".into();
        county.role = Some(cunyun_protocol::key::Role::County);
        county.scope = Some("510116".into());
        let mut odd = PeerStatus::default();
        odd.scope = Some("511424102999".into());
        let html = render(&[(county, None), (odd, None)]);
        assert!(html.contains("<td>县级节点</td>"), "{html}");
        assert!(html.contains("成都市 › 双流区"), "{html}");
        assert!(html.contains("511424102999（未知地区）"), "{html}");
    }

    #[test]
    fn backlog_counts_changes_in_scope_and_at_the_province_since_the_last_session() {
        let dir = tempfile::tempdir().unwrap();
        let store = DocStore::open(&dir.path().join("s"), StoreConfig::default()).unwrap();
        put(&store, "511424104201/rec/h1", 100); // before the last session
        put(&store, "511424104201/rec/h2", 300); // after: in its scope
        put(&store, "511424104202/rec/h3", 300); // another village
        put(&store, "510000000000/expert/e1", 300); // flows down to everyone
        let province = AreaScope::parse("51").unwrap();
        let store = crate::store::sled::SledHubStore::over(
            store,
            crate::store::Limits::default(),
            &dir.path().join("s.meta"),
        );
        let mut peer = PeerStatus::default();
        peer.scope = Some("511424104201".into());
        assert_eq!(backlog(&store, &province, &peer), None, "never synced");
        peer.last_sync_ms = Some(200);
        assert_eq!(backlog(&store, &province, &peer), Some((2, false)));
        peer.scope = Some("51".into());
        assert_eq!(backlog(&store, &province, &peer), Some((3, false)));
    }
}
