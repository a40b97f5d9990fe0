//! What a page shows for a place and for a sync peer: names from the national gazetteer
//! ([`cunyun_protocol::gazetteer`]), never a bare area code, node id or role code. The status
//! page, the overview (`/api/v1/coverage`: `place`, `place_label`) and the sync page
//! (`/api/v1/sync`: each peer's `title`, `role_name`, `place`) take their text from here.

use cunyun_protocol::area::AreaScope;
use cunyun_protocol::gazetteer::sichuan;
use cunyun_protocol::key::Role;
use serde_json::{json, Value};

/// The gazetteer's label of `scope` (`双流区 › 彭镇 › 岷江村`; `<code>（未知地区）` when unknown).
pub fn label(scope: &AreaScope) -> String {
    sichuan().scope_label(scope)
}

/// The division's own short name (`岷江村`, `双流区`), for headings.
pub fn own_name(scope: &AreaScope) -> String {
    sichuan().own_name(scope)
}

/// What a peer is, for a page: its role in Chinese and its place, e.g. `县级节点 · 双流区`
/// (just the role when its scope is not known yet).
pub fn peer_title(role: Option<Role>, scope: Option<&AreaScope>) -> String {
    let role = role.map_or("其他节点", Role::zh_name);
    match scope {
        Some(s) => format!("{role} · {}", own_name(s)),
        None => role.to_string(),
    }
}

/// Adds to every peer of a serialised sync status (`{"peers": [{"role", "scope", …}]}`) what a
/// page shows for it: `title` ([`peer_title`]), `role_name` and `place` ([`label`] of its scope,
/// `null` when unknown). Peers are otherwise left as they are.
pub fn name_peers(status: &mut Value) {
    let Some(peers) = status.get_mut("peers").and_then(Value::as_array_mut) else {
        return;
    };
    for p in peers {
        let role = p["role"].as_str().and_then(Role::parse);
        let scope = p["scope"].as_str().and_then(|s| AreaScope::parse(s).ok());
        p["title"] = json!(peer_title(role, scope.as_ref()));
        p["role_name"] = json!(role.map_or("其他节点", Role::zh_name));
        p["place"] = json!(scope.as_ref().map(label));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_read_as_role_and_place() {
        let mut status = json!({"peers": [
            {"node_id": "47a3132f0000", "role": "county", "scope": "510116"},
            {"node_id": "9b", "role": "village", "scope": "510116108204"},
            {"node_id": "c1", "role": null, "scope": null},
            {"node_id": "d2", "role": "hub", "scope": "51"},
            {"node_id": "e3", "role": "village", "scope": "511424102999"},
        ]});
        name_peers(&mut status);
        let titles: Vec<&str> = status["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["title"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            titles,
            [
                "县级节点 · 双流区",
                "村级节点 · 永和村",
                "其他节点",
                "省级枢纽 · 四川省",
                "村级节点 · 511424102999（未知地区）",
            ]
        );
        assert_eq!(status["peers"][0]["place"], "成都市 › 双流区");
        assert_eq!(status["peers"][0]["role_name"], "县级节点");
        assert_eq!(status["peers"][2]["place"], Value::Null);
        assert_eq!(status["peers"][0]["node_id"], "47a3132f0000", "kept");
    }

    #[test]
    fn the_development_village_is_named() {
        let v = AreaScope::parse("510116108203").expect("scope");
        assert_eq!(label(&v), "双流区 › 彭镇 › 岷江村");
        assert_eq!(own_name(&v), "岷江村");
    }
}
