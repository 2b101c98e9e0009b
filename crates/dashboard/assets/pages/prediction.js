// A prediction's page (`/predictions/:id`): input, output by type, logs streaming live
// (`/v1/predictions/{id}/stream`, resumed with Last-Event-ID), a timeline of its
// transitions with times and durations, its webhook deliveries with every attempt and a
// redeliver button, cancel, and its cost. Another account's prediction is "Not found", as the
// API answers.

import { ApiError, api } from '/ui/lib/api.js';
import { openStream } from '/ui/lib/sse.js';
import {
  emptyState, ensureCss, errorBox, facts, fmtDuration, h, isTerminal, loading, mount, notFound,
  renderOutput, secondsBetween, statusBadge, timeEl,
} from '/ui/lib/ui.js';

function costText(cost) {
  if (!cost) return null;
  const price = cost.price || {};
  const rate = price.per_prediction !== undefined
    ? `${price.per_prediction} credits per prediction`
    : price.per_second !== undefined ? `${price.per_second} credits per second (at most ${price.max_seconds} s)` : '';
  const charged = cost.charged !== undefined && cost.charged !== null
    ? `${cost.charged} credits charged` : `${cost.reserved} credits reserved`;
  return rate ? `${charged} · ${rate}` : charged;
}

/** The transitions as a list: created, started (after queueing), settled (after running). */
function timeline(p) {
  const steps = [{ label: 'Created', at: p.created_at, note: null }];
  if (p.started_at) {
    steps.push({ label: 'Started', at: p.started_at, note: `waited ${fmtDuration(secondsBetween(p.created_at, p.started_at))}` });
  }
  if (p.completed_at) {
    const from = p.started_at || p.created_at;
    const ran = p.metrics && Number.isFinite(p.metrics.predict_time) ? p.metrics.predict_time : secondsBetween(from, p.completed_at);
    const label = { succeeded: 'Succeeded', failed: 'Failed', canceled: 'Canceled' }[p.status] || p.status;
    steps.push({
      label, at: p.completed_at, status: p.status,
      note: p.started_at ? `ran ${fmtDuration(ran)}` : `after ${fmtDuration(secondsBetween(p.created_at, p.completed_at))}, before starting`,
    });
  } else {
    steps.push({ label: p.status === 'processing' ? 'Running now' : 'Waiting for a worker', at: null, note: null, pending: true });
  }
  const total = p.completed_at ? secondsBetween(p.created_at, p.completed_at) : null;
  return h('div', {},
    h('ol', { class: 'timeline' }, steps.map((s) => h('li', { class: s.pending ? 'pending' : (s.status ? `end-${s.status}` : '') },
      h('span', { class: 'step' }, s.label),
      s.at ? timeEl(s.at) : null,
      s.note ? h('span', { class: 'muted' }, ` · ${s.note}`) : null))),
    total !== null ? h('p', { class: 'muted' }, `Total: ${fmtDuration(total)}`) : null);
}

function webhookSection(p, onRedeliver) {
  const box = h('div', {}, loading('Loading deliveries…'));
  const load = async () => {
    let log;
    try {
      log = await api(`/v1/predictions/${encodeURIComponent(p.id)}/webhooks`);
    } catch (err) {
      mount(box, errorBox(err, { title: 'The webhook deliveries could not be read' }));
      return;
    }
    const results = log.results || [];
    if (!results.length) {
      mount(box, emptyState('No webhook messages yet.'));
      return;
    }
    mount(box, h('div', { class: 'table-wrap' }, h('table', { class: 'webhooks' },
      h('caption', {}, `Deliveries to ${p.webhook}`),
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Event'), h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Attempts'),
        h('th', { scope: 'col' }, 'Next attempt'), h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
      h('tbody', {}, results.map((m) => h('tr', { dataset: { webhook: m.id } },
        h('td', {}, m.event),
        h('td', {}, statusBadge(m.status)),
        h('td', {}, m.attempts.length
          ? h('ol', { class: 'attempts' }, m.attempts.map((a) => h('li', {},
            timeEl(a.at), ' · ',
            a.status_code ? `HTTP ${a.status_code}` : (a.error || 'no answer'),
            ` · ${a.duration_ms} ms`)))
          : h('span', { class: 'muted' }, 'none yet')),
        h('td', {}, m.next_attempt_at ? timeEl(m.next_attempt_at) : '—'),
        h('td', {}, h('button', {
          type: 'button', class: 'button', 'aria-label': `Redeliver the ${m.event} message`,
          onClick: (e) => onRedeliver(m, e.currentTarget, load),
        }, 'Redeliver'))))))));
  };
  load();
  return { el: box, reload: load };
}

export async function render(main, params, ctx) {
  ensureCss('prediction');
  const id = params.id;
  ctx.setTitle(`Prediction ${id}`);
  const closers = [];
  let p;
  try {
    p = await api(`/v1/predictions/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 400)) {
      ctx.setTitle('Not found');
      mount(main, notFound('prediction'));
    } else {
      mount(main, h('h1', {}, 'Prediction'), errorBox(err, { title: 'The prediction could not be read' }));
    }
    return () => {};
  }
  if (!ctx.current) return () => {};

  const statusSlot = h('span', {});
  const actionStatus = h('div', { 'aria-live': 'polite' });
  const cancelButton = h('button', { type: 'button', class: 'button danger' }, 'Cancel prediction');
  const factsSlot = h('div', {});
  const timelineSlot = h('div', {});
  const outputSlot = h('div', { class: 'output-slot', 'aria-live': 'polite' });
  const errorSlot = h('div', {});
  const logs = h('pre', { class: 'logs', role: 'log', 'aria-label': 'Logs', tabindex: '0' });
  const logState = h('p', { class: 'muted log-state' });
  let logText = p.logs || '';
  logs.textContent = logText;

  const draw = () => {
    mount(statusSlot, statusBadge(p.status));
    cancelButton.hidden = isTerminal(p.status);
    const model = p.model.split(':')[0];
    mount(factsSlot, facts([
      ['Model', h('a', { href: `/models/${model}` }, p.model)],
      ['Version', h('span', { class: 'mono' }, p.version)],
      p.account ? ['Account', p.account] : null,
      ['Created', timeEl(p.created_at)],
      ['Run time', p.metrics && Number.isFinite(p.metrics.predict_time) ? fmtDuration(p.metrics.predict_time) : '—'],
      ['Cost', costText(p.cost) || 'Free'],
      ['Attempts', String(p.attempts ?? 0)],
      p.batch ? ['Batch', h('a', { href: `/batches/${encodeURIComponent(p.batch)}` }, p.batch)] : null,
      p.run ? ['Workflow run', h('a', { href: `/runs/${encodeURIComponent(p.run)}` }, p.run)] : null,
      p.deployment ? ['Deployment', p.deployment] : null,
      p.deadline ? ['Cancel after', timeEl(p.deadline)] : null,
      p.webhook ? ['Webhook', h('span', { class: 'mono' }, p.webhook)] : null,
      p.data_removed ? ['Data', 'Removed by retention'] : (p.expires_at ? ['Data kept until', timeEl(p.expires_at)] : null),
    ]));
    mount(timelineSlot, timeline(p));
    mount(outputSlot, p.data_removed ? emptyState('The output was removed by retention.') : renderOutput(p.output));
    mount(errorSlot, p.error ? h('div', { class: 'callout callout-error' }, h('strong', {}, 'Error'), h('pre', {}, p.error)) : null);
    logState.textContent = isTerminal(p.status) ? (logText ? '' : 'It logged nothing.') : 'Streaming live…';
    logs.hidden = isTerminal(p.status) && !logText;
  };

  cancelButton.addEventListener('click', async () => {
    cancelButton.disabled = true;
    mount(actionStatus, h('p', { role: 'status' }, 'Canceling…'));
    try {
      p = await api(`/v1/predictions/${encodeURIComponent(p.id)}/cancel`, { method: 'POST' });
      mount(actionStatus, h('p', { role: 'status' }, p.status === 'canceled' ? 'Canceled.' : `It is ${p.status}.`));
      draw();
    } catch (err) {
      mount(actionStatus, errorBox(err, { title: 'The prediction could not be canceled' }));
    } finally {
      cancelButton.disabled = false;
    }
  });

  const redeliver = async (message, button, reload) => {
    button.disabled = true;
    try {
      await api(`/v1/predictions/${encodeURIComponent(p.id)}/webhooks/${encodeURIComponent(message.id)}/redeliver`, { method: 'POST' });
      mount(actionStatus, h('p', { role: 'status' }, `The ${message.event} message is queued for delivery again.`));
      setTimeout(reload, 1000);
    } catch (err) {
      mount(actionStatus, errorBox(err, { title: 'The message could not be redelivered' }));
    } finally {
      button.disabled = false;
    }
  };
  const hooks = p.webhook ? webhookSection(p, redeliver) : null;

  mount(main,
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '/' }, 'Predictions'), ' / ', h('span', { class: 'mono' }, p.id)),
    h('div', { class: 'page-head' },
      h('h1', {}, 'Prediction ', h('span', { class: 'mono' }, p.id), ' ', statusSlot),
      h('div', { class: 'actions' }, cancelButton)),
    actionStatus,
    errorSlot,
    h('div', { class: 'columns' },
      h('section', { class: 'card', 'aria-labelledby': 'output-title' }, h('h2', { id: 'output-title' }, 'Output'), outputSlot),
      h('section', { class: 'card', 'aria-labelledby': 'details-title' }, h('h2', { id: 'details-title' }, 'Details'), factsSlot)),
    h('section', { class: 'card', 'aria-labelledby': 'timeline-title' }, h('h2', { id: 'timeline-title' }, 'Timeline'), timelineSlot),
    h('section', { class: 'card', 'aria-labelledby': 'logs-title' }, h('h2', { id: 'logs-title' }, 'Logs'), logState, logs),
    h('section', { class: 'card', 'aria-labelledby': 'input-title' }, h('h2', { id: 'input-title' }, 'Input'),
      h('pre', { class: 'input-json' }, JSON.stringify(p.input, null, 2))),
    hooks ? h('section', { class: 'card', 'aria-labelledby': 'webhooks-title' }, h('h2', { id: 'webhooks-title' }, 'Webhook deliveries'), hooks.el) : null);
  draw();

  if (isTerminal(p.status)) return () => {};

  // Live: logs and output from the prediction's stream; the record (status, times, cost)
  // re-read when the stream says something changed, and every few seconds while it waits.
  let refreshing = null;
  let streamed = false;
  const refresh = () => {
    if (refreshing) return refreshing;
    refreshing = api(`/v1/predictions/${encodeURIComponent(p.id)}`).then((fresh) => {
      if (!ctx.current) return;
      p = fresh;
      // The stream's log is the live one; the record's is the whole, final one.
      if (!streamed || isTerminal(p.status)) { logText = p.logs || ''; logs.textContent = logText; }
      draw();
      if (hooks) hooks.reload();
    }).catch(() => {}).finally(() => { refreshing = null; });
    return refreshing;
  };
  const stream = openStream(`/v1/predictions/${encodeURIComponent(p.id)}/stream`, {
    onEvent: (type, data) => {
      if (type === 'logs') {
        // The stream replays the log from its start: it replaces what the first read showed.
        if (!streamed) { streamed = true; logText = ''; }
        logText += data.endsWith('\n') ? data : `${data}\n`;
        const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 8;
        logs.textContent = logText;
        if (atBottom) logs.scrollTop = logs.scrollHeight;
        if (p.status === 'starting') refresh();
      } else if (type === 'output') {
        try { p = { ...p, output: JSON.parse(data) }; } catch { p = { ...p, output: data }; }
        mount(outputSlot, renderOutput(p.output));
        if (p.status === 'starting') refresh();
      } else if (type === 'done' || type === 'error') {
        refresh();
      }
    },
    onError: (err) => { if (!err.retrying) logState.textContent = 'Live updates stopped; reload the page to see changes.'; },
  });
  closers.push(() => stream.close());
  const poll = setInterval(() => { if (!isTerminal(p.status)) refresh(); }, 3000);
  closers.push(() => clearInterval(poll));
  return () => closers.forEach((c) => c());
}
