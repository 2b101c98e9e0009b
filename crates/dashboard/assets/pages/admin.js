// /admin (admin token only): health (store, queue lanes, webhook backlog, counters), models
// with queued and running predictions beside their concurrency, all from
// GET /v1/admin/status and refreshed every few seconds; and accounts: a page of them with
// their credits, a form to create one and a form to grant credits.

import { api, whoami } from '/ui/lib/api.js';
import { h, errorBox, ensureCss, mount, fmtTime } from '/ui/lib/ui.js';
import { loading, pageLinks, pageQuery, timeEl, isAbort, on } from './parts.js';

const REFRESH_MS = 5000;
const ACCOUNTS_PAGE = 20;

/** Whether `whoami()` describes the admin token. */
export function isAdmin(me) {
  if (!me) return false;
  if (typeof me.admin === 'boolean') return me.admin;
  return me.type === 'organization' && me.name === 'Administrator';
}

function lanesTable(queue) {
  const lanes = [
    ['Jobs (predictions to run)', queue.jobs],
    ['Internal tasks', queue.tasks],
    ['Webhook messages', queue.webhooks],
  ];
  return h(
    'table',
    { class: 'table lanes-table' },
    h('caption', {}, 'Queue lanes'),
    h(
      'thead',
      {},
      h('tr', {}, ...['Lane', 'Ready', 'Leased', 'Delayed', 'Total'].map((t) => h('th', { scope: 'col' }, t))),
    ),
    h(
      'tbody',
      {},
      ...lanes.map(([name, s]) =>
        h(
          'tr',
          {},
          h('th', { scope: 'row' }, name),
          h('td', { class: 'num' }, String(s.ready)),
          h('td', { class: 'num' }, String(s.leased)),
          h('td', { class: 'num' }, String(s.delayed)),
          h('td', { class: 'num' }, String(s.total)),
        ),
      ),
    ),
  );
}

function healthView(s) {
  const store = s.store;
  const counters = s.counters ?? {};
  const created = counters.predictions_created_total ?? 0;
  const settledTotal = counters.predictions_settled_total ?? 0;
  return h(
    'div',
    { class: 'admin-health' },
    h(
      'div',
      { class: 'stat-grid' },
      h(
        'div',
        { class: 'card stat', 'data-stat': 'store' },
        h('h3', {}, 'Store'),
        h('p', { class: 'stat-value' }, store.backend),
        h('p', { class: 'small' }, `${store.status === 'ok' ? 'Answering' : store.status} · probe ${store.probe_ms} ms`),
        h(
          'p',
          { class: 'hint' },
          [store.durable ? 'durable' : 'not durable', store.native_ttl ? 'native expiry' : 'expiry by sweeper']
            .join(' · '),
        ),
      ),
      h(
        'div',
        { class: 'card stat', 'data-stat': 'queue' },
        h('h3', {}, 'Queue'),
        h('p', { class: 'stat-value' }, String(s.queue.jobs.total)),
        h('p', { class: 'small' }, `${s.queue.jobs.ready} ready · ${s.queue.jobs.leased} leased · ${s.queue.jobs.delayed} delayed`),
      ),
      h(
        'div',
        { class: 'card stat', 'data-stat': 'webhooks' },
        h('h3', {}, 'Webhook backlog'),
        h('p', { class: 'stat-value' }, String(s.webhook_backlog)),
        h('p', { class: 'small' }, 'messages waiting to be delivered'),
      ),
      h(
        'div',
        { class: 'card stat', 'data-stat': 'predictions' },
        h('h3', {}, 'Predictions'),
        h('p', { class: 'stat-value' }, String(created)),
        h('p', { class: 'small' }, `created · ${settledTotal} settled · ${Math.max(0, created - settledTotal)} unsettled`),
      ),
      h(
        'div',
        { class: 'card stat', 'data-stat': 'nodes' },
        h('h3', {}, 'Nodes'),
        h('p', { class: 'stat-value' }, String((s.nodes ?? []).length)),
        h(
          'p',
          { class: 'small' },
          store.shared
            ? `serving from this shared store${store.change_notifications ? ' (changes are announced to all)' : ''}`
            : 'this store belongs to this process alone',
        ),
      ),
    ),
    h('div', { class: 'table-wrap' }, lanesTable(s.queue)),
    h('div', { class: 'table-wrap' }, nodesTable(s.nodes ?? [])),
  );
}

/** The nodes serving from the store: each renews its record every 10 s; one that stopped
 * without saying so drops out 30 s after its last renewal. */
function nodesTable(nodes) {
  return h(
    'table',
    { class: 'table nodes-table' },
    h('caption', {}, 'Nodes (alive within the last 30 s)'),
    h(
      'thead',
      {},
      h('tr', {}, ...['Node', 'Host', 'Version', 'Models', 'Started', 'Last seen'].map((t) => h('th', { scope: 'col' }, t))),
    ),
    h(
      'tbody',
      {},
      ...nodes.map((n) =>
        h(
          'tr',
          { 'data-node': n.id },
          h('th', { scope: 'row' }, h('code', {}, n.id)),
          h('td', {}, n.hostname ?? '—'),
          h('td', {}, n.version),
          h('td', {}, String(n.models.length)),
          h('td', {}, fmtTime(n.started_at)),
          h('td', {}, fmtTime(n.last_seen)),
        ),
      ),
    ),
  );
}

function modelsView(s) {
  const note = [];
  if (s.counted?.queued_truncated) note.push(`queued counts stop at ${s.counted.limit}`);
  if (s.counted?.running_truncated) note.push(`running counts stop at ${s.counted.limit}`);
  return h(
    'div',
    {},
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'table models-table' },
        h('caption', { class: 'visually-hidden' }, 'Models'),
        h(
          'thead',
          {},
          h('tr', {}, ...['Model', 'Queued', 'Running', 'Concurrency'].map((t) => h('th', { scope: 'col' }, t))),
        ),
        h(
          'tbody',
          {},
          ...s.models.map((m) =>
            h(
              'tr',
              { 'data-model': m.name },
              h(
                'th',
                { scope: 'row' },
                h('a', { href: `/models/${m.name}` }, m.name),
                m.description ? h('div', { class: 'hint' }, m.description) : null,
              ),
              h('td', { class: 'num', 'data-field': 'queued' }, String(m.queued)),
              h('td', { class: 'num', 'data-field': 'running' }, String(m.running)),
              h(
                'td',
                { class: 'num', 'data-field': 'concurrency' },
                m.concurrency === null || m.concurrency === undefined
                  ? h('span', { class: 'muted' }, 'worker limit only')
                  : `${m.concurrency} per worker`,
              ),
            ),
          ),
        ),
      ),
    ),
    h(
      'p',
      { class: 'hint' },
      'Queued: predictions still starting; running: processing; counted over every account from the store.',
      note.length ? ` (${note.join(', ')}.)` : '',
    ),
  );
}

function field(id, labelText, control) {
  control.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, labelText), control);
}

export async function render(main, _params, ctx) {
  ensureCss('admin');
  ctx?.setTitle?.('Admin');
  const controller = new AbortController();
  const signal = controller.signal;
  mount(main, loading('Loading…'));

  let me = ctx?.me ?? null;
  try {
    me = me ?? (await whoami());
  } catch (err) {
    if (isAbort(err)) return () => {};
    mount(main, errorBox(err));
    return () => controller.abort();
  }
  if (!isAdmin(me)) {
    mount(main,
      h(
        'section',
        { class: 'card not-found', role: 'alert' },
        h('h1', {}, 'Admin only'),
        h('p', {}, 'This page needs the admin token. Sign out and sign in with it to see it.'),
      ),
    );
    return () => controller.abort();
  }

  const health = h('div', {}, loading('Loading health…'));
  const models = h('div', {}, loading('Loading models…'));
  const accounts = h('div', {}, loading('Loading accounts…'));
  const updated = h('p', { class: 'hint', 'aria-live': 'off' });

  // Create an account.
  const createMsg = h('div', { 'aria-live': 'polite' });
  const newUsername = h('input', { name: 'username', type: 'text', autocomplete: 'off' });
  newUsername.required = true;
  const newName = h('input', { name: 'name', type: 'text', autocomplete: 'off' });
  const createButton = h('button', { type: 'submit', class: 'button primary' }, 'Create account');
  const createForm = h(
    'form',
    { class: 'card admin-form', 'aria-labelledby': 'create-heading', 'data-form': 'create-account' },
    h('h3', { id: 'create-heading' }, 'Create an account'),
    field('create-username', 'Username', newUsername),
    field('create-name', 'Display name (optional)', newName),
    createButton,
    createMsg,
  );

  // Grant credits.
  const grantMsg = h('div', { 'aria-live': 'polite' });
  const grantUser = h('input', { name: 'username', type: 'text', autocomplete: 'off' });
  grantUser.required = true;
  const grantAmount = h('input', { name: 'amount', type: 'number', min: '1', step: '1' });
  grantAmount.required = true;
  const grantMemo = h('input', { name: 'memo', type: 'text', autocomplete: 'off' });
  const grantButton = h('button', { type: 'submit', class: 'button primary' }, 'Grant credits');
  const grantForm = h(
    'form',
    { class: 'card admin-form', 'aria-labelledby': 'grant-heading', 'data-form': 'grant-credits' },
    h('h3', { id: 'grant-heading' }, 'Grant credits'),
    field('grant-username', 'Account (username)', grantUser),
    field('grant-amount', 'Credits', grantAmount),
    field('grant-memo', 'Memo (optional)', grantMemo),
    grantButton,
    grantMsg,
  );

  mount(main,
    h(
      'section',
      { class: 'page admin-page' },
      h('h1', {}, 'Admin'),
      updated,
      h('section', { 'aria-labelledby': 'health-heading' }, h('h2', { id: 'health-heading' }, 'Health'), health),
      h('section', { 'aria-labelledby': 'models-heading' }, h('h2', { id: 'models-heading' }, 'Models'), models),
      h(
        'section',
        { 'aria-labelledby': 'accounts-heading' },
        h('h2', { id: 'accounts-heading' }, 'Accounts'),
        h('div', { class: 'admin-forms' }, createForm, grantForm),
        accounts,
      ),
    ),
  );

  let timer = null;
  let failedOnce = false;
  const loadStatus = async () => {
    try {
      const s = await api('/v1/admin/status', { signal });
      if (signal.aborted) return;
      mount(health, healthView(s));
      mount(models, modelsView(s));
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every ${REFRESH_MS / 1000} s.`;
      failedOnce = false;
    } catch (err) {
      if (isAbort(err) || signal.aborted) return;
      // The store being down is what this page is for: say so where health goes.
      mount(health, errorBox(err));
      if (!failedOnce) mount(models);
      failedOnce = true;
    }
    if (!signal.aborted) timer = setTimeout(loadStatus, REFRESH_MS);
  };

  const accountRow = (a) => {
    const credits = h('td', { class: 'num', 'data-field': 'credits' }, '…');
    const grant = on(
      h('button', { type: 'button', class: 'button small' }, 'Grant…'),
      'click',
      () => {
        grantUser.value = a.username;
        grantAmount.focus();
      },
    );
    grant.setAttribute('aria-label', `Grant credits to ${a.username}`);
    api(`/v1/accounts/${encodeURIComponent(a.username)}/credits`, { signal })
      .then((c) => {
        credits.textContent = `${c.available} available`;
        credits.title = `balance ${c.balance}, reserved ${c.reserved}`;
      })
      .catch((err) => {
        if (!isAbort(err)) credits.textContent = 'unavailable';
      });
    return h(
      'tr',
      { 'data-account': a.username },
      h('th', { scope: 'row', class: 'mono' }, a.username),
      h('td', {}, a.name ?? ''),
      h('td', {}, timeEl(a.created_at)),
      credits,
      h('td', {}, grant),
    );
  };

  const loadAccounts = async () => {
    try {
      const cursor = pageQuery().get('cursor');
      const page = await api('/v1/accounts', {
        query: { limit: ACCOUNTS_PAGE, ...(cursor ? { cursor } : {}) },
        signal,
      });
      if (signal.aborted) return;
      mount(accounts,
        page.results.length
          ? h(
              'div',
              { class: 'table-wrap' },
              h(
                'table',
                { class: 'table accounts-table' },
                h('caption', { class: 'visually-hidden' }, 'Accounts, newest first'),
                h(
                  'thead',
                  {},
                  h(
                    'tr',
                    {},
                    ...['Username', 'Name', 'Created', 'Credits', 'Actions'].map((t) => h('th', { scope: 'col' }, t)),
                  ),
                ),
                h('tbody', {}, ...page.results.map(accountRow)),
              ),
            )
          : h('p', { class: 'empty' }, 'No accounts yet.'),
        pageLinks(page, 'Account pages') ?? '',
      );
    } catch (err) {
      if (!isAbort(err) && !signal.aborted) mount(accounts, errorBox(err));
    }
  };

  on(createForm, 'submit', async (event) => {
    event.preventDefault();
    mount(createMsg);
    createButton.disabled = true;
    try {
      const body = { username: newUsername.value.trim() };
      if (newName.value.trim()) body.name = newName.value.trim();
      const a = await api('/v1/accounts', { method: 'POST', body, signal });
      mount(createMsg, h('p', { class: 'success', role: 'status' }, `Account ${a.username} created.`));
      newUsername.value = '';
      newName.value = '';
      grantUser.value = a.username;
      await loadAccounts();
    } catch (err) {
      if (!isAbort(err)) mount(createMsg, errorBox(err));
    } finally {
      createButton.disabled = false;
    }
  });

  on(grantForm, 'submit', async (event) => {
    event.preventDefault();
    mount(grantMsg);
    const username = grantUser.value.trim();
    const amount = Number(grantAmount.value);
    if (!Number.isInteger(amount) || amount <= 0) {
      mount(grantMsg, h('p', { class: 'error', role: 'alert' }, 'Credits must be a whole number above 0.'));
      return;
    }
    grantButton.disabled = true;
    try {
      const body = { amount, reason: 'grant' };
      if (grantMemo.value.trim()) body.memo = grantMemo.value.trim();
      const c = await api(`/v1/accounts/${encodeURIComponent(username)}/credits`, { method: 'POST', body, signal });
      mount(grantMsg,
        h(
          'p',
          { class: 'success', role: 'status', 'data-result': 'granted' },
          `Granted ${amount} credits to ${username}: balance ${c.balance}, ${c.available} available.`,
        ),
      );
      grantAmount.value = '';
      grantMemo.value = '';
      const row = accounts.querySelector(`tr[data-account="${CSS.escape(username)}"] [data-field="credits"]`);
      if (row) row.textContent = `${c.available} available`;
    } catch (err) {
      if (!isAbort(err)) mount(grantMsg, errorBox(err));
    } finally {
      grantButton.disabled = false;
    }
  });

  await Promise.all([loadStatus(), loadAccounts()]);
  return () => {
    controller.abort();
    if (timer !== null) clearTimeout(timer);
  };
}
