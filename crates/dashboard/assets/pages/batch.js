// /batches/:id: one batch: its status, progress and counts, live through
// GET /v1/batches/{id}/stream, and a grid of its items (thumbnails for pictures) that fills in
// as they settle; a status filter and cursor pages (server-side); cancel.

import { api } from '/ui/lib/api.js';
import { openStream } from '/ui/lib/sse.js';
import { h, statusBadge, fmtDuration, secondsBetween, errorBox, progressBar, ensureCss, mount } from '/ui/lib/ui.js';
import {
  loading,
  notFound,
  pageLinks,
  pageQuery,
  hrefWith,
  imageOf,
  previewOf,
  throttled,
  isAbort,
  eventJson,
  settled,
  countsText,
  timeEl,
  on,
  option,
  go,
} from './parts.js';

const PAGE = 100;
const TERMINAL = new Set(['succeeded', 'failed', 'canceled', 'completed_with_errors']);
const STATUSES = ['starting', 'processing', 'succeeded', 'failed', 'canceled'];

function itemCell(p) {
  const done = p.status === 'succeeded';
  const picture = done ? imageOf(p.output) : null;
  const text = done ? previewOf(p.output) : p.error ?? (p.status === 'canceled' ? 'Canceled' : '');
  // A picture, else what the item said (its output or its error), else a placeholder while
  // it runs.
  let face;
  if (picture) {
    face = h('img', {
      src: picture,
      alt: `Output of prediction ${p.id}`,
      loading: 'lazy',
      decoding: 'async',
      width: 160,
      height: 160,
    });
  } else if (text) {
    face = h('span', { class: 'batch-item-face batch-item-text small' }, text);
  } else {
    face = h('span', { class: 'batch-item-face batch-item-placeholder', 'aria-hidden': 'true' });
  }
  return h(
    'li',
    { class: `batch-item status-${p.status}`, 'data-prediction': p.id, 'data-status': p.status },
    h(
      'a',
      { href: `/predictions/${encodeURIComponent(p.id)}`, class: 'batch-item-link' },
      face,
      h(
        'span',
        { class: 'batch-item-caption' },
        statusBadge(p.status),
        h('span', { class: 'mono small', title: p.id }, p.id.slice(-8)),
      ),
    ),
  );
}

function summary(b, onCancel) {
  const done = settled(b.counts);
  const terminal = TERMINAL.has(b.status);
  const duration =
    b.completed_at && b.created_at
      ? fmtDuration(secondsBetween(b.created_at, b.completed_at))
      : null;
  return h(
    'div',
    { class: 'card batch-summary', 'data-status': b.status },
    h(
      'div',
      { class: 'batch-summary-head' },
      statusBadge(b.status),
      h('span', { class: 'batch-done', 'aria-live': 'polite' }, `${done} of ${b.total} done`),
      terminal
        ? null
        : on(h('button', { type: 'button', class: 'button danger' }, 'Cancel batch'), 'click', onCancel),
    ),
    progressBar(done, b.total),
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'Model'),
      h('dd', {}, h('a', { href: `/models/${b.model}` }, b.model)),
      h('dt', {}, 'Items'),
      h('dd', {}, countsText(b.counts)),
      h('dt', {}, 'Created'),
      h('dd', {}, timeEl(b.created_at)),
      h('dt', {}, 'Completed'),
      h('dd', {}, timeEl(b.completed_at), duration ? ` (${duration})` : ''),
    ),
  );
}

function filterForm(current, ctx) {
  const select = h(
    'select',
    { id: 'batch-status-filter', name: 'status' },
    option('', 'All items', !current),
    ...STATUSES.map((s) => option(s, s, s === current)),
  );
  // The filter is part of the page's address, so a filtered view can be shared.
  select.addEventListener('change', () =>
    go(hrefWith({ status: select.value || null, cursor: null }), ctx),
  );
  return h(
    'div',
    { class: 'batch-filter' },
    h('label', { for: 'batch-status-filter' }, 'Show'),
    select,
  );
}

export async function render(main, params, ctx) {
  ensureCss('batch');
  const id = params.id;
  ctx?.setTitle?.(`Batch ${id}`);
  const controller = new AbortController();
  const signal = controller.signal;
  mount(main, loading('Loading batch…'));

  let batch;
  try {
    batch = await api(`/v1/batches/${encodeURIComponent(id)}`, { signal });
  } catch (err) {
    if (isAbort(err)) return () => {};
    mount(main,
      err.status === 404 ? notFound('batch', { href: '/batches', label: 'All batches' }) : errorBox(err),
    );
    return () => controller.abort();
  }

  const status = pageQuery().get('status') || '';
  const cursor = pageQuery().get('cursor');
  const summaryBox = h('div', {});
  const message = h('div', { 'aria-live': 'polite' });
  const grid = h('ul', { class: 'batch-grid', 'aria-label': 'Items' });
  const pager = h('div', {});
  const itemsState = h('div', {}, loading('Loading items…'));

  const cancel = async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    mount(message);
    try {
      batch = await api(`/v1/batches/${encodeURIComponent(id)}/cancel`, { method: 'POST', signal });
      showSummary();
      refresh.request();
    } catch (err) {
      if (isAbort(err)) return;
      button.disabled = false;
      mount(message, errorBox(err));
    }
  };
  const showSummary = () => mount(summaryBox, summary(batch, cancel));

  const loadItems = async () => {
    try {
      const page = await api(`/v1/batches/${encodeURIComponent(id)}/predictions`, {
        query: { limit: PAGE, ...(status ? { status } : {}), ...(cursor ? { cursor } : {}) },
        signal,
      });
      if (signal.aborted) return;
      mount(itemsState);
      if (page.results.length === 0) {
        mount(itemsState,
          h('p', { class: 'empty' }, status ? `No ${status} items.` : 'No items on this page.'),
        );
      }
      // Replace cells in place, so pictures already shown are not reloaded.
      const old = new Map([...grid.children].map((li) => [li.dataset.prediction, li]));
      const cells = page.results.map((p) => {
        const before = old.get(p.id);
        return before && before.dataset.status === p.status && p.status !== 'processing'
          ? before
          : itemCell(p);
      });
      mount(grid, ...cells);
      mount(pager, pageLinks(page, 'Item pages') ?? '');
    } catch (err) {
      if (isAbort(err) || signal.aborted) return;
      mount(itemsState, errorBox(err));
    }
  };
  const refresh = throttled(loadItems, 500);

  showSummary();
  mount(main,
    h(
      'section',
      { class: 'page batch-page' },
      h('p', { class: 'breadcrumbs' }, h('a', { href: '/batches' }, 'Batches'), ' / '),
      h('h1', {}, 'Batch ', h('span', { class: 'mono' }, id)),
      summaryBox,
      message,
      h(
        'section',
        { 'aria-labelledby': 'batch-items-heading' },
        h(
          'div',
          { class: 'section-head' },
          h('h2', { id: 'batch-items-heading' }, 'Items'),
          filterForm(status, ctx),
        ),
        itemsState,
        grid,
        pager,
      ),
    ),
  );
  await loadItems();

  if (!TERMINAL.has(batch.status)) {
    // A stream of its own, closed at `done` so that it is not reopened once the end is known.
    const stream = new AbortController();
    signal.addEventListener('abort', () => stream.abort());
    openStream(`/v1/batches/${encodeURIComponent(id)}/stream`, {
      signal: stream.signal,
      onEvent(type, data) {
        if (type !== 'batch' && type !== 'done') return;
        const next = eventJson(data);
        if (!next || next.id !== id) return;
        batch = next;
        showSummary();
        refresh.request();
        if (type === 'done') stream.abort();
      },
      onError(err) {
        if (isAbort(err) || stream.signal.aborted) return;
        mount(message, errorBox(err));
      },
    });
  }

  return () => {
    controller.abort();
    refresh.cancel();
  };
}
