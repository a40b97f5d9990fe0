//! The wall clock and the calendar, read in one place: milliseconds since the Unix epoch, and
//! the civil date and time in China Standard Time (UTC+8), on the `time` crate.

use cunyun_protocol::fields::Date;
use time::{OffsetDateTime, UtcOffset};

/// China Standard Time, UTC+8 (no daylight saving).
const CST: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(offset) => offset,
    Err(_) => UtcOffset::UTC,
};

/// Milliseconds since the Unix epoch, now (0 if the clock reads before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The moment `ms` after the Unix epoch in China Standard Time (`None` past the year 9999).
pub fn cst_datetime(ms: u64) -> Option<OffsetDateTime> {
    let secs = i64::try_from(ms / 1000).ok()?;
    Some(
        OffsetDateTime::from_unix_timestamp(secs)
            .ok()?
            .to_offset(CST),
    )
}

/// The date in China Standard Time of the moment `ms` after the Unix epoch, as a record date
/// (`None` outside the years records accept).
pub fn cst_date(ms: u64) -> Option<Date> {
    let t = cst_datetime(ms)?;
    Date::new(u16::try_from(t.year()).ok()?, u8::from(t.month()), t.day())
}

/// Today in China Standard Time (`None` when the machine's clock is far outside the years
/// records accept).
pub fn today_cst() -> Option<Date> {
    cst_date(now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn china_standard_time_dates() {
        // 2025-12-31 16:00 UTC is already 2026-01-01 in China.
        assert_eq!(cst_date(1_767_196_800_000), Date::new(2026, 1, 1));
        assert_eq!(cst_date(1_767_196_799_000), Date::new(2025, 12, 31));
        let t = cst_datetime(1_767_196_799_000).expect("in range");
        assert_eq!((t.hour(), t.minute(), t.second()), (23, 59, 59));
        assert_eq!(cst_datetime(u64::MAX), None);
        assert_eq!(cst_date(0), Date::new(1970, 1, 1));
    }
}
