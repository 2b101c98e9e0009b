//! [`Layout`]: the names of every key, and which shard (hash tag, so cluster slot) each
//! prediction, job, webhook outbox, event log and idempotency key lives in.
//!
//! This module owns naming only; the Lua scripts in [`crate::scripts`] build the same names
//! from a shard's tag (`<tag>:p:<id>`, ...), so a change here must be made there too.

use augur_core::{AccountId, PredictionId, Timestamp};

use crate::error::Error;

/// How many shards the keyspace is split into. Part of the on-disk layout: changing it
/// orphans every record, so it is recorded under `<prefix>layout` and checked at connect.
pub(crate) const SHARDS: usize = 16;

/// The layout this build writes, stored under `<prefix>layout`.
pub(crate) const LAYOUT_VERSION: &str = "augur-redis-layout 1 shards=16";

/// The names of one installation's keys, all under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    prefix: String,
    /// `{<prefix>s<k>}` for every shard k.
    tags: Vec<String>,
}

/// One shard: its index and hash tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

    /// The shard of a prediction: its record, data, job, and the indexes, queue and counters
    /// those write to live there.
    pub(crate) fn shard_of(&self, id: &PredictionId) -> Shard {
        Shard(stable_hash(id.as_str().as_bytes()) as usize % self.tags.len())
    }

    /// The name of an idempotency key record: `<owner> <key>`. The space sorts before every
    /// character an account id may hold, so names sort like `(owner, key)` pairs.
    pub(crate) fn key_name(owner: &AccountId, key: &str) -> String {
        format!("{} {key}", owner.as_str())
    }

    /// The shard of an idempotency key (by its name).
    pub(crate) fn shard_of_key(&self, name: &str) -> Shard {
        Shard(stable_hash(name.as_bytes()) as usize % self.tags.len())
    }

    pub(crate) fn prediction_key(&self, shard: Shard, id: &PredictionId) -> String {
        format!("{}:p:{id}", self.tag(shard))
    }

    pub(crate) fn job_key(&self, shard: Shard, id: &PredictionId) -> String {
        format!("{}:j:{id}", self.tag(shard))
    }

    pub(crate) fn idempotency_key(&self, shard: Shard, name: &str) -> String {
        format!("{}:k:{name}", self.tag(shard))
    }

    pub(crate) fn prediction_keys_set(&self, shard: Shard, id: &PredictionId) -> String {
        format!("{}:pk:{id}", self.tag(shard))
    }

    /// A prediction's pending webhook messages and its outbox counter (`T:o:<id>`); its
    /// finished messages (`T:of:<id>`) and pending seqs (`T:op:<id>`) share the tag.
    pub(crate) fn outbox_key(&self, shard: Shard, id: &PredictionId) -> String {
        format!("{}:o:{id}", self.tag(shard))
    }

    /// A prediction's event log.
    pub(crate) fn events_key(&self, shard: Shard, id: &PredictionId) -> String {
        format!("{}:e:{id}", self.tag(shard))
    }

    /// The shard's predictions with a pending webhook message, by when their oldest one is
    /// claimable.
    pub(crate) fn outbox_heads(&self, shard: Shard) -> String {
        format!("{}:oh", self.tag(shard))
    }

    pub(crate) fn queue(&self, shard: Shard) -> String {
        format!("{}:q", self.tag(shard))
    }

    pub(crate) fn jobs_by_id(&self, shard: Shard) -> String {
        format!("{}:jl", self.tag(shard))
    }

    pub(crate) fn expiry(&self, shard: Shard) -> String {
        format!("{}:x", self.tag(shard))
    }

    pub(crate) fn key_expiry(&self, shard: Shard) -> String {
        format!("{}:kx", self.tag(shard))
    }

    pub(crate) fn keys_by_name(&self, shard: Shard) -> String {
        format!("{}:kl", self.tag(shard))
    }

    pub(crate) fn counters(&self, shard: Shard) -> String {
        format!("{}:c", self.tag(shard))
    }

    /// The listing index to read for a query: by owner and status, owner, status, or all.
    pub(crate) fn index(&self, shard: Shard, owner: Option<&str>, status: Option<&str>) -> String {
        let tag = self.tag(shard);
        match (owner, status) {
            (Some(o), Some(s)) => format!("{tag}:i:os:{o}:{s}"),
            (Some(o), None) => format!("{tag}:i:o:{o}"),
            (None, Some(s)) => format!("{tag}:i:s:{s}"),
            (None, None) => format!("{tag}:i:all"),
        }
    }
}

/// FNV-1a (64 bits): fixed forever, since it places records.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The member of a listing index: `<created_at, 20 digits>:<id>`, so that byte order is
/// `(created_at, id)` order (negative times included: the sign bit is flipped).
pub(crate) fn created_key(created_at: Timestamp, id: &PredictionId) -> String {
    format!("{}:{id}", created_bound(created_at))
}

/// The 20-digit prefix of [`created_key`] for a time: every member created at or after it
/// sorts at or after it, every member created before sorts before.
pub(crate) fn created_bound(created_at: Timestamp) -> String {
    let ordered = created_at.as_micros().cast_unsigned() ^ (1 << 63);
    format!("{ordered:020}")
}

/// Splits an index member back into its creation time and id.
pub(crate) fn parse_created_key(member: &str) -> Result<(Timestamp, PredictionId), Error> {
    let invalid = || Error::InvalidStored {
        what: "listing index member",
        detail: format!("{member:?}"),
    };
    let (time, id) = member.split_once(':').ok_or_else(invalid)?;
    let ordered: u64 = time.parse().map_err(|_| invalid())?;
    let micros = (ordered ^ (1 << 63)).cast_signed();
    let id = PredictionId::parse(id).map_err(|_| invalid())?;
    Ok((Timestamp::from_micros(micros), id))
}

/// Microseconds to the millisecond `PEXPIREAT` needs, rounded up so that a key outlives its
/// `expires_at` rather than vanish before it.
pub(crate) fn expiry_millis(at: Timestamp) -> i64 {
    let micros = at.as_micros();
    micros.div_euclid(1000) + i64::from(micros.rem_euclid(1000) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_keys_sort_like_created_at_then_id() {
        let ids: Vec<PredictionId> = (0..3).map(|_| PredictionId::generate()).collect();
        let times = [-5_000_000i64, -1, 0, 1, 1_700_000_000_000_000];
        let mut pairs = Vec::new();
        for t in times {
            for id in &ids {
                pairs.push((Timestamp::from_micros(t), id.clone()));
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
        assert!(created_bound(Timestamp::from_micros(1)) > created_key(Timestamp::EPOCH, &ids[0]));
    }

    #[test]
    fn shards_are_stable_and_spread() {
        let layout = Layout::new("augur:");
        assert_eq!(layout.tag(Shard(3)), "{augur:s3}");
        // Fixed forever: a different answer would orphan stored records.
        assert_eq!(stable_hash(b"abc"), 0xe71f_a219_0541_574b);
        let mut seen = [0usize; SHARDS];
        for _ in 0..1600 {
            seen[layout.shard_of(&PredictionId::generate()).0] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }

    #[test]
    fn key_names_sort_like_owner_then_key() {
        let a = AccountId::parse("a").unwrap();
        let ab = AccountId::parse("a-b").unwrap();
        let mut names = vec![
            Layout::key_name(&ab, "k"),
            Layout::key_name(&a, "z"),
            Layout::key_name(&a, "k"),
        ];
        names.sort();
        assert_eq!(names, vec!["a k", "a z", "a-b k"]);
    }

    #[test]
    fn expiry_rounds_up_to_milliseconds() {
        assert_eq!(expiry_millis(Timestamp::from_micros(1_000)), 1);
        assert_eq!(expiry_millis(Timestamp::from_micros(1_001)), 2);
        assert_eq!(expiry_millis(Timestamp::from_micros(-1)), 0);
    }
}
