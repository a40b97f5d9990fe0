//! cunyun-hub binary.
fn main() {}
