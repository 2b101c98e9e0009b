//! [`PostgresStore`]: connecting (pool, migrations, durability check) and the [`Store`]
//! implementation, one transaction (or one statement) per operation.
//!
//! Why `READ COMMITTED` is enough, without `SERIALIZABLE`: every decision an operation makes
//! is either a conditional write whose condition PostgreSQL re-checks on the row's latest
//! version after waiting for its lock (`UPDATE … WHERE revision = $n`, `… WHERE lease_token =
//! $t AND visible_at > now()`), a uniqueness decision taken by the unique index
//! (`INSERT … ON CONFLICT`), or a row lock (`FOR UPDATE SKIP LOCKED` for claims and sweeps).
//! None reads a row and then writes another based on what it read, which is what snapshot
//! isolation would get wrong, with one exception that a lock covers: which of a prediction's
//! webhook messages is its head (the one that may go out) is decided from its other messages,
//! so every write that decides it holds the prediction's row lock (`sql::LOCK_PREDICTION`;
//! prediction writes hold it through their compare-and-set). Multi-statement operations
//! (create, update, delete, expire, import, and finishing or redelivering a webhook message)
//! run their statements in one transaction, pipelined on one connection (sent together,
//! answered in order), so that a transition with its effects costs three round trips:
//! `BEGIN`, the statements, `COMMIT`. The common writes cost one: a create without an
//! idempotency key, or a compare-and-set, whose effects are a job step, counters and stream
//! events is a single statement whose effects are `WITH` queries on the write's result
//! (`sql::fused`, which says why that is safe on one snapshot and why webhook messages are
//! left to the transaction).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use augur_core::Prediction;
use augur_core::store::{
    self, Attempt, Capabilities, ChangeStream, ClaimRequest, Created, Cursor, DeliveryLease,
    DeliveryOutcome, DeliveryState, Effect, IdempotencyRecord, Job, Lease, ListQuery,
    NewPrediction, Page, QueueStats, Record, Store, StreamEvent,
};
use augur_core::{AccountId, LeaseToken, PredictionId, Revision, Timestamp, Versioned, WorkerId};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures::StreamExt;
use futures::future::try_join_all;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement};

use crate::codec::{
    Interval, PredictionRow, Ts, attempts_from_sql, column, decode, parse_id, revision_from_sql,
    revision_to_sql, sql_int, token_to_sql,
};
use crate::config::PostgresOptions;
use crate::error::Error;
use crate::notify;
use crate::outbox::{
    DeliveryRow, NewDeliveries, NewEvents, encode_attempts, encode_event, status_name,
};
use crate::schema;
use crate::sql::{self, Statements};

/// A statement parameter.
pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

/// How often a create or update starts over after a race it cannot report (the record it
/// collided with vanished before it could be read). One retry practically always suffices.
const MAX_RACES: usize = 8;

/// The PostgreSQL backend: a connection pool on one database schema, shared by any number of
/// Augur nodes.
///
/// Connect once per process and share it (`Arc<dyn Store>`). Every operation takes a pooled
/// connection for its duration; [`Store::subscribe`] opens one dedicated connection per
/// subscription for `LISTEN`.
pub struct PostgresStore {
    pool: Pool,
    options: PostgresOptions,
    statements: Arc<Statements>,
    durable: bool,
    closed: watch::Sender<bool>,
    /// Announcements on their way to [`announcer`]'s task.
    announcements: mpsc::UnboundedSender<String>,
}

impl PostgresStore {
    /// Connects to the database a `postgres://user[:password]@host:port/db[?schema=…]` URL
    /// names: creates the schema if missing, applies the migrations it lacks (refusing a schema
    /// a newer build migrated), and checks whether commits are durable.
    pub async fn connect(url: &str) -> Result<Self, store::Error> {
        Self::connect_with(PostgresOptions::from_url(url)?).await
    }

    /// Like [`PostgresStore::connect`], with options already parsed.
    pub async fn connect_with(options: PostgresOptions) -> Result<Self, store::Error> {
        Ok(Self::open(options).await?)
    }

    async fn open(options: PostgresOptions) -> Result<Self, Error> {
        let manager = Manager::from_config(
            options.pg_config("pool"),
            NoTls,
            ManagerConfig {
                // A connection is handed out again if it is still open; one that broke is
                // dropped. Checking each with a query would cost a round trip per operation.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .wait_timeout(Some(options.pool_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()?;
        let mut client = pool.get().await?;
        let applied = schema::migrate(&mut client, &options.schema).await?;
        let durable = schema::commits_are_durable(&client).await?;
        drop(client);
        if !durable {
            tracing::warn!(
                schema = %options.schema,
                "fsync or synchronous_commit is off: acknowledged writes may be lost in a crash"
            );
        }
        tracing::debug!(options = %options, applied, durable, "connected to PostgreSQL");
        let statements = Arc::new(Statements::new(&options.channel()));
        Ok(Self {
            announcements: announcer(pool.clone(), statements.clone()),
            pool,
            statements,
            options,
            durable,
            closed: watch::channel(false).0,
        })
    }

    /// The options it was connected with.
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// Drops the store's schema with everything in it (`DROP SCHEMA … CASCADE`). Meant for
    /// tests, which work in a fresh schema each.
    pub async fn drop_schema(&self) -> Result<(), store::Error> {
        let client = self.client().await?;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                self.options.schema
            ))
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    /// Stops handing out connections and ends every subscription's stream. Operations after
    /// this fail with [`store::Error::Unavailable`].
    pub fn close_now(&self) {
        self.closed.send_replace(true);
        self.pool.close();
    }

    pub(crate) async fn client(&self) -> Result<Object, Error> {
        if *self.closed.borrow() {
            return Err(Error::Closed);
        }
        Ok(self.pool.get().await?)
    }

    async fn get_opt(&self, id: &PredictionId) -> Result<Option<Versioned<Prediction>>, Error> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql::GET).await?;
        match client.query_opt(&stmt, &[&id.as_str()]).await? {
            Some(row) => Ok(Some(decode(&row, 0)?)),
            None => Ok(None),
        }
    }

    async fn live_key(
        &self,
        owner: &AccountId,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, Error> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql::LIVE_KEY).await?;
        let Some(row) = client.query_opt(&stmt, &[&owner.as_str(), &key]).await? else {
            return Ok(None);
        };
        Ok(Some(IdempotencyRecord {
            owner: owner.clone(),
            key: key.to_owned(),
            fingerprint: column(&row, 0, "key fingerprint")?,
            prediction_id: parse_id(
                "prediction id",
                &column::<String>(&row, 1, "key prediction id")?,
                PredictionId::parse,
            )?,
            expires_at: column::<Ts>(&row, 2, "key expiry")?.0,
        }))
    }

    async fn create_inner(&self, new: NewPrediction<'_>) -> Result<Created, Error> {
        check_effects(new.effects)?;
        let row = PredictionRow::encode(new.prediction)?;
        let id = row.id().to_owned();
        let plan = EffectPlan::new(new.effects)?;
        let revision = revision_to_sql(Revision::FIRST);
        let key = new.idempotency.map(|k| {
            (
                k.owner.as_str(),
                k.key.as_str(),
                k.fingerprint.as_str(),
                k.prediction_id.as_str(),
                Ts(k.expires_at),
            )
        });
        // Without a key to record and with effects that fuse, the insert is one statement.
        let fused = key
            .is_none()
            .then(|| plan.fused(sql::FusedWrite::Create))
            .flatten();
        for _ in 0..MAX_RACES {
            if let Some(fused) = &fused {
                let client = self.client().await?;
                let stmt = client.prepare_cached(fused).await?;
                let mut params: Vec<Param<'_>> = row.params().to_vec();
                plan.push_fused_params(&mut params);
                if client.query_opt(&stmt, &params).await?.is_some() {
                    self.announce_write(&id, Revision::FIRST, plan.work);
                    return Ok(Created::Inserted(Revision::FIRST));
                }
                drop(client);
                match self.get_opt(&new.prediction.id).await? {
                    Some(existing) => return Ok(Created::ExistingId(existing)),
                    None => continue,
                }
            }
            let mut client = self.client().await?;
            let create = client.prepare_cached(&self.statements.create).await?;
            let put_key = match key {
                Some(_) => Some(client.prepare_cached(sql::PUT_KEY).await?),
                None => None,
            };
            let effects = plan.steps(&client, &id, &revision).await?;
            let key_params: Option<[Param<'_>; 5]> = key
                .as_ref()
                .map(|(owner, key, fp, pid, exp)| [owner as Param<'_>, key, fp, pid, exp]);
            let row_params = row.params();

            let txn = client.transaction().await?;
            let mut steps: Vec<(&Statement, &[Param<'_>])> = vec![(&create, &row_params)];
            if let (Some(stmt), Some(params)) = (&put_key, &key_params) {
                steps.push((stmt, params));
            }
            steps.extend(effects.iter().map(|(s, p)| (s, p.as_slice())));
            let results = pipeline(&txn, &steps).await?;

            if results[0].is_empty() {
                // The id exists: nothing is written.
                txn.rollback().await?;
                drop(client);
                match self.get_opt(&new.prediction.id).await? {
                    Some(existing) => return Ok(Created::ExistingId(existing)),
                    None => continue,
                }
            }
            if key.is_some() && results[1].is_empty() {
                // A live key of this owner holds the place: nothing is written.
                txn.rollback().await?;
                drop(client);
                let k = new.idempotency.expect("key is set");
                match self.live_key(&k.owner, &k.key).await? {
                    Some(record) => {
                        let prediction = self.get_opt(&record.prediction_id).await?;
                        return Ok(Created::ExistingKey { record, prediction });
                    }
                    None => continue,
                }
            }
            txn.commit().await?;
            self.announce_write(&id, Revision::FIRST, plan.work);
            return Ok(Created::Inserted(Revision::FIRST));
        }
        Err(Error::Contended(format!(
            "creating {id} kept racing with concurrent writes; giving up after {MAX_RACES} tries"
        )))
    }

    async fn update_inner(
        &self,
        id: &PredictionId,
        expected: Revision,
        next: &Prediction,
        effects: &[Effect],
    ) -> Result<Revision, Error> {
        check_effects(effects)?;
        let row = PredictionRow::encode(next)?;
        let plan = EffectPlan::new(effects)?;
        let id_text = id.as_str().to_owned();
        let expected_sql = revision_to_sql(expected);
        // The revision this write makes, which numbers its events.
        let next_sql = expected_sql.saturating_add(1);
        let fused = plan.fused(sql::FusedWrite::Update);
        for _ in 0..MAX_RACES {
            let mut client = self.client().await?;
            // The record is stored under `id` whatever `next.id` says.
            let mut params: Vec<Param<'_>> = row.params().to_vec();
            params[0] = &id_text;
            params.push(&expected_sql);
            if let Some(fused) = &fused {
                // One statement: the compare-and-set and its effects, or nothing.
                let stmt = client.prepare_cached(fused).await?;
                plan.push_fused_params(&mut params);
                if let Some(updated) = client.query_opt(&stmt, &params).await? {
                    let revision = revision_from_sql(column(&updated, 0, "revision")?)?;
                    self.announce_write(&id_text, revision, plan.work);
                    return Ok(revision);
                }
            } else {
                let update = client.prepare_cached(&self.statements.update).await?;
                let effects = plan.steps(&client, &id_text, &next_sql).await?;
                let txn = client.transaction().await?;
                let mut steps: Vec<(&Statement, &[Param<'_>])> = vec![(&update, &params)];
                steps.extend(effects.iter().map(|(s, p)| (s, p.as_slice())));
                let results = pipeline(&txn, &steps).await?;
                if let Some(updated) = results[0].first() {
                    let revision = revision_from_sql(column(updated, 0, "revision")?)?;
                    txn.commit().await?;
                    self.announce_write(&id_text, revision, plan.work);
                    return Ok(revision);
                }
                // The compare-and-set lost (or there is no such record): undo the effects.
                txn.rollback().await?;
            }
            let stmt = client.prepare_cached(sql::REVISION).await?;
            let actual = match client.query_opt(&stmt, &[&id_text]).await? {
                None => return Err(Error::NotFound(id.clone())),
                Some(row) => revision_from_sql(column(&row, 0, "revision")?)?,
            };
            if actual != expected {
                return Err(Error::Conflict { expected, actual });
            }
            // Deleted and created again at the expected revision in between: try again.
        }
        Err(Error::Contended(format!(
            "updating {id} kept racing with concurrent writes; giving up after {MAX_RACES} tries"
        )))
    }

    async fn delete_inner(&self, id: &PredictionId) -> Result<(), Error> {
        let mut client = self.client().await?;
        let delete = client.prepare_cached(&self.statements.delete).await?;
        let rest = client.prepare_cached(sql::DELETE_REST).await?;
        let pid = id.as_str();
        let id_param: [Param<'_>; 1] = [&pid];
        let txn = client.transaction().await?;
        let results = pipeline(&txn, &[(&delete, &id_param), (&rest, &id_param)]).await?;
        txn.commit().await?;
        if let Some(row) = results[0].first() {
            let revision: i64 = column(row, 0, "revision")?;
            self.announce(&client, &[format!("p:{revision}:{id}")])
                .await;
        }
        Ok(())
    }

    async fn import_inner(&self, records: &[Record]) -> Result<(), Error> {
        enum Item {
            Prediction(Box<PredictionRow>, i64),
            Job(String, String, i64, Ts),
            Key(String, String, String, String, Ts),
            Counter(String, i64),
            Delivery {
                prediction_id: String,
                seq: i64,
                row: Box<DeliveryRow>,
                status: String,
                attempts: Value,
                next_attempt_at: Option<Ts>,
            },
            Event {
                prediction_id: String,
                revision: i64,
                index: i32,
                kind: String,
                data: String,
                escaped: bool,
            },
        }
        // The predictions whose outbox the import changes: their heads are decided again.
        let mut outboxes: BTreeSet<String> = BTreeSet::new();
        let mut items = Vec::with_capacity(records.len());
        for record in records {
            items.push(match record {
                Record::Prediction(p) => Item::Prediction(
                    Box::new(PredictionRow::encode(&p.value)?),
                    revision_to_sql(p.revision),
                ),
                Record::Job(job) => Item::Job(
                    job.prediction_id.as_str().to_owned(),
                    job.queue.clone(),
                    i64::from(job.attempts),
                    Ts(job.run_at),
                ),
                Record::IdempotencyKey(k) => Item::Key(
                    k.owner.as_str().to_owned(),
                    k.key.clone(),
                    k.fingerprint.clone(),
                    k.prediction_id.as_str().to_owned(),
                    Ts(k.expires_at),
                ),
                Record::Counter { name, value } => Item::Counter(name.clone(), *value),
                Record::Delivery(state) => {
                    let prediction_id = state.delivery.prediction_id.as_str().to_owned();
                    outboxes.insert(prediction_id.clone());
                    Item::Delivery {
                        prediction_id,
                        seq: i64::try_from(state.seq).map_err(|_| {
                            Error::Config(format!("cannot import seq {}: too large", state.seq))
                        })?,
                        row: Box::new(DeliveryRow::encode(&state.delivery)?),
                        status: status_name(state.status)?,
                        attempts: encode_attempts(&state.attempts)?,
                        next_attempt_at: state.next_attempt_at.map(Ts),
                    }
                }
                Record::Event(id, event) => {
                    let (kind, data, escaped) = encode_event(&event.event);
                    Item::Event {
                        prediction_id: id.as_str().to_owned(),
                        revision: i64::try_from(event.revision.0).map_err(|_| {
                            Error::Config(format!("cannot import revision {}", event.revision))
                        })?,
                        index: i32::try_from(event.index).map_err(|_| {
                            Error::Config(format!("cannot import event index {}", event.index))
                        })?,
                        kind,
                        data,
                        escaped,
                    }
                }
                other => {
                    return Err(Error::Config(format!(
                        "cannot import {other:?}: this build of the PostgreSQL store does not know \
                         this kind of record"
                    )));
                }
            });
        }
        let mut client = self.client().await?;
        let prediction = client.prepare_cached(sql::IMPORT_PREDICTION).await?;
        let job = client.prepare_cached(sql::IMPORT_JOB).await?;
        let key = client.prepare_cached(sql::IMPORT_KEY).await?;
        let clear = client.prepare_cached(sql::IMPORT_COUNTER_CLEAR).await?;
        let set = client.prepare_cached(sql::IMPORT_COUNTER_SET).await?;
        let delivery = client.prepare_cached(sql::IMPORT_DELIVERY).await?;
        let event = client.prepare_cached(sql::IMPORT_EVENT).await?;
        let lock = client.prepare_cached(sql::LOCK_PREDICTION).await?;
        let rehead = client.prepare_cached(sql::REHEAD).await?;
        let resync = client.prepare_cached(&self.statements.resync).await?;
        let mut params: Vec<(&Statement, Vec<Param<'_>>)> =
            Vec::with_capacity(items.len() + 2 * outboxes.len() + 1);
        // The outboxes' locks first, in one order, as every other writer of an outbox takes
        // its prediction's lock before its messages' rows.
        for id in &outboxes {
            params.push((&lock, vec![id]));
        }
        for item in &items {
            match item {
                Item::Prediction(row, revision) => {
                    let mut p = row.params().to_vec();
                    p.push(revision);
                    params.push((&prediction, p));
                }
                Item::Job(id, queue, attempts, run_at) => {
                    params.push((&job, vec![id, queue, attempts, run_at]));
                }
                Item::Key(owner, k, fp, pid, exp) => {
                    params.push((&key, vec![owner, k, fp, pid, exp]));
                }
                Item::Counter(name, value) => {
                    params.push((&clear, vec![name]));
                    params.push((&set, vec![name, value]));
                }
                Item::Delivery {
                    prediction_id,
                    seq,
                    row,
                    status,
                    attempts,
                    next_attempt_at,
                } => params.push((
                    &delivery,
                    vec![
                        prediction_id,
                        seq,
                        &row.id,
                        &row.url,
                        &row.event,
                        &row.payload,
                        &row.created_at,
                        status,
                        attempts,
                        next_attempt_at,
                        &row.escaped,
                    ],
                )),
                Item::Event {
                    prediction_id,
                    revision,
                    index,
                    kind,
                    data,
                    escaped,
                } => params.push((
                    &event,
                    vec![prediction_id, revision, index, kind, data, escaped],
                )),
            }
        }
        for id in &outboxes {
            params.push((&rehead, vec![id]));
        }
        params.push((&resync, Vec::new()));
        let txn = client.transaction().await?;
        let steps: Vec<(&Statement, &[Param<'_>])> =
            params.iter().map(|(s, p)| (*s, p.as_slice())).collect();
        pipeline(&txn, &steps).await?;
        txn.commit().await?;
        Ok(())
    }
}

/// Sends statements together on one connection (inside its transaction) and returns their
/// rows in order. PostgreSQL runs them one after another; if one fails, the rest fail with it
/// and the transaction must be rolled back (dropping it does).
pub(crate) async fn pipeline(
    txn: &deadpool_postgres::Transaction<'_>,
    steps: &[(&Statement, &[Param<'_>])],
) -> Result<Vec<Vec<Row>>, Error> {
    Ok(try_join_all(steps.iter().map(|(stmt, params)| txn.query(*stmt, params))).await?)
}

/// Refuses effects this build does not know, before anything is written.
fn check_effects(effects: &[Effect]) -> Result<(), Error> {
    for effect in effects {
        match effect {
            Effect::EnqueueJob { .. }
            | Effect::EnqueueClaimed { .. }
            | Effect::CompleteJob
            | Effect::Count { .. }
            | Effect::EnqueueDelivery(_)
            | Effect::AppendEvents(_) => {}
            // `Effect` is non-exhaustive: a kind this build does not know must fail the write,
            // never be skipped.
            other => return Err(Error::UnsupportedEffect(format!("{other:?}"))),
        }
    }
    Ok(())
}

/// A write's effects, with their parameters owned, in the order they apply.
#[derive(Debug)]
struct EffectPlan {
    steps: Vec<Step>,
    /// Counter names (sorted, distinct, so concurrent writers lock rows in one order) and
    /// their summed deltas, applied in one statement.
    counts: Option<(Vec<String>, Vec<i64>)>,
    /// Webhook messages for the outbox, in order, applied in one statement.
    deliveries: NewDeliveries,
    /// Events for the log, in order, applied in one statement.
    events: NewEvents,
    /// Whether jobs become claimable (announced as work).
    work: bool,
}

#[derive(Debug)]
enum Step {
    Enqueue {
        queue: String,
        run_at: Ts,
    },
    EnqueueClaimed {
        queue: String,
        expires_at: Ts,
        token: i64,
        worker: String,
    },
    Complete,
}

impl EffectPlan {
    /// Plans effects already checked by [`check_effects`], encoding what they write.
    fn new(effects: &[Effect]) -> Result<Self, Error> {
        let mut steps = Vec::new();
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        let mut deliveries = NewDeliveries::default();
        let mut events = NewEvents::default();
        let mut work = false;
        for effect in effects {
            match effect {
                Effect::EnqueueJob { queue, run_at } => {
                    work = true;
                    steps.push(Step::Enqueue {
                        queue: queue.clone(),
                        run_at: Ts(*run_at),
                    });
                }
                Effect::EnqueueClaimed {
                    queue,
                    worker,
                    token,
                    expires_at,
                } => steps.push(Step::EnqueueClaimed {
                    queue: queue.clone(),
                    expires_at: Ts(*expires_at),
                    token: token_to_sql(*token),
                    worker: worker.as_str().to_owned(),
                }),
                Effect::CompleteJob => steps.push(Step::Complete),
                Effect::Count { name, delta } => {
                    let sum = counts.entry(name).or_default();
                    *sum = sum.saturating_add(*delta);
                }
                Effect::EnqueueDelivery(delivery) => deliveries.push(delivery)?,
                // One list for the write, numbered from 0, so that positions stay unique when
                // a write carries several of these.
                Effect::AppendEvents(list) => list.iter().for_each(|e| events.push(e)),
                _ => {}
            }
        }
        let counts = (!counts.is_empty()).then(|| {
            (
                counts.keys().map(|k| (*k).to_owned()).collect(),
                counts.values().copied().collect(),
            )
        });
        Ok(Self {
            steps,
            counts,
            deliveries,
            events,
            work,
        })
    }

    /// The one statement that makes `write` with these effects ([`sql::fused`]), unless the
    /// effects need the multi-statement transaction: webhook messages, or more than one job
    /// step (two statements of one command may not change the same job row).
    fn fused(&self, write: sql::FusedWrite) -> Option<String> {
        if !self.deliveries.is_empty() || self.steps.len() > 1 {
            return None;
        }
        let job = self.steps.first().map(|step| match step {
            Step::Enqueue { .. } => sql::FusedJob::Enqueue,
            Step::EnqueueClaimed { .. } => sql::FusedJob::EnqueueClaimed,
            Step::Complete => sql::FusedJob::Complete,
        });
        Some(sql::fused(sql::FusedShape {
            write,
            job,
            counts: self.counts.is_some(),
            events: !self.events.is_empty(),
        }))
    }

    /// Appends the effects' parameters of [`EffectPlan::fused`]'s statement to the write's.
    fn push_fused_params<'a>(&'a self, params: &mut Vec<Param<'a>>) {
        match self.steps.first() {
            None | Some(Step::Complete) => {}
            Some(Step::Enqueue { queue, run_at }) => params.extend([queue as Param<'a>, run_at]),
            Some(Step::EnqueueClaimed {
                queue,
                expires_at,
                token,
                worker,
            }) => params.extend([queue as Param<'a>, expires_at, token, worker]),
        }
        if let Some((names, deltas)) = &self.counts {
            params.extend([names as Param<'a>, deltas]);
        }
        if !self.events.is_empty() {
            params.extend(self.events.params());
        }
    }

    /// The statements that apply the plan to the prediction `id`, written at `revision`,
    /// prepared on `client`.
    async fn steps<'a>(
        &'a self,
        client: &Object,
        id: &'a String,
        revision: &'a i64,
    ) -> Result<Vec<(Statement, Vec<Param<'a>>)>, Error> {
        let mut out = Vec::with_capacity(self.steps.len() + 3);
        for step in &self.steps {
            out.push(match step {
                Step::Enqueue { queue, run_at } => (
                    client.prepare_cached(sql::ENQUEUE).await?,
                    vec![id as Param<'a>, queue, run_at],
                ),
                Step::EnqueueClaimed {
                    queue,
                    expires_at,
                    token,
                    worker,
                } => (
                    client.prepare_cached(sql::ENQUEUE_CLAIMED).await?,
                    vec![id as Param<'a>, queue, expires_at, token, worker],
                ),
                Step::Complete => (
                    client.prepare_cached(sql::COMPLETE).await?,
                    vec![id as Param<'a>],
                ),
            });
        }
        if let Some((names, deltas)) = &self.counts {
            out.push((
                client.prepare_cached(sql::COUNT).await?,
                vec![names as Param<'a>, deltas],
            ));
        }
        if !self.deliveries.is_empty() {
            let mut params = vec![id as Param<'a>];
            params.extend(self.deliveries.params());
            out.push((
                client.prepare_cached(sql::ENQUEUE_DELIVERIES).await?,
                params,
            ));
        }
        if !self.events.is_empty() {
            let mut params = vec![id as Param<'a>, revision];
            params.extend(self.events.params());
            out.push((client.prepare_cached(sql::APPEND_EVENTS).await?, params));
        }
        Ok(out)
    }
}

/// A job row `(prediction_id, queue, attempts, run_at)` starting at column `at`.
fn job_from_row(row: &Row, at: usize) -> Result<Job, Error> {
    Ok(Job {
        prediction_id: parse_id(
            "job prediction id",
            &column::<String>(row, at, "job prediction id")?,
            PredictionId::parse,
        )?,
        queue: column(row, at + 1, "job queue")?,
        attempts: attempts_from_sql(column(row, at + 2, "job attempts")?)?,
        run_at: column::<Ts>(row, at + 3, "job run_at")?.0,
    })
}

fn count_from_sql(value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::decode("job count", value))
}

/// The password stays hidden.
impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("url", &self.options.redacted_url())
            .field("pool_size", &status.size)
            .field("pool_available", &status.available)
            .field("durable", &self.durable)
            .field("closed", &*self.closed.borrow())
            .finish()
    }
}

#[async_trait]
impl Store for PostgresStore {
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

    async fn create(&self, new: NewPrediction<'_>) -> store::Result<Created> {
        Ok(self.create_inner(new).await?)
    }

    async fn get(&self, id: &PredictionId) -> store::Result<Versioned<Prediction>> {
        self.get_opt(id)
            .await?
            .ok_or_else(|| store::Error::NotFound(id.clone()))
    }

    async fn update(
        &self,
        id: &PredictionId,
        expected: Revision,
        next: &Prediction,
        effects: &[Effect],
    ) -> store::Result<Revision> {
        Ok(self.update_inner(id, expected, next, effects).await?)
    }

    async fn delete(&self, id: &PredictionId) -> store::Result<()> {
        Ok(self.delete_inner(id).await?)
    }

    async fn list(&self, query: &ListQuery) -> store::Result<Page> {
        let limit = query.limit.max(1);
        let owner = query.owner.as_ref().map(AccountId::as_str);
        let status = query.status.map(|s| s.as_str());
        let created_after = query.created_after.map(Ts);
        let created_before = query.created_before.map(Ts);
        let cursor = query
            .after
            .as_ref()
            .map(|c| (Ts(c.created_at), c.id.as_str()));
        // One more than asked, to learn whether a next page exists.
        let fetch = sql_int(limit).saturating_add(1);
        let mut params: Vec<Param<'_>> = Vec::with_capacity(7);
        if let Some(owner) = &owner {
            params.push(owner);
        }
        if let Some(status) = &status {
            params.push(status);
        }
        if let Some(at) = &created_after {
            params.push(at);
        }
        if let Some(at) = &created_before {
            params.push(at);
        }
        if let Some((at, id)) = &cursor {
            params.push(at);
            params.push(id);
        }
        params.push(&fetch);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&sql::list(query))
            .await
            .map_err(Error::from)?;
        let rows = client.query(&stmt, &params).await.map_err(Error::from)?;
        let mut items: Vec<Versioned<Prediction>> = Vec::with_capacity(rows.len().min(limit));
        let mut next = None;
        for row in &rows {
            if items.len() == limit {
                next = items.last().map(|last| Cursor {
                    created_at: last.value.created_at,
                    id: last.value.id.clone(),
                });
                break;
            }
            items.push(decode(row, 0)?);
        }
        Ok(Page { items, next })
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> store::Result<Vec<PredictionId>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.statements.expire)
            .await
            .map_err(Error::from)?;
        let outbox = client
            .prepare_cached(sql::EXPIRE_OUTBOX)
            .await
            .map_err(Error::from)?;
        let txn = client.transaction().await.map_err(Error::from)?;
        let rows = txn
            .query(&stmt, &[&Ts(now), &sql_int(limit)])
            .await
            .map_err(Error::from)?;
        if !rows.is_empty() {
            // A second statement, so that it sees what writes committed before the sweep
            // locked their predictions (see `sql::DELETE_REST`).
            let ids = rows
                .iter()
                .map(|row| column::<String>(row, 0, "prediction id"))
                .collect::<Result<Vec<_>, _>>()?;
            txn.execute(&outbox, &[&ids]).await.map_err(Error::from)?;
        }
        txn.commit().await.map_err(Error::from)?;
        let due = rows
            .iter()
            .map(|row| {
                let id = parse_id(
                    "prediction id",
                    &column::<String>(row, 0, "prediction id")?,
                    PredictionId::parse,
                )?;
                let revision: i64 = column(row, 2, "revision")?;
                Ok((column::<Ts>(row, 1, "expires_at")?.0, id, revision))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let announcements: Vec<String> = due
            .iter()
            .map(|(_, id, revision)| format!("p:{revision}:{id}"))
            .collect();
        self.announce(&client, &announcements).await;
        let mut due: Vec<(Timestamp, PredictionId)> =
            due.into_iter().map(|(at, id, _)| (at, id)).collect();
        // In expiry order, as they were picked.
        due.sort();
        Ok(due.into_iter().map(|(_, id)| id).collect())
    }

    async fn claim_jobs(&self, request: &ClaimRequest) -> store::Result<Vec<Lease>> {
        if request.max == 0 {
            return Ok(Vec::new());
        }
        let excluded: Vec<&str> = request.exclude_queues.iter().map(String::as_str).collect();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.statements.claim)
            .await
            .map_err(Error::from)?;
        let rows = client
            .query(
                &stmt,
                &[
                    &sql_int(request.max),
                    &excluded,
                    &request.worker.as_str(),
                    &Interval(request.lease_for),
                ],
            )
            .await
            .map_err(Error::from)?;
        let mut leases = Vec::with_capacity(rows.len());
        for row in &rows {
            let lease = Lease {
                job: job_from_row(row, 0)?,
                worker: request.worker.clone(),
                token: LeaseToken(column::<i64>(row, 5, "lease token")?.cast_unsigned()),
                expires_at: column::<Ts>(row, 4, "lease expiry")?.0,
            };
            let picked_at: Ts = column(row, 6, "job visible_at")?;
            let seq: i64 = column(row, 7, "job seq")?;
            leases.push(((picked_at.0, seq), lease));
        }
        // Oldest first, in the order the jobs were picked.
        leases.sort_by_key(|(order, _)| *order);
        Ok(leases.into_iter().map(|(_, lease)| lease).collect())
    }

    async fn renew_lease(&self, lease: &Lease, extend_by: Duration) -> store::Result<Lease> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql::RENEW)
            .await
            .map_err(Error::from)?;
        let row = client
            .query_opt(
                &stmt,
                &[
                    &lease.job.prediction_id.as_str(),
                    &token_to_sql(lease.token),
                    &Interval(extend_by),
                ],
            )
            .await
            .map_err(Error::from)?
            .ok_or(Error::LeaseLost)?;
        Ok(Lease {
            expires_at: column::<Ts>(&row, 0, "lease expiry")?.0,
            ..lease.clone()
        })
    }

    async fn retry_job(&self, lease: &Lease, run_at: Timestamp) -> store::Result<()> {
        self.end_lease(&self.statements.retry, lease, run_at).await
    }

    async fn release_job(&self, lease: &Lease, run_at: Timestamp) -> store::Result<()> {
        self.end_lease(&self.statements.release, lease, run_at)
            .await
    }

    async fn complete_job(&self, id: &PredictionId) -> store::Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql::COMPLETE)
            .await
            .map_err(Error::from)?;
        client
            .execute(&stmt, &[&id.as_str()])
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    async fn queue_stats(&self) -> store::Result<QueueStats> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql::QUEUE_STATS)
            .await
            .map_err(Error::from)?;
        let row = client.query_one(&stmt, &[]).await.map_err(Error::from)?;
        Ok(QueueStats {
            ready: count_from_sql(column(&row, 0, "ready jobs")?)?,
            leased: count_from_sql(column(&row, 1, "leased jobs")?)?,
            delayed: count_from_sql(column(&row, 2, "delayed jobs")?)?,
        })
    }

    async fn counters(&self) -> store::Result<Vec<(String, i64)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(sql::COUNTERS)
            .await
            .map_err(Error::from)?;
        let rows = client.query(&stmt, &[]).await.map_err(Error::from)?;
        let counters = rows
            .iter()
            .map(|row| {
                Ok((
                    column(row, 0, "counter name")?,
                    column(row, 1, "counter value")?,
                ))
            })
            .collect::<Result<_, Error>>()?;
        Ok(counters)
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

    async fn list_jobs(
        &self,
        after: Option<&PredictionId>,
        limit: usize,
    ) -> store::Result<Vec<Job>> {
        let limit = sql_int(limit.max(1));
        let client = self.client().await?;
        let rows = match after {
            None => {
                let stmt = client
                    .prepare_cached(sql::LIST_JOBS_FIRST)
                    .await
                    .map_err(Error::from)?;
                client.query(&stmt, &[&limit]).await
            }
            Some(after) => {
                let stmt = client
                    .prepare_cached(sql::LIST_JOBS_AFTER)
                    .await
                    .map_err(Error::from)?;
                client.query(&stmt, &[&after.as_str(), &limit]).await
            }
        }
        .map_err(Error::from)?;
        Ok(rows
            .iter()
            .map(|row| job_from_row(row, 0))
            .collect::<Result<_, _>>()?)
    }

    async fn list_idempotency_keys(
        &self,
        after: Option<(&AccountId, &str)>,
        limit: usize,
    ) -> store::Result<Vec<IdempotencyRecord>> {
        let limit = sql_int(limit.max(1));
        let client = self.client().await?;
        let rows = match after {
            None => {
                let stmt = client
                    .prepare_cached(sql::LIST_KEYS_FIRST)
                    .await
                    .map_err(Error::from)?;
                client.query(&stmt, &[&limit]).await
            }
            Some((owner, key)) => {
                let stmt = client
                    .prepare_cached(sql::LIST_KEYS_AFTER)
                    .await
                    .map_err(Error::from)?;
                client.query(&stmt, &[&owner.as_str(), &key, &limit]).await
            }
        }
        .map_err(Error::from)?;
        let keys = rows
            .iter()
            .map(|row| {
                Ok(IdempotencyRecord {
                    owner: parse_id(
                        "key owner",
                        &column::<String>(row, 0, "key owner")?,
                        AccountId::parse,
                    )?,
                    key: column(row, 1, "key")?,
                    fingerprint: column(row, 2, "key fingerprint")?,
                    prediction_id: parse_id(
                        "key prediction id",
                        &column::<String>(row, 3, "key prediction id")?,
                        PredictionId::parse,
                    )?,
                    expires_at: column::<Ts>(row, 4, "key expiry")?.0,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(keys)
    }

    async fn import(&self, records: &[Record]) -> store::Result<()> {
        Ok(self.import_inner(records).await?)
    }

    async fn claim_deliveries(
        &self,
        worker: &WorkerId,
        lease_for: Duration,
        max: usize,
    ) -> store::Result<Vec<DeliveryLease>> {
        Ok(self.claim_deliveries_inner(worker, lease_for, max).await?)
    }

    async fn finish_delivery(
        &self,
        lease: &DeliveryLease,
        attempt: &Attempt,
        outcome: DeliveryOutcome,
    ) -> store::Result<()> {
        Ok(self.finish_delivery_inner(lease, attempt, outcome).await?)
    }

    async fn list_deliveries(&self, id: &PredictionId) -> store::Result<Vec<DeliveryState>> {
        Ok(self.list_deliveries_inner(id).await?)
    }

    async fn redeliver(&self, id: &PredictionId, delivery_id: &str) -> store::Result<()> {
        Ok(self.redeliver_inner(id, delivery_id).await?)
    }

    async fn read_events(
        &self,
        id: &PredictionId,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> store::Result<Vec<StreamEvent>> {
        Ok(self.read_events_inner(id, after, limit).await?)
    }

    async fn close(&self) {
        self.close_now();
    }
}

impl PostgresStore {
    /// Retry or release: ends a live lease and makes the job due at `run_at`.
    async fn end_lease(&self, sql: &str, lease: &Lease, run_at: Timestamp) -> store::Result<()> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(Error::from)?;
        let rows = client
            .query(
                &stmt,
                &[
                    &lease.job.prediction_id.as_str(),
                    &token_to_sql(lease.token),
                    &Ts(run_at),
                ],
            )
            .await
            .map_err(Error::from)?;
        if rows.is_empty() {
            return Err(Error::LeaseLost.into());
        }
        self.announce(&client, &[crate::notify::WORK.to_owned()])
            .await;
        Ok(())
    }

    /// Announces committed writes to every node's subscription (see [`announcer`]).
    /// Announcements are hints; one lost in a crash right after the commit only delays the
    /// nodes that poll as a backstop.
    /// Announces a prediction write that committed revision `revision` (and work, if it
    /// made a job claimable).
    fn announce_write(&self, id: &str, revision: Revision, work: bool) {
        let _ = self.announcements.send(format!("p:{}:{id}", revision.0));
        if work {
            let _ = self.announcements.send(crate::notify::WORK.to_owned());
        }
    }

    async fn announce(&self, _client: &Object, payloads: &[String]) {
        for payload in payloads {
            // Fails only once the announcer has stopped, with the pool closed.
            let _ = self.announcements.send(payload.clone());
        }
    }
}

/// The most announcements sent in one `pg_notify` statement.
const ANNOUNCE_BATCH: usize = 512;

/// Starts the task that sends announcements after their writes committed, batching whatever
/// has queued up meanwhile into one statement. Sent from the writes' own connections, each
/// announcement would be its own transaction: a `pg_notify` takes a database-wide lock until
/// its commit is flushed, so one per write serialised every writer behind the notify queue
/// (the shared-lifecycles benchmark saw `Lock:object` waits on it), and cost every write a
/// round trip. Inside the write's transaction it would be worse still: the lock would be held
/// through the write's own flush. Batched here, the lock is taken once per batch; order is
/// kept, and PostgreSQL drops duplicates within one batch (the `w` work hints). The task ends
/// when the store is dropped.
fn announcer(pool: Pool, statements: Arc<Statements>) -> mpsc::UnboundedSender<String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(ANNOUNCE_BATCH);
        while rx.recv_many(&mut batch, ANNOUNCE_BATCH).await > 0 {
            let sent = async {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                let stmt = client
                    .prepare_cached(&statements.announce)
                    .await
                    .map_err(|e| e.to_string())?;
                client
                    .execute(&stmt, &[&batch])
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, dropped = batch.len(), "announcements not sent");
            }
            batch.clear();
        }
    });
    tx
}
