//! Fuzzes the node's own JSON body parsers: offline household edits (the edit's shape and base
//! heads, then its merge patch applied to a base record), enrollment requests and responses,
//! login, and the `client_id` of a create. The first byte picks the parser, the rest is the body. Arbitrary input must give
//! a typed error, never a panic; whatever is accepted must pass its own validation and
//! round-trip (serialise, parse again, same value).
#![no_main]

use cunyun_platform::http::parse_login;
use cunyun_node::edits::{patched, OfflineEdit};
use cunyun_platform::certs::enroll::{decode_request, decode_response};
use cunyun_node::records::ClientId;
use cunyun_protocol::area::AreaCode;
use cunyun_protocol::household::{HouseholdPrivate, HouseholdProfile};
use cunyun_protocol::identity::NodeId;
use libfuzzer_sys::fuzz_target;

fn edit(body: &[u8]) {
    let Ok(edit) = serde_json::from_slice::<OfflineEdit>(body) else {
        return;
    };
    let Ok(checked) = edit.check() else {
        return;
    };
    assert!(checked.base_profile.len() <= OfflineEdit::MAX_HEADS);
    let village: AreaCode = "510116108203".parse().expect("a village code");
    let base = HouseholdProfile::new(village, 1, 1);
    let private = HouseholdPrivate::default();
    if let Ok((profile, private)) = patched(&base, &private, checked.patch, |_| {}) {
        assert_eq!(profile.village, base.village, "the village never changes");
        profile.validate().expect("an accepted profile validates");
        private
            .validate()
            .expect("an accepted private part validates");
    }
}

fn enroll_request(body: &[u8]) {
    if let Ok((req, _key)) = decode_request(body) {
        let again = serde_json::to_vec(&req).expect("a request serialises");
        let (back, _) = decode_request(&again).expect("a re-encoded request decodes");
        assert_eq!(back, req);
    }
}

fn enroll_response(body: &[u8]) {
    let node_id = NodeId([7; 16]);
    if let Ok(issued) = decode_response(body, node_id) {
        assert_eq!(
            issued.identity.node_id, node_id,
            "only an answer for the node asking"
        );
    }
}

fn login(body: &[u8]) {
    if let Ok(login) = parse_login(body) {
        assert!(login.name.len() <= cunyun_platform::http::MAX_LOGIN_FIELD_BYTES);
        let again = serde_json::to_vec(&login).expect("a login serialises");
        assert_eq!(parse_login(&again).ok(), Some(login));
    }
}

fn client_id(body: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    if let Ok(c) = ClientId::parse(&v) {
        assert_eq!(c.as_str().len(), 36, "a canonical UUID");
        let id = c.record_id('h');
        assert!(id.len() == 13 && id[1..].bytes().all(|b| b.is_ascii_hexdigit()));
        let again = ClientId::parse(&serde_json::Value::String(c.as_str().into()));
        assert_eq!(again.ok(), Some(c));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => edit(body),
        1 => enroll_request(body),
        2 => enroll_response(body),
        3 => login(body),
        _ => client_id(body),
    }
});
