//! RFC 3339 timestamps as RFC 5424 uses them, to and from UTC microseconds.
//!
//! Hand-rolled rather than going through `time`: every message carries one
//! timestamp to parse and two to format, so this is on the hot path, and the
//! grammar is small and fixed-width.

/// A UTC calendar day: the archive partition below the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

const US_PER_SEC: i64 = 1_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// `0000-01-01T00:00:00.000000Z`: the first instant the record format can spell.
pub const MIN_US: i64 = -62_167_219_200 * US_PER_SEC;
/// `9999-12-31T23:59:59.999999Z`: the last.
pub const MAX_US: i64 = 253_402_300_800 * US_PER_SEC - 1;

/// Length of [`write_utc_us`] output: `2026-06-17T12:00:00.123456Z`.
pub const FORMATTED_LEN: usize = 27;

/// Parse an RFC 3339 timestamp (`2012-11-30T06:45:29+00:00`,
/// `2026-06-17T12:00:00.123456Z`, any offset, any number of fraction digits)
/// into microseconds since the Unix epoch, UTC.
///
/// Fraction digits past the sixth are truncated. A leap second (`:60`) is
/// accepted and lands on the first microsecond of the next minute. `None` for
/// anything else, including RFC 5424's NILVALUE `-` (the caller decides what
/// a missing timestamp means) and instants outside years 0000-9999.
pub fn parse_rfc3339_us(s: &[u8]) -> Option<i64> {
    // Shortest form: "YYYY-MM-DDTHH:MM:SSZ".
    if s.len() < 20 {
        return None;
    }
    let year = i64::from(digits2(s, 0)?) * 100 + i64::from(digits2(s, 2)?);
    let month = digits2(s, 5)?;
    let day = digits2(s, 8)?;
    let hour = digits2(s, 11)?;
    let minute = digits2(s, 14)?;
    let second = digits2(s, 17)?;
    if s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let mut i = 19;
    let mut frac_us: i64 = 0;
    if s[i] == b'.' {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            if i - start < 6 {
                frac_us = frac_us * 10 + i64::from(s[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..6 {
            frac_us *= 10;
        }
    }

    let offset_secs: i64 = match s.get(i) {
        Some(b'Z' | b'z') if i + 1 == s.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == s.len() && s[i + 3] == b':' => {
            let oh = digits2(s, i + 1)?;
            let om = digits2(s, i + 4)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = i64::from(oh) * 3600 + i64::from(om) * 60;
            if sign == b'-' { -off } else { off }
        }
        _ => return None,
    };

    let days = days_from_civil(year, month, day);
    let secs =
        days * SECS_PER_DAY + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
            - offset_secs;
    let us = secs * US_PER_SEC + frac_us;
    (MIN_US..=MAX_US).contains(&us).then_some(us)
}

/// Append `us` as `2026-06-17T12:00:00.123456Z` (always six fraction digits,
/// always `Z`). Values outside years 0000-9999 are clamped to that range.
pub fn write_utc_us(us: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&format_utc_us(us));
}

/// [`write_utc_us`] into a fixed array, for callers that cache the text.
pub fn format_utc_us(us: i64) -> [u8; FORMATTED_LEN] {
    let us = us.clamp(MIN_US, MAX_US);
    let secs = us.div_euclid(US_PER_SEC);
    let frac = us.rem_euclid(US_PER_SEC) as u32;
    let days = secs.div_euclid(SECS_PER_DAY);
    let sod = secs.rem_euclid(SECS_PER_DAY) as u32;
    let (year, month, day) = civil_from_days(days);
    // Clamping above keeps the year within 0..=9999.
    let year = year as u32;

    let mut b = *b"0000-00-00T00:00:00.000000Z";
    put2(&mut b, 0, year / 100);
    put2(&mut b, 2, year % 100);
    put2(&mut b, 5, u32::from(month));
    put2(&mut b, 8, u32::from(day));
    put2(&mut b, 11, sod / 3600);
    put2(&mut b, 14, sod / 60 % 60);
    put2(&mut b, 17, sod % 60);
    put2(&mut b, 20, frac / 10_000);
    put2(&mut b, 22, frac / 100 % 100);
    put2(&mut b, 24, frac % 100);
    b
}

/// The UTC calendar day `us` falls on: the archive partition.
pub fn utc_day(us: i64) -> Day {
    let us = us.clamp(MIN_US, MAX_US);
    let (year, month, day) = civil_from_days(us.div_euclid(US_PER_SEC * SECS_PER_DAY));
    Day { year, month, day }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
pub fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[inline]
fn digits2(s: &[u8], at: usize) -> Option<u8> {
    let (a, b) = (
        s.get(at)?.wrapping_sub(b'0'),
        s.get(at + 1)?.wrapping_sub(b'0'),
    );
    (a < 10 && b < 10).then(|| a * 10 + b)
}

#[inline]
fn put2(b: &mut [u8; FORMATTED_LEN], at: usize, v: u32) {
    b[at] = b'0' + (v / 10) as u8;
    b[at + 1] = b'0' + (v % 10) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fmt(us: i64) -> String {
        String::from_utf8(format_utc_us(us).to_vec()).expect("ascii")
    }

    fn parse(s: &str) -> Option<i64> {
        parse_rfc3339_us(s.as_bytes())
    }

    #[test]
    fn heroku_timestamps() {
        // Router and app lines carry microseconds and +00:00.
        let us = parse("2020-02-21T16:07:34.515030+00:00").expect("valid");
        assert_eq!(fmt(us), "2020-02-21T16:07:34.515030Z");
        // Platform lines (State changed ..., heroku-postgres) carry whole seconds.
        let us = parse("2012-11-30T06:45:29+00:00").expect("valid");
        assert_eq!(fmt(us), "2012-11-30T06:45:29.000000Z");
        assert_eq!(us, 1_354_257_929_000_000);
    }

    #[test]
    fn offsets_move_to_utc_and_can_cross_days() {
        assert_eq!(
            fmt(parse("2011-03-10T10:22:30-08:00").expect("valid")),
            "2011-03-10T18:22:30.000000Z"
        );
        assert_eq!(
            fmt(parse("2026-01-01T01:30:00.5+02:00").expect("valid")),
            "2025-12-31T23:30:00.500000Z"
        );
        assert_eq!(
            utc_day(parse("2026-01-01T01:30:00+02:00").expect("valid")),
            Day {
                year: 2025,
                month: 12,
                day: 31
            }
        );
        assert_eq!(
            fmt(parse("2026-06-17t12:00:00z").expect("lowercase is RFC 3339")),
            "2026-06-17T12:00:00.000000Z"
        );
    }

    #[test]
    fn fractions_are_scaled_and_truncated() {
        assert_eq!(
            fmt(parse("2026-06-17T12:00:00.1Z").expect("ok")),
            "2026-06-17T12:00:00.100000Z"
        );
        assert_eq!(
            fmt(parse("2026-06-17T12:00:00.123Z").expect("ok")),
            "2026-06-17T12:00:00.123000Z"
        );
        assert_eq!(
            fmt(parse("2026-06-17T12:00:00.123456789Z").expect("ok")),
            "2026-06-17T12:00:00.123456Z"
        );
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        for bad in [
            "-",
            "",
            "2026-06-17",
            "2026-06-17 12:00:00Z",
            "2026-06-17T12:00:00",
            "2026-06-17T12:00:00+0000",
            "2026-06-17T12:00:00.Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-06-17T24:00:00Z",
            "2026-06-17T12:60:00Z",
            "2026-06-17T12:00:61Z",
            "2026-06-17T12:00:00+24:00",
            "2026-06-17T12:00:00Zjunk",
            "Oct 11 22:14:15",
            "0000-01-01T00:00:00+00:01",
        ] {
            assert_eq!(parse(bad), None, "{bad:?} must not parse");
        }
        assert!(parse("2024-02-29T00:00:00Z").is_some(), "leap day");
        assert!(parse("2000-02-29T00:00:00Z").is_some(), "400-year leap day");
        assert!(parse("1900-02-29T00:00:00Z").is_none(), "100-year non-leap");
    }

    #[test]
    fn leap_second_rolls_into_next_minute() {
        assert_eq!(
            fmt(parse("2016-12-31T23:59:60Z").expect("leap second")),
            "2017-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn range_ends_and_clamping() {
        assert_eq!(parse("0000-01-01T00:00:00Z"), Some(MIN_US));
        assert_eq!(parse("9999-12-31T23:59:59.999999Z"), Some(MAX_US));
        assert_eq!(fmt(i64::MIN), "0000-01-01T00:00:00.000000Z");
        assert_eq!(fmt(i64::MAX), "9999-12-31T23:59:59.999999Z");
        assert_eq!(fmt(-1), "1969-12-31T23:59:59.999999Z");
    }

    proptest! {
        #[test]
        fn format_agrees_with_the_time_crate_and_parses_back(us in MIN_US..=MAX_US) {
            let ours = fmt(us);
            let dt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
                .expect("in range");
            let theirs = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                dt.year(), u8::from(dt.month()), dt.day(), dt.hour(), dt.minute(), dt.second(),
                dt.microsecond()
            );
            prop_assert_eq!(&ours, &theirs);
            prop_assert_eq!(parse(&ours), Some(us));
            let day = utc_day(us);
            prop_assert_eq!((day.year, day.month, day.day), (dt.year(), u8::from(dt.month()), dt.day()));
        }

        #[test]
        fn civil_round_trip(days in -800_000i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(i64::from(y), m, d), days);
        }

        #[test]
        fn never_panics(s in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_rfc3339_us(&s);
        }
    }
}
