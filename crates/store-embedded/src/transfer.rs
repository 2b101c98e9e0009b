//! Export and import by section (`AdminStore::export` and `import`, for `augur migrate`):
//! each section in its own order, read off the primary key or unique index that has that
//! order, and written back as it was.

use std::collections::BTreeSet;

use augur_core::store::{Exported, Position, Posted, Record, Section, StreamEvent};
use augur_core::{AccountId, Revision, Timestamp};
use rusqlite::{Connection, params};

use crate::error::Error;
use crate::ops::{self, ledger_columns, record_columns, sql_int, u64_to_sql};
use crate::queue::{self, ImportedItem, ItemRow};
use crate::writer::Ctx;

/// A section's rows as read, decoded on the caller's task where that means parsing JSON (the
/// items' attempts).
#[derive(Debug)]
pub(crate) enum Rows {
    Done(Vec<Exported>),
    Items(Vec<ItemRow>),
}

impl Rows {
    pub(crate) fn decode(self) -> Result<Vec<Exported>, Error> {
        match self {
            Rows::Done(pieces) => Ok(pieces),
            Rows::Items(rows) => rows
                .into_iter()
                .map(|row| Ok(Exported::Item(Box::new(row.decode()?))))
                .collect(),
        }
    }
}

/// Where `section` starts after `after`: `Some(None)` from its beginning, `Some(Some(p))`
/// after `p`, `None` if `after` lies past the whole section (positions order by section
/// first, as in the memory store, which filters every piece by `position > after`).
fn start(section: Section, after: Option<&Position>) -> Option<Option<&Position>> {
    let Some(after) = after else {
        return Some(None);
    };
    let of = |p: &Position| match p {
        Position::Record(..) => Section::Records,
        Position::Item(..) => Section::Items,
        Position::Event(..) => Section::Events,
        Position::Ledger(..) => Section::Ledger,
        Position::Counter(..) => Section::Counters,
    };
    let (at, wanted) = (of(after), section);
    let index = |s: Section| Section::ALL.iter().position(|x| *x == s);
    match index(at).cmp(&index(wanted)) {
        std::cmp::Ordering::Less => Some(None),
        std::cmp::Ordering::Equal => Some(Some(after)),
        std::cmp::Ordering::Greater => None,
    }
}

/// Up to `limit` pieces of `section` after `after`.
pub(crate) fn export(
    conn: &Connection,
    section: Section,
    after: Option<&Position>,
    limit: usize,
) -> Result<Rows, Error> {
    let Some(after) = start(section, after) else {
        return Ok(Rows::Done(Vec::new()));
    };
    let (limit, count) = (limit.max(1), sql_int(limit.max(1)));
    let mut pieces = Vec::new();
    match (section, after) {
        (Section::Items, after) => {
            let after = match after {
                Some(Position::Item(lane, id)) => Some((lane.as_str(), id.as_str())),
                _ => None,
            };
            return Ok(Rows::Items(queue::export(conn, after, limit)?));
        }
        (Section::Records, after) => {
            let (kind, id) = match after {
                Some(Position::Record(kind, id)) => (kind.as_str(), id.as_str()),
                _ => ("", ""),
            };
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                record_columns!(),
                " FROM records WHERE (kind, id) > (?1, ?2) ORDER BY kind, id LIMIT ?3"
            ))?;
            let mut rows = stmt.query(params![kind, id, count])?;
            while let Some(row) = rows.next()? {
                let (record, revision) = ops::read_record(row)?;
                pieces.push(Exported::Record {
                    record: Box::new(record),
                    revision,
                });
            }
        }
        (Section::Events, after) => {
            let (kind, id, revision, index) = match after {
                Some(Position::Event(kind, id, revision, index)) => (
                    kind.as_str(),
                    id.as_str(),
                    u64_to_sql(revision.0),
                    i64::from(*index),
                ),
                _ => ("", "", 0, -1),
            };
            let mut stmt = conn.prepare_cached(
                "SELECT stream_kind, stream_id, stream_partition, revision, idx, kind, data \
                 FROM events WHERE (stream_kind, stream_id, revision, idx) > (?1, ?2, ?3, ?4) \
                 ORDER BY stream_kind, stream_id, revision, idx LIMIT ?5",
            )?;
            let mut rows = stmt.query(params![kind, id, revision, index, count])?;
            while let Some(row) = rows.next()? {
                pieces.push(Exported::Event {
                    stream: ops::key_from(row.get(0)?, row.get(1)?, row.get(2)?)?,
                    event: ops::read_event(row, 3)?,
                });
            }
        }
        (Section::Ledger, after) => {
            let (account, seq) = match after {
                Some(Position::Ledger(account, seq)) => (account.as_str(), u64_to_sql(*seq)),
                _ => ("", 0),
            };
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                ledger_columns!(),
                " FROM ledger WHERE (account, seq) > (?1, ?2) ORDER BY account, seq LIMIT ?3"
            ))?;
            let mut rows = stmt.query(params![account, seq, count])?;
            while let Some(row) = rows.next()? {
                pieces.push(Exported::Ledger(Box::new(ops::read_posted(row)?)));
            }
        }
        (Section::Counters, after) => {
            let name = match after {
                Some(Position::Counter(name)) => name.as_str(),
                _ => "",
            };
            let mut stmt = conn.prepare_cached(
                "SELECT name, value FROM counters WHERE name > ?1 ORDER BY name LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![name, count])?;
            while let Some(row) = rows.next()? {
                pieces.push(Exported::Counter {
                    name: row.get(0)?,
                    value: row.get(1)?,
                });
            }
        }
    }
    Ok(Rows::Done(pieces))
}

/// An exported piece to write, encoded on the caller's task.
#[derive(Debug)]
pub(crate) enum Piece {
    Record(Record, Revision),
    Item(ImportedItem),
    Event(augur_core::store::Key, StreamEvent),
    Ledger(Posted),
    Counter(String, i64),
}

impl Piece {
    pub(crate) fn encode(exported: &Exported) -> Result<Self, Error> {
        Ok(match exported {
            Exported::Record { record, revision } => Piece::Record((**record).clone(), *revision),
            Exported::Item(item) => Piece::Item(ImportedItem::encode(item)?),
            Exported::Event { stream, event } => Piece::Event(stream.clone(), event.clone()),
            Exported::Ledger(posted) => Piece::Ledger((**posted).clone()),
            Exported::Counter { name, value } => Piece::Counter(name.clone(), *value),
        })
    }
}

/// Writes pieces as they are, replacing what is there (see `AdminStore::import`).
pub(crate) fn import(ctx: &mut Ctx<'_>, pieces: &[Piece]) -> Result<(), Error> {
    let conn = ctx.conn;
    let now = Timestamp::now();
    let mut ledgers: BTreeSet<&AccountId> = BTreeSet::new();
    for piece in pieces {
        match piece {
            Piece::Record(record, revision) => ops::replace_record(conn, record, *revision)?,
            Piece::Item(item) => queue::import(conn, item, now)?,
            Piece::Event(stream, event) => {
                ops::put_event(conn, stream, event.revision, event.index, &event.event)?;
            }
            Piece::Ledger(posted) => {
                ops::insert_entry(
                    conn,
                    &posted.entry,
                    u64_to_sql(posted.seq),
                    posted.after,
                    true,
                )?;
                ledgers.insert(&posted.entry.account);
            }
            Piece::Counter(name, value) => {
                // Set, not added: increments queued earlier in this group are overwritten.
                ctx.counters.remove(name);
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO counters (name, value) VALUES (?1, ?2)",
                )?
                .execute(params![name, value])?;
            }
        }
    }
    // An account's totals are those after its last entry.
    for account in ledgers {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO ledger_totals (account, balance, reserved, seq) \
             SELECT account, balance, reserved, seq FROM ledger WHERE account = ?1 \
             ORDER BY seq DESC LIMIT 1",
        )?
        .execute([account.as_str()])?;
    }
    Ok(())
}
