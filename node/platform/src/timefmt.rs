//! Parsing the few time formats the API accepts in query strings, without a date library.
//!
//! Accepted: milliseconds since the Unix epoch (`1767225600000`), a date (`2026-01-01`, taken as
//! midnight China Standard Time, UTC+8), or a date-time with an explicit zone
//! (`2026-01-01T08:30:00+08:00`, `2026-01-01T00:30:00Z`).

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn num<T: std::str::FromStr>(s: &str, len: usize) -> Option<T> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// The civil date (year, month, day) of a day number since 1970-01-01 (inverse of
/// `days_from_civil`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The date in China Standard Time (UTC+8) of a moment given in ms since the Unix epoch.
pub fn cst_date(ms: u64) -> (i64, u32, u32) {
    let secs = (ms / 1000) as i64 + 8 * 3600;
    civil_from_days(secs.div_euclid(86_400))
}

/// Parses `YYYY-MM-DD` into (year, month, day), checking the day exists.
pub fn parse_date(s: &str) -> Option<(i64, u32, u32)> {
    let mut it = s.split('-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (num(y, 4)?, num(m, 2)?, num(d, 2)?);
    ((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)).then_some((y, m, d))
}

/// Parses a query-string time into milliseconds since the Unix epoch.
pub fn parse_time_ms(s: &str) -> Option<u64> {
    if let Some(ms) = num::<u64>(s, s.len()).filter(|_| s.len() >= 5) {
        return Some(ms);
    }
    const CST_OFFSET_S: i64 = 8 * 3600;
    let (date, rest) = match s.split_once('T') {
        Some((d, r)) => (d, Some(r)),
        None => (s, None),
    };
    let (y, m, d) = parse_date(date)?;
    let day_s = days_from_civil(y, m, d) * 86_400;
    let secs = match rest {
        None => day_s - CST_OFFSET_S,
        Some(r) => {
            let (clock, offset_s) = if let Some(c) = r.strip_suffix('Z') {
                (c, 0)
            } else {
                let pos = r.rfind(['+', '-'])?;
                let (c, off) = r.split_at(pos);
                let sign = if off.starts_with('-') { -1 } else { 1 };
                let (oh, om) = off[1..].split_once(':')?;
                let (oh, om): (i64, i64) = (num(oh, 2)?, num(om, 2)?);
                (c, sign * (oh * 3600 + om * 60))
            };
            let mut parts = clock.split(':');
            let (h, mi, sec) = (parts.next()?, parts.next()?, parts.next()?);
            let (h, mi, sec): (i64, i64, i64) = (num(h, 2)?, num(mi, 2)?, num(sec, 2)?);
            if h > 23 || mi > 59 || sec > 59 || parts.next().is_some() {
                return None;
            }
            day_s + h * 3600 + mi * 60 + sec - offset_s
        }
    };
    u64::try_from(secs).ok().map(|s| s * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(parse_time_ms("1767225600000"), Some(1_767_225_600_000));
        // 2026-01-01 00:00 CST is 2025-12-31 16:00 UTC.
        assert_eq!(parse_time_ms("2026-01-01"), Some(1_767_196_800_000));
        assert_eq!(
            parse_time_ms("2026-01-01T00:00:00Z"),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            parse_time_ms("2026-01-01T08:00:00+08:00"),
            Some(1_767_225_600_000)
        );
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Some(0));
        for bad in [
            "",
            "2026-02-30",
            "2026-13-01",
            "yesterday",
            "2026-01-01T25:00:00Z",
            "12",
        ] {
            assert_eq!(parse_time_ms(bad), None, "{bad}");
        }
        assert_eq!(parse_date("2024-02-29"), Some((2024, 2, 29)));
        assert_eq!(parse_date("2023-02-29"), None);
        // 2025-12-31 16:00 UTC is already 2026-01-01 in China.
        assert_eq!(cst_date(1_767_196_800_000), (2026, 1, 1));
        assert_eq!(cst_date(1_767_196_799_000), (2025, 12, 31));
        for days in [-1000i64, 0, 59, 11_016, 20_000, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
