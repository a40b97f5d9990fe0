//! Who may sync which document over `/automerge`: the share policy, as a pure function of a
//! [`Principal`] and a [`DocKey`], and the one place a connection's principal comes from
//! ([`PrincipalResolver`]).
//!
//! | principal | may read | may write |
//! |---|---|---|
//! | [`Principal::Anonymous`] | `content` (public science content) only | nothing |
//! | [`Principal::Cadre`] of village V | `hh`, `hp`, `need`, `fb`, `rec`, `match` of V; `content`; `expert` of an area containing V | `hh`, `hp`, `need` of V |
//! | [`Principal::Operator`] of scope S | every document whose area is in S | nothing |
//!
//! So an anonymous peer never gets a household (`hh`) or its private part (`hp`), nor anything
//! else about a person, and a cadre never sees another village's documents. Writes are limited to
//! the kinds whose documents the node can validate (`protocol`'s household and need views); a
//! refused document is answered with `doc-unavailable`, exactly as if it did not exist, so the
//! answer does not reveal whether it does.

use axum::http::HeaderMap;
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::key::{DocKey, Kind};

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Nobody logged in.
    Anonymous,
    /// A village cadre.
    Cadre {
        /// The cadre's account (for logs).
        account: String,
        /// The village the cadre works for.
        village: AreaCode,
    },
    /// A county (or higher) operator: reads everything in scope, writes nothing here.
    Operator {
        /// The operator's account (for logs).
        account: String,
        /// The areas the operator oversees.
        scope: AreaScope,
    },
}

impl Principal {
    /// The account name for logs (`anonymous` when nobody is logged in).
    pub fn account(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::Cadre { account, .. } | Principal::Operator { account, .. } => account,
        }
    }
}

/// The principal of a logged-in account: a cadre of their village; a county or hub operator
/// reads their scope; an admin (who manages accounts, not records) is anonymous here.
pub fn principal_of(user: cunyun_platform::accounts::User) -> Principal {
    use cunyun_platform::accounts::Role;
    match user.role {
        Role::Cadre => Principal::Cadre {
            account: user.name,
            village: user.scope,
        },
        Role::CountyOperator | Role::HubOperator => Principal::Operator {
            scope: user.scope.scope(),
            account: user.name,
        },
        Role::Admin => Principal::Anonymous,
    }
}

/// What a principal may do with one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Nothing: the document is reported unavailable.
    None,
    /// Sync it down; changes the peer sends are refused.
    Read,
    /// Sync both ways (changes are validated before they are stored).
    ReadWrite,
}

/// The share policy (see the module docs for the table).
pub fn access(principal: &Principal, key: &DocKey) -> Access {
    match principal {
        Principal::Anonymous => match key.kind() {
            Kind::Content => Access::Read,
            _ => Access::None,
        },
        Principal::Cadre { village, .. } => match key.kind() {
            Kind::Content => Access::Read,
            Kind::Expert if key.area().contains(village) => Access::Read,
            Kind::Hh | Kind::Hp | Kind::Need if key.area() == village => Access::ReadWrite,
            Kind::Fb | Kind::Rec | Kind::Match if key.area() == village => Access::Read,
            _ => Access::None,
        },
        Principal::Operator { scope, .. } => {
            if scope.contains(key.area()) {
                Access::Read
            } else {
                Access::None
            }
        }
    }
}

/// What a WebSocket upgrade request carries that may identify its user.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The request headers (`Cookie`, `Authorization`). Browsers send the site's cookies with a
    /// WebSocket upgrade, but cannot set other headers on it.
    pub headers: &'a HeaderMap,
    /// The `token` query parameter of the URL (`/automerge?token=…`), for clients that can only
    /// choose the URL (the stock `WebSocketClientAdapter`).
    pub query_token: Option<&'a str>,
}

impl Credentials<'_> {
    /// The bearer token: the `token` query parameter, else `Authorization: Bearer …`.
    pub fn bearer(&self) -> Option<&str> {
        self.query_token.or_else(|| {
            self.headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
        })
    }

    /// The value of cookie `name`, if the request carries it.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// Turns a connection's credentials into a principal. The node's account sessions implement
/// this; a request with no or unknown credentials is [`Principal::Anonymous`].
pub trait PrincipalResolver: Send + Sync {
    /// The principal these credentials belong to.
    fn resolve(&self, credentials: &Credentials<'_>) -> Principal;
}

/// The resolver of a node without accounts: everyone is anonymous.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAccounts;

impl PrincipalResolver for NoAccounts {
    fn resolve(&self, _credentials: &Credentials<'_>) -> Principal {
        Principal::Anonymous
    }
}

/// A fixed table of bearer tokens (for tests and for a node run before accounts exist).
#[derive(Debug, Clone, Default)]
pub struct StaticTokens(pub Vec<(String, Principal)>);

impl PrincipalResolver for StaticTokens {
    fn resolve(&self, credentials: &Credentials<'_>) -> Principal {
        let Some(token) = credentials.bearer() else {
            return Principal::Anonymous;
        };
        self.0
            .iter()
            .find(|(t, _)| constant_time_eq(t.as_bytes(), token.as_bytes()))
            .map_or(Principal::Anonymous, |(_, p)| p.clone())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cunyun_protocol::key::Kind;

    const V: &str = "510122104201";
    const OTHER: &str = "510122104202";

    fn key(area: &str, kind: Kind) -> DocKey {
        DocKey::new(AreaCode::parse(area).unwrap(), kind, "x1").unwrap()
    }

    fn cadre() -> Principal {
        Principal::Cadre {
            account: "cadre1".into(),
            village: AreaCode::parse(V).unwrap(),
        }
    }

    #[test]
    fn anonymous_gets_no_household_nor_anything_personal() {
        for kind in Kind::ALL {
            let a = access(&Principal::Anonymous, &key(V, kind));
            if kind == Kind::Content {
                assert_eq!(a, Access::Read);
            } else {
                assert_eq!(a, Access::None, "{kind}");
            }
        }
        assert_eq!(
            access(&Principal::Anonymous, &key("510000000000", Kind::Expert)),
            Access::None
        );
    }

    #[test]
    fn a_cadre_sees_only_their_village() {
        let c = cadre();
        assert_eq!(access(&c, &key(V, Kind::Hh)), Access::ReadWrite);
        assert_eq!(access(&c, &key(V, Kind::Hp)), Access::ReadWrite);
        assert_eq!(access(&c, &key(V, Kind::Need)), Access::ReadWrite);
        assert_eq!(access(&c, &key(V, Kind::Rec)), Access::Read);
        assert_eq!(access(&c, &key(V, Kind::Fb)), Access::Read);
        for kind in [
            Kind::Hh,
            Kind::Hp,
            Kind::Need,
            Kind::Rec,
            Kind::Fb,
            Kind::Match,
        ] {
            assert_eq!(access(&c, &key(OTHER, kind)), Access::None, "{kind}");
        }
        // Province content and an expert of the county: readable; an expert elsewhere: not.
        assert_eq!(
            access(&c, &key("510000000000", Kind::Content)),
            Access::Read
        );
        assert_eq!(access(&c, &key("510122000000", Kind::Expert)), Access::Read);
        assert_eq!(access(&c, &key("510123000000", Kind::Expert)), Access::None);
    }

    #[test]
    fn an_operator_reads_its_scope_and_writes_nothing() {
        let op = Principal::Operator {
            account: "op".into(),
            scope: AreaScope::parse("510122").unwrap(),
        };
        assert_eq!(access(&op, &key(V, Kind::Hp)), Access::Read);
        assert_eq!(access(&op, &key("510123104201", Kind::Hh)), Access::None);
    }

    #[test]
    fn credentials_and_static_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert("cookie", "a=1; session=abc; b=2".parse().unwrap());
        headers.insert("authorization", "Bearer tok-1".parse().unwrap());
        let c = Credentials {
            headers: &headers,
            query_token: None,
        };
        assert_eq!(c.cookie("session"), Some("abc"));
        assert_eq!(c.cookie("missing"), None);
        assert_eq!(c.bearer(), Some("tok-1"));
        let tokens = StaticTokens(vec![("tok-1".into(), cadre())]);
        assert_eq!(tokens.resolve(&c), cadre());
        let q = Credentials {
            headers: &headers,
            query_token: Some("wrong"),
        };
        assert_eq!(tokens.resolve(&q), Principal::Anonymous);
        assert_eq!(NoAccounts.resolve(&c), Principal::Anonymous);
        let empty = HeaderMap::new();
        let none = Credentials {
            headers: &empty,
            query_token: None,
        };
        assert_eq!(tokens.resolve(&none), Principal::Anonymous);
    }

    #[test]
    fn accounts_map_to_principals_by_role() {
        use cunyun_platform::accounts::{Role, User};
        let user = |role, scope: &str| User {
            name: "u".into(),
            role,
            scope: AreaCode::parse(scope).unwrap(),
        };
        let village_b = key("510122104202", Kind::Hh);
        let cadre_a = principal_of(user(Role::Cadre, V));
        assert_eq!(access(&cadre_a, &key(V, Kind::Hh)), Access::ReadWrite);
        assert_eq!(access(&cadre_a, &village_b), Access::None);
        let county = principal_of(user(Role::CountyOperator, "510122000000"));
        assert_eq!(access(&county, &village_b), Access::Read);
        assert_eq!(
            access(&county, &key("510123104202", Kind::Hh)),
            Access::None
        );
        let admin = principal_of(user(Role::Admin, "510122000000"));
        assert_eq!(access(&admin, &village_b), Access::None);
    }
}
