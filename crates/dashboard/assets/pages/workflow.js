// /workflows/:owner/:name: a blueprint: its graph drawn (edges from the nodes' references and
// `after`), each node's model and input, and a form that starts a run (fields from the
// blueprint's input schema) and opens the run's page.

import { api } from '/ui/lib/api.js';
import { h, errorBox, ensureCss, mount } from '/ui/lib/ui.js';
import { loading, notFound, timeEl, isAbort, on, go } from './parts.js';
import { drawGraph, dependencies } from './graph.js';

/** One form field per property of the input schema (the subset blueprints allow). */
function inputFields(schema) {
  const props = schema?.properties ?? {};
  const required = new Set(schema?.required ?? []);
  return Object.entries(props).map(([key, prop]) => {
    const id = `run-input-${key}`;
    const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== 'null') : prop.type;
    const label = h('label', { for: id }, key, required.has(key) ? ' (required)' : '');
    const hint = prop.description ? h('p', { class: 'hint', id: `${id}-hint` }, prop.description) : null;
    const common = { id, name: key, 'data-type': type ?? 'string' };
    if (hint) common['aria-describedby'] = `${id}-hint`;
    let control;
    if (type === 'boolean') {
      control = h('input', { ...common, type: 'checkbox' });
      return h('div', { class: 'field field-check' }, control, label, hint);
    }
    if (type === 'integer' || type === 'number') {
      control = h('input', { ...common, type: 'number', step: type === 'integer' ? '1' : 'any' });
    } else if (type === 'array' || type === 'object') {
      control = h('textarea', {
        ...common,
        rows: 3,
        placeholder: type === 'array' ? '["first", "second"]' : '{"key": "value"}',
      });
    } else {
      control = h('input', { ...common, type: 'text' });
    }
    if (required.has(key)) control.required = true;
    return h('div', { class: 'field' }, label, control, hint);
  });
}

/** The run's input from the form; throws an Error naming the field that is not valid. */
function readInput(form, schema) {
  if (!schema?.properties || Object.keys(schema.properties).length === 0) {
    const raw = form.elements.namedItem('input')?.value.trim() ?? '';
    if (!raw) return {};
    let value;
    try {
      value = JSON.parse(raw);
    } catch (e) {
      throw new Error(`input: not valid JSON (${e.message})`);
    }
    if (!value || typeof value !== 'object' || Array.isArray(value)) {
      throw new Error('input: must be a JSON object');
    }
    return value;
  }
  const input = {};
  for (const key of Object.keys(schema.properties)) {
    const el = form.elements.namedItem(key);
    if (!el) continue;
    const type = el.dataset.type;
    if (type === 'boolean') {
      input[key] = el.checked;
      continue;
    }
    const raw = el.value.trim();
    if (raw === '') continue;
    if (type === 'integer' || type === 'number') {
      const n = Number(raw);
      if (!Number.isFinite(n) || (type === 'integer' && !Number.isInteger(n))) {
        throw new Error(`${key}: must be ${type === 'integer' ? 'a whole number' : 'a number'}`);
      }
      input[key] = n;
    } else if (type === 'array' || type === 'object') {
      let value;
      try {
        value = JSON.parse(raw);
      } catch (e) {
        throw new Error(`${key}: not valid JSON (${e.message})`);
      }
      if (type === 'array' && !Array.isArray(value)) throw new Error(`${key}: must be a JSON list`);
      input[key] = value;
    } else {
      input[key] = el.value;
    }
  }
  return input;
}

function runForm(w, ctx) {
  const schema = w.input_schema;
  const message = h('div', { 'aria-live': 'polite' });
  const fields =
    schema?.properties && Object.keys(schema.properties).length
      ? inputFields(schema)
      : [
          h(
            'div',
            { class: 'field' },
            h('label', { for: 'run-input-json' }, 'Input (JSON object)'),
            h('textarea', { id: 'run-input-json', name: 'input', rows: 4, placeholder: '{}' }),
          ),
        ];
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Start run');
  const form = h('form', { class: 'card run-form', 'aria-labelledby': 'run-form-heading' },
    h('h2', { id: 'run-form-heading' }, 'Start a run'),
    ...fields,
    submit,
    message,
  );
  on(form, 'submit', async (event) => {
    event.preventDefault();
    mount(message);
    let input;
    try {
      input = readInput(form, schema);
    } catch (err) {
      mount(message, h('p', { class: 'error', role: 'alert' }, err.message));
      return;
    }
    submit.disabled = true;
    try {
      const [owner, name] = w.name.split('/');
      const run = await api(
        `/v1/workflows/${encodeURIComponent(owner)}/${encodeURIComponent(name)}/runs`,
        { method: 'POST', body: { input } },
      );
      go(`/runs/${encodeURIComponent(run.id)}`, ctx);
    } catch (err) {
      submit.disabled = false;
      mount(message, errorBox(err));
    }
  });
  return form;
}

function nodesTable(w) {
  const deps = dependencies(w.nodes);
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'table nodes-table' },
      h('caption', { class: 'visually-hidden' }, 'Nodes'),
      h(
        'thead',
        {},
        h('tr', {}, ...['Node', 'Model', 'Waits for', 'Input'].map((t) => h('th', { scope: 'col' }, t))),
      ),
      h(
        'tbody',
        {},
        ...Object.entries(w.nodes).map(([name, node]) =>
          h(
            'tr',
            { 'data-node': name },
            h('th', { scope: 'row' }, name),
            h(
              'td',
              {},
              h('a', { href: `/models/${node.model}` }, node.model),
              node.for_each ? h('div', { class: 'hint' }, `for each ${node.for_each}`) : null,
            ),
            h('td', {}, deps[name].length ? deps[name].join(', ') : h('span', { class: 'muted' }, 'nothing')),
            h('td', {}, h('pre', { class: 'json small' }, JSON.stringify(node.input ?? {}, null, 2))),
          ),
        ),
      ),
    ),
  );
}

export async function render(main, params, ctx) {
  ensureCss('workflows');
  const controller = new AbortController();
  const full = `${params.owner}/${params.name}`;
  ctx?.setTitle?.(full);
  mount(main, loading('Loading workflow…'));
  let w;
  try {
    w = await api(`/v1/workflows/${encodeURIComponent(params.owner)}/${encodeURIComponent(params.name)}`, {
      signal: controller.signal,
    });
  } catch (err) {
    if (isAbort(err)) return () => {};
    mount(main,
      err.status === 404 ? notFound('workflow', { href: '/workflows', label: 'All workflows' }) : errorBox(err),
    );
    return () => controller.abort();
  }
  const graph = drawGraph(w.nodes, { label: `Graph of workflow ${full}` });
  mount(main,
    h(
      'section',
      { class: 'page workflow-page' },
      h('p', { class: 'breadcrumbs' }, h('a', { href: '/workflows' }, 'Workflows'), ' / '),
      h('h1', {}, w.name),
      w.description ? h('p', {}, w.description) : null,
      h(
        'p',
        { class: 'hint' },
        `Version ${w.version} · updated `,
        timeEl(w.updated_at),
        w.output !== undefined ? ` · output: ${JSON.stringify(w.output)}` : '',
      ),
      h('section', { 'aria-labelledby': 'graph-heading' }, h('h2', { id: 'graph-heading' }, 'Graph'), graph.element),
      runForm(w, ctx),
      h('section', { 'aria-labelledby': 'nodes-heading' }, h('h2', { id: 'nodes-heading' }, 'Nodes'), nodesTable(w)),
    ),
  );
  return () => controller.abort();
}
