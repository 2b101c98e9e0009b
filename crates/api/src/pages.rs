//! The `next` and `previous` links of list pages (Replicate's cursor pagination).
//!
//! A cursor is a position in the listing's `(created_at, id)` order and a direction: `next`
//! continues after the page's last item (older), `previous` before its first item (newer), and
//! the store answers a backward cursor with the page just before the position. So `previous`
//! is `null` only on the first page, and following `previous` links back from any page gives
//! the same pages as following `next` from the first.

use std::sync::Arc;

use augur_core::deployment::Deployment;
use augur_core::store::{Cursor, Entity};
use augur_core::workflow::{Run, Workflow};
use augur_core::{Prediction, Timestamp, Versioned};

use crate::predictions::encode_cursor;

/// An item of a list page: where it stands in the listing.
pub(crate) trait Listed {
    /// Its creation time and record id.
    fn position(&self) -> (Timestamp, String);
}

macro_rules! listed {
    ($($t:ty),*) => {$(
        impl Listed for $t {
            fn position(&self) -> (Timestamp, String) {
                (self.created_at, Entity::key(self).id)
            }
        }
    )*};
}

listed!(
    Prediction,
    augur_core::batch::Batch,
    augur_core::file::FileObject,
    augur_core::account::Account,
    Run,
    Workflow,
    Deployment
);

impl<T: Listed> Listed for Arc<T> {
    fn position(&self) -> (Timestamp, String) {
        (**self).position()
    }
}

impl<T: Listed> Listed for Versioned<T> {
    fn position(&self) -> (Timestamp, String) {
        self.value.position()
    }
}

/// The cursor at `item`, in either direction.
pub(crate) fn cursor_at(item: &impl Listed, backward: bool) -> Cursor {
    let (created_at, id) = item.position();
    Cursor {
        created_at,
        id,
        backward,
    }
}

/// A list route with the client's filters and, if it gave one, its `limit`.
pub(crate) struct Route<'a> {
    /// The absolute URL of the route.
    pub url: String,
    /// Filters to keep in every link (those given).
    pub filters: &'a [(&'a str, Option<&'a str>)],
    /// The client's `limit`, if it gave one.
    pub limit: Option<usize>,
}

impl Route<'_> {
    /// The route at `cursor` (the first page for `None`).
    fn link(&self, cursor: Option<&Cursor>) -> String {
        let mut query: Vec<String> = Vec::new();
        if let Some(cursor) = cursor {
            query.push(format!("cursor={}", encode_cursor(cursor)));
        }
        for (key, value) in self.filters {
            if let Some(value) = value {
                let value: String =
                    url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
                query.push(format!("{key}={value}"));
            }
        }
        if let Some(limit) = self.limit {
            query.push(format!("limit={limit}"));
        }
        if query.is_empty() {
            self.url.clone()
        } else {
            format!("{}?{}", self.url, query.join("&"))
        }
    }

    /// The `(next, previous)` links of a page of `items` that the store answered for `asked`
    /// with `next` (a cursor in the direction asked).
    pub(crate) fn links<T: Listed>(
        &self,
        asked: Option<&Cursor>,
        next: Option<&Cursor>,
        items: &[T],
    ) -> (Option<String>, Option<String>) {
        let first = items.first().map(|i| cursor_at(i, false));
        let last = items.last().map(|i| cursor_at(i, false));
        self.links_at(asked, next, first.as_ref(), last.as_ref())
    }

    /// [`Route::links`] for a page whose first and last items stand at `first` and `last`.
    pub(crate) fn links_at(
        &self,
        asked: Option<&Cursor>,
        next: Option<&Cursor>,
        first: Option<&Cursor>,
        last: Option<&Cursor>,
    ) -> (Option<String>, Option<String>) {
        match asked {
            // The first page has nothing before it.
            None => (next.map(|c| self.link(Some(c))), None),
            Some(asked) if !asked.backward => {
                let before = Cursor {
                    backward: true,
                    ..first.unwrap_or(asked).clone()
                };
                (
                    next.map(|c| self.link(Some(c))),
                    Some(self.link(Some(&before))),
                )
            }
            Some(_) => {
                // Going back: the store's `next` is the page before this one (if any); the
                // page after starts after this one's last item. An empty page (its items
                // went away) leads to the first page.
                let after = match last {
                    Some(last) => self.link(Some(&Cursor {
                        backward: false,
                        ..last.clone()
                    })),
                    None => self.link(None),
                };
                (Some(after), next.map(|c| self.link(Some(c))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item(i64, &'static str);

    impl Listed for Item {
        fn position(&self) -> (Timestamp, String) {
            (Timestamp::from_micros(self.0), self.1.to_owned())
        }
    }

    fn at(micros: i64, id: &str, backward: bool) -> Cursor {
        Cursor {
            created_at: Timestamp::from_micros(micros),
            id: id.into(),
            backward,
        }
    }

    #[test]
    fn links_point_both_ways() {
        let route = Route {
            url: "http://x/v1/things".into(),
            filters: &[("status", Some("succeeded")), ("other", None)],
            limit: Some(2),
        };
        let link = |c: &Cursor| route.link(Some(c));
        let items = [Item(9, "b"), Item(8, "a")];
        // The first page: next only.
        let (next, previous) = route.links(None, Some(&at(8, "a", false)), &items);
        assert_eq!(next.as_deref(), Some(link(&at(8, "a", false)).as_str()));
        assert!(previous.is_none());
        assert!(link(&at(8, "a", false)).ends_with("&status=succeeded&limit=2"));
        // A later page: previous goes back from its first item.
        let (_, previous) = route.links(Some(&at(10, "c", false)), None, &items);
        assert_eq!(previous, Some(link(&at(9, "b", true))));
        // Going back: next after the last item; previous where the store says.
        let (next, previous) =
            route.links(Some(&at(7, "z", true)), Some(&at(9, "b", true)), &items);
        assert_eq!(next, Some(link(&at(8, "a", false))));
        assert_eq!(previous, Some(link(&at(9, "b", true))));
        let (next, previous) = route.links::<Item>(Some(&at(7, "z", true)), None, &[]);
        assert_eq!(
            next.as_deref(),
            Some("http://x/v1/things?status=succeeded&limit=2")
        );
        assert!(previous.is_none());
    }
}
