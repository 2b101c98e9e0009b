//! Values between Rust and PostgreSQL: timestamps as `timestamptz`, durations as `interval`,
//! revisions, sequence numbers and lease tokens as `bigint`, records and queue items as rows,
//! attempts as JSONB, and the escaping of U+0000, which PostgreSQL cannot store in text.
//!
//! The timestamp and interval codecs write PostgreSQL's binary forms directly (microseconds
//! since 2000-01-01, and `(microseconds, days, months)`), so nothing is rounded on the way.

use std::error::Error as StdError;
use std::time::Duration;

use augur_core::store::{
    Attempt, Item, ItemStatus, Key, Kind, Lane, OnExpiry, Partition, Record, Stored,
};
use augur_core::{AccountId, LeaseToken, Revision, Timestamp};
use bytes::{BufMut, BytesMut};
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::error::Error;

/// A statement parameter.
pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

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

/// A revision (or a seq) as `bigint`. One beyond `i64` cannot be stored, so it matches no row:
/// -1 never does either.
pub(crate) fn u64_to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(-1)
}

/// A revision as `bigint` (see [`u64_to_sql`]).
pub(crate) fn revision_to_sql(revision: Revision) -> i64 {
    u64_to_sql(revision.0)
}

/// A stored revision.
pub(crate) fn revision_from_sql(value: i64) -> Result<Revision, Error> {
    u64::try_from(value)
        .map(Revision)
        .map_err(|_| Error::decode("revision", format!("{value} is negative")))
}

/// A stored count or sequence number.
pub(crate) fn u64_from_sql(what: &'static str, value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::decode(what, format!("{value} is negative")))
}

/// A lease token as `bigint` (the same 64 bits).
pub(crate) fn token_to_sql(token: LeaseToken) -> i64 {
    token.0.cast_signed()
}

/// A stored lease token.
pub(crate) fn token_from_sql(value: i64) -> LeaseToken {
    LeaseToken(value.cast_unsigned())
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

/// A stored kind name.
pub(crate) fn kind_from_sql(name: &str) -> Result<Kind, Error> {
    Kind::parse(name).ok_or_else(|| Error::decode("record kind", format!("unknown kind {name:?}")))
}

/// A stored lane name.
pub(crate) fn lane_from_sql(name: &str) -> Result<Lane, Error> {
    Lane::parse(name).ok_or_else(|| Error::decode("lane", format!("unknown lane {name:?}")))
}

/// A stored partition.
pub(crate) fn partition_from_sql(value: i16) -> Result<Partition, Error> {
    u8::try_from(value)
        .map(Partition)
        .map_err(|_| Error::decode("partition", format!("{value} is out of range")))
}

/// A stored account id.
pub(crate) fn account_from_sql(text: &str) -> Result<AccountId, Error> {
    AccountId::parse(text).map_err(|e| Error::decode("account id", e))
}

/// The key `(kind, id, partition)` stored in three columns from `at`.
pub(crate) fn key_from_row(row: &Row, at: usize) -> Result<Key, Error> {
    Ok(Key {
        kind: kind_from_sql(&column::<String>(row, at, "kind")?)?,
        id: column(row, at + 1, "id")?,
        partition: partition_from_sql(column(row, at + 2, "partition")?)?,
    })
}

/// A record's columns, in [`RECORD_COLUMNS`] order (without the revision), borrowed from the
/// record being written. The two columns only retention reads are derived here from the
/// kind's [`Kind::on_expiry`]: `sweep_at` (when retention still has to act) and `gone_at` (when
/// a record of a kind that retention deletes reads as absent).
#[derive(Debug)]
pub(crate) struct RecordRow<'a> {
    kind: &'static str,
    id: &'a str,
    partition: i16,
    owner: &'a str,
    created_at: Ts,
    status: Option<&'a str>,
    parent: Option<&'a str>,
    expires_at: Option<Ts>,
    data_removed: bool,
    sweep_at: Option<Ts>,
    gone_at: Option<Ts>,
    body: &'a str,
    data: Option<&'a str>,
}

impl<'a> RecordRow<'a> {
    /// The row of `record`; refuses texts PostgreSQL cannot store.
    pub(crate) fn new(record: &'a Record) -> Result<Self, Error> {
        let texts = [
            ("a record id", Some(record.key.id.as_str())),
            ("a record status", record.status.as_deref()),
            ("a record parent", record.parent.as_deref()),
            ("a record body", Some(record.body.as_str())),
            ("a record's data", record.data.as_deref()),
        ];
        for (what, text) in texts {
            storable(what, text.unwrap_or_default())?;
        }
        let expires_at = record.expires_at.map(Ts);
        let (sweep_at, gone_at) = match record.key.kind.on_expiry() {
            OnExpiry::RemoveData => (expires_at.filter(|_| !record.data_removed), None),
            OnExpiry::Delete => (expires_at, expires_at),
        };
        Ok(Self {
            kind: record.key.kind.as_str(),
            id: &record.key.id,
            partition: i16::from(record.key.partition.0),
            owner: record.owner.as_str(),
            created_at: Ts(record.created_at),
            status: record.status.as_deref(),
            parent: record.parent.as_deref(),
            expires_at,
            data_removed: record.data_removed,
            sweep_at,
            gone_at,
            body: &record.body,
            data: record.data.as_deref(),
        })
    }

    /// The 13 column values (`$1` … `$13` of the record statements).
    pub(crate) fn params(&self) -> [Param<'_>; 13] {
        [
            &self.kind,
            &self.id,
            &self.partition,
            &self.owner,
            &self.created_at,
            &self.status,
            &self.parent,
            &self.expires_at,
            &self.data_removed,
            &self.sweep_at,
            &self.gone_at,
            &self.body,
            &self.data,
        ]
    }
}

/// Records to insert in one statement ([`crate::sql::INSERT_RECORDS`]): each column an
/// array, and each record's operation index (for the refusal).
#[derive(Debug, Default)]
pub(crate) struct RecordRows<'a> {
    kind: Vec<&'static str>,
    id: Vec<&'a str>,
    partition: Vec<i16>,
    owner: Vec<&'a str>,
    created_at: Vec<Ts>,
    status: Vec<Option<&'a str>>,
    parent: Vec<Option<&'a str>>,
    expires_at: Vec<Option<Ts>>,
    data_removed: Vec<bool>,
    sweep_at: Vec<Option<Ts>>,
    gone_at: Vec<Option<Ts>>,
    body: Vec<&'a str>,
    data: Vec<Option<&'a str>>,
    index: Vec<i32>,
}

impl<'a> RecordRows<'a> {
    pub(crate) fn push(&mut self, row: &RecordRow<'a>, index: i32) {
        self.kind.push(row.kind);
        self.id.push(row.id);
        self.partition.push(row.partition);
        self.owner.push(row.owner);
        self.created_at.push(row.created_at);
        self.status.push(row.status);
        self.parent.push(row.parent);
        self.expires_at.push(row.expires_at);
        self.data_removed.push(row.data_removed);
        self.sweep_at.push(row.sweep_at);
        self.gone_at.push(row.gone_at);
        self.body.push(row.body);
        self.data.push(row.data);
        self.index.push(index);
    }

    pub(crate) fn len(&self) -> usize {
        self.id.len()
    }

    /// The 14 arrays (`$1` … `$14` of [`crate::sql::INSERT_RECORDS`]).
    pub(crate) fn params(&self) -> [Param<'_>; 14] {
        [
            &self.kind,
            &self.id,
            &self.partition,
            &self.owner,
            &self.created_at,
            &self.status,
            &self.parent,
            &self.expires_at,
            &self.data_removed,
            &self.sweep_at,
            &self.gone_at,
            &self.body,
            &self.data,
            &self.index,
        ]
    }
}

/// The columns of a stored record, in the order [`stored_from_row`] reads them.
pub(crate) const RECORD_COLUMNS: &str = "kind, id, partition, owner, created_at, status, parent, \
     expires_at, data_removed, revision, body, data";

/// Decodes a row selected with [`RECORD_COLUMNS`].
pub(crate) fn stored_from_row(row: &Row) -> Result<Stored, Error> {
    let record = Record {
        key: key_from_row(row, 0)?,
        owner: account_from_sql(&column::<String>(row, 3, "owner")?)?,
        created_at: column::<Ts>(row, 4, "created_at")?.0,
        status: column(row, 5, "status")?,
        parent: column(row, 6, "parent")?,
        expires_at: column::<Option<Ts>>(row, 7, "expires_at")?.map(|t| t.0),
        data_removed: column(row, 8, "data_removed")?,
        body: column(row, 10, "body")?,
        data: column(row, 11, "data")?,
    };
    Ok(Stored::new(
        record,
        revision_from_sql(column(row, 9, "revision")?)?,
    ))
}

/// The columns of a queue item, in the order [`item_from_row`] reads them.
pub(crate) const ITEM_COLUMNS: &str = "lane, id, group_kind, group_id, group_partition, topic, \
     owner, payload, seq, status, claims, attempts, due_at, created_at";

/// How many columns [`ITEM_COLUMNS`] has.
pub(crate) const ITEM_COLUMN_COUNT: usize = 14;

/// Decodes a row selected with [`ITEM_COLUMNS`] (starting at column 0).
pub(crate) fn item_from_row(row: &Row) -> Result<Item, Error> {
    let status: String = column(row, 9, "item status")?;
    let claims: i64 = column(row, 10, "item claims")?;
    Ok(Item {
        lane: lane_from_sql(&column::<String>(row, 0, "lane")?)?,
        id: column(row, 1, "item id")?,
        group: key_from_row(row, 2)?,
        topic: column(row, 5, "item topic")?,
        owner: account_from_sql(&column::<String>(row, 6, "item owner")?)?,
        payload: column(row, 7, "item payload")?,
        seq: u64_from_sql("item seq", column(row, 8, "item seq")?)?,
        status: ItemStatus::parse(&status)
            .ok_or_else(|| Error::decode("item status", format!("unknown status {status:?}")))?,
        claims: u32::try_from(claims).map_err(|_| Error::decode("item claims", claims))?,
        attempts: decode_attempts(column(row, 11, "item attempts")?)?,
        due_at: column::<Option<Ts>>(row, 12, "item due_at")?.map(|t| t.0),
        created_at: column::<Ts>(row, 13, "item created_at")?.0,
    })
}

/// Refuses a text PostgreSQL cannot store: U+0000. (JSON text never holds it: serializers
/// write it as `\u0000`. Free text that may, a stream event's data or an attempt's error, is
/// escaped instead.)
pub(crate) fn storable(what: &str, text: &str) -> Result<(), Error> {
    if text.contains('\0') {
        return Err(Error::Contract(augur_core::store::Error::Invalid(format!(
            "{what} holds U+0000, which PostgreSQL cannot store in text"
        ))));
    }
    Ok(())
}

/// The key in attempts and in other JSON objects marking one whose texts are escaped (see
/// [`escape`]).
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
        if c == ESC {
            match chars.next() {
                Some('0') => out.push('\0'),
                Some(other) => out.push(other),
                None => out.push(ESC),
            }
        } else {
            out.push(c);
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

/// An attempt as a JSON object, escaped and marked if it holds U+0000 (JSONB cannot).
pub(crate) fn encode_attempt(attempt: &Attempt) -> Result<Value, Error> {
    let mut value = serde_json::to_value(attempt).map_err(Error::Encode)?;
    if json_holds_nul(&value) {
        map_json_text(&mut value, &escape);
        if let Value::Object(map) = &mut value {
            map.insert(ESCAPED.into(), Value::Bool(true));
        }
    }
    Ok(value)
}

/// An item's attempts, as [`encode_attempt`] writes each.
pub(crate) fn encode_attempts(attempts: &[Attempt]) -> Result<Value, Error> {
    Ok(Value::Array(
        attempts
            .iter()
            .map(encode_attempt)
            .collect::<Result<_, _>>()?,
    ))
}

/// Decodes what [`encode_attempts`] wrote.
pub(crate) fn decode_attempts(value: Value) -> Result<Vec<Attempt>, Error> {
    let Value::Array(items) = value else {
        return Err(Error::decode("item attempts", "not an array"));
    };
    items
        .into_iter()
        .map(|mut item| {
            if let Value::Object(map) = &mut item
                && map.remove(ESCAPED) == Some(Value::Bool(true))
            {
                map_json_text(&mut item, &unescape);
            }
            serde_json::from_value(item).map_err(|e| Error::decode("item attempt", e))
        })
        .collect()
}

/// An event's data column and whether it is escaped.
pub(crate) fn encode_event_data(data: &str) -> (String, bool) {
    if data.contains('\0') {
        (escape(data), true)
    } else {
        (data.to_owned(), false)
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
    fn attempts_holding_nul_round_trip() {
        let attempts = vec![
            Attempt {
                at: Timestamp::from_micros(1_700_000_000_000_000),
                status: None,
                error: Some("bad \0 byte \u{f8ff}".into()),
                duration_ms: 4,
            },
            Attempt {
                at: Timestamp::from_micros(1_700_000_000_000_001),
                status: Some(200),
                error: None,
                duration_ms: 1,
            },
        ];
        let stored = encode_attempts(&attempts).unwrap();
        assert!(!json_holds_nul(&stored));
        assert_eq!(stored[1].get(ESCAPED), None, "only the one holding U+0000");
        assert_eq!(decode_attempts(stored).unwrap(), attempts);
    }

    #[test]
    fn retention_columns_follow_the_kind() {
        let record = |kind: Kind, data_removed: bool| Record {
            key: Key::new(kind, "x1"),
            owner: AccountId::admin(),
            created_at: Timestamp::EPOCH,
            status: None,
            parent: None,
            expires_at: Some(Timestamp::from_micros(5)),
            data_removed,
            body: "{}".into(),
            data: None,
        };
        let at = Some(Ts(Timestamp::from_micros(5)));
        let kept = record(Kind::Prediction, false);
        let row = RecordRow::new(&kept).unwrap();
        assert_eq!((row.sweep_at, row.gone_at), (at, None));
        let tombstone = record(Kind::Prediction, true);
        let row = RecordRow::new(&tombstone).unwrap();
        assert_eq!((row.sweep_at, row.gone_at), (None, None));
        let key = record(Kind::IdempotencyKey, false);
        let row = RecordRow::new(&key).unwrap();
        assert_eq!((row.sweep_at, row.gone_at), (at, at));
    }
}
