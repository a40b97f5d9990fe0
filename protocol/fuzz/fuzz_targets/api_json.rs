//! Fuzzes every JSON body parser of the node and hub APIs that lives in `cunyun-protocol`:
//! household profile and private part (create/update), local needs, content metadata, experts,
//! feedback and recommendation records. The first byte picks the parser, the rest is the body.
//! Arbitrary input must give a typed `FieldErrors`, never a panic; whatever parses must pass
//! its own `validate` (the parser never accepts what validation refuses) and must round-trip:
//! serialising it and parsing again gives the same value.
#![no_main]

use cunyun_protocol::expert::Expert;
use cunyun_protocol::feedback::Feedback;
use cunyun_protocol::fields::FieldErrors;
use cunyun_protocol::household::{HouseholdPrivate, HouseholdProfile};
use cunyun_protocol::library::ContentMeta;
use cunyun_protocol::need::LocalNeed;
use cunyun_protocol::rec::Rec;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde_json::Value;

fn check<T: Serialize + PartialEq + std::fmt::Debug>(
    value: &Value,
    parse: fn(&Value) -> Result<T, FieldErrors>,
    validate: fn(&T) -> Result<(), FieldErrors>,
) {
    match parse(value) {
        Ok(parsed) => {
            if let Err(e) = validate(&parsed) {
                panic!("parsed {parsed:?} but its validation refuses it: {e:?}");
            }
            let json = serde_json::to_value(&parsed).expect("a parsed value serialises");
            let again = parse(&json).expect("a serialised value parses");
            assert_eq!(again, parsed, "round trip");
        }
        Err(errors) => assert!(!errors.is_empty(), "an error lists at least one field"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    match which % 7 {
        0 => check(
            &value,
            HouseholdProfile::from_json,
            HouseholdProfile::validate,
        ),
        1 => check(
            &value,
            HouseholdPrivate::from_json,
            HouseholdPrivate::validate,
        ),
        2 => check(&value, LocalNeed::from_json, LocalNeed::validate),
        3 => check(&value, ContentMeta::from_json, ContentMeta::validate),
        4 => check(&value, Expert::from_json, Expert::validate),
        5 => check(&value, Feedback::from_json, Feedback::validate),
        _ => check(&value, Rec::from_json, Rec::validate),
    }
});
