// The account page (`/account`): credits (balance, reserved, available), the ledger with its
// reasons (newest first, server-side cursor pages), and API tokens: create (the token is shown
// once), list, revoke. Credits and the ledger's first page refresh when one of the account's
// predictions settles (through `/v1/events`), since that is when credits move.

import { api, ApiError, clearToken, cursorOf, getToken, whoami } from '/ui/lib/api.js';
import { openStream } from '/ui/lib/sse.js';
import { h, ensureCss, errorBox, emptyState, timeEl, pager, copyButton, isTerminal, shortId } from '/ui/lib/ui.js';

const LEDGER_PAGE = 20;

/** What a ledger entry's reason means, in words. */
const REASONS = {
  reserve: 'Reserved for a prediction',
  charge: 'Charged for a prediction',
  release: 'Released: the part of a hold not needed',
  refund: 'Refunded: the prediction did not run',
  grant: 'Granted',
  topup: 'Bought',
  adjust: 'Adjusted by the operator',
};

const PREDICTION_REASONS = new Set(['reserve', 'charge', 'release', 'refund']);

function signed(n) {
  if (!n) return '0';
  return n > 0 ? `+${n}` : `−${Math.abs(n)}`;
}

/** The id of the token this session signed in with, if it is an account token (`aug_<id>…`). */
function sessionTokenId() {
  const t = getToken() ?? '';
  return t.startsWith('aug_') && t.length >= 24 ? t.slice(4, 24) : null;
}

// ---------------------------------------------------------------------------------------------
// Credits

function creditsCard() {
  const body = h('div', { class: 'credit-figures' }, h('p', { class: 'loading', role: 'status' }, 'Loading credits…'));
  const card = h('section', { class: 'card credits', 'aria-labelledby': 'credits-title' }, h('h2', { id: 'credits-title' }, 'Credits'), body);
  const figure = (label, value, hint, cls) =>
    h('div', { class: `credit-figure ${cls}` }, h('dt', {}, label), h('dd', {}, h('span', { class: 'credit-value' }, String(value)), h('span', { class: 'muted credit-hint' }, hint)));
  const load = async (signal) => {
    try {
      const c = await api('/v1/account/credits', { signal });
      body.replaceChildren(
        h(
          'dl',
          { class: 'credit-list' },
          figure('Available', c.available, 'what new predictions can use', 'available'),
          figure('Balance', c.balance, 'all your credits', 'balance'),
          figure('Reserved', c.reserved, 'held for predictions still running', 'reserved'),
        ),
      );
    } catch (err) {
      if (!signal.aborted) body.replaceChildren(errorBox(err));
    }
  };
  return { card, load };
}

// ---------------------------------------------------------------------------------------------
// Ledger

function ledgerCard() {
  const table = h('div', { class: 'ledger-table' }, h('p', { class: 'loading', role: 'status' }, 'Loading the ledger…'));
  const paging = h('div', { class: 'ledger-pager' });
  const card = h(
    'section',
    { class: 'card ledger', 'aria-labelledby': 'ledger-title' },
    h('h2', { id: 'ledger-title' }, 'Ledger'),
    h('p', { class: 'muted' }, 'Every movement of your credits, newest first.'),
    table,
    paging,
  );
  // The ledger pages forward only (by the sequence number of the last entry seen): "Older"
  // follows `next`, "Newest" goes back to the first page.
  let cursor = null;
  let signal = null;

  const row = (e) => {
    const ref = e.reference
      ? PREDICTION_REASONS.has(e.reason)
        ? h('a', { href: `/predictions/${encodeURIComponent(e.reference)}`, title: e.reference }, `Prediction ${shortId(e.reference)}`)
        : e.reference
      : null;
    return h(
      'tr',
      { dataset: { reason: e.reason, entry: e.id } },
      h('td', { class: 'when' }, timeEl(e.created_at)),
      h('td', {}, h('span', { class: `reason reason-${e.reason}` }, REASONS[e.reason] ?? e.reason)),
      h('td', { class: ['num', e.delta < 0 && 'negative', e.delta > 0 && 'positive'] }, e.delta !== 0 ? signed(e.delta) : ''),
      h('td', { class: 'num muted' }, e.held !== 0 ? `${signed(e.held)} held` : ''),
      h('td', { class: 'num' }, String(e.balance_after)),
      h('td', { class: 'ref' }, ref, e.memo ? h('span', { class: 'memo muted' }, ref ? ` · ${e.memo}` : e.memo) : null),
    );
  };

  const load = async (sig) => {
    if (sig) signal = sig;
    try {
      const page = await api('/v1/account/ledger', { query: { limit: LEDGER_PAGE, cursor }, signal });
      const next = cursorOf(page.next);
      if (page.results.length === 0) {
        table.replaceChildren(emptyState(cursor ? 'No older entries.' : 'No entries yet: your credits have not moved.'));
      } else {
        table.replaceChildren(
          h(
            'div',
            { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'Ledger entries' },
            h(
              'table',
              { class: 'ledger-entries' },
              h('caption', {}, 'Ledger entries, newest first'),
              h(
                'thead',
                {},
                h(
                  'tr',
                  {},
                  h('th', { scope: 'col' }, 'When'),
                  h('th', { scope: 'col' }, 'Reason'),
                  h('th', { scope: 'col', class: 'num' }, 'Amount'),
                  h('th', { scope: 'col', class: 'num' }, 'Hold'),
                  h('th', { scope: 'col', class: 'num' }, 'Balance after'),
                  h('th', { scope: 'col' }, 'For'),
                ),
              ),
              h('tbody', {}, page.results.map(row)),
            ),
          ),
        );
      }
      paging.replaceChildren(
        pager({
          label: 'Ledger pages',
          hasNewer: cursor !== null,
          hasOlder: next !== null,
          onNewest: () => {
            cursor = null;
            load();
          },
          onOlder: () => {
            cursor = next;
            load();
          },
        }),
      );
    } catch (err) {
      if (!signal?.aborted) table.replaceChildren(errorBox(err));
    }
  };
  /** Reloads the page shown if it is the newest (older pages do not change). */
  const refresh = () => {
    if (cursor === null) load();
  };
  return { card, load, refresh };
}

// ---------------------------------------------------------------------------------------------
// Tokens

function tokensCard(signal, navigate) {
  const list = h('div', { class: 'token-list' }, h('p', { class: 'loading', role: 'status' }, 'Loading tokens…'));
  const shown = h('div', { class: 'token-shown' });
  const nameInput = h('input', { id: 'token-name', name: 'token_name', type: 'text', maxlength: '100', placeholder: 'e.g. laptop', autocomplete: 'off', 'aria-describedby': 'token-name-error' });
  const nameError = h('p', { id: 'token-name-error', class: 'field-error', 'aria-live': 'polite' });
  const create = h('button', { type: 'submit', class: 'button primary' }, 'Create token');
  const form = h(
    'form',
    { class: 'token-form', 'aria-label': 'Create a token' },
    h('div', { class: 'field' }, h('label', { for: 'token-name' }, 'Name of a new token'), nameInput, nameError),
    h('div', { class: 'form-actions' }, create),
  );
  const card = h(
    'section',
    { class: 'card tokens', 'aria-labelledby': 'tokens-title' },
    h('h2', { id: 'tokens-title' }, 'API tokens'),
    h('p', { class: 'muted' }, 'Tokens let programs act as this account. A new token is shown once: copy it then.'),
    form,
    shown,
    list,
  );
  const mine = sessionTokenId();

  const row = (t) => {
    const actions = h('td', { class: 'token-actions' });
    const revoke = h('button', { type: 'button', class: 'button danger', 'aria-label': `Revoke token ${t.name}` }, 'Revoke');
    const ask = () => {
      const yes = h('button', { type: 'button', class: 'button danger' }, 'Yes, revoke');
      const no = h('button', { type: 'button', class: 'button subtle' }, 'Keep it');
      const question = h(
        'span',
        { role: 'alert' },
        t.id === mine ? 'This is the token you signed in with: revoking it signs you out. Revoke? ' : 'Revoke? Programs using it stop working. ',
      );
      yes.addEventListener('click', async () => {
        yes.disabled = true;
        no.disabled = true;
        try {
          await api(`/v1/account/tokens/${encodeURIComponent(t.id)}`, { method: 'DELETE', signal });
          if (t.id === mine) {
            // This session's token no longer works: sign out.
            clearToken();
            navigate('/signin');
            return;
          }
          load();
        } catch (err) {
          actions.replaceChildren(errorBox(err), revoke);
        }
      });
      no.addEventListener('click', () => {
        actions.replaceChildren(revoke);
        revoke.focus();
      });
      actions.replaceChildren(question, yes, no);
      no.focus();
    };
    revoke.addEventListener('click', ask);
    actions.append(revoke);
    return h(
      'tr',
      { dataset: { tokenId: t.id } },
      h('td', {}, t.name, t.id === mine ? h('span', { class: 'badge' }, 'this session') : null),
      h('td', { class: 'mono token-id', title: `Its text starts with aug_${t.id}` }, `aug_${t.id.slice(0, 8)}…`),
      h('td', { class: 'when' }, timeEl(t.created_at)),
      h('td', { class: 'when' }, t.last_used_at ? timeEl(t.last_used_at) : h('span', { class: 'muted' }, 'never')),
      actions,
    );
  };

  const load = async () => {
    try {
      const page = await api('/v1/account/tokens', { signal });
      const tokens = page.results ?? [];
      if (tokens.length === 0) {
        list.replaceChildren(emptyState('No tokens. Create one above.'));
        return;
      }
      list.replaceChildren(
        h(
          'div',
          { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'Token list' },
          h(
          'table',
          { class: 'token-table' },
          h('caption', {}, 'Your API tokens, newest first'),
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              h('th', { scope: 'col' }, 'Name'),
              h('th', { scope: 'col' }, 'Token'),
              h('th', { scope: 'col' }, 'Created'),
              h('th', { scope: 'col' }, 'Last used'),
              h('th', { scope: 'col' }, 'Actions'),
            ),
          ),
          h('tbody', {}, tokens.map(row)),
          ),
        ),
      );
    } catch (err) {
      if (!signal.aborted) list.replaceChildren(errorBox(err));
    }
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    nameError.textContent = '';
    nameInput.removeAttribute('aria-invalid');
    create.disabled = true;
    try {
      const name = nameInput.value.trim();
      const t = await api('/v1/account/tokens', { method: 'POST', body: name ? { name } : {}, signal });
      nameInput.value = '';
      const value = h('input', { id: 'new-token', name: 'new_token', type: 'text', readonly: true, value: t.token, class: 'mono', 'aria-describedby': 'new-token-hint' });
      const dismiss = h('button', { type: 'button', class: 'button subtle' }, 'Done, hide it');
      dismiss.addEventListener('click', () => {
        shown.replaceChildren();
        nameInput.focus();
      });
      shown.replaceChildren(
        h(
          'div',
          { class: 'notice new-token' },
          h('label', { for: 'new-token' }, `Your new token “${t.name}”`),
          h('div', { class: 'token-value' }, value, copyButton(t.token, 'Copy')),
          h('p', { id: 'new-token-hint' }, h('strong', {}, 'Copy it now: it is not shown again.'), ' Anyone with it can act as this account.'),
          dismiss,
        ),
      );
      value.focus();
      value.select();
      load();
    } catch (err) {
      if (err instanceof ApiError && err.field === 'name') {
        nameError.textContent = err.message;
        nameInput.setAttribute('aria-invalid', 'true');
        nameInput.focus();
      } else if (!signal.aborted) {
        shown.replaceChildren(errorBox(err));
      }
    } finally {
      create.disabled = false;
    }
  });

  return { card, load };
}

// ---------------------------------------------------------------------------------------------
// The page

export async function render(main, _params, ctx) {
  ensureCss('account');
  ctx.setTitle('Account');
  const controller = new AbortController();
  const { signal } = controller;
  main.replaceChildren(h('h1', {}, 'Account'), h('p', { class: 'loading', role: 'status' }, 'Loading…'));
  let me;
  try {
    me = ctx.me ?? (await whoami());
  } catch (err) {
    // Another page may have been drawn meanwhile: leave it alone.
    if (ctx.current) main.replaceChildren(h('h1', {}, 'Account'), errorBox(err));
    return () => controller.abort();
  }
  if (!ctx.current) return () => controller.abort();
  if (me.admin || (me.type === 'organization' && me.name === 'Administrator')) {
    main.replaceChildren(
      h('h1', {}, 'Account'),
      h(
        'p',
        {},
        'You are signed in with the admin token, which has no account of its own: credits, the ledger and tokens belong to accounts. ',
        h('a', { href: '/admin' }, 'Manage accounts on the Admin page'),
        '.',
      ),
    );
    return () => controller.abort();
  }
  const credits = creditsCard();
  const ledger = ledgerCard();
  const tokens = tokensCard(signal, ctx.navigate);
  main.replaceChildren(
    h('h1', {}, 'Account'),
    h('p', { class: 'muted account-who' }, me.name && me.name !== me.username ? `${me.name} (${me.username})` : me.username),
    credits.card,
    tokens.card,
    ledger.card,
  );
  credits.load(signal);
  ledger.load(signal);
  tokens.load();

  // Credits move when a prediction is created (reserve) and when it settles (charge, release,
  // refund): refresh then, at most every half second.
  let timer = null;
  const soon = () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      credits.load(signal);
      ledger.refresh();
    }, 500);
  };
  const seen = new Map();
  openStream('/v1/events', {
    signal,
    onEvent(type, data) {
      if (type === 'lagged') return soon();
      if (type !== 'prediction') return;
      let p;
      try {
        p = JSON.parse(data);
      } catch {
        return;
      }
      const before = seen.get(p.id);
      seen.set(p.id, p.status);
      if (seen.size > 1000) seen.delete(seen.keys().next().value);
      const settled = isTerminal(p.status);
      if (before === undefined || (settled && before !== p.status)) soon();
    },
    onError() {},
  });
  return () => {
    controller.abort();
    clearTimeout(timer);
  };
}
