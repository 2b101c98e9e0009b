//! Records, items, events and ledger entries as script arguments, and script replies back
//! into the contract's types.
//!
//! A record is stored in two parts: the hash of its indexed columns and body, and its data
//! (the part retention removes) in a separate key that Redis expires by itself at
//! `expires_at`. Bodies and data are text the backend never parses.

use std::sync::Arc;

use augur_core::store::{
    Attempt, Item, ItemStatus, Key, Kind, Lane, LedgerEntry, Partition, Posted, Record, Stored,
    StreamEvent, StreamEventData,
};
use augur_core::{AccountId, Revision, Timestamp};
use redis::Value;

use crate::error::Error;
use crate::layout::{created_bound, event_position, parse_created};

/// A record's eight script arguments (see `record_at` in [`crate::scripts`]), borrowing its
/// body and data.
pub(crate) struct RecordArgs<'a> {
    created: String,
    status: String,
    parent: String,
    expires: String,
    removed: &'static str,
    body: &'a str,
    has_data: &'static str,
    data: &'a str,
}

impl<'a> RecordArgs<'a> {
    pub(crate) fn new(record: &'a Record) -> Self {
        let optional =
            |v: &Option<String>| v.as_ref().map_or_else(String::new, |s| format!("+{s}"));
        Self {
            created: created_bound(record.created_at),
            status: optional(&record.status),
            parent: optional(&record.parent),
            expires: record
                .expires_at
                .map_or_else(String::new, |at| at.as_micros().to_string()),
            removed: if record.data_removed { "1" } else { "0" },
            body: &record.body,
            has_data: if record.data.is_some() { "1" } else { "0" },
            data: record.data.as_deref().unwrap_or(""),
        }
    }

    /// Appends the arguments to a script invocation.
    pub(crate) fn push(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        invocation
            .arg(&self.created)
            .arg(&self.status)
            .arg(&self.parent)
            .arg(&self.expires)
            .arg(self.removed)
            .arg(self.body)
            .arg(self.has_data)
            .arg(self.data);
    }
}

/// A record reply `{kind, id, partition, revision, owner, c, status, parent, expiry, rm,
/// body, data}` (see `rec_reply` in [`crate::scripts`]).
pub(crate) fn decode_record(value: &Value) -> Result<Arc<Stored>, Error> {
    let [
        kind,
        id,
        partition,
        rev,
        owner,
        created,
        status,
        parent,
        expires,
        removed,
        body,
        data,
    ] = array(value, "record")?
    else {
        return Err(unexpected("a record is not twelve values"));
    };
    let record = Record {
        key: Key {
            kind: parse_kind(text(kind, "kind")?)?,
            id: text(id, "record id")?.to_owned(),
            partition: Partition(parse_int(partition, "partition")?),
        },
        owner: parse_account(text(owner, "owner")?)?,
        created_at: parse_created(text(created, "creation time")?)?,
        status: opt_text(status, "status")?,
        parent: opt_text(parent, "parent")?,
        expires_at: opt_time(expires, "expiry")?,
        data_removed: bytes(removed, "removed flag")? == b"1",
        body: text(body, "body")?.to_owned(),
        data: opt_text(data, "data")?,
    };
    Ok(Arc::new(Stored::new(
        record,
        Revision(parse_int(rev, "revision")?),
    )))
}

/// An item reply `{id, group, group partition, topic, owner, payload, seq, status, claims,
/// attempts, due, created}` (see `item_reply` in [`crate::scripts`]).
pub(crate) fn decode_item(lane: Lane, value: &Value) -> Result<Item, Error> {
    let [
        id,
        group,
        group_partition,
        topic,
        owner,
        payload,
        seq,
        status,
        claims,
        attempts,
        due,
        created,
    ] = array(value, "item")?
    else {
        return Err(unexpected("an item is not twelve values"));
    };
    Ok(Item {
        lane,
        id: text(id, "item id")?.to_owned(),
        group: parse_group(group, group_partition)?,
        topic: text(topic, "topic")?.to_owned(),
        owner: parse_account(text(owner, "owner")?)?,
        payload: text(payload, "payload")?.to_owned(),
        seq: parse_int(seq, "seq")?,
        status: match bytes(status, "item status")? {
            b"p" => ItemStatus::Pending,
            b"d" => ItemStatus::Done,
            b"f" => ItemStatus::Failed,
            other => {
                return Err(Error::InvalidStored {
                    what: "item status",
                    detail: String::from_utf8_lossy(other).into_owned(),
                });
            }
        },
        claims: parse_int(claims, "claims")?,
        attempts: decode_attempts(attempts)?,
        due_at: opt_time(due, "due time")?,
        created_at: parse_time(created, "creation time")?,
    })
}

/// A group as stored in an item: `<kind>:<id>` and the group's partition.
pub(crate) fn parse_group(group: &Value, partition: &Value) -> Result<Key, Error> {
    let group = text(group, "group")?;
    let (kind, id) = group.split_once(':').ok_or_else(|| Error::InvalidStored {
        what: "group",
        detail: group.to_owned(),
    })?;
    Ok(Key {
        kind: parse_kind(kind)?,
        id: id.to_owned(),
        partition: Partition(parse_int(partition, "group partition")?),
    })
}

/// An item's attempts, a JSON array (nil: none).
pub(crate) fn decode_attempts(value: &Value) -> Result<Vec<Attempt>, Error> {
    match opt_bytes(value) {
        Some(a) if !a.is_empty() => serde_json::from_slice(a).map_err(Error::Decode),
        _ => Ok(Vec::new()),
    }
}

/// An event log member: its position, a space, the event's JSON.
pub(crate) fn event_member(
    revision: Revision,
    index: u64,
    event: &StreamEventData,
) -> Result<String, Error> {
    Ok(format!(
        "{} {}",
        event_position(revision.0, index),
        serde_json::to_string(event).map_err(Error::Encode)?
    ))
}

/// Splits an event log member, `<revision, 20 digits><index, 10 digits> <event JSON>`.
pub(crate) fn decode_event(member: &[u8]) -> Result<StreamEvent, Error> {
    let invalid = || Error::InvalidStored {
        what: "event log member",
        detail: String::from_utf8_lossy(&member[..member.len().min(40)]).into_owned(),
    };
    if member.len() < 31 || member[30] != b' ' {
        return Err(invalid());
    }
    let digits = std::str::from_utf8(&member[..30]).map_err(|_| invalid())?;
    let revision: u64 = digits[..20].parse().map_err(|_| invalid())?;
    let index: u32 = digits[20..].parse().map_err(|_| invalid())?;
    let event: StreamEventData = serde_json::from_slice(&member[31..]).map_err(Error::Decode)?;
    Ok(StreamEvent {
        revision: Revision(revision),
        index,
        event,
    })
}

/// A ledger member: `<seq>|<balance>|<reserved>|<entry JSON>`.
pub(crate) fn ledger_member(posted: &Posted) -> Result<String, Error> {
    Ok(format!(
        "{}|{}|{}|{}",
        posted.seq,
        posted.after.balance,
        posted.after.reserved,
        serde_json::to_string(&posted.entry).map_err(Error::Encode)?
    ))
}

/// The inverse of [`ledger_member`].
pub(crate) fn decode_ledger(member: &[u8]) -> Result<Posted, Error> {
    let invalid = || Error::InvalidStored {
        what: "ledger entry",
        detail: String::from_utf8_lossy(&member[..member.len().min(60)]).into_owned(),
    };
    let mut parts = member.splitn(4, |b| *b == b'|');
    let mut number = || -> Result<i64, Error> {
        let part = parts.next().ok_or_else(invalid)?;
        std::str::from_utf8(part)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(invalid)
    };
    let seq = u64::try_from(number()?).map_err(|_| invalid())?;
    let balance = number()?;
    let reserved = number()?;
    let entry: LedgerEntry =
        serde_json::from_slice(parts.next().ok_or_else(invalid)?).map_err(Error::Decode)?;
    Ok(Posted {
        seq,
        entry,
        after: augur_core::store::Balance { balance, reserved },
    })
}

pub(crate) fn parse_kind(name: &str) -> Result<Kind, Error> {
    Kind::parse(name).ok_or_else(|| Error::InvalidStored {
        what: "record kind",
        detail: format!("{name:?} (written by a newer Augur?)"),
    })
}

pub(crate) fn parse_account(text: &str) -> Result<AccountId, Error> {
    AccountId::parse(text).map_err(|e| Error::InvalidStored {
        what: "account id",
        detail: e.to_string(),
    })
}

/// The elements of an array reply.
pub(crate) fn array<'a>(value: &'a Value, what: &str) -> Result<&'a [Value], Error> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(unexpected(&format!(
            "{what}: expected an array, got {other:?}"
        ))),
    }
}

/// A string reply's bytes.
pub(crate) fn bytes<'a>(value: &'a Value, what: &str) -> Result<&'a [u8], Error> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.as_bytes()),
        other => Err(unexpected(&format!(
            "{what}: expected a string, got {other:?}"
        ))),
    }
}

/// A string reply's bytes, `None` for nil.
pub(crate) fn opt_bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A string reply as text.
pub(crate) fn text<'a>(value: &'a Value, what: &str) -> Result<&'a str, Error> {
    std::str::from_utf8(bytes(value, what)?).map_err(|_| Error::InvalidStored {
        what: "text",
        detail: format!("{what} is not UTF-8"),
    })
}

/// Text, `None` for nil.
pub(crate) fn opt_text(value: &Value, what: &str) -> Result<Option<String>, Error> {
    match value {
        Value::Nil => Ok(None),
        other => text(other, what).map(|s| Some(s.to_owned())),
    }
}

/// An integer, sent as an integer or a decimal string.
pub(crate) fn parse_int<T: std::str::FromStr>(
    value: &Value,
    what: &'static str,
) -> Result<T, Error> {
    let parsed = match value {
        Value::Int(n) => n.to_string().parse().ok(),
        other => std::str::from_utf8(bytes(other, what)?)
            .ok()
            .and_then(|s| s.parse().ok()),
    };
    parsed.ok_or_else(|| Error::InvalidStored {
        what,
        detail: format!("{value:?} is not a valid number"),
    })
}

/// A timestamp in microseconds.
pub(crate) fn parse_time(value: &Value, what: &'static str) -> Result<Timestamp, Error> {
    parse_int(value, what).map(Timestamp::from_micros)
}

/// A timestamp in microseconds, `None` for nil.
pub(crate) fn opt_time(value: &Value, what: &'static str) -> Result<Option<Timestamp>, Error> {
    match value {
        Value::Nil => Ok(None),
        other => parse_time(other, what).map(Some),
    }
}

pub(crate) fn unexpected(what: &str) -> Error {
    Error::Reply(what.to_owned())
}

/// The status word a script reply starts with, and the rest.
pub(crate) fn status<'a>(value: &'a Value, what: &str) -> Result<(&'a str, &'a [Value]), Error> {
    let parts = array(value, what)?;
    let (first, rest) = parts
        .split_first()
        .ok_or_else(|| unexpected(&format!("{what}: an empty reply")))?;
    Ok((text(first, "status")?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_core::store::{Balance, Reason, StreamEventKind};

    #[test]
    fn event_members_round_trip() {
        let event = StreamEventData {
            kind: StreamEventKind::Output,
            data: "b ✓".into(),
        };
        let member = event_member(Revision(2), 1, &event).unwrap();
        let back = decode_event(member.as_bytes()).unwrap();
        assert_eq!(
            (back.revision, back.index, back.event),
            (Revision(2), 1, event)
        );
        assert!(decode_event(b"12 {}").is_err());
    }

    #[test]
    fn ledger_members_round_trip() {
        let posted = Posted {
            seq: 7,
            entry: LedgerEntry {
                account: AccountId::admin(),
                id: "a|b".into(),
                delta: -3,
                held: 2,
                reason: Reason::Charge,
                reference: None,
                memo: Some("x|y".into()),
                at: Timestamp::from_micros(5),
            },
            after: Balance {
                balance: -1,
                reserved: 4,
            },
        };
        let member = ledger_member(&posted).unwrap();
        assert_eq!(decode_ledger(member.as_bytes()).unwrap(), posted);
    }
}
