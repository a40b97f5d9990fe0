//! Parsing the few time formats the API accepts in query strings (dates checked with the `time`
//! crate; the clock and China Standard Time dates are [`crate::clock`]'s).
//!
//! Accepted: milliseconds since the Unix epoch (`1767225600000`), a date (`2026-01-01`, taken as
//! midnight China Standard Time, UTC+8), or a date-time with an explicit zone
//! (`2026-01-01T08:30:00+08:00`, `2026-01-01T00:30:00Z`).

/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// The calendar date `y-m-d`, if it exists.
fn calendar_date(y: i64, m: u32, d: u32) -> Option<time::Date> {
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    time::Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?).ok()
}

fn num<T: std::str::FromStr>(s: &str, len: usize) -> Option<T> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Parses `YYYY-MM-DD` into (year, month, day), checking the day exists.
pub fn parse_date(s: &str) -> Option<(i64, u32, u32)> {
    let mut it = s.split('-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (num(y, 4)?, num(m, 2)?, num(d, 2)?);
    calendar_date(y, m, d).map(|_| (y, m, d))
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
    let day_s =
        (i64::from(calendar_date(y, m, d)?.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY) * 86_400;
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

/// An ISO 8601 week (`YYYY-Www`, as recommendations carry it) as people read it: the year, the
/// week number and the Monday-to-Sunday date range, e.g. `2026年第50周（12月7日—12月13日）`; a
/// date in another year than the week's carries its year (`2026年第1周（2025年12月29日—1月4日）`).
/// A week number the year does not have reads without the range; text that is no week is
/// returned unchanged.
pub fn week_zh(week: &str) -> String {
    let parsed = week.split_once("-W").and_then(|(y, w)| {
        let year: i32 = num(y, 4)?;
        let n: u8 = num(w, 2)?;
        (1..=53).contains(&n).then_some((year, n))
    });
    let Some((year, n)) = parsed else {
        return week.to_string();
    };
    let head = format!("{year}年第{n}周");
    let monday = time::Date::from_iso_week_date(year, n, time::Weekday::Monday);
    let sunday = time::Date::from_iso_week_date(year, n, time::Weekday::Sunday);
    let (Ok(monday), Ok(sunday)) = (monday, sunday) else {
        return head;
    };
    let day = |d: time::Date| {
        let md = format!("{}月{}日", u8::from(d.month()), d.day());
        if d.year() == year {
            md
        } else {
            format!("{}年{md}", d.year())
        }
    };
    format!("{head}（{}—{}）", day(monday), day(sunday))
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
    }

    #[test]
    fn weeks_read_in_chinese_with_their_dates() {
        assert_eq!(week_zh("2026-W50"), "2026年第50周（12月7日—12月13日）");
        assert_eq!(week_zh("2026-W16"), "2026年第16周（4月13日—4月19日）");
        assert_eq!(week_zh("2026-W01"), "2026年第1周（2025年12月29日—1月4日）");
        assert_eq!(week_zh("2026-W53"), "2026年第53周（12月28日—2027年1月3日）");
        assert_eq!(week_zh("2025-W53"), "2025年第53周", "2025 has 52 weeks");
        for odd in ["", "2026-W5", "2026-W00", "2026-W54", "本周", "2026W50"] {
            assert_eq!(week_zh(odd), odd);
        }
    }
}
