//! The wall clock, read in one place: milliseconds since the Unix epoch.

/// Milliseconds since the Unix epoch, now (0 if the clock reads before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
