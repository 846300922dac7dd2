//! Server timestamps: microseconds since the Unix epoch, shown as RFC 3339 UTC with
//! exactly six fractional digits (`2026-11-23T14:12:00.123456Z`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A point in time with microsecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Timestamp(i64::try_from(nanos / 1_000).unwrap_or(i64::MAX))
    }

    /// Microseconds since the epoch.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (any offset, any precision; truncated to microseconds).
    pub fn parse(s: &str) -> Option<Timestamp> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        i64::try_from(t.unix_timestamp_nanos() / 1_000)
            .ok()
            .map(Timestamp)
    }
}

/// Length of the RFC 3339 form of a time in years 0–9999 (`2026-11-23T14:12:00.123456Z`).
pub(crate) const RFC3339_LEN: usize = 27;

impl Timestamp {
    /// The RFC 3339 form written into `buf` digit by digit, for a time in years
    /// 0–9999 (every time arbor stamps); None for any other, which [`fmt::Display`]
    /// writes the general way. Rendering events (the API, SSE, the sinks) formats a
    /// timestamp each, and `core::fmt`'s padding machinery was most of that cost.
    pub(crate) fn rfc3339(self, buf: &mut [u8; RFC3339_LEN]) -> Option<&str> {
        let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000).ok()?;
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        let fields: [(usize, usize, u32); 7] = [
            (0, 4, year),
            (5, 2, u32::from(u8::from(t.month()))),
            (8, 2, u32::from(t.day())),
            (11, 2, u32::from(t.hour())),
            (14, 2, u32::from(t.minute())),
            (17, 2, u32::from(t.second())),
            (20, 6, t.microsecond()),
        ];
        *buf = *b"0000-00-00T00:00:00.000000Z";
        for (at, width, mut v) in fields {
            for b in buf[at..at + width].iter_mut().rev() {
                // `v % 10` is a digit.
                *b = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        std::str::from_utf8(buf).ok()
    }

    /// The general form: any year `time` can hold, or a marker for what it cannot.
    fn fmt_general(self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i128::from(self.0) * 1_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.microsecond()
            ),
            Err(_) => write!(f, "invalid-timestamp({})", self.0),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; RFC3339_LEN];
        match self.rfc3339(&mut buf) {
            Some(s) => f.write_str(s),
            None => self.fmt_general(f),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let mut buf = [0u8; RFC3339_LEN];
            match self.rfc3339(&mut buf) {
                Some(text) => s.serialize_str(text),
                None => s.collect_str(self),
            }
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Timestamp::parse(&s)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid RFC 3339 time: {s}")))
        } else {
            i64::deserialize(d).map(Timestamp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_six_digits_and_parses_back() {
        let t = Timestamp(1_795_000_000_000_001);
        let s = t.to_string();
        assert_eq!(s.len(), "2026-11-18T08:26:40.000001Z".len());
        assert!(s.ends_with(".000001Z"), "{s}");
        assert_eq!(Timestamp::parse(&s), Some(t));
    }

    /// The general form, for comparison.
    struct General(Timestamp);

    impl fmt::Display for General {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.fmt_general(f)
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_form_is_the_general_one(micros in proptest::prelude::any::<i64>()) {
            let t = Timestamp(micros);
            proptest::prop_assert_eq!(t.to_string(), General(t).to_string());
            proptest::prop_assert_eq!(
                serde_json::to_string(&t).ok(),
                serde_json::to_string(&General(t).to_string()).ok()
            );
        }

        #[test]
        fn the_fast_form_is_the_general_one_in_years_0_to_9999(
            micros in -62_167_219_200_000_000i64..253_402_300_800_000_000
        ) {
            let t = Timestamp(micros);
            let mut buf = [0u8; RFC3339_LEN];
            proptest::prop_assert!(t.rfc3339(&mut buf).is_some());
            proptest::prop_assert_eq!(t.to_string(), General(t).to_string());
        }
    }

    #[test]
    fn the_edges_of_the_fast_form() {
        // 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z are fast; a microsecond
        // outside either is not, and is still written as before.
        for (micros, fast) in [
            (-62_167_219_200_000_000i64, true),
            (-62_167_219_200_000_001, false),
            (253_402_300_799_999_999, true),
            (253_402_300_800_000_000, false),
            (0, true),
            (i64::MIN, false),
        ] {
            let t = Timestamp(micros);
            let mut buf = [0u8; RFC3339_LEN];
            assert_eq!(t.rfc3339(&mut buf).is_some(), fast, "{micros}");
            assert_eq!(t.to_string(), General(t).to_string(), "{micros}");
        }
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn parses_offsets_and_rejects_garbage() {
        let a = Timestamp::parse("2026-01-01T01:00:00+01:00");
        let b = Timestamp::parse("2026-01-01T00:00:00Z");
        assert_eq!(a, b);
        assert_eq!(Timestamp::parse("yesterday"), None);
    }
}
