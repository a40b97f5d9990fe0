//! cunyun-hub library.
