//! [`Layout`]: the shards (hash tags, so cluster slots) and the few key names the Rust side
//! builds itself; the Lua scripts in [`crate::scripts`] build the rest from a shard's tag, so
//! a change here must be made there too. Also the encodings of listing positions and
//! expiries shared by both sides.

use augur_core::store::{Key, Partition};
use augur_core::{AccountId, Timestamp};

use crate::error::Error;

/// How many shards the keyspace is split into: the shard of a partition is
/// `partition mod SHARDS`. Part of the stored layout (changing it strands every record), so
/// it is recorded under `<prefix>layout` and checked at connect.
pub(crate) const SHARDS: usize = 16;

/// The layout this build writes, stored under `<prefix>layout`.
pub(crate) const LAYOUT_VERSION: &str = "augur-redis-layout 2 shards=16 by=account";

/// What layout 1 (storage contract 1: predictions placed by id, a separate job queue and
/// webhook outbox) recorded.
pub(crate) const LAYOUT_1: &str = "augur-redis-layout 1 shards=16";

/// The names of one installation's keys, all under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    prefix: String,
    /// `{<prefix>s<k>}` for every shard k.
    tags: Vec<String>,
}

/// One shard: its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Shard(pub(crate) usize);

impl Layout {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            tags: (0..SHARDS).map(|k| format!("{{{prefix}s{k}}}")).collect(),
        }
    }

    /// The key holding [`LAYOUT_VERSION`].
    pub(crate) fn layout_key(&self) -> String {
        format!("{}layout", self.prefix)
    }

    /// The pub/sub channel of change announcements.
    pub(crate) fn channel(&self) -> String {
        format!("{}changes", self.prefix)
    }

    /// Every shard, in order.
    pub(crate) fn shards(&self) -> impl Iterator<Item = Shard> + '_ {
        (0..self.tags.len()).map(Shard)
    }

    /// The hash tag of a shard, `{<prefix>s<k>}`: every key of the shard starts with it.
    pub(crate) fn tag(&self, shard: Shard) -> &str {
        &self.tags[shard.0]
    }

    /// The shard of a partition.
    pub(crate) fn shard(&self, partition: Partition) -> Shard {
        Shard(partition.shard(self.tags.len()))
    }

    /// The shard of an account: its records, queue items, events, ledger and limited
    /// counters.
    pub(crate) fn shard_of_account(&self, account: &AccountId) -> Shard {
        self.shard(Partition::of_account(account))
    }

    /// A record's hash (or forwarding entry) in a shard.
    pub(crate) fn record(&self, shard: Shard, key: &Key) -> String {
        format!("{}:r:{}:{}", self.tag(shard), key.kind.as_str(), key.id)
    }

    /// The shard-wide counters.
    pub(crate) fn counters(&self, shard: Shard) -> String {
        format!("{}:c", self.tag(shard))
    }

    /// Records due for retention, by expiry.
    pub(crate) fn expiry(&self, shard: Shard) -> String {
        format!("{}:x", self.tag(shard))
    }

    /// A kind's record ids (export order).
    pub(crate) fn ids(&self, shard: Shard, kind: &str) -> String {
        format!("{}:ids:{kind}", self.tag(shard))
    }

    /// A lane's item ids (export order).
    pub(crate) fn item_ids(&self, shard: Shard, lane: &str) -> String {
        format!("{}:qi:{lane}", self.tag(shard))
    }

    /// Accounts with a ledger.
    pub(crate) fn ledger_accounts(&self, shard: Shard) -> String {
        format!("{}:la", self.tag(shard))
    }

    /// An account's ledger totals (`b`, `r`, `n`) and entry ids.
    pub(crate) fn ledger_totals(&self, account: &AccountId) -> String {
        let shard = self.shard_of_account(account);
        format!("{}:lg:{account}", self.tag(shard))
    }

    /// An account's ledger entries, by seq.
    pub(crate) fn ledger_entries(&self, account: &AccountId) -> String {
        let shard = self.shard_of_account(account);
        format!("{}:le:{account}", self.tag(shard))
    }
}

/// The first 20 characters of a listing index member: the creation time as digits whose byte
/// order is time order (negative times included: the sign bit is flipped).
pub(crate) fn created_bound(created_at: Timestamp) -> String {
    let ordered = created_at.as_micros().cast_unsigned() ^ (1 << 63);
    format!("{ordered:020}")
}

/// A listing index member, `<created_at, 20 digits>:<id>`: byte order is `(created_at, id)`
/// order.
pub(crate) fn created_key(created_at: Timestamp, id: &str) -> String {
    format!("{}:{id}", created_bound(created_at))
}

/// The creation time of [`created_bound`]'s digits.
pub(crate) fn parse_created(digits: &str) -> Result<Timestamp, Error> {
    let ordered: u64 = digits.parse().map_err(|_| Error::InvalidStored {
        what: "creation time",
        detail: format!("{digits:?}"),
    })?;
    Ok(Timestamp::from_micros((ordered ^ (1 << 63)).cast_signed()))
}

/// Splits an index member back into its creation time and id.
pub(crate) fn parse_created_key(member: &str) -> Result<(Timestamp, String), Error> {
    let invalid = || Error::InvalidStored {
        what: "listing index member",
        detail: format!("{member:?}"),
    };
    let (time, id) = member.split_once(':').ok_or_else(invalid)?;
    Ok((parse_created(time)?, id.to_owned()))
}

/// An event's position as the first 30 characters of its log member: byte order is
/// `(revision, index)` order.
pub(crate) fn event_position(revision: u64, index: u64) -> String {
    format!("{revision:020}{index:010}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_keys_sort_like_created_at_then_id() {
        let ids = ["01a", "01b", "zz"];
        let times = [-5_000_000i64, -1, 0, 1, 1_700_000_000_000_000];
        let mut pairs = Vec::new();
        for t in times {
            for id in ids {
                pairs.push((Timestamp::from_micros(t), id.to_owned()));
            }
        }
        let mut by_key: Vec<_> = pairs.iter().map(|(t, id)| created_key(*t, id)).collect();
        by_key.sort();
        let mut expected = pairs.clone();
        expected.sort();
        let decoded: Vec<_> = by_key
            .iter()
            .map(|k| parse_created_key(k).unwrap())
            .collect();
        assert_eq!(decoded, expected);
        assert!(created_bound(Timestamp::from_micros(1)) > created_key(Timestamp::EPOCH, "x"));
    }

    #[test]
    fn shards_follow_partitions() {
        let layout = Layout::new("augur:");
        assert_eq!(layout.tag(Shard(3)), "{augur:s3}");
        assert_eq!(layout.shard(Partition(0x4b)), Shard(0xb));
        let admin = AccountId::admin();
        assert_eq!(
            layout.shard_of_account(&admin),
            Shard(Partition::of_account(&admin).shard(SHARDS))
        );
    }

    #[test]
    fn event_positions_sort_like_revision_then_index() {
        let mut positions = [
            event_position(10, 0),
            event_position(2, 1),
            event_position(2, 0),
            event_position(u64::MAX, u64::from(u32::MAX) + 1),
        ];
        positions.sort();
        assert_eq!(positions[0], event_position(2, 0));
        assert_eq!(positions[3].len(), 30);
    }
}
