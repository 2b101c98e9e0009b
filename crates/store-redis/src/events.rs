//! [`EventStore`] and [`LedgerStore`]: reading event logs and ledgers (both are written only
//! as effects of writes, in [`crate::store`]).
//!
//! A record's event log `T:e:<kind>:<id>` is a sorted set of members `<revision, 20
//! digits><index, 10 digits> <event JSON>`, all at score 0, so byte order is position order and
//! a read from a position is one `ZRANGEBYLEX`. It expires natively with the record's data.
//! An account's ledger is a sorted set `T:le:<account>` of `<seq>|<balance>|<reserved>|<entry
//! JSON>` by seq, beside the hash `T:lg:<account>` of its totals (`b`, `r`, `n` the last seq)
//! and its entry ids (`i:<id>` to seq, `s:<seq>` to id).

use async_trait::async_trait;
use augur_core::store::{self, Balance, EventStore, Key, LedgerStore, Posted, StreamEvent};
use augur_core::{AccountId, Revision};
use redis::Value;

use crate::codec::{
    array, bytes, decode_event, decode_ledger, parse_account, status, text, unexpected,
};
use crate::error::Error;
use crate::layout::{Shard, event_position};
use crate::scripts::SCRIPTS;
use crate::store::{Found, Inner, RedisStore, clamp_limit};

impl Inner {
    async fn read_events_in(
        &self,
        shard: Shard,
        stream: &Key,
        min: &str,
        limit: usize,
        follow: bool,
    ) -> Result<Option<Found<Vec<StreamEvent>>>, Error> {
        let mut conn = self.conn()?;
        let reply: Value = SCRIPTS
            .read_events
            .key(self.layout.tag(shard))
            .arg(stream.kind.as_str())
            .arg(&stream.id)
            .arg(min)
            .arg(limit)
            .arg(if follow { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        let (word, rest) = status(&reply, "read events")?;
        match (word, rest) {
            ("fwd", [owner]) => Ok(Some(Found::Forward(parse_account(text(owner, "owner")?)?))),
            ("events", [members]) => Ok(Some(Found::Here(
                array(members, "events")?
                    .iter()
                    .map(|m| decode_event(bytes(m, "event")?))
                    .collect::<Result<_, Error>>()?,
            ))),
            (other, _) => Err(unexpected(&format!("read events: {other}"))),
        }
    }

    async fn read_events(
        &self,
        stream: &Key,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> Result<Vec<StreamEvent>, Error> {
        // Every member at or after the next position: the index can go one past `u32::MAX`
        // and still fit its ten digits.
        let min = after.map_or_else(
            || "-".to_owned(),
            |(revision, index)| format!("[{}", event_position(revision.0, u64::from(index) + 1)),
        );
        let limit = clamp_limit(limit);
        Ok(self
            .follow(stream, |shard, follow| {
                self.read_events_in(shard, stream, &min, limit, follow)
            })
            .await?
            .unwrap_or_default())
    }

    async fn balance(&self, account: &AccountId) -> Result<Balance, Error> {
        let mut conn = self.conn()?;
        let (balance, reserved): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.layout.ledger_totals(account))
            .arg("b")
            .arg("r")
            .query_async(&mut conn)
            .await?;
        Ok(Balance {
            balance: balance.unwrap_or(0),
            reserved: reserved.unwrap_or(0),
        })
    }

    async fn ledger(
        &self,
        account: &AccountId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Posted>, Error> {
        let mut conn = self.conn()?;
        let max = before.map_or_else(|| "+inf".to_owned(), |s| format!("({s}"));
        let members: Vec<Value> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(self.layout.ledger_entries(account))
            .arg(max)
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(clamp_limit(limit))
            .query_async(&mut conn)
            .await?;
        members
            .iter()
            .map(|m| decode_ledger(bytes(m, "ledger entry")?))
            .collect()
    }
}

#[async_trait]
impl EventStore for RedisStore {
    async fn read_events(
        &self,
        stream: &Key,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> store::Result<Vec<StreamEvent>> {
        Ok(self.inner.read_events(stream, after, limit).await?)
    }
}

#[async_trait]
impl LedgerStore for RedisStore {
    async fn balance(&self, account: &AccountId) -> store::Result<Balance> {
        Ok(self.inner.balance(account).await?)
    }

    async fn ledger(
        &self,
        account: &AccountId,
        before: Option<u64>,
        limit: usize,
    ) -> store::Result<Vec<Posted>> {
        Ok(self.inner.ledger(account, before, limit).await?)
    }
}
