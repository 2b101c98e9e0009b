//! [`AdminStore`]: what the backend is, its counters, announcements, and export and import of
//! everything it holds by section (records of every kind, items of every lane, events,
//! ledgers, counters), so that a new kind of record migrates without new code.

use std::collections::BTreeSet;

use async_trait::async_trait;
use augur_core::store::{
    self, AdminStore, Capabilities, Change, ChangeStream, Exported, Position, Section,
};
use futures::StreamExt;
use serde_json::Value;

use crate::codec::{
    Param, RecordRow, Ts, column, encode_attempts, encode_event_data, item_from_row, key_from_row,
    revision_to_sql, sql_int, stored_from_row, u64_to_sql,
};
use crate::error::Error;
use crate::store::{PostgresStore, Step, event_from_row, posted_from_row};
use crate::{notify, sql};

/// The place of a position's section in [`Section::ALL`] (the order positions compare in).
fn section_of(position: &Position) -> Section {
    match position {
        Position::Record(..) => Section::Records,
        Position::Item(..) => Section::Items,
        Position::Event(..) => Section::Events,
        Position::Ledger(..) => Section::Ledger,
        Position::Counter(_) => Section::Counters,
    }
}

impl PostgresStore {
    async fn export_inner(
        &self,
        section: Section,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Exported>, Error> {
        // Positions of other sections compare by section, as the contract's `Position` does.
        let after = match after {
            Some(p) if section_of(p) > section => return Ok(Vec::new()),
            Some(p) if section_of(p) < section => None,
            other => other,
        };
        let limit = sql_int(limit.max(1));
        let rows = match (section, after) {
            (Section::Records, None) => self.query(&sql::export::records(false), &[&limit]).await,
            (Section::Records, Some(Position::Record(kind, id))) => {
                let kind = kind.as_str();
                self.query(&sql::export::records(true), &[&kind, id, &limit])
                    .await
            }
            (Section::Items, None) => self.query(&sql::export::items(false), &[&limit]).await,
            (Section::Items, Some(Position::Item(lane, id))) => {
                let lane = lane.as_str();
                self.query(&sql::export::items(true), &[&lane, id, &limit])
                    .await
            }
            (Section::Events, None) => self.query(&sql::export::events(false), &[&limit]).await,
            (Section::Events, Some(Position::Event(kind, id, revision, index))) => {
                let kind = kind.as_str();
                let revision = revision_to_sql(*revision);
                let index = i32::try_from(*index).unwrap_or(i32::MAX);
                self.query(
                    &sql::export::events(true),
                    &[&kind, id, &revision, &index, &limit],
                )
                .await
            }
            (Section::Ledger, None) => self.query(&sql::export::ledger(false), &[&limit]).await,
            (Section::Ledger, Some(Position::Ledger(account, seq))) => {
                let seq = i64::try_from(*seq).unwrap_or(i64::MAX);
                self.query(
                    &sql::export::ledger(true),
                    &[&account.as_str(), &seq, &limit],
                )
                .await
            }
            (Section::Counters, None) => self.query(&sql::export::counters(false), &[&limit]).await,
            (Section::Counters, Some(Position::Counter(name))) => {
                self.query(&sql::export::counters(true), &[name, &limit])
                    .await
            }
            (_, Some(_)) => unreachable!("positions of other sections were handled above"),
        }?;
        rows.iter()
            .map(|row| {
                Ok(match section {
                    Section::Records => {
                        let stored = stored_from_row(row)?;
                        Exported::Record {
                            record: Box::new(stored.record),
                            revision: stored.revision,
                        }
                    }
                    Section::Items => Exported::Item(Box::new(item_from_row(row)?)),
                    Section::Events => Exported::Event {
                        stream: key_from_row(row, 0)?,
                        event: event_from_row(row, 3)?,
                    },
                    Section::Ledger => Exported::Ledger(Box::new(posted_from_row(row)?)),
                    Section::Counters => Exported::Counter {
                        name: column(row, 0, "counter name")?,
                        value: column(row, 1, "counter value")?,
                    },
                })
            })
            .collect()
    }

    async fn import_inner(&self, pieces: &[Exported]) -> Result<(), Error> {
        /// A piece's parameters, owned where they are computed.
        enum Owned<'a> {
            Record(RecordRow<'a>, i64),
            Item {
                lane: &'static str,
                owner: &'a str,
                group_kind: &'static str,
                group_partition: i16,
                seq: i64,
                status: &'static str,
                claims: i64,
                attempts: Value,
                due_at: Option<Ts>,
                created_at: Ts,
            },
            Event {
                kind: &'static str,
                partition: i16,
                revision: i64,
                index: i32,
                event: &'static str,
                data: String,
                escaped: bool,
            },
            Ledger {
                account: &'a str,
                seq: i64,
                reason: &'static str,
                at: Ts,
            },
            Counter,
        }
        let mut owned = Vec::with_capacity(pieces.len());
        // Groups whose heads are decided again, and accounts whose totals are set.
        let mut groups: BTreeSet<(&'static str, &'static str, &str)> = BTreeSet::new();
        let mut accounts: BTreeSet<&str> = BTreeSet::new();
        for piece in pieces {
            owned.push(match piece {
                Exported::Record { record, revision } => {
                    Owned::Record(RecordRow::new(record)?, revision_to_sql(*revision))
                }
                Exported::Item(item) => {
                    crate::codec::storable("an item id", &item.id)?;
                    crate::codec::storable("an item payload", &item.payload)?;
                    groups.insert((item.lane.as_str(), item.group.kind.as_str(), &item.group.id));
                    Owned::Item {
                        lane: item.lane.as_str(),
                        owner: item.owner.as_str(),
                        group_kind: item.group.kind.as_str(),
                        group_partition: i16::from(item.group.partition.0),
                        seq: u64_to_sql(item.seq),
                        status: item.status.as_str(),
                        claims: i64::from(item.claims),
                        attempts: encode_attempts(&item.attempts)?,
                        due_at: item.due_at.map(Ts),
                        created_at: Ts(item.created_at),
                    }
                }
                Exported::Event { stream, event } => {
                    let (data, escaped) = encode_event_data(&event.event.data);
                    Owned::Event {
                        kind: stream.kind.as_str(),
                        partition: i16::from(stream.partition.0),
                        revision: revision_to_sql(event.revision),
                        index: i32::try_from(event.index).map_err(|_| {
                            Error::Config(format!("cannot import event index {}", event.index))
                        })?,
                        event: event.event.kind.as_str(),
                        data,
                        escaped,
                    }
                }
                Exported::Ledger(posted) => {
                    accounts.insert(posted.entry.account.as_str());
                    Owned::Ledger {
                        account: posted.entry.account.as_str(),
                        seq: u64_to_sql(posted.seq),
                        reason: posted.entry.reason.as_str(),
                        at: Ts(posted.entry.at),
                    }
                }
                Exported::Counter { .. } => Owned::Counter,
            });
        }
        let names: Vec<String> = groups
            .iter()
            .map(|(_, kind, id)| format!("{kind} {id}"))
            .collect();
        let kinds: Vec<&str> = groups.iter().map(|(_, kind, _)| *kind).collect();
        let ids: Vec<&str> = groups.iter().map(|(_, _, id)| *id).collect();
        let none: Vec<&str> = Vec::new();
        let account_list: Vec<&str> = accounts.iter().copied().collect();
        let mut steps: Vec<Step<'_>> = Vec::new();
        if !groups.is_empty() {
            steps.push((sql::LOCK_GROUPS, vec![&names, &none, &none]));
            steps.push((sql::BUMP_GROUPS, vec![&kinds, &ids, &none, &none]));
        }
        for account in &account_list {
            steps.push((sql::LOCK_TOTALS, vec![account]));
        }
        let record = sql::import::record();
        let item = sql::import::item();
        let event = sql::import::event();
        let ledger = sql::import::ledger();
        for (piece, owned) in pieces.iter().zip(&owned) {
            match (piece, owned) {
                (Exported::Record { .. }, Owned::Record(row, revision)) => {
                    let mut params: Vec<Param<'_>> = row.params().to_vec();
                    params.push(revision);
                    steps.push((&record, params));
                }
                (
                    Exported::Item(it),
                    Owned::Item {
                        lane,
                        owner,
                        group_kind,
                        group_partition,
                        seq,
                        status,
                        claims,
                        attempts,
                        due_at,
                        created_at,
                    },
                ) => steps.push((
                    &item,
                    vec![
                        lane,
                        &it.id,
                        group_kind,
                        &it.group.id,
                        group_partition,
                        &it.topic,
                        owner,
                        &it.payload,
                        seq,
                        status,
                        claims,
                        attempts,
                        due_at,
                        created_at,
                    ],
                )),
                (
                    Exported::Event { stream, .. },
                    Owned::Event {
                        kind,
                        partition,
                        revision,
                        index,
                        event: event_kind,
                        data,
                        escaped,
                    },
                ) => steps.push((
                    &event,
                    vec![
                        kind, &stream.id, partition, revision, index, event_kind, data, escaped,
                    ],
                )),
                (
                    Exported::Ledger(posted),
                    Owned::Ledger {
                        account,
                        seq,
                        reason,
                        at,
                    },
                ) => steps.push((
                    &ledger,
                    vec![
                        account,
                        seq,
                        &posted.entry.id,
                        &posted.entry.delta,
                        &posted.entry.held,
                        reason,
                        &posted.entry.reference,
                        &posted.entry.memo,
                        at,
                        &posted.after.balance,
                        &posted.after.reserved,
                    ],
                )),
                (Exported::Counter { name, value }, Owned::Counter) => {
                    steps.push((sql::import::COUNTER, vec![name, value]));
                }
                _ => unreachable!("each piece is owned as its kind"),
            }
        }
        for (lane, kind, id) in &groups {
            steps.push((sql::REHEAD.as_str(), vec![lane, kind, id]));
        }
        if !account_list.is_empty() {
            steps.push((sql::import::TOTALS, vec![&account_list]));
        }
        if steps.is_empty() {
            return Ok(());
        }
        self.transaction(&steps).await?;
        self.announce([Change::Resync]);
        Ok(())
    }
}

#[async_trait]
impl AdminStore for PostgresStore {
    fn backend(&self) -> &'static str {
        crate::error::BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: self.durable,
            shared: true,
            native_ttl: false,
            change_notifications: true,
        }
    }

    async fn counters(&self) -> store::Result<Vec<(String, i64)>> {
        let rows = self.query(sql::COUNTERS, &[]).await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok((
                    column(row, 0, "counter name")?,
                    column(row, 1, "counter value")?,
                ))
            })
            .collect::<Result<_, Error>>()?)
    }

    async fn subscribe(&self) -> store::Result<Option<ChangeStream>> {
        if *self.closed.borrow() {
            return Err(Error::Closed.into());
        }
        let rx = notify::subscribe(self.options.clone(), self.closed.subscribe()).await?;
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|change| (change, rx))
        });
        Ok(Some(stream.boxed()))
    }

    async fn export(
        &self,
        section: Section,
        after: Option<&Position>,
        limit: usize,
    ) -> store::Result<Vec<Exported>> {
        Ok(self.export_inner(section, after, limit).await?)
    }

    async fn import(&self, pieces: &[Exported]) -> store::Result<()> {
        Ok(self.import_inner(pieces).await?)
    }

    async fn close(&self) {
        self.close_now();
    }
}
