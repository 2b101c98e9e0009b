// /batches: the account's batches, newest first, a page at a time (server-side cursors), each
// with its progress bar; refreshed every few seconds while a batch on the page is unfinished.

import { api } from '/ui/lib/api.js';
import { h, statusBadge, errorBox, progressBar, ensureCss, mount } from '/ui/lib/ui.js';
import { loading, pageLinks, pageQuery, settled, countsText, timeEl, isAbort } from './parts.js';

const PAGE = 20;
const REFRESH_MS = 3000;
const TERMINAL = new Set(['succeeded', 'failed', 'canceled', 'completed_with_errors']);

function row(b) {
  const done = settled(b.counts);
  return h(
    'tr',
    { 'data-batch': b.id, 'data-status': b.status },
    h('td', {}, h('a', { href: `/batches/${encodeURIComponent(b.id)}`, class: 'mono' }, b.id)),
    h('td', {}, b.model),
    h('td', {}, statusBadge(b.status)),
    h(
      'td',
      { class: 'batch-progress-cell' },
      progressBar(done, b.total),
      h('span', { class: 'hint' }, `${done} of ${b.total} · ${countsText(b.counts)}`),
    ),
    h('td', {}, timeEl(b.created_at)),
    h('td', {}, timeEl(b.completed_at)),
  );
}

function table(page) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'table batches-table' },
      h('caption', { class: 'visually-hidden' }, 'Batches, newest first'),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ...['Batch', 'Model', 'Status', 'Progress', 'Created', 'Completed'].map((t) =>
            h('th', { scope: 'col' }, t),
          ),
        ),
      ),
      h('tbody', {}, ...page.results.map(row)),
    ),
  );
}

export async function render(main, _params, ctx) {
  ctx?.setTitle?.('Batches');
  ensureCss('batches');
  const controller = new AbortController();
  const body = h('div', {}, loading('Loading batches…'));
  mount(main,
    h(
      'section',
      { class: 'page batches-page' },
      h('h1', {}, 'Batches'),
      h(
        'p',
        { class: 'muted' },
        'Many predictions of one model, created together (POST /v1/batches) and followed as one.',
      ),
      body,
    ),
  );

  let timer = null;
  const load = async (first) => {
    try {
      const cursor = pageQuery().get('cursor');
      const page = await api('/v1/batches', {
        query: { limit: PAGE, ...(cursor ? { cursor } : {}) },
        signal: controller.signal,
      });
      if (controller.signal.aborted) return;
      if (page.results.length === 0) {
        mount(body,
          h(
            'div',
            { class: 'empty' },
            h('p', {}, cursor ? 'No batches on this page.' : 'No batches yet.'),
            h(
              'p',
              { class: 'hint' },
              'Create one with POST /v1/batches {"model": "owner/name", "inputs": [{...}, ...]}.',
            ),
          ),
          pageLinks(page, 'Batch pages') ?? '',
        );
      } else {
        mount(body, table(page), pageLinks(page, 'Batch pages') ?? '');
      }
      if (page.results.some((b) => !TERMINAL.has(b.status))) {
        timer = setTimeout(() => load(false), REFRESH_MS);
      }
    } catch (err) {
      if (isAbort(err) || controller.signal.aborted) return;
      // A failed background refresh keeps the table and says so; a failed first load replaces it.
      if (first) mount(body, errorBox(err));
      else {
        body.querySelector('.error-retry')?.remove();
        const box = errorBox(err);
        box.classList.add('error-retry');
        body.prepend(box);
        timer = setTimeout(() => load(false), REFRESH_MS * 2);
      }
    }
  };
  await load(true);
  return () => {
    controller.abort();
    if (timer !== null) clearTimeout(timer);
  };
}
