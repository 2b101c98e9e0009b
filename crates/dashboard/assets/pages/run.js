// /runs/:id: a workflow run: its graph coloured by each node's status, live through
// GET /v1/runs/{id}/stream (`node`, `run`, `done` events); each node links to its
// prediction(s); the run's input, output and error; cancel.

import { api } from '/ui/lib/api.js';
import { openStream } from '/ui/lib/sse.js';
import { h, statusBadge, fmtDuration, secondsBetween, renderOutput, errorBox, ensureCss, mount } from '/ui/lib/ui.js';
import { loading, notFound, timeEl, isAbort, eventJson, on } from './parts.js';
import { drawGraph } from './graph.js';

const TERMINAL = new Set(['succeeded', 'failed', 'canceled']);

function predictionLinks(ids, status) {
  const settled = ['succeeded', 'failed', 'canceled', 'skipped'].includes(status);
  if (!ids?.length) return h('span', { class: 'muted' }, settled ? 'none' : 'none yet');
  return h(
    'ul',
    { class: 'inline-list' },
    ...ids.map((id, i) =>
      h(
        'li',
        {},
        h(
          'a',
          { href: `/predictions/${encodeURIComponent(id)}`, class: 'mono' },
          ids.length > 1 ? `#${i + 1} ${id.slice(-8)}` : id,
        ),
      ),
    ),
  );
}

export async function render(main, params, ctx) {
  ensureCss('workflows');
  const id = params.id;
  ctx?.setTitle?.(`Run ${id}`);
  const controller = new AbortController();
  const signal = controller.signal;
  mount(main, loading('Loading run…'));

  let run;
  try {
    run = await api(`/v1/runs/${encodeURIComponent(id)}`, { signal });
  } catch (err) {
    if (isAbort(err)) return () => {};
    mount(main, err.status === 404 ? notFound('run', { href: '/workflows', label: 'Workflows and runs' }) : errorBox(err));
    return () => controller.abort();
  }

  // The blueprint gives the edges; the run alone gives the nodes (if the blueprint cannot be
  // read, or changed since, nodes are drawn from the run with the edges that still apply).
  let blueprintNodes = {};
  try {
    const [owner, name] = run.workflow.split('/');
    const w = await api(`/v1/workflows/${encodeURIComponent(owner)}/${encodeURIComponent(name)}`, {
      signal,
    });
    blueprintNodes = w.nodes ?? {};
  } catch (err) {
    if (isAbort(err)) return () => {};
    // Without the blueprint the nodes are still drawn and coloured, only without edges.
  }
  const nodes = {};
  for (const name of Object.keys(run.nodes)) {
    nodes[name] = blueprintNodes[name] ?? { model: '', input: {} };
  }

  const graph = drawGraph(nodes, {
    label: `Graph of run ${id}, coloured by node status`,
    navigate: ctx?.navigate,
    status: (name) => run.nodes[name]?.status,
    href: (name) => {
      const ids = run.nodes[name]?.prediction_ids ?? [];
      return ids.length ? `/predictions/${encodeURIComponent(ids[ids.length - 1])}` : null;
    },
  });

  const header = h('div', {});
  const message = h('div', { 'aria-live': 'polite' });
  const tableBody = h('tbody', {});
  const result = h('div', {});

  const cancel = async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    mount(message);
    try {
      run = await api(`/v1/runs/${encodeURIComponent(id)}/cancel`, { method: 'POST', signal });
      showAll();
    } catch (err) {
      if (isAbort(err)) return;
      button.disabled = false;
      mount(message, errorBox(err));
    }
  };

  const showHeader = () => {
    const duration =
      run.completed_at && run.created_at
        ? fmtDuration(secondsBetween(run.created_at, run.completed_at))
        : null;
    mount(header,
      h(
        'div',
        { class: 'card run-summary', 'data-status': run.status },
        h(
          'div',
          { class: 'batch-summary-head' },
          statusBadge(run.status),
          TERMINAL.has(run.status)
            ? null
            : on(h('button', { type: 'button', class: 'button danger' }, 'Cancel run'), 'click', cancel),
        ),
        h(
          'dl',
          { class: 'facts' },
          h('dt', {}, 'Workflow'),
          h('dd', {}, h('a', { href: `/workflows/${run.workflow}` }, run.workflow), ` (version ${run.version})`),
          h('dt', {}, 'Created'),
          h('dd', {}, timeEl(run.created_at)),
          h('dt', {}, 'Started'),
          h('dd', {}, timeEl(run.started_at)),
          h('dt', {}, 'Completed'),
          h('dd', {}, timeEl(run.completed_at), duration ? ` (${duration})` : ''),
        ),
      ),
    );
  };

  const nodeRow = (name) => {
    const n = run.nodes[name];
    return h(
      'tr',
      { 'data-node': name, 'data-status': n.status },
      h('th', { scope: 'row' }, name),
      h('td', {}, statusBadge(n.status)),
      h('td', {}, predictionLinks(n.prediction_ids, n.status)),
      h('td', {}, n.error ? h('span', { class: 'error' }, n.error) : ''),
    );
  };
  const showNode = (name) => {
    graph.update(name);
    const row = tableBody.querySelector(`tr[data-node="${CSS.escape(name)}"]`);
    const fresh = nodeRow(name);
    if (row) row.replaceWith(fresh);
    else tableBody.append(fresh);
  };

  const showResult = () => {
    mount(result,
      h('h2', { id: 'run-io-heading' }, 'Input and output'),
      h('h3', {}, 'Input'),
      h('pre', { class: 'json' }, JSON.stringify(run.input ?? {}, null, 2)),
      h('h3', {}, 'Output'),
      run.status === 'succeeded'
        ? renderOutput(run.output)
        : h('p', { class: 'muted' }, TERMINAL.has(run.status) ? 'No output.' : 'Not finished yet.'),
      run.error ? h('p', { class: 'error', role: 'alert' }, `Error: ${run.error}`) : null,
    );
  };

  const showAll = () => {
    showHeader();
    Object.keys(run.nodes).sort().forEach(showNode);
    showResult();
  };

  mount(main,
    h(
      'section',
      { class: 'page run-page' },
      h('p', { class: 'breadcrumbs' }, h('a', { href: '/workflows' }, 'Workflows'), ' / '),
      h('h1', {}, 'Run ', h('span', { class: 'mono' }, id)),
      header,
      message,
      h('section', { 'aria-labelledby': 'run-graph-heading' }, h('h2', { id: 'run-graph-heading' }, 'Graph'), graph.element),
      h(
        'section',
        { 'aria-labelledby': 'run-nodes-heading' },
        h('h2', { id: 'run-nodes-heading' }, 'Nodes'),
        h(
          'div',
          { class: 'table-wrap' },
          h(
            'table',
            { class: 'table nodes-table' },
            h('caption', { class: 'visually-hidden' }, 'Nodes of this run'),
            h(
              'thead',
              {},
              h('tr', {}, ...['Node', 'Status', 'Predictions', 'Error'].map((t) => h('th', { scope: 'col' }, t))),
            ),
            tableBody,
          ),
        ),
      ),
      h('section', { class: 'card', 'aria-labelledby': 'run-io-heading' }, result),
    ),
  );
  showAll();

  if (!TERMINAL.has(run.status)) {
    // A stream of its own, closed at `done` so that it is not reopened once the end is known.
    const stream = new AbortController();
    signal.addEventListener('abort', () => stream.abort());
    openStream(`/v1/runs/${encodeURIComponent(id)}/stream`, {
      signal: stream.signal,
      onEvent(type, data) {
        const value = eventJson(data);
        if (!value) return;
        if (type === 'node' && value.node && run.nodes[value.node]) {
          const { node, ...rest } = value;
          run.nodes[node] = { ...run.nodes[node], ...rest };
          showNode(node);
        } else if ((type === 'run' || type === 'done') && value.id === id) {
          run = value;
          showAll();
          if (type === 'done') stream.abort();
        }
      },
      onError(err) {
        if (isAbort(err) || stream.signal.aborted) return;
        mount(message, errorBox(err));
      },
    });
  }
  return () => controller.abort();
}
