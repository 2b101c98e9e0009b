//! Wall-clock timestamps (microseconds since the Unix epoch) and their RFC 3339 wire form.
//!
//! Stores keep timestamps as integers so that they index and compare cheaply; the wire form is
//! the RFC 3339 text Replicate uses (`2023-08-16T18:57:08.360785Z`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, in microseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The current wall-clock time.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
    }

    /// From microseconds since the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Milliseconds since the epoch (the seeds' `createdAt`).
    pub const fn as_millis(self) -> i64 {
        self.0 / 1000
    }

    /// This time plus a duration, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    /// This time minus a duration, saturating.
    pub fn minus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// Parses RFC 3339 text (`2024-01-02T03:04:05Z`, with any offset and fraction).
    pub fn parse_rfc3339(text: &str) -> Result<Self, time::error::Parse> {
        let dt = OffsetDateTime::parse(text, &Rfc3339)?;
        let micros = dt.unix_timestamp_nanos() / 1000;
        Ok(Self(i64::try_from(micros).unwrap_or(i64::MAX)))
    }

    /// RFC 3339 in UTC with microseconds, as Replicate writes it.
    pub fn to_rfc3339(self) -> String {
        let Ok(dt) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000) else {
            return "1970-01-01T00:00:00.000000Z".to_owned();
        };
        let year = dt.year();
        if !(0..=9999).contains(&year) {
            return format!(
                "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second(),
                dt.microsecond()
            );
        }
        // This runs for every timestamp of every response, so it writes digits directly
        // instead of going through the formatting machinery.
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year.unsigned_abs());
        put(5, 2, u32::from(u8::from(dt.month())));
        put(8, 2, u32::from(dt.day()));
        put(11, 2, u32::from(dt.hour()));
        put(14, 2, u32::from(dt.minute()));
        put(17, 2, u32::from(dt.second()));
        put(20, 6, dt.microsecond());
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

/// Serialized as RFC 3339 text; deserialized from that text or from integer microseconds.
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr<'a> {
            Micros(i64),
            Text(std::borrow::Cow<'a, str>),
        }
        match Repr::deserialize(d)? {
            Repr::Micros(m) => Ok(Self(m)),
            Repr::Text(t) => Self::parse_rfc3339(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_microseconds() {
        let t = Timestamp::from_micros(1_692_212_228_360_785);
        assert_eq!(t.to_rfc3339(), "2023-08-16T18:57:08.360785Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
        assert_eq!(
            Timestamp::parse_rfc3339("2023-08-16T20:57:08.360785+02:00").unwrap(),
            t
        );
    }

    #[test]
    fn rfc3339_pads_every_field() {
        assert_eq!(Timestamp::EPOCH.to_rfc3339(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            Timestamp::from_micros(-1).to_rfc3339(),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            Timestamp::parse_rfc3339("0099-02-03T04:05:06.000007Z")
                .unwrap()
                .to_rfc3339(),
            "0099-02-03T04:05:06.000007Z"
        );
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_micros(10);
        assert_eq!(t.plus(Duration::from_micros(5)).as_micros(), 15);
        assert_eq!(t.since(Timestamp::from_micros(20)), Duration::ZERO);
        assert_eq!(
            Timestamp::from_micros(i64::MAX).plus(Duration::from_secs(1)),
            Timestamp::from_micros(i64::MAX)
        );
    }
}
