//! Values between Rust and PostgreSQL: timestamps as `timestamptz`, durations as `interval`,
//! revisions and lease tokens as `bigint`, and a prediction as a row (real columns plus JSONB).
//!
//! The timestamp and interval codecs write PostgreSQL's binary forms directly (microseconds
//! since 2000-01-01, and `(microseconds, days, months)`), so nothing is rounded on the way.

use std::error::Error as StdError;
use std::time::Duration;

use augur_core::{LeaseToken, Prediction, Revision, Timestamp, Versioned};
use bytes::{BufMut, BytesMut};
use serde_json::{Map, Value};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::error::Error;

/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET: i64 = 946_684_800_000_000;
/// The earliest finite `timestamptz` (4714-11-24 BC), in PostgreSQL microseconds.
const PG_MIN: i64 = -211_813_488_000_000_000;
/// One past the latest finite `timestamptz` (294277-01-01), in PostgreSQL microseconds.
const PG_END: i64 = 9_223_371_331_200_000_000;
/// The longest interval added to `now()`: about 200,000 years, so the sum stays a finite
/// `timestamptz`. Longer leases are cut to it (they outlive everything anyway).
const MAX_INTERVAL_MICROS: i64 = 200_000 * 365 * 86_400 * 1_000_000;

/// A [`Timestamp`] as `timestamptz`. Every time up to the latest [`Timestamp`] (in 294247 AD,
/// a saturated "never") is a finite `timestamptz`; times before 4714 BC are stored as
/// `-infinity`. `±infinity` read back as the earliest and latest [`Timestamp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ts(pub(crate) Timestamp);

impl Ts {
    fn to_pg(self) -> i64 {
        match self.0.as_micros().checked_sub(PG_EPOCH_OFFSET) {
            Some(v) if v < PG_MIN => i64::MIN,
            Some(v) if v >= PG_END => i64::MAX,
            Some(v) => v,
            None => i64::MIN,
        }
    }

    fn from_pg(v: i64) -> Timestamp {
        match v {
            i64::MIN => Timestamp::from_micros(i64::MIN),
            i64::MAX => Timestamp::from_micros(i64::MAX),
            v => Timestamp::from_micros(v.saturating_add(PG_EPOCH_OFFSET)),
        }
    }
}

impl ToSql for Ts {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.put_i64(self.to_pg());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ || *ty == Type::TIMESTAMP
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Ts {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 8] = raw.try_into().map_err(|_| "a timestamp is not 8 bytes")?;
        Ok(Ts(Ts::from_pg(i64::from_be_bytes(bytes))))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ || *ty == Type::TIMESTAMP
    }
}

/// A [`Duration`] as an `interval` of microseconds only (no days or months, so it means the
/// same length whatever the time zone), capped at about 200,000 years.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Interval(pub(crate) Duration);

impl ToSql for Interval {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let micros = i64::try_from(self.0.as_micros())
            .unwrap_or(i64::MAX)
            .min(MAX_INTERVAL_MICROS);
        out.put_i64(micros);
        out.put_i32(0); // days
        out.put_i32(0); // months
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    to_sql_checked!();
}

/// A revision as `bigint`. A revision beyond `i64` cannot be stored, so it matches no row: -1
/// never does either.
pub(crate) fn revision_to_sql(revision: Revision) -> i64 {
    i64::try_from(revision.0).unwrap_or(-1)
}

/// A stored revision.
pub(crate) fn revision_from_sql(value: i64) -> Result<Revision, Error> {
    u64::try_from(value)
        .map(Revision)
        .map_err(|_| Error::decode("revision", format!("{value} is negative")))
}

/// A lease token as `bigint` (the same 64 bits).
pub(crate) fn token_to_sql(token: LeaseToken) -> i64 {
    token.0.cast_signed()
}

/// A stored attempt count.
pub(crate) fn attempts_from_sql(value: i64) -> Result<u32, Error> {
    u32::try_from(value)
        .map_err(|_| Error::decode("attempt count", format!("{value} is out of range")))
}

/// A count or limit as `bigint` (saturating).
pub(crate) fn sql_int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reads a column, turning a type mismatch or a bad value into [`Error::Decode`].
pub(crate) fn column<'a, T: FromSql<'a>>(
    row: &'a Row,
    index: usize,
    what: &'static str,
) -> Result<T, Error> {
    row.try_get(index).map_err(|e| Error::decode(what, e))
}

/// Parses a stored identifier.
pub(crate) fn parse_id<T>(
    what: &'static str,
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, augur_core::InvalidId>,
) -> Result<T, Error> {
    parse(text).map_err(|e| Error::decode(what, e))
}

/// A unit enum's serde name (`"pending"`, `"start"`) from its serialized form, for a `text`
/// column checked against the names: `name_of(serde_json::to_value(status))`.
pub(crate) fn name_of(value: Result<Value, serde_json::Error>) -> Result<String, Error> {
    match value.map_err(Error::Encode)? {
        Value::String(name) => Ok(name),
        other => Err(Error::Config(format!("{other} is not a name"))),
    }
}

/// Reads a unit enum from its serde name (see [`name_of`]):
/// `from_name("delivery status", text, serde_json::from_value)`.
pub(crate) fn from_name<T>(
    what: &'static str,
    name: String,
    parse: impl FnOnce(Value) -> Result<T, serde_json::Error>,
) -> Result<T, Error> {
    parse(Value::String(name)).map_err(|e| Error::decode(what, e))
}

/// The record fields stored in their own columns; everything else goes to `extra`.
const COLUMN_FIELDS: [&str; 19] = [
    "id",
    "owner",
    "model",
    "version",
    "status",
    "created_at",
    "started_at",
    "completed_at",
    "deadline",
    "expires_at",
    "data_removed",
    "attempts",
    "webhook",
    "error",
    "logs",
    "input",
    "output",
    "metrics",
    // Not a record field, but it must never be taken for one.
    "revision",
];

/// The columns of a prediction row, in the order [`PredictionRow::params`] gives them and
/// [`decode`] reads them (after the revision). Used verbatim in `SELECT`s.
pub(crate) const SELECT_COLUMNS: &str = "revision, id, owner, model, version, status, created_at, started_at, \
     completed_at, deadline, expires_at, data_removed, attempts, webhook, error, logs, input, \
     output, metrics, extra";

/// A prediction encoded for its row. Encoding happens once per write, before the transaction
/// starts.
#[derive(Debug)]
pub(crate) struct PredictionRow {
    id: String,
    owner: String,
    model: String,
    version: String,
    status: String,
    created_at: Ts,
    started_at: Option<Ts>,
    completed_at: Option<Ts>,
    deadline: Option<Ts>,
    expires_at: Option<Ts>,
    data_removed: bool,
    attempts: i64,
    webhook: Option<String>,
    error: Option<String>,
    logs: String,
    input: Value,
    output: Option<Value>,
    metrics: Value,
    extra: Value,
}

impl PredictionRow {
    /// Encodes a prediction: known fields to columns, the rest (as serde writes it) to `extra`.
    pub(crate) fn encode(p: &Prediction) -> Result<Self, Error> {
        let Value::Object(mut map) = serde_json::to_value(p).map_err(Error::Encode)? else {
            return Err(Error::Config(
                "a prediction did not serialize to an object".into(),
            ));
        };
        let mut take = |key: &str| map.remove(key).unwrap_or(Value::Null);
        let input = take("input");
        let output = match take("output") {
            Value::Null => None,
            value => Some(value),
        };
        let metrics = take("metrics");
        let status = match take("status") {
            Value::String(s) => s,
            other => other.to_string(),
        };
        for key in COLUMN_FIELDS {
            map.remove(key);
        }
        let mut row = Self {
            id: p.id.as_str().to_owned(),
            owner: p.owner.as_str().to_owned(),
            model: p.model.as_str().to_owned(),
            version: p.version.clone(),
            status,
            created_at: Ts(p.created_at),
            started_at: p.started_at.map(Ts),
            completed_at: p.completed_at.map(Ts),
            deadline: p.deadline.map(Ts),
            expires_at: p.expires_at.map(Ts),
            data_removed: p.data_removed,
            attempts: i64::from(p.attempts),
            webhook: p.webhook.clone(),
            error: p.error.clone(),
            logs: p.logs.clone(),
            input,
            output,
            metrics,
            extra: Value::Object(map),
        };
        if row.holds_nul() {
            row.escape_nul();
        }
        Ok(row)
    }

    /// Whether any text of the row holds U+0000, which PostgreSQL cannot store in `text` or
    /// JSONB.
    fn holds_nul(&self) -> bool {
        [&self.version, &self.logs]
            .into_iter()
            .chain(&self.webhook)
            .chain(&self.error)
            .any(|t| t.contains('\0'))
            || [&self.input, &self.metrics, &self.extra]
                .into_iter()
                .chain(&self.output)
                .any(json_holds_nul)
    }

    /// Escapes every text of the row (see [`escape`]) and marks the row as escaped, so that
    /// the rare record holding U+0000 is stored, and reads back, unchanged. Rows without it
    /// (all others) are stored as they are and cost nothing on reading.
    fn escape_nul(&mut self) {
        for text in [&mut self.version, &mut self.logs]
            .into_iter()
            .chain(&mut self.webhook)
            .chain(&mut self.error)
        {
            *text = escape(text);
        }
        for value in [&mut self.input, &mut self.metrics, &mut self.extra]
            .into_iter()
            .chain(&mut self.output)
        {
            map_json_text(value, &escape);
        }
        if let Value::Object(extra) = &mut self.extra {
            extra.insert(ESCAPED.into(), Value::Bool(true));
        }
    }

    /// The prediction's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The 19 column values, `id` first, in [`SELECT_COLUMNS`] order (without `revision`).
    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 19] {
        [
            &self.id,
            &self.owner,
            &self.model,
            &self.version,
            &self.status,
            &self.created_at,
            &self.started_at,
            &self.completed_at,
            &self.deadline,
            &self.expires_at,
            &self.data_removed,
            &self.attempts,
            &self.webhook,
            &self.error,
            &self.logs,
            &self.input,
            &self.output,
            &self.metrics,
            &self.extra,
        ]
    }
}

/// Decodes a row selected with [`SELECT_COLUMNS`] (starting at column `at`).
pub(crate) fn decode(row: &Row, at: usize) -> Result<Versioned<Prediction>, Error> {
    let revision = revision_from_sql(column(row, at, "revision")?)?;
    let mut map = match column::<Value>(row, at + 19, "extra")? {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let text = |i: usize, what: &'static str| -> Result<Value, Error> {
        Ok(Value::String(column::<String>(row, at + i, what)?))
    };
    let optional_text = |i: usize, what: &'static str| -> Result<Value, Error> {
        Ok(column::<Option<String>>(row, at + i, what)?.map_or(Value::Null, Value::String))
    };
    let time = |i: usize, what: &'static str| -> Result<Value, Error> {
        Ok(column::<Option<Ts>>(row, at + i, what)?
            .map_or(Value::Null, |t| Value::from(t.0.as_micros())))
    };
    map.insert("id".into(), text(1, "id")?);
    map.insert("owner".into(), text(2, "owner")?);
    map.insert("model".into(), text(3, "model")?);
    map.insert("version".into(), text(4, "version")?);
    map.insert("status".into(), text(5, "status")?);
    map.insert("created_at".into(), time(6, "created_at")?);
    map.insert("started_at".into(), time(7, "started_at")?);
    map.insert("completed_at".into(), time(8, "completed_at")?);
    map.insert("deadline".into(), time(9, "deadline")?);
    map.insert("expires_at".into(), time(10, "expires_at")?);
    map.insert(
        "data_removed".into(),
        Value::Bool(column(row, at + 11, "data_removed")?),
    );
    let attempts = attempts_from_sql(column(row, at + 12, "attempts")?)?;
    map.insert("attempts".into(), Value::from(attempts));
    map.insert("webhook".into(), optional_text(13, "webhook")?);
    map.insert("error".into(), optional_text(14, "error")?);
    map.insert("logs".into(), text(15, "logs")?);
    map.insert("input".into(), column::<Value>(row, at + 16, "input")?);
    map.insert(
        "output".into(),
        column::<Option<Value>>(row, at + 17, "output")?.unwrap_or(Value::Null),
    );
    map.insert("metrics".into(), column::<Value>(row, at + 18, "metrics")?);
    if map.remove(ESCAPED) == Some(Value::Bool(true)) {
        for value in map.values_mut() {
            map_json_text(value, &unescape);
        }
    }
    let value: Prediction =
        serde_json::from_value(Value::Object(map)).map_err(|e| Error::decode("prediction", e))?;
    Ok(Versioned { value, revision })
}

/// The `extra` key marking a row whose texts are escaped (see [`escape`]).
pub(crate) const ESCAPED: &str = "_augur_nul_escaped";
/// The escape character: a private-use code point.
const ESC: char = '\u{f8ff}';

/// Replaces U+0000 by `ESC 0` and `ESC` by `ESC ESC`.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\0' => out.extend([ESC, '0']),
            ESC => out.extend([ESC, ESC]),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`escape`].
pub(crate) fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, c == ESC) {
            (_, true) => match chars.next() {
                Some('0') => out.push('\0'),
                Some(other) => out.push(other),
                None => out.push(ESC),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// Whether any string of a JSON value, object keys included, holds U+0000.
pub(crate) fn json_holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_holds_nul),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains('\0') || json_holds_nul(v)),
        _ => false,
    }
}

/// Applies `f` to every string of a JSON value, object keys included.
pub(crate) fn map_json_text(value: &mut Value, f: &impl Fn(&str) -> String) {
    match value {
        Value::String(s) => *s = f(s),
        Value::Array(items) => items.iter_mut().for_each(|v| map_json_text(v, f)),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut v) in old {
                map_json_text(&mut v, f);
                map.insert(f(&k), v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_map_onto_postgres_range() {
        let t = Timestamp::from_micros(1_692_212_228_360_785);
        assert_eq!(Ts::from_pg(Ts(t).to_pg()), t);
        assert_eq!(Ts(Timestamp::EPOCH).to_pg(), -PG_EPOCH_OFFSET);
        // The latest Timestamp (a saturated "never", in 294247) is a finite timestamptz.
        let max = Timestamp::from_micros(i64::MAX);
        assert!(Ts(max).to_pg() < PG_END);
        assert_eq!(Ts::from_pg(Ts(max).to_pg()), max);
        assert_eq!(Ts::from_pg(i64::MAX), max, "infinity");
        let min = Timestamp::from_micros(i64::MIN);
        assert_eq!(Ts(min).to_pg(), i64::MIN);
        assert_eq!(Ts::from_pg(i64::MIN), min);
    }

    #[test]
    fn escaping_round_trips() {
        for text in [
            "",
            "plain",
            "a\0b",
            "\u{f8ff}",
            "\u{f8ff}0",
            "\0\u{f8ff}\0",
            "é\u{f8ff}x",
        ] {
            let escaped = escape(text);
            assert!(!escaped.contains('\0'), "{escaped:?}");
            assert_eq!(unescape(&escaped), text);
        }
    }

    #[test]
    fn extra_holds_every_field_without_a_column() {
        let p = Prediction::new(
            augur_core::PredictionId::generate(),
            augur_core::AccountId::admin(),
            augur_core::ModelName::parse("a/b").unwrap(),
            "v".into(),
            serde_json::json!({"x": 1}),
        );
        let row = PredictionRow::encode(&p).unwrap();
        let Value::Object(extra) = &row.extra else {
            panic!("extra is an object")
        };
        let mut keys: Vec<_> = extra.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["stream_token", "webhook_events_filter"]);
        assert_eq!(row.status, "starting");
    }
}
