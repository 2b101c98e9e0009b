//! [`CloudflareStore`]: connecting (the `hello` handshake) and the contract's traits, each
//! method one call of the protocol (PROTOCOL.md, "Methods"). The Worker does the fan-out over
//! its shard objects; this side only encodes, signs, sends and decodes.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use augur_core::store::{
    self, AdminStore, Balance, Capabilities, ChangeStream, ClaimRequest, EventStore, Exported,
    Finish, Item, ItemLease, Key, Lane, LedgerStore, ListQuery, Page, Position, Posted, QueueStats,
    QueueStore, RecordStore, Section, Stored, StreamEvent, Write, Written,
};
use augur_core::{AccountId, Revision, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Method};
use crate::config::CloudflareOptions;
use crate::error::{BACKEND, Error};
use crate::wire::{self, Decoded, Empty, WExported, WKey};

/// The protocol version this client speaks.
pub(crate) const PROTOCOL: u64 = 1;

/// The shard objects of a namespace; fixed by the protocol (it divides
/// [`augur_core::store::Partition::COUNT`]).
pub(crate) const SHARDS: u64 = 16;

/// Pieces sent per `import` request, so that a migration's page never makes one huge body.
const IMPORT_BATCH: usize = 200;

/// The Cloudflare backend: the storage contract on Durable Objects, through the Worker in
/// `cloudflare/`, shared by any number of Augur processes.
///
/// Connect once per process and share it (`Arc<dyn Store>`); clones are cheap and share the
/// connection pool.
#[derive(Clone)]
pub struct CloudflareStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    /// Stops the change subscriptions at `close`.
    pub(crate) shutdown: CancellationToken,
    closed: AtomicBool,
}

impl fmt::Debug for CloudflareStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudflareStore")
            .field("url", &self.inner.client.options.to_string())
            .finish_non_exhaustive()
    }
}

impl CloudflareStore {
    /// Connects to the Worker a `cloudflare://` or `cloudflare+http://` URL names (see
    /// [`CloudflareOptions::from_url`]).
    pub async fn connect(url: &str) -> Result<Self, store::Error> {
        Self::connect_with(CloudflareOptions::from_url(url)?).await
    }

    /// Connects with parsed options: says `hello` and checks that the Worker speaks protocol
    /// 1 with 16 shards. A wrong secret fails here, as [`store::Error::Other`] (not retryable);
    /// an unreachable Worker as [`store::Error::Unavailable`].
    pub async fn connect_with(options: CloudflareOptions) -> Result<Self, store::Error> {
        Ok(Self::connect_inner(options).await?)
    }

    async fn connect_inner(options: CloudflareOptions) -> Result<Self, Error> {
        let client = Client::new(options)?;
        let hello: wire::HelloAnswer = client.call(Method::Hello, &wire::HelloRequest {}).await?;
        if hello.protocol != PROTOCOL || hello.shards != SHARDS {
            return Err(Error::Protocol(format!(
                "the Worker at {} speaks protocol {} with {} shards; this build speaks protocol \
                 {PROTOCOL} with {SHARDS} shards (deploy the Worker of this release)",
                client.options, hello.protocol, hello.shards
            )));
        }
        tracing::debug!(url = %client.options, "connected to the Cloudflare store");
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                shutdown: CancellationToken::new(),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The options it was connected with.
    pub fn options(&self) -> &CloudflareOptions {
        &self.inner.client.options
    }

    async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        method: Method,
        body: &Q,
    ) -> Result<A, Error> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        self.inner.client.call(method, body).await
    }
}

/// An answer's content that does not decode, as the error of `method`.
fn answer<T>(method: Method, decoded: Decoded<T>) -> Result<T, Error> {
    decoded.map_err(|detail| Error::Answer {
        method: method.name(),
        detail,
    })
}

fn decode_all<W, T>(
    method: Method,
    items: Vec<W>,
    decode: impl Fn(W) -> Decoded<T>,
) -> Result<Vec<T>, Error> {
    answer(method, items.into_iter().map(decode).collect())
}

#[async_trait]
impl RecordStore for CloudflareStore {
    async fn write(&self, write: &Write) -> store::Result<Written> {
        write.check()?;
        let written: wire::WWritten = self.call(Method::Write, &wire::WWrite::from(write)).await?;
        Ok(written.decode())
    }

    async fn get(&self, key: &Key) -> store::Result<Option<Arc<Stored>>> {
        let got: wire::GetAnswer = self
            .call(Method::Get, &wire::GetRequest { key: key.into() })
            .await?;
        match got.stored {
            Some(stored) => Ok(Some(Arc::new(answer(Method::Get, stored.decode())?))),
            None => Ok(None),
        }
    }

    async fn list(&self, query: &ListQuery) -> store::Result<Page> {
        let page: wire::ListAnswer = self
            .call(Method::List, &wire::ListRequest::from(query))
            .await?;
        let items = decode_all(Method::List, page.items, |s| s.decode().map(Arc::new))?;
        Ok(Page {
            items,
            next: page.next.map(wire::WCursor::decode),
        })
    }

    async fn expire(&self, now: Timestamp, limit: usize) -> store::Result<Vec<Key>> {
        let expired: wire::ExpireAnswer = self
            .call(
                Method::Expire,
                &wire::ExpireRequest {
                    now: now.as_micros(),
                    limit,
                },
            )
            .await?;
        Ok(decode_all(Method::Expire, expired.keys, WKey::decode)?)
    }
}

#[async_trait]
impl QueueStore for CloudflareStore {
    async fn claim(&self, request: &ClaimRequest) -> store::Result<Vec<ItemLease>> {
        let claimed: wire::ClaimAnswer = self
            .call(Method::Claim, &wire::ClaimRequestBody::from(request))
            .await?;
        Ok(decode_all(Method::Claim, claimed.leases, |l| l.decode())?)
    }

    async fn renew(&self, lease: &ItemLease, extend_by: Duration) -> store::Result<ItemLease> {
        let renewed: wire::RenewAnswer = self
            .call(Method::Renew, &wire::RenewRequest::new(lease, extend_by))
            .await?;
        Ok(answer(Method::Renew, renewed.lease.decode())?)
    }

    async fn finish(&self, lease: &ItemLease, finish: &Finish) -> store::Result<()> {
        let _: Empty = self
            .call(Method::Finish, &wire::FinishRequest::new(lease, finish))
            .await?;
        Ok(())
    }

    async fn items(&self, lane: Lane, group: &Key) -> store::Result<Vec<Item>> {
        let items: wire::ItemsAnswer = self
            .call(
                Method::Items,
                &wire::ItemsRequest {
                    lane: lane.as_str(),
                    group: group.into(),
                },
            )
            .await?;
        Ok(decode_all(Method::Items, items.items, |i| i.decode())?)
    }

    async fn requeue(&self, lane: Lane, group: &Key, id: &str) -> store::Result<()> {
        let _: Empty = self
            .call(
                Method::Requeue,
                &wire::RequeueRequest {
                    lane: lane.as_str(),
                    group: group.into(),
                    id: id.to_owned(),
                },
            )
            .await?;
        Ok(())
    }

    async fn queue_stats(&self, lane: Lane) -> store::Result<QueueStats> {
        let stats: wire::QueueStatsAnswer = self
            .call(
                Method::QueueStats,
                &wire::QueueStatsRequest {
                    lane: lane.as_str(),
                },
            )
            .await?;
        Ok(stats.decode())
    }
}

#[async_trait]
impl EventStore for CloudflareStore {
    async fn read_events(
        &self,
        stream: &Key,
        after: Option<(Revision, u32)>,
        limit: usize,
    ) -> store::Result<Vec<StreamEvent>> {
        let events: wire::ReadEventsAnswer = self
            .call(
                Method::ReadEvents,
                &wire::ReadEventsRequest {
                    stream: stream.into(),
                    after: after.map(|(revision, index)| (revision.0, index)),
                    limit,
                },
            )
            .await?;
        Ok(events.events)
    }
}

#[async_trait]
impl LedgerStore for CloudflareStore {
    async fn balance(&self, account: &AccountId) -> store::Result<Balance> {
        Ok(self
            .call(
                Method::Balance,
                &wire::BalanceRequest {
                    account: account.as_str().to_owned(),
                },
            )
            .await?)
    }

    async fn ledger(
        &self,
        account: &AccountId,
        before: Option<u64>,
        limit: usize,
    ) -> store::Result<Vec<Posted>> {
        let ledger: wire::LedgerAnswer = self
            .call(
                Method::Ledger,
                &wire::LedgerRequest {
                    account: account.as_str().to_owned(),
                    before,
                    limit,
                },
            )
            .await?;
        Ok(decode_all(Method::Ledger, ledger.entries, |p| p.decode())?)
    }
}

#[async_trait]
impl AdminStore for CloudflareStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Durable Objects' SQLite storage is replicated before a write is acknowledged.
            durable: true,
            shared: true,
            native_ttl: false,
            change_notifications: true,
        }
    }

    async fn counters(&self) -> store::Result<Vec<(String, i64)>> {
        let counters: wire::CountersAnswer = self
            .call(Method::Counters, &wire::CountersRequest {})
            .await?;
        Ok(counters.counters)
    }

    async fn subscribe(&self) -> store::Result<Option<ChangeStream>> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed.into());
        }
        Ok(Some(self.inner.subscribe().await?))
    }

    async fn export(
        &self,
        section: Section,
        after: Option<&Position>,
        limit: usize,
    ) -> store::Result<Vec<Exported>> {
        let exported: wire::ExportAnswer = self
            .call(
                Method::Export,
                &wire::ExportRequest::new(section, after, limit),
            )
            .await?;
        Ok(decode_all(
            Method::Export,
            exported.pieces,
            WExported::decode,
        )?)
    }

    async fn import(&self, pieces: &[Exported]) -> store::Result<()> {
        for batch in pieces.chunks(IMPORT_BATCH) {
            let _: Empty = self
                .call(
                    Method::Import,
                    &wire::ImportRequest {
                        pieces: batch.iter().map(WExported::from).collect(),
                    },
                )
                .await?;
        }
        Ok(())
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.shutdown.cancel();
    }
}
