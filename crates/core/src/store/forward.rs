//! [`forward_store!`](crate::forward_store): implements parts of the storage contract for a
//! decorator by calling the same method on the store it wraps, so that a decorator writes only
//! the methods it changes.
//!
//! ```ignore
//! forward_store!(QueueStore for CachedStore => inner);            // plain delegation
//! forward_store!(QueueStore for MeteredStore => inner via observe); // through a wrapper
//! ```
//!
//! With `via`, every fallible async method calls
//! `self.observe(access, "operation", |s: DynStore| async move { s.operation(args).await })`,
//! where `access` is [`Access::Read`](crate::store::Access) or `Write`; the field must then be a
//! [`DynStore`](crate::store::DynStore). `backend`, `capabilities` and `close` are always plain.

/// Implements one part of the storage contract (`RecordStore`, `QueueStore`, `EventStore`,
/// `LedgerStore` or `AdminStore`) for `$ty` by forwarding to `self.$field`, optionally
/// through the wrapper method `$via`. See the module docs.
#[macro_export]
macro_rules! forward_store {
    ($part:ident for $ty:ty => $field:ident) => {
        $crate::forward_store!(@$part $ty, $field, [plain]);
    };
    ($part:ident for $ty:ty => $field:ident via $via:ident) => {
        $crate::forward_store!(@$part $ty, $field, [via $via]);
    };

    (@call $self:ident, $field:ident, [plain], $access:ident, $op:literal, |$s:ident| $call:expr) => {{
        let $s = &$self.$field;
        $call.await
    }};
    (@call $self:ident, $field:ident, [via $via:ident], $access:ident, $op:literal, |$s:ident| $call:expr) => {
        $self
            .$via(
                $crate::store::Access::$access,
                $op,
                |$s: $crate::store::DynStore| async move { $call.await },
            )
            .await
    };

    (@RecordStore $ty:ty, $field:ident, $mode:tt) => {
        #[$crate::__private::async_trait]
        impl $crate::store::RecordStore for $ty {
            async fn write(
                &self,
                write: &$crate::store::Write,
            ) -> $crate::store::Result<$crate::store::Written> {
                $crate::forward_store!(@call self, $field, $mode, Write, "write", |s| s.write(write))
            }
            async fn get(
                &self,
                key: &$crate::store::Key,
            ) -> $crate::store::Result<Option<std::sync::Arc<$crate::store::Stored>>> {
                $crate::forward_store!(@call self, $field, $mode, Read, "get", |s| s.get(key))
            }
            async fn get_uncached(
                &self,
                key: &$crate::store::Key,
            ) -> $crate::store::Result<Option<std::sync::Arc<$crate::store::Stored>>> {
                $crate::forward_store!(@call self, $field, $mode, Read, "get", |s| s.get_uncached(key))
            }
            async fn list(
                &self,
                query: &$crate::store::ListQuery,
            ) -> $crate::store::Result<$crate::store::Page> {
                $crate::forward_store!(@call self, $field, $mode, Read, "list", |s| s.list(query))
            }
            async fn expire(
                &self,
                now: $crate::Timestamp,
                limit: usize,
            ) -> $crate::store::Result<Vec<$crate::store::Key>> {
                $crate::forward_store!(@call self, $field, $mode, Write, "expire", |s| s.expire(now, limit))
            }
        }
    };

    (@QueueStore $ty:ty, $field:ident, $mode:tt) => {
        #[$crate::__private::async_trait]
        impl $crate::store::QueueStore for $ty {
            async fn claim(
                &self,
                request: &$crate::store::ClaimRequest,
            ) -> $crate::store::Result<Vec<$crate::store::ItemLease>> {
                $crate::forward_store!(@call self, $field, $mode, Write, "claim", |s| s.claim(request))
            }
            async fn renew(
                &self,
                lease: &$crate::store::ItemLease,
                extend_by: std::time::Duration,
            ) -> $crate::store::Result<$crate::store::ItemLease> {
                $crate::forward_store!(@call self, $field, $mode, Write, "renew", |s| s.renew(lease, extend_by))
            }
            async fn finish(
                &self,
                lease: &$crate::store::ItemLease,
                finish: &$crate::store::Finish,
            ) -> $crate::store::Result<()> {
                $crate::forward_store!(@call self, $field, $mode, Write, "finish", |s| s.finish(lease, finish))
            }
            async fn items(
                &self,
                lane: $crate::store::Lane,
                group: &$crate::store::Key,
            ) -> $crate::store::Result<Vec<$crate::store::Item>> {
                $crate::forward_store!(@call self, $field, $mode, Read, "items", |s| s.items(lane, group))
            }
            async fn requeue(
                &self,
                lane: $crate::store::Lane,
                group: &$crate::store::Key,
                id: &str,
            ) -> $crate::store::Result<()> {
                $crate::forward_store!(@call self, $field, $mode, Write, "requeue", |s| s.requeue(lane, group, id))
            }
            async fn queue_stats(
                &self,
                lane: $crate::store::Lane,
            ) -> $crate::store::Result<$crate::store::QueueStats> {
                // Queue depth is a write-side figure: a stale one would look healthy while
                // nothing can be claimed.
                $crate::forward_store!(@call self, $field, $mode, Write, "queue_stats", |s| s.queue_stats(lane))
            }
        }
    };

    (@EventStore $ty:ty, $field:ident, $mode:tt) => {
        #[$crate::__private::async_trait]
        impl $crate::store::EventStore for $ty {
            async fn read_events(
                &self,
                stream: &$crate::store::Key,
                after: Option<($crate::Revision, u32)>,
                limit: usize,
            ) -> $crate::store::Result<Vec<$crate::store::StreamEvent>> {
                $crate::forward_store!(@call self, $field, $mode, Read, "read_events", |s| s.read_events(stream, after, limit))
            }
        }
    };

    (@LedgerStore $ty:ty, $field:ident, $mode:tt) => {
        #[$crate::__private::async_trait]
        impl $crate::store::LedgerStore for $ty {
            async fn balance(
                &self,
                account: &$crate::AccountId,
            ) -> $crate::store::Result<$crate::store::Balance> {
                $crate::forward_store!(@call self, $field, $mode, Read, "balance", |s| s.balance(account))
            }
            async fn ledger(
                &self,
                account: &$crate::AccountId,
                before: Option<u64>,
                limit: usize,
            ) -> $crate::store::Result<Vec<$crate::store::Posted>> {
                $crate::forward_store!(@call self, $field, $mode, Read, "ledger", |s| s.ledger(account, before, limit))
            }
        }
    };

    (@AdminStore $ty:ty, $field:ident, $mode:tt) => {
        #[$crate::__private::async_trait]
        impl $crate::store::AdminStore for $ty {
            fn backend(&self) -> &'static str {
                self.$field.backend()
            }
            fn capabilities(&self) -> $crate::store::Capabilities {
                self.$field.capabilities()
            }
            async fn counters(&self) -> $crate::store::Result<Vec<(String, i64)>> {
                $crate::forward_store!(@call self, $field, $mode, Read, "counters", |s| s.counters())
            }
            async fn subscribe(
                &self,
            ) -> $crate::store::Result<Option<$crate::store::ChangeStream>> {
                $crate::forward_store!(@call self, $field, $mode, Write, "subscribe", |s| s.subscribe())
            }
            async fn export(
                &self,
                section: $crate::store::Section,
                after: Option<&$crate::store::Position>,
                limit: usize,
            ) -> $crate::store::Result<Vec<$crate::store::Exported>> {
                $crate::forward_store!(@call self, $field, $mode, Read, "export", |s| s.export(section, after, limit))
            }
            async fn import(
                &self,
                pieces: &[$crate::store::Exported],
            ) -> $crate::store::Result<()> {
                $crate::forward_store!(@call self, $field, $mode, Write, "import", |s| s.import(pieces))
            }
            async fn close(&self) {
                self.$field.close().await
            }
        }
    };
}
