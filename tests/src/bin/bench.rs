//! The benchmark runner: `cargo run --release -p cunyun-tests --bin bench -- [NAME]`.
//!
//! With no name it runs every benchmark. Progress goes to stderr, one JSON object per metric to
//! stdout.

use anyhow::bail;

const BENCHES: &[&str] = &[
    "store", "sync", "gossip", "transfer", "match", "webapp", "amrepo",
];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<&str> = if args.is_empty() {
        BENCHES.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for name in names {
        match name {
            "store" => cunyun_tests::bench::store::run()?,
            "sync" => cunyun_tests::bench::sync::run()?,
            "gossip" => cunyun_tests::bench::gossip::run()?,
            "transfer" => cunyun_tests::bench::transfer::run()?,
            "match" => cunyun_tests::bench::matching::run()?,
            "webapp" => cunyun_tests::bench::webapp::run()?,
            "amrepo" => cunyun_tests::bench::amrepo::run()?,
            other => bail!("unknown benchmark {other:?}; known: {}", BENCHES.join(", ")),
        }
    }
    Ok(())
}
