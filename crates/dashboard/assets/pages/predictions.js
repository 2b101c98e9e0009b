// The predictions list (`/`): newest first, filtered and paged by the server (status, model,
// and account for the admin; cursors), kept live by the account's event stream
// (`/v1/events`): rows change in place and new predictions appear at the top of the first page.

import { api, cursorOf } from '/ui/lib/api.js';
import { openStream } from '/ui/lib/sse.js';
import {
  emptyState, ensureCss, errorBox, field, fmtDuration, h, isTerminal, loading, mount, pager,
  secondsBetween, shortId, statusBadge, timeEl,
} from '/ui/lib/ui.js';

const STATUSES = ['starting', 'processing', 'succeeded', 'failed', 'canceled'];
const PAGE_SIZE = 50;

function duration(p, now = Date.now()) {
  if (p.metrics && Number.isFinite(p.metrics.total_time)) return fmtDuration(p.metrics.total_time);
  if (p.completed_at) return fmtDuration(secondsBetween(p.created_at, p.completed_at));
  return `${fmtDuration((now - new Date(p.created_at).getTime()) / 1000)} so far`;
}

export async function render(main, _params, ctx) {
  ensureCss('predictions');
  ctx.setTitle('Predictions');
  const admin = Boolean(ctx.me && ctx.me.admin);
  const q = ctx.query;
  const filters = {
    status: STATUSES.includes(q.get('status')) ? q.get('status') : '',
    model: q.get('model') || '',
    account: admin ? (q.get('account') || '') : '',
  };
  const cursor = q.get('cursor') || '';
  const closers = [];

  const go = (changes) => {
    const next = new URLSearchParams();
    const merged = { ...filters, cursor: '', ...changes };
    for (const [k, v] of Object.entries(merged)) if (v) next.set(k, v);
    const s = next.toString();
    ctx.navigate(s ? `/?${s}` : '/');
  };

  // Search by id: straight to the prediction's page.
  const idInput = h('input', { name: 'id', type: 'search', placeholder: 'Prediction id', autocomplete: 'off', spellcheck: 'false' });
  const idForm = h('form', { class: 'toolbar', role: 'search', 'aria-label': 'Find a prediction by id' },
    field('Find by id', idInput),
    h('button', { type: 'submit', class: 'button' }, 'Open'));
  idForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const id = idInput.value.trim();
    if (id) ctx.navigate(`/predictions/${encodeURIComponent(id)}`);
  });

  const statusSelect = h('select', { name: 'status' },
    h('option', { value: '' }, 'Any status'),
    STATUSES.map((s) => h('option', { value: s, selected: s === filters.status }, s.charAt(0).toUpperCase() + s.slice(1))));
  const modelSelect = h('select', { name: 'model' }, h('option', { value: '' }, 'Any model'));
  if (filters.model) modelSelect.appendChild(h('option', { value: filters.model, selected: true }, filters.model));
  const accountInput = admin ? h('input', { name: 'account', type: 'search', value: filters.account, placeholder: 'username', autocomplete: 'off' }) : null;
  const filterForm = h('form', { class: 'toolbar', 'aria-label': 'Filter predictions' },
    field('Status', statusSelect),
    field('Model', modelSelect),
    admin ? field('Account', accountInput) : null,
    h('button', { type: 'submit', class: 'button' }, 'Filter'),
    (filters.status || filters.model || filters.account)
      ? h('a', { class: 'button subtle', href: '/' }, 'Clear filters') : null);
  const apply = () => go({ status: statusSelect.value, model: modelSelect.value, account: accountInput ? accountInput.value.trim() : '' });
  filterForm.addEventListener('submit', (e) => { e.preventDefault(); apply(); });
  statusSelect.addEventListener('change', apply);
  modelSelect.addEventListener('change', apply);

  const live = h('span', { class: 'live', role: 'status', 'aria-live': 'polite' }, 'Connecting…');
  const body = h('div', { class: 'list-body' }, loading('Loading predictions…'));
  mount(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Predictions'), live),
    h('div', { class: 'filters card' }, idForm, filterForm),
    body);

  // The model choices (every model this server runs, one page).
  api('/v1/models').then((list) => {
    for (const m of list.results || []) {
      const name = `${m.owner}/${m.name}`;
      if (name === filters.model) continue;
      modelSelect.appendChild(h('option', { value: name }, name));
    }
  }).catch(() => { /* the filter still works by URL */ });

  let page;
  try {
    page = await api('/v1/predictions', { query: { ...filters, cursor, limit: PAGE_SIZE } });
  } catch (err) {
    mount(body, errorBox(err, { title: 'The predictions could not be listed' }));
    live.textContent = '';
    return () => {};
  }
  if (!ctx.current) return () => {};

  const rows = new Map();
  const tbody = h('tbody', {});
  const showAccount = admin;
  const row = (p) => {
    const tr = h('tr', { dataset: { id: p.id } },
      h('td', {}, h('a', { href: `/predictions/${encodeURIComponent(p.id)}`, class: 'mono', title: p.id }, shortId(p.id))),
      h('td', {}, p.model),
      h('td', {}, statusBadge(p.status)),
      h('td', { class: 'hide-narrow' }, timeEl(p.created_at)),
      h('td', { class: 'num' }, duration(p)),
      showAccount ? h('td', { class: 'hide-narrow' }, p.account || '—') : null);
    tr.prediction = p;
    return tr;
  };
  for (const p of page.results || []) {
    const tr = row(p);
    rows.set(p.id, tr);
    tbody.appendChild(tr);
  }
  const table = h('div', { class: 'table-wrap' }, h('table', { class: 'predictions' },
    h('caption', {}, cursor ? 'Older predictions, newest first' : 'Newest first; updates live'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Prediction'), h('th', { scope: 'col' }, 'Model'), h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col', class: 'hide-narrow' }, 'Created'), h('th', { scope: 'col', class: 'num' }, 'Duration'),
      showAccount ? h('th', { scope: 'col', class: 'hide-narrow' }, 'Account') : null)),
    tbody));
  const nextCursor = cursorOf(page.next);
  // A model filter scans a bounded number of predictions per page: an empty page with a next
  // link means "none among those looked at", not "none at all".
  const empty = nextCursor
    ? emptyState('None of the predictions looked at for this page match. Older ones may.',
      h('button', { type: 'button', class: 'button primary', onClick: () => go({ cursor: nextCursor }) }, 'Keep looking'))
    : emptyState(
      filters.status || filters.model || filters.account ? 'No predictions match these filters.' : 'No predictions yet.',
      h('a', { class: 'button primary', href: '/models' }, 'Run a model'));
  const draw = () => mount(body,
    rows.size ? table : empty,
    (cursor || nextCursor) ? pager({
      hasNewer: Boolean(cursor),
      hasOlder: Boolean(nextCursor),
      onNewest: () => go({ cursor: '' }),
      onOlder: () => go({ cursor: nextCursor }),
      label: 'Prediction pages',
    }) : null);
  draw();

  // Live: update rows in place; on the first page, new matching predictions go on top.
  const matches = (p) => (!filters.status || p.status === filters.status)
    && (!filters.model || p.model === filters.model || p.model.startsWith(`${filters.model}:`))
    && (!filters.account || p.account === filters.account);
  const stream = openStream('/v1/events', {
    endOn: [],
    onOpen: () => { live.textContent = 'Live'; live.classList.add('on'); },
    onError: (err) => { live.textContent = err.retrying ? 'Reconnecting…' : 'Not live'; live.classList.remove('on'); },
    onEvent: (type, data) => {
      if (type === 'lagged') { live.textContent = 'Live (some changes missed; reload for all)'; return; }
      if (type !== 'prediction') return;
      let p;
      try { p = JSON.parse(data); } catch { return; }
      const old = rows.get(p.id);
      if (old) {
        // A row that leaves the status filter stays, with its new status, until a reload.
        const tr = row(p);
        tr.classList.add('flash');
        old.replaceWith(tr);
        rows.set(p.id, tr);
      } else if (!cursor && matches(p)) {
        const tr = row(p);
        tr.classList.add('flash');
        tbody.prepend(tr);
        rows.set(p.id, tr);
        while (rows.size > PAGE_SIZE) {
          const last = tbody.lastElementChild;
          rows.delete(last.dataset.id);
          last.remove();
        }
        if (rows.size === 1) draw();
      }
    },
  });
  closers.push(() => stream.close());

  // Running predictions' durations tick.
  const tick = setInterval(() => {
    for (const tr of rows.values()) {
      const p = tr.prediction;
      if (p && !isTerminal(p.status)) tr.children[4].textContent = duration(p);
    }
  }, 1000);
  closers.push(() => clearInterval(tick));

  return () => closers.forEach((c) => c());
}
