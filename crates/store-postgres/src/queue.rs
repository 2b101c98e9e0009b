//! The leased queue ([`QueueStore`]): claims, leases and outcomes of items of every lane.
//!
//! A claim, a renewal, and a retry or hand-back are single statements: none changes which item
//! is its group's head. Finishing an item (done, given up) and requeueing one change it, so
//! they run under the group's lock (see `sql`'s module docs), pipelined in one transaction:
//! the lock, the change, the new head, one round trip.

use std::time::Duration;

use async_trait::async_trait;
use augur_core::store::{
    self, Change, ClaimRequest, Finish, Item, ItemLease, ItemStatus, Key, Lane, Outcome,
    QueueStats, QueueStore,
};
use serde_json::Value;

use crate::codec::{
    ITEM_COLUMN_COUNT, Interval, Ts, column, encode_attempt, item_from_row, sql_int,
    token_from_sql, token_to_sql, u64_from_sql,
};
use crate::error::Error;
use crate::sql;
use crate::store::{PostgresStore, Step};

impl PostgresStore {
    async fn finish_inner(&self, lease: &ItemLease, finish: &Finish) -> Result<(), Error> {
        let item = &lease.item;
        let lane = item.lane.as_str();
        let token = token_to_sql(lease.token);
        let attempt: Option<Value> = finish.attempt.as_ref().map(encode_attempt).transpose()?;
        let (status, rest) = match finish.outcome {
            Outcome::Retry(_) | Outcome::Release(_) | Outcome::HandBack => {
                let at = match finish.outcome {
                    Outcome::Retry(at) | Outcome::Release(at) => Some(Ts(at)),
                    _ => None,
                };
                let refund = !matches!(finish.outcome, Outcome::Retry(_));
                let hand_back = finish.outcome == Outcome::HandBack;
                let rows = self
                    .query(
                        sql::RESCHEDULE,
                        &[
                            &lane,
                            &item.id.as_str(),
                            &token,
                            &at,
                            &refund,
                            &attempt,
                            &hand_back,
                        ],
                    )
                    .await?;
                if rows.is_empty() {
                    return Err(store::Error::LeaseLost.into());
                }
                self.announce([Change::Work(item.lane)]);
                return Ok(());
            }
            Outcome::Done => (ItemStatus::Done, false),
            Outcome::GiveUp { rest } => (ItemStatus::Failed, rest),
        };
        let group = &item.group;
        let name = vec![format!("{} {}", group.kind, group.id)];
        let kinds = vec![group.kind.as_str()];
        let ids = vec![group.id.as_str()];
        let none: Vec<&'static str> = Vec::new();
        let (gk, gid) = (group.kind.as_str(), group.id.as_str());
        let keeps = item.lane.keeps_finished();
        let status = status.as_str();
        let mut steps: Vec<Step<'_>> = vec![
            (sql::LOCK_GROUPS, vec![&name, &none, &none]),
            (sql::BUMP_GROUPS, vec![&kinds, &ids, &none, &none]),
        ];
        steps.push((
            sql::FINISH,
            vec![&lane, &item.id, &token, &status, &attempt],
        ));
        steps.push((sql::SETTLE, vec![&lane, &item.id, &gk, &gid, &keeps, &rest]));
        steps.push((sql::REHEAD.as_str(), vec![&lane, &gk, &gid]));
        match self.transaction(&steps).await {
            Ok(_) => Ok(()),
            Err(Error::Refused(_)) => Err(store::Error::LeaseLost.into()),
            Err(e) => Err(e),
        }
    }

    async fn requeue_inner(&self, lane: Lane, group: &Key, id: &str) -> Result<(), Error> {
        if id.contains('\0') || group.id.contains('\0') {
            // No stored item has such an id.
            return Err(store::Error::NotFound(group.clone()).into());
        }
        let name = vec![format!("{} {}", group.kind, group.id)];
        let kinds = vec![group.kind.as_str()];
        let ids = vec![group.id.as_str()];
        let none: Vec<&'static str> = Vec::new();
        let (lane_name, gk, gid) = (lane.as_str(), group.kind.as_str(), group.id.as_str());
        let mut steps: Vec<Step<'_>> = vec![
            (sql::LOCK_GROUPS, vec![&name, &none, &none]),
            (sql::BUMP_GROUPS, vec![&kinds, &ids, &none, &none]),
        ];
        steps.push((sql::REQUEUE, vec![&lane_name, &gk, &gid, &id]));
        steps.push((sql::REHEAD.as_str(), vec![&lane_name, &gk, &gid]));
        match self.transaction(&steps).await {
            Ok(_) => {
                self.announce([Change::Work(lane)]);
                Ok(())
            }
            Err(Error::Refused(_)) => Err(store::Error::NotFound(group.clone()).into()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl QueueStore for PostgresStore {
    async fn claim(&self, request: &ClaimRequest) -> store::Result<Vec<ItemLease>> {
        if request.max == 0 {
            return Ok(Vec::new());
        }
        let lane = request.lane.as_str();
        let excluded: Vec<&str> = request.exclude_topics.iter().map(String::as_str).collect();
        let rows = self
            .query(
                &sql::CLAIM,
                &[
                    &lane,
                    &excluded,
                    &sql_int(request.max),
                    &request.worker.as_str(),
                    &Interval(request.lease_for),
                ],
            )
            .await?;
        let mut leases = Vec::with_capacity(rows.len());
        for row in &rows {
            leases.push(ItemLease {
                item: item_from_row(row)?,
                worker: request.worker.clone(),
                token: token_from_sql(column(row, ITEM_COLUMN_COUNT, "lease token")?),
                expires_at: column::<Ts>(row, ITEM_COLUMN_COUNT + 1, "lease expiry")?.0,
            });
        }
        Ok(leases)
    }

    async fn renew(&self, lease: &ItemLease, extend_by: Duration) -> store::Result<ItemLease> {
        let lane = lease.item.lane.as_str();
        let rows = self
            .query(
                sql::RENEW,
                &[
                    &lane,
                    &lease.item.id.as_str(),
                    &token_to_sql(lease.token),
                    &Interval(extend_by),
                ],
            )
            .await?;
        let row = rows.first().ok_or(store::Error::LeaseLost)?;
        Ok(ItemLease {
            expires_at: column::<Ts>(row, 0, "lease expiry")?.0,
            ..lease.clone()
        })
    }

    async fn finish(&self, lease: &ItemLease, finish: &Finish) -> store::Result<()> {
        Ok(self.finish_inner(lease, finish).await?)
    }

    async fn items(&self, lane: Lane, group: &Key) -> store::Result<Vec<Item>> {
        if group.id.contains('\0') {
            return Ok(Vec::new());
        }
        let lane = lane.as_str();
        let kind = group.kind.as_str();
        let rows = self
            .query(&sql::ITEMS, &[&lane, &kind, &group.id.as_str()])
            .await?;
        Ok(rows.iter().map(item_from_row).collect::<Result<_, _>>()?)
    }

    async fn requeue(&self, lane: Lane, group: &Key, id: &str) -> store::Result<()> {
        Ok(self.requeue_inner(lane, group, id).await?)
    }

    async fn queue_stats(&self, lane: Lane) -> store::Result<QueueStats> {
        let lane = lane.as_str();
        let rows = self.query(sql::QUEUE_STATS, &[&lane]).await?;
        let row = rows
            .first()
            .ok_or_else(|| Error::decode("queue stats", "no row"))?;
        let count = |i: usize, what: &'static str| -> Result<u64, Error> {
            u64_from_sql(what, column(row, i, what)?)
        };
        Ok(QueueStats {
            leased: count(0, "leased items")?,
            ready: count(1, "ready items")?,
            delayed: count(2, "delayed items")?,
        })
    }
}
