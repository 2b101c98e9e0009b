//! The nodes serving from one store: each `augur serve` keeps a short-lived record of itself
//! ([`Kind::Node`]) that it renews every [`HEARTBEAT`], so that any node can say which nodes
//! are alive (the admin status and dashboard). A node that stops cleanly removes its record; one
//! that crashes drops out when the record expires, [`TTL`] after its last renewal (an expired
//! record reads as absent on every backend, before any sweep). The records are kept under the
//! admin account, are never migrated (`augur migrate` skips them: they describe the old
//! store's nodes), and hold nothing secret.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::id::{AccountId, WorkerId};
use crate::service::Predictions;
use crate::store::{self, Entity, Key, Kind, ListQuery, Op, Record, StoreExt, Write};
use crate::time::Timestamp;

/// How often a node renews its record.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// How long a node's record lasts after its last renewal: three heartbeats, so one slow or
/// failed renewal does not make a node look gone.
pub const TTL: Duration = Duration::from_secs(30);

/// The most node records one listing reads.
const MAX_LISTED: usize = 1_000;

/// What a node says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique per process start (`worker-…`).
    pub id: String,
    /// The machine's host name, if it has one.
    pub hostname: Option<String>,
    /// The `augur` version it runs.
    pub version: String,
    /// The public URL it hands out.
    pub public_url: String,
    /// The models it runs.
    pub models: Vec<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it last renewed its record.
    pub last_seen: Timestamp,
}

impl Node {
    /// A node starting now with a fresh id.
    pub fn starting(public_url: &str, models: Vec<String>) -> Self {
        let now = Timestamp::now();
        Self {
            id: WorkerId::generate().to_string(),
            hostname: hostname(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            public_url: public_url.to_owned(),
            models,
            started_at: now,
            last_seen: now,
        }
    }

    /// The record key of node `id`.
    pub fn key_of(id: &str) -> Key {
        Key::owned(Kind::Node, id, &AccountId::admin())
    }
}

/// The host name from the kernel or the environment; `None` where neither says.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

impl Entity for Node {
    const KIND: Kind = Kind::Node;

    fn key(&self) -> Key {
        Self::key_of(&self.id)
    }

    fn owner(&self) -> &AccountId {
        static ADMIN: std::sync::LazyLock<AccountId> = std::sync::LazyLock::new(AccountId::admin);
        &ADMIN
    }

    fn to_record(&self) -> store::Result<Record> {
        store::body_record(
            self.key(),
            self.owner(),
            self.started_at,
            Some(self.last_seen.plus(TTL)),
            self,
        )
    }

    fn from_record(record: &Record) -> store::Result<Self> {
        store::decode_json(&record.body)
    }
}

impl Predictions {
    /// Stores or renews `node`'s record, with `last_seen` set to now.
    pub async fn announce_node(&self, node: &mut Node) -> Result<()> {
        node.last_seen = Timestamp::now().max(node.last_seen);
        let key = node.key();
        let op = match self.store().get_entity::<Node>(&key).await? {
            Some(current) => Op::Update {
                record: node.to_record()?,
                expected: current.revision,
            },
            None => Op::Insert(node.to_record()?),
        };
        self.store()
            .write(&Write::new(AccountId::admin()).op(op))
            .await?;
        Ok(())
    }

    /// Removes node `id`'s record (a node stopping cleanly).
    pub async fn withdraw_node(&self, id: &str) -> Result<()> {
        self.store()
            .write(&Write::new(AccountId::admin()).op(Op::Delete(Node::key_of(id))))
            .await?;
        Ok(())
    }

    /// The nodes whose records have not expired, the longest running first.
    pub async fn nodes(&self) -> Result<Vec<Node>> {
        let page = self
            .store()
            .list(&ListQuery::of(Kind::Node, MAX_LISTED))
            .await?;
        let now = Timestamp::now();
        let mut nodes = page
            .items
            .iter()
            .map(|stored| stored.decode::<Node>().map(Arc::unwrap_or_clone))
            .collect::<store::Result<Vec<_>>>()?;
        nodes.retain(|n| n.last_seen.plus(TTL) > now);
        nodes.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Ok(nodes)
    }

    /// Announces `node` now and every [`HEARTBEAT`] until the task is aborted; a failed
    /// renewal is logged and tried again at the next beat.
    pub fn keep_announcing(&self, mut node: Node) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(HEARTBEAT);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                beat.tick().await;
                if let Err(e) = service.announce_node(&mut node).await {
                    tracing::warn!(node = %node.id, error = %e, "cannot renew this node's record");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_expires_a_ttl_after_the_last_renewal() {
        let mut node = Node::starting("http://127.0.0.1:8080", vec!["augur/echo".into()]);
        node.last_seen = node.started_at.plus(Duration::from_secs(40));
        let record = node.to_record().unwrap();
        assert_eq!(record.key.kind, Kind::Node);
        assert_eq!(record.owner, AccountId::admin());
        assert_eq!(record.expires_at, Some(node.last_seen.plus(TTL)));
        assert_eq!(Node::from_record(&record).unwrap(), node);
        assert!(node.id.starts_with("worker-"));
    }
}
