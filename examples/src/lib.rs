//! cunyun-examples.
