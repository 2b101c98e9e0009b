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
use serde::Serialize;

use augur_core::store::Cursor;

use crate::error::ApiResult;

/// The default byte budget of a list page.
pub(crate) const DEFAULT_PAGE_BYTES: usize = 4 << 20;

/// Records fetched in a page's first round; later rounds are sized from the bytes per item
/// seen so far.
const FIRST_ROUND: usize = 8;

/// A page's `results` as a JSON array, and where the next page starts.
pub(crate) struct Filled {
    results: Vec<u8>,
    /// `None` on the last page.
    pub(crate) next: Option<Cursor>,
}

/// Fills a page of at most `limit` items and about `budget` bytes, starting after `after`.
/// `fetch(after, n)` reads up to `n` items and the store's next cursor; `render` writes an
/// item's JSON (with [`write_json`]) and returns its cursor (the `created_at` and id its
/// listing is ordered by).
pub(crate) async fn fill<T, F, Fut>(
    limit: usize,
    budget: usize,
    mut after: Option<Cursor>,
    mut fetch: F,
    render: impl Fn(&T, &mut Vec<u8>) -> Cursor,
) -> ApiResult<Filled>
where
    F: FnMut(Option<Cursor>, usize) -> Fut,
    Fut: Future<Output = ApiResult<(Vec<T>, Option<Cursor>)>>,
{
    let mut results = Vec::with_capacity(1024);
    results.push(b'[');
    let mut count = 0;
    loop {
        let remaining = limit - count;
        let round = match results.len().checked_div(count) {
            None => remaining.min(FIRST_ROUND),
            Some(per_item) => {
                (budget.saturating_sub(results.len()) / per_item.max(1) + 1).clamp(1, remaining)
            }
        };
        let (items, next) = fetch(after.take(), round).await?;
        let fetched = items.len();
        for (i, value) in items.iter().enumerate() {
            if count > 0 {
                results.push(b',');
            }
            let cursor = render(value, &mut results);
            count += 1;
            if results.len() >= budget || count == limit {
                // Items left in this round mean more to list; else the store says.
                let next = if i + 1 < fetched { Some(cursor) } else { next };
                return Ok(Filled::of(results, next));
            }
        }
        match next {
            Some(cursor) if fetched > 0 => after = Some(cursor),
            _ => return Ok(Filled::of(results, None)),
        }
    }
}

/// Appends `value`'s JSON to `out`.
pub(crate) fn write_json(out: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(out, value).expect("list items always serialize");
}

impl Filled {
    fn of(mut results: Vec<u8>, next: Option<Cursor>) -> Self {
        results.push(b']');
        Self { results, next }
    }

    /// The list answer: `{"previous":null,"next":…,"results":[…]}` with `next` the URL of
    /// the following page.
    pub(crate) fn into_response(self, next_url: Option<String>) -> Response {
        let mut body = Vec::with_capacity(self.results.len() + 256);
        body.extend_from_slice(br#"{"previous":null,"next":"#);
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
                    let page: Vec<usize> = items.iter().copied().skip(start).take(k).collect();
                    let next = (start + k < n).then(|| cursor(start + k - 1));
                    async move { Ok((page, next)) }
                },
                |&i, out| {
                    write_json(out, &(i, "x".repeat(size)));
                    cursor(i)
                },
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
