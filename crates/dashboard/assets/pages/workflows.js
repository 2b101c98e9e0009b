// /workflows: the blueprints this account may run (its own, then the operator's shared ones),
// each with a small drawing of its graph, and the account's recent runs (server-side pages,
// refreshed every few seconds while one on the page is still going).

import { api } from '/ui/lib/api.js';
import { h, statusBadge, errorBox, ensureCss, mount } from '/ui/lib/ui.js';
import { loading, pageLinks, pageQuery, timeEl, isAbort, cursorOf, hrefWith } from './parts.js';
import { drawGraph } from './graph.js';

const RUNS_PAGE = 20;
const RUNS_REFRESH_MS = 3000;

function workflowCard(w) {
  const href = `/workflows/${encodeURIComponent(w.owner)}/${encodeURIComponent(w.name.split('/')[1] ?? w.name)}`;
  const count = Object.keys(w.nodes ?? {}).length;
  const graph = drawGraph(w.nodes ?? {}, { label: `Graph of ${w.name}` });
  graph.element.classList.add('wf-graph-small');
  return h(
    'li',
    { class: 'card workflow-card', 'data-workflow': w.name },
    h('h3', {}, h('a', { href }, w.name)),
    w.description ? h('p', {}, w.description) : null,
    h(
      'p',
      { class: 'hint' },
      `${count} node${count === 1 ? '' : 's'} · version ${w.version} · updated `,
      timeEl(w.updated_at),
    ),
    graph.element,
  );
}

function runsTable(page) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'table runs-table' },
      h('caption', { class: 'visually-hidden' }, 'Workflow runs, newest first'),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ...['Run', 'Workflow', 'Status', 'Created', 'Completed'].map((t) => h('th', { scope: 'col' }, t)),
        ),
      ),
      h(
        'tbody',
        {},
        ...page.results.map((r) =>
          h(
            'tr',
            { 'data-run': r.id, 'data-status': r.status },
            h('td', {}, h('a', { href: `/runs/${encodeURIComponent(r.id)}`, class: 'mono' }, r.id)),
            h('td', {}, h('a', { href: `/workflows/${r.workflow}` }, r.workflow)),
            h('td', {}, statusBadge(r.status)),
            h('td', {}, timeEl(r.created_at)),
            h('td', {}, timeEl(r.completed_at)),
          ),
        ),
      ),
    ),
  );
}

export async function render(main, _params, ctx) {
  ctx?.setTitle?.('Workflows');
  ensureCss('workflows');
  const controller = new AbortController();
  const signal = controller.signal;
  const blueprints = h('div', {}, loading('Loading workflows…'));
  const runs = h('div', {}, loading('Loading runs…'));
  mount(main,
    h(
      'section',
      { class: 'page workflows-page' },
      h('h1', {}, 'Workflows'),
      h(
        'p',
        { class: 'muted' },
        'Blueprints of predictions: each node runs a model once its inputs are ready.',
      ),
      h('section', { 'aria-labelledby': 'wf-heading' }, h('h2', { id: 'wf-heading' }, 'Blueprints'), blueprints),
      h('section', { 'aria-labelledby': 'runs-heading' }, h('h2', { id: 'runs-heading' }, 'Recent runs'), runs),
    ),
  );

  const loadBlueprints = async () => {
    try {
      const cursor = pageQuery().get('wcursor');
      const page = await api('/v1/workflows', { query: cursor ? { cursor } : {}, signal });
      if (page.results.length === 0) {
        mount(blueprints,
          h(
            'div',
            { class: 'empty' },
            h('p', {}, 'No workflows yet.'),
            h('p', { class: 'hint' }, 'Create one with POST /v1/workflows and its blueprint as the body.'),
          ),
        );
        return;
      }
      const next = cursorOf(page.next);
      mount(blueprints,
        h('ul', { class: 'workflow-list' }, ...page.results.map(workflowCard)),
        next || cursor
          ? h(
              'nav',
              { class: 'pager', 'aria-label': 'Workflow pages' },
              cursor ? h('a', { href: hrefWith({ wcursor: null }) }, '← First') : '',
              next ? h('a', { href: hrefWith({ wcursor: next }), rel: 'next' }, 'More →') : '',
            )
          : '',
      );
    } catch (err) {
      if (!isAbort(err) && !signal.aborted) mount(blueprints, errorBox(err));
    }
  };

  // Runs still going are refreshed every few seconds, so their status changes in place.
  let timer = null;
  const loadRuns = async () => {
    timer = null;
    try {
      const cursor = pageQuery().get('cursor');
      const page = await api('/v1/runs', {
        query: { limit: RUNS_PAGE, ...(cursor ? { cursor } : {}) },
        signal,
      });
      mount(runs,
        page.results.length
          ? runsTable(page)
          : h('p', { class: 'empty' }, cursor ? 'No runs on this page.' : 'No runs yet.'),
        pageLinks(page, 'Run pages') ?? '',
      );
      const going = page.results.some((r) => !['succeeded', 'failed', 'canceled'].includes(r.status));
      if (going && !signal.aborted) timer = setTimeout(loadRuns, RUNS_REFRESH_MS);
    } catch (err) {
      if (!isAbort(err) && !signal.aborted) mount(runs, errorBox(err));
    }
  };

  await Promise.all([loadBlueprints(), loadRuns()]);
  return () => {
    controller.abort();
    if (timer !== null) clearTimeout(timer);
  };
}
