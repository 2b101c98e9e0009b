//! List pages bounded by bytes as well as by `limit`, so that a page of large predictions
//! cannot take the server's memory: a page stops taking items once its JSON reaches
//! [`crate::ApiConfig::list_page_bytes`] (at least one item is always listed), and its `next`
//! cursor continues right after the last item shown. Records are fetched from the store in
//! rounds sized by the bytes per item seen so far, so a page of small items takes one or two
//! store reads while one of large items holds only a few records in memory at a time.
//!
//! The page is written as JSON text item by item, never built as a `serde_json::Value`.

use std::future::Future;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use augur_core::store::Cursor;

use crate::error::ApiResult;
use crate::pages::{Listed, Route};

/// The query of a list with no filters: `cursor` and `limit`.
#[derive(Debug, Deserialize)]
pub(crate) struct PageParams {
    pub(crate) cursor: Option<String>,
    pub(crate) limit: Option<usize>,
}

/// Where a page starts, from a list's `limit` and `cursor` query parameters: its size (at most
/// a page's most) and the cursor it continues from; a 400 for either when it is invalid.
pub(crate) fn start(
    limit: Option<usize>,
    cursor: Option<&str>,
) -> ApiResult<(usize, Option<Cursor>)> {
    let limit = crate::error::page_limit(limit)?;
    let after = cursor.map(crate::predictions::decode_cursor).transpose()?;
    Ok((limit, after))
}

/// The default byte budget of a list page.
pub(crate) const DEFAULT_PAGE_BYTES: usize = 4 << 20;

/// Records fetched in a page's first round; later rounds are sized from the bytes per item
/// seen so far.
const FIRST_ROUND: usize = 8;

/// A page's `results` as a JSON array, and where the page stands.
pub(crate) struct Filled {
    results: Vec<u8>,
    /// The store's cursor onward in the direction asked (`None` at the listing's end).
    pub(crate) next: Option<Cursor>,
    /// The first and last items shown.
    pub(crate) first: Option<Cursor>,
    pub(crate) last: Option<Cursor>,
}

/// Fills a page of at most `limit` items and about `budget` bytes, starting at `after`.
/// `fetch(after, n)` reads up to `n` items and the store's next cursor; `render` writes an
/// item's JSON (with [`write_json`]).
///
/// A forward page may take several store reads; a backward one (a `previous` link) takes one
/// read of `limit` items, whose first items are shown: the store answers a backward cursor
/// with the page just before it, and a second read would go further back, out of order.
pub(crate) async fn fill<T, F, Fut>(
    limit: usize,
    budget: usize,
    mut after: Option<Cursor>,
    mut fetch: F,
    render: impl Fn(&T, &mut Vec<u8>),
) -> ApiResult<Filled>
where
    T: Listed,
    F: FnMut(Option<Cursor>, usize) -> Fut,
    Fut: Future<Output = ApiResult<(Vec<T>, Option<Cursor>)>>,
{
    let backward = after.as_ref().is_some_and(|c| c.backward);
    let mut page = Filled {
        results: Vec::with_capacity(1024),
        next: None,
        first: None,
        last: None,
    };
    page.results.push(b'[');
    let mut count = 0;
    loop {
        let remaining = limit - count;
        let round = match page.results.len().checked_div(count) {
            _ if backward => remaining,
            None => remaining.min(FIRST_ROUND),
            Some(per_item) => (budget.saturating_sub(page.results.len()) / per_item.max(1) + 1)
                .clamp(1, remaining),
        };
        let (items, next) = fetch(after.take(), round).await?;
        let fetched = items.len();
        for (i, value) in items.iter().enumerate() {
            if count > 0 {
                page.results.push(b',');
            }
            render(value, &mut page.results);
            let cursor = crate::pages::cursor_at(value, false);
            page.first.get_or_insert_with(|| cursor.clone());
            page.last = Some(cursor);
            count += 1;
            if page.results.len() >= budget || count == limit {
                // Going forward, items left in this round mean more to list; else the store
                // says. Going back, the store's cursor leads to the page before this one.
                page.next = if i + 1 < fetched && !backward {
                    page.last.clone()
                } else {
                    next
                };
                return Ok(page.finish());
            }
        }
        match next {
            Some(cursor) if fetched > 0 && !backward => after = Some(cursor),
            // The end; or, going back, the store's cursor to the page before; or a round
            // that found nothing within its scan budget (a filtered listing), whose cursor
            // continues the scan on the next page.
            next => {
                page.next = next;
                return Ok(page.finish());
            }
        }
    }
}

/// Appends `value`'s JSON to `out`.
pub(crate) fn write_json(out: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(out, value).expect("list items always serialize");
}

impl Filled {
    fn finish(mut self) -> Self {
        self.results.push(b']');
        self
    }

    /// Appends `items` after the page's own while it is under `budget` bytes (items that
    /// follow a listing on its first page, such as the operator's shared workflows; they do
    /// not move the page's links).
    pub(crate) fn extend_within<T>(
        &mut self,
        budget: usize,
        items: impl IntoIterator<Item = T>,
        render: impl Fn(&T, &mut Vec<u8>),
    ) {
        self.results.pop();
        for item in items {
            if self.results.len() >= budget {
                break;
            }
            if self.results.len() > 1 {
                self.results.push(b',');
            }
            render(&item, &mut self.results);
        }
        self.results.push(b']');
    }

    /// The list answer, `{"previous":…,"next":…,"results":[…]}`, with the links of `route`
    /// for a page the client asked at `asked`.
    pub(crate) fn into_response(self, route: &Route<'_>, asked: Option<&Cursor>) -> Response {
        let (next_url, previous_url) = route.links_at(
            asked,
            self.next.as_ref(),
            self.first.as_ref(),
            self.last.as_ref(),
        );
        let mut body = Vec::with_capacity(self.results.len() + 512);
        body.extend_from_slice(br#"{"previous":"#);
        serde_json::to_writer(&mut body, &previous_url).expect("a URL serializes");
        body.extend_from_slice(br#","next":"#);
        serde_json::to_writer(&mut body, &next_url).expect("a URL serializes");
        body.extend_from_slice(br#","results":"#);
        body.extend_from_slice(&self.results);
        body.push(b'}');
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_core::Timestamp;

    fn cursor(i: usize) -> Cursor {
        Cursor {
            created_at: Timestamp::from_micros(1_000_000 - i as i64),
            id: format!("{i:04}"),
            backward: false,
        }
    }

    /// A listed item: its position is [`cursor`]'s.
    struct Item(usize);

    impl Listed for Item {
        fn position(&self) -> (Timestamp, String) {
            let c = cursor(self.0);
            (c.created_at, c.id)
        }
    }

    /// `fill` over `n` items of `size` bytes each; returns the ids listed page by page and
    /// the number of store reads.
    async fn list_all(n: usize, size: usize, limit: usize, budget: usize) -> (Vec<usize>, usize) {
        let items: Vec<usize> = (0..n).collect();
        let mut after = None;
        let mut pages = Vec::new();
        let mut reads = 0;
        loop {
            let filled = fill(
                limit,
                budget,
                after,
                |after: Option<Cursor>, k| {
                    reads += 1;
                    let start = after.map_or(0, |c| c.id.parse::<usize>().unwrap() + 1);
                    let page: Vec<Item> = items
                        .iter()
                        .copied()
                        .skip(start)
                        .take(k)
                        .map(Item)
                        .collect();
                    let next = (start + k < n).then(|| cursor(start + k - 1));
                    async move { Ok((page, next)) }
                },
                |item: &Item, out| write_json(out, &(item.0, "x".repeat(size))),
            )
            .await
            .unwrap();
            let listed: Vec<(usize, String)> = serde_json::from_slice(&filled.results).unwrap();
            pages.push(listed.len());
            match filled.next {
                Some(next) => after = Some(next),
                None => return (pages, reads),
            }
        }
    }

    #[tokio::test]
    async fn small_items_fill_the_limit_in_two_reads() {
        let (pages, reads) = list_all(300, 10, 300, 1 << 20).await;
        assert_eq!(pages, vec![300]);
        assert_eq!(reads, 2);
    }

    #[tokio::test]
    async fn large_items_end_the_page_at_the_byte_budget_and_next_continues() {
        let (pages, _) = list_all(30, 100_000, 300, 450_000).await;
        assert_eq!(pages.iter().sum::<usize>(), 30);
        assert!(pages.iter().all(|&n| n == 5 || n == 0), "{pages:?}");
        // An item larger than the budget is still listed, one per page.
        let (pages, _) = list_all(3, 100_000, 300, 1024).await;
        assert_eq!(pages, vec![1, 1, 1]);
    }
}
