// The run page of one model (`/models/{owner}/{name}`): a form generated from the model's
// input schema (its Cog/OpenAPI `Input`), one field per input named after its key; file inputs
// are uploaded through `POST /v1/files` and passed by their URL. A run is created through
// `POST /v1/models/{owner}/{name}/predictions` and followed on the same page through the
// prediction's event stream (logs, progress, output), without a reload; then the page shows the
// result and the equivalent curl, Python and JavaScript for exactly what was run.

import { api, ApiError } from '/ui/lib/api.js';
import { openStream } from '/ui/lib/sse.js';
import {
  h,
  ensureCss,
  errorBox,
  copyButton,
  statusBadge,
  renderOutput,
  fmtDuration,
  progressBar,
  isTerminal,
  notFound,
} from '/ui/lib/ui.js';
import { priceText } from '/ui/pages/models.js';

// ---------------------------------------------------------------------------------------------
// The schema

/** The `Input` schema's fields, in `x-order`, each with its `$ref`/`allOf`/`anyOf` resolved. */
export function inputFields(openapi) {
  const schemas = openapi?.components?.schemas ?? {};
  const input = schemas.Input ?? {};
  const required = new Set(input.required ?? []);
  const fields = Object.entries(input.properties ?? {}).map(([key, prop], i) => ({
    ...resolve(prop, schemas),
    key,
    required: required.has(key),
    position: i,
  }));
  fields.sort(
    (a, b) => (a['x-order'] ?? 1e9) - (b['x-order'] ?? 1e9) || a.position - b.position,
  );
  return {
    fields,
    // A model without named inputs that takes any object (e.g. augur/echo) gets a JSON box.
    freeform: fields.length === 0 && input.additionalProperties !== false,
    description: input.description,
  };
}

/** A property schema with what it references merged in; its own keys win (title, default). */
function resolve(prop, schemas, depth = 0) {
  if (!prop || typeof prop !== 'object' || depth > 8) return prop ?? {};
  let out = {};
  const ref = (r) =>
    typeof r === 'string' && r.startsWith('#/components/schemas/')
      ? schemas[r.slice('#/components/schemas/'.length)]
      : undefined;
  if (prop.$ref) Object.assign(out, resolve(ref(prop.$ref), schemas, depth + 1));
  for (const part of prop.allOf ?? []) Object.assign(out, resolve(part, schemas, depth + 1));
  // Optional[X] in pydantic 2: anyOf [X, null]; take the first that is not null.
  const alt = (prop.anyOf ?? prop.oneOf ?? []).find((s) => s && s.type !== 'null');
  if (alt) Object.assign(out, resolve(alt, schemas, depth + 1));
  const { $ref: _r, allOf: _a, anyOf: _o, oneOf: _x, ...own } = prop;
  out = { ...out, ...own };
  if (out.items) out.items = resolve(out.items, schemas, depth + 1);
  return out;
}

/** What control a field gets. */
export function fieldKind(f) {
  if (Array.isArray(f.enum) && f.enum.length > 0) return 'select';
  switch (f.type) {
    case 'boolean':
      return 'checkbox';
    case 'integer':
    case 'number':
      return 'number';
    case 'string':
      if (f.format === 'uri') return 'file';
      if (f.format === 'password' || f['x-cog-secret']) return 'secret';
      return 'text';
    case 'array':
      if (f.items?.format === 'uri') return 'files';
      if (['string', 'integer', 'number'].includes(f.items?.type)) return 'lines';
      return 'json';
    default:
      return 'json';
  }
}

function humanize(key) {
  const words = key.replace(/[_-]+/g, ' ').trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

// ---------------------------------------------------------------------------------------------
// The form

/** The control and its label and hints for one field; `read()` later collects its value. */
export function fieldControl(f) {
  const id = `in-${f.key}`;
  const kind = fieldKind(f);
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const hints = [];
  if (f.description) hints.push(/[.!?]$/.test(f.description.trim()) ? f.description.trim() : `${f.description.trim()}.`);
  const bounds = [];
  if (f.minimum !== undefined) bounds.push(`at least ${f.minimum}`);
  if (f.maximum !== undefined) bounds.push(`at most ${f.maximum}`);
  if (f.exclusiveMinimum !== undefined) bounds.push(`more than ${f.exclusiveMinimum}`);
  if (f.exclusiveMaximum !== undefined) bounds.push(`less than ${f.exclusiveMaximum}`);
  if (bounds.length) hints.push(`${f.type === 'integer' ? 'A whole number' : 'A number'}, ${bounds.join(' and ')}.`);
  if (f.default !== undefined && kind !== 'checkbox' && kind !== 'select') {
    hints.push(`Default: ${typeof f.default === 'string' ? f.default : JSON.stringify(f.default)}.`);
  }
  if (kind === 'lines') hints.push('One value a line.');
  if (kind === 'json') hints.push('JSON.');
  const describedBy = [hints.length ? hintId : null, errorId].filter(Boolean).join(' ');
  const common = { id, name: f.key, 'aria-describedby': describedBy };
  // A checkbox is always answered (true or false); a file may come as a URL instead.
  if (f.required && !['checkbox', 'file', 'files'].includes(kind)) {
    common.required = true;
    common['aria-required'] = 'true';
  }
  let control;
  let read;
  let urlBox = null;
  switch (kind) {
    case 'select': {
      const options = f.enum.map((v, i) =>
        h('option', { value: String(i), selected: v === f.default ? true : undefined }, String(v)),
      );
      const blank = f.default === undefined && !f.required;
      control = h(
        'select',
        common,
        blank ? h('option', { value: '' }, '(not set)') : null,
        ...options,
      );
      if (f.default === undefined && !blank) control.value = '0';
      read = () => (control.value === '' ? undefined : f.enum[Number(control.value)]);
      break;
    }
    case 'checkbox': {
      control = h('input', { ...common, type: 'checkbox', checked: f.default === true ? true : undefined });
      read = () => control.checked;
      break;
    }
    case 'number': {
      const attrs = {
        ...common,
        type: 'number',
        inputmode: f.type === 'integer' ? 'numeric' : 'decimal',
        step: f.type === 'integer' ? '1' : 'any',
      };
      if (f.minimum !== undefined) attrs.min = String(f.minimum);
      if (f.maximum !== undefined) attrs.max = String(f.maximum);
      if (f.default !== undefined && f.default !== null) attrs.value = String(f.default);
      control = h('input', attrs);
      read = () => {
        const text = control.value.trim();
        if (text === '') {
          if (control.validity.badInput) throw fieldError(f, 'is not a number');
          return undefined;
        }
        const n = Number(text);
        if (!Number.isFinite(n)) throw fieldError(f, 'is not a number');
        if (f.type === 'integer' && !Number.isInteger(n)) throw fieldError(f, 'must be a whole number');
        return n;
      };
      break;
    }
    case 'text':
    case 'secret': {
      const attrs = { ...common, type: kind === 'secret' ? 'password' : 'text', autocomplete: 'off' };
      if (f.default !== undefined && f.default !== null) attrs.value = String(f.default);
      if (f.maxLength !== undefined) attrs.maxlength = String(f.maxLength);
      control = h('input', attrs);
      read = () => (control.value === '' ? undefined : control.value);
      break;
    }
    case 'file':
    case 'files': {
      const multiple = kind === 'files';
      control = h('input', { ...common, type: 'file', multiple: multiple ? true : undefined });
      const urlId = `${id}-url`;
      const url = h('input', {
        id: urlId,
        type: multiple ? 'text' : 'url',
        placeholder: 'https://…',
        autocomplete: 'off',
        'aria-describedby': errorId,
      });
      urlBox = h(
        'div',
        { class: 'field-url' },
        h('label', { for: urlId }, multiple ? 'or URLs (one a space)' : 'or a URL'),
        url,
      );
      read = async (upload) => {
        const picked = [...control.files];
        if (picked.length) {
          const urls = [];
          for (const file of picked) urls.push(await upload(f.key, file));
          return multiple ? urls : urls[0];
        }
        const text = url.value.trim();
        if (text === '') {
          if (f.required) throw fieldError(f, 'is required: choose a file or give a URL');
          return undefined;
        }
        return multiple ? text.split(/\s+/) : text;
      };
      break;
    }
    case 'lines': {
      const attrs = { ...common, rows: '3' };
      control = h('textarea', attrs, Array.isArray(f.default) ? f.default.join('\n') : '');
      read = () => {
        const lines = control.value.split('\n').map((l) => l.trim()).filter(Boolean);
        if (lines.length === 0) return undefined;
        if (f.items.type === 'string') return lines;
        return lines.map((l) => {
          const n = Number(l);
          if (!Number.isFinite(n) || (f.items.type === 'integer' && !Number.isInteger(n))) {
            throw fieldError(f, `has ${JSON.stringify(l)}, which is not a ${f.items.type === 'integer' ? 'whole number' : 'number'}`);
          }
          return n;
        });
      };
      break;
    }
    default: {
      const attrs = { ...common, rows: '4', spellcheck: 'false', class: 'mono' };
      control = h('textarea', attrs, f.default !== undefined ? JSON.stringify(f.default, null, 2) : '');
      read = () => {
        const text = control.value.trim();
        if (text === '') return undefined;
        try {
          return JSON.parse(text);
        } catch (e) {
          throw fieldError(f, `is not valid JSON (${e.message})`);
        }
      };
    }
  }
  const label = h(
    'label',
    { for: id },
    f.title || humanize(f.key),
    f.required ? h('span', { class: 'field-required' }, ' (required)') : null,
  );
  const hint = hints.length ? h('p', { id: hintId, class: 'hint' }, hints.join(' ')) : null;
  const error = h('p', { id: errorId, class: 'field-error', 'aria-live': 'polite' });
  const wrap =
    kind === 'checkbox'
      ? h('div', { class: 'field field-checkbox', dataset: { field: f.key } }, h('div', { class: 'check' }, control, label), hint, error)
      : h('div', { class: 'field', dataset: { field: f.key } }, label, control, urlBox, hint, error);
  return { key: f.key, wrap, control, read, error };
}

/** A client-side refusal of one field, shown next to it. */
function fieldError(f, message) {
  const e = new Error(`${f.title || humanize(f.key)} ${message}`);
  e.field = f.key;
  return e;
}

/** The freeform box of a model whose input is any object. */
function freeformControl() {
  const id = 'in-input';
  const control = h('textarea', {
    id,
    name: 'input',
    rows: '6',
    class: 'mono',
    spellcheck: 'false',
    'aria-describedby': `${id}-hint ${id}-error`,
  }, '{\n  "text": "hello"\n}');
  const error = h('p', { id: `${id}-error`, class: 'field-error', 'aria-live': 'polite' });
  const wrap = h(
    'div',
    { class: 'field', dataset: { field: 'input' } },
    h('label', { for: id }, 'Input'),
    control,
    h('p', { id: `${id}-hint`, class: 'hint' }, 'A JSON object; this model takes any.'),
    error,
  );
  const read = () => {
    let value;
    try {
      value = JSON.parse(control.value);
    } catch (e) {
      throw Object.assign(new Error(`Input is not valid JSON (${e.message})`), { field: 'input' });
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw Object.assign(new Error('Input must be a JSON object, like {"text": "hello"}'), { field: 'input' });
    }
    return value;
  };
  return { key: 'input', wrap, control, read, error, whole: true };
}

// ---------------------------------------------------------------------------------------------
// Files, snippets

/** Uploads one file through the files API (multipart `content`), answering its URL. */
export async function uploadFile(file, signal) {
  const form = new FormData();
  form.append('content', file, file.name);
  const uploaded = await api('/v1/files', { method: 'POST', body: form, signal });
  return uploaded.urls.get;
}

/** A JSON value as a Python literal. */
export function pyLiteral(v, indent = 0) {
  const pad = ' '.repeat(indent + 4);
  const end = ' '.repeat(indent);
  if (v === null || v === undefined) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'number' || typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    return `[\n${v.map((x) => pad + pyLiteral(x, indent + 4)).join(',\n')},\n${end}]`;
  }
  const entries = Object.entries(v);
  if (entries.length === 0) return '{}';
  return `{\n${entries.map(([k, x]) => `${pad}${JSON.stringify(k)}: ${pyLiteral(x, indent + 4)}`).join(',\n')},\n${end}}`;
}

/** Quotes text for a POSIX shell. */
function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

/** How the model's output comes back: `file` (one URL), `files` (a list of URLs), or null. */
export function outputShape(openapi) {
  const out = openapi?.components?.schemas?.Output;
  if (out?.type === 'string' && out.format === 'uri') return 'file';
  if (out?.type === 'array' && out.items?.type === 'string' && out.items.format === 'uri') return 'files';
  return null;
}

/** The curl, Python and JavaScript that make the same prediction (the clients hand output
 *  files back as file objects: the code prints their URLs). */
export function snippets(origin, model, input, shape = null) {
  const body = JSON.stringify({ input }, null, 2);
  const curl = [
    `curl -s -X POST ${shellQuote(`${origin}/v1/models/${model}/predictions`)} \\`,
    '  -H "Authorization: Bearer $REPLICATE_API_TOKEN" \\',
    '  -H "Content-Type: application/json" \\',
    '  -H "Prefer: wait" \\',
    `  -d ${shellQuote(body)}`,
  ].join('\n');
  const python = [
    'import os',
    '',
    'import replicate',
    '',
    'client = replicate.Client(',
    '    api_token=os.environ["REPLICATE_API_TOKEN"],',
    `    base_url=${JSON.stringify(origin)},`,
    ')',
    `output = client.run(${JSON.stringify(model)}, input=${pyLiteral(input)})`,
    shape === 'files' ? 'print([str(item) for item in output])' : 'print(output)',
  ].join('\n');
  const js = [
    'import Replicate from "replicate";',
    '',
    'const replicate = new Replicate({',
    '  auth: process.env.REPLICATE_API_TOKEN,',
    `  baseUrl: ${JSON.stringify(`${origin}/v1`)},`,
    '});',
    `const output = await replicate.run(${JSON.stringify(model)}, {`,
    `  input: ${JSON.stringify(input, null, 2).replaceAll('\n', '\n  ')},`,
    '});',
    // The client hands https file URLs back as FileOutput objects, others as strings: both
    // print as their URL through String().
    shape === 'file'
      ? 'console.log(String(output));'
      : shape === 'files'
        ? 'console.log(output.map(String));'
        : 'console.log(output);',
  ].join('\n');
  return [
    { id: 'curl', label: 'curl', code: curl },
    { id: 'python', label: 'Python', code: python },
    { id: 'js', label: 'JavaScript', code: js },
  ];
}

/** Tabs of code snippets (WAI-ARIA tabs: arrow keys move between them). */
function snippetTabs(items) {
  const tabs = [];
  const panels = [];
  const select = (i, focus) => {
    tabs.forEach((t, j) => {
      t.setAttribute('aria-selected', String(i === j));
      t.tabIndex = i === j ? 0 : -1;
      panels[j].hidden = i !== j;
    });
    if (focus) tabs[i].focus();
  };
  items.forEach((item, i) => {
    const code = h('code', {}, item.code);
    const tab = h(
      'button',
      {
        type: 'button',
        role: 'tab',
        id: `snippet-tab-${item.id}`,
        'aria-controls': `snippet-${item.id}`,
        class: 'tab',
      },
      item.label,
    );
    tab.addEventListener('click', () => select(i, false));
    tab.addEventListener('keydown', (e) => {
      const n = items.length;
      const to = { ArrowRight: (i + 1) % n, ArrowLeft: (i + n - 1) % n, Home: 0, End: n - 1 }[e.key];
      if (to !== undefined) {
        e.preventDefault();
        select(to, true);
      }
    });
    tabs.push(tab);
    panels.push(
      h(
        'div',
        {
          role: 'tabpanel',
          id: `snippet-${item.id}`,
          'aria-labelledby': `snippet-tab-${item.id}`,
          class: 'snippet',
        },
        h('pre', { tabindex: '0', 'aria-label': `${item.label} code` }, code),
        h('div', { class: 'snippet-actions' }, copyButton(item.code, `Copy the ${item.label} code`)),
      ),
    );
  });
  select(0, false);
  return h(
    'section',
    { class: 'card snippets', 'aria-labelledby': 'snippets-title' },
    h('h2', { id: 'snippets-title' }, 'Run it from code'),
    h(
      'p',
      { class: 'muted' },
      'The same prediction from a terminal or a program. Set REPLICATE_API_TOKEN to one of your API tokens (',
      h('a', { href: '/account' }, 'Account'),
      ').',
    ),
    h('div', { role: 'tablist', 'aria-label': 'Language', class: 'tabs' }, ...tabs),
    ...panels,
  );
}

// ---------------------------------------------------------------------------------------------
// Following a run

/** Replicate's progress rule: the last tqdm-style line (` 40%|████      | 4/10`) in the logs. */
export function parseProgress(logs) {
  const lines = logs.split(/\r?\n|\r/).reverse();
  for (const line of lines) {
    const m = /^\s*(\d+)%\s*\|.*?\|\s*(\d+)\/(\d+)/.exec(line);
    if (m) return { done: Number(m[2]), total: Number(m[3]), percent: Number(m[1]) };
  }
  return null;
}

/** The panel that follows one prediction live, until `ctrl` aborts; `onSettled(p)` once. */
function runPanel(created, ctrl, onSettled) {
  // Announced when it changes (the logs are not: they would drown a screen reader).
  const status = h('span', { role: 'status' }, statusBadge(created.status));
  const progress = h('div', { class: 'run-progress' });
  const logs = h('pre', { class: 'run-logs', tabindex: '0', 'aria-label': 'Logs' });
  const output = h('div', { class: 'run-output' });
  const error = h('div', { class: 'run-error' });
  const timing = h('p', { class: 'muted run-timing' });
  const cancel = h('button', { type: 'button', class: 'button' }, 'Cancel');
  const cancelStatus = h('span', { class: 'muted', role: 'status' });
  // The stream replays the log from its start, so the text starts empty.
  let logText = '';
  let settled = false;

  const showProgress = () => {
    const p = parseProgress(logText);
    progress.replaceChildren(...(p ? [progressBar(p.done, p.total)] : []));
  };
  const showLogs = () => {
    logs.textContent = logText || (settled ? '(no logs)' : '(no logs yet)');
    logs.scrollTop = logs.scrollHeight;
  };
  const settle = (p) => {
    if (settled) return;
    settled = true;
    status.replaceChildren(statusBadge(p.status));
    cancel.hidden = true;
    if (p.logs !== undefined && p.logs !== null) logText = p.logs;
    showLogs();
    if (p.status === 'succeeded') {
      const t = parseProgress(logText);
      if (t) progress.replaceChildren(progressBar(t.total, t.total));
      output.replaceChildren(h('h3', {}, 'Output'), renderOutput(p.output));
    } else {
      progress.replaceChildren();
    }
    if (p.status === 'failed') {
      error.replaceChildren(
        h('div', { class: 'callout callout-error', role: 'alert' }, h('strong', {}, 'The model failed'), h('p', {}, p.error ?? 'It gave no reason.')),
      );
    }
    if (p.status === 'canceled') {
      error.replaceChildren(h('p', { role: 'status' }, 'Canceled.'));
    }
    const parts = [];
    if (p.metrics?.predict_time !== undefined) parts.push(`ran ${fmtDuration(p.metrics.predict_time)}`);
    if (p.metrics?.total_time !== undefined) parts.push(`${fmtDuration(p.metrics.total_time)} in all`);
    timing.textContent = parts.length ? `It ${parts.join(', ')}.` : '';
    onSettled(p);
  };
  const refresh = async () => {
    try {
      const p = await api(`/v1/predictions/${encodeURIComponent(created.id)}`, { signal: ctrl.signal });
      status.replaceChildren(statusBadge(p.status));
      if (isTerminal(p.status)) settle(p);
    } catch (err) {
      if (!ctrl.signal.aborted) error.replaceChildren(errorBox(err));
    }
  };

  cancel.addEventListener('click', async () => {
    cancel.disabled = true;
    cancelStatus.textContent = 'Canceling…';
    try {
      await api(`/v1/predictions/${encodeURIComponent(created.id)}/cancel`, { method: 'POST', signal: ctrl.signal });
      cancelStatus.textContent = '';
      await refresh();
    } catch (err) {
      cancel.disabled = false;
      cancelStatus.textContent = '';
      if (!ctrl.signal.aborted) {
        error.replaceChildren(errorBox(err));
        refresh();
      }
    }
  });

  showLogs();
  if (isTerminal(created.status)) {
    settle(created);
  } else {
    openStream(`/v1/predictions/${encodeURIComponent(created.id)}/stream`, {
      signal: ctrl.signal,
      onEvent(type, data) {
        if (type === 'logs') {
          logText += (logText && !logText.endsWith('\n') ? '\n' : '') + data;
          showLogs();
          showProgress();
          status.replaceChildren(statusBadge('processing'));
        } else if (type === 'output') {
          status.replaceChildren(statusBadge('processing'));
        } else if (type === 'done') {
          refresh();
        }
      },
      onError(err) {
        if (ctrl.signal.aborted) return;
        // A dropped connection is resumed by the stream itself; meanwhile the prediction may
        // have settled, so read it. A refusal ends the stream: say why.
        if (!err?.retrying) error.replaceChildren(errorBox(err));
        refresh();
      },
    });
  }

  return h(
    'section',
    { class: 'card run-panel', 'aria-labelledby': 'run-title' },
    h(
      'div',
      { class: 'run-head' },
      h('h2', { id: 'run-title' }, 'Result'),
      status,
      h('a', { href: `/predictions/${created.id}`, class: 'run-link' }, `Prediction ${created.id}`),
    ),
    progress,
    h('div', { class: 'run-actions' }, cancel, cancelStatus),
    output,
    error,
    timing,
    h('details', { class: 'run-logs-box', open: true }, h('summary', {}, 'Logs'), logs),
  );
}

// ---------------------------------------------------------------------------------------------
// The page

export async function render(main, params, ctx) {
  ensureCss('model');
  const { owner, name } = params;
  const model = `${owner}/${name}`;
  ctx.setTitle(model);
  const page = new AbortController();
  let runCtrl = null;
  const cleanup = () => {
    page.abort();
    runCtrl?.abort();
  };
  main.replaceChildren(h('h1', {}, model), h('p', { class: 'loading', role: 'status' }, 'Loading the model…'));
  let info;
  try {
    info = await api(`/v1/models/${encodeURIComponent(owner)}/${encodeURIComponent(name)}`, { signal: page.signal });
  } catch (err) {
    // Another page may have been drawn meanwhile: leave it alone.
    if (page.signal.aborted || !ctx.current) return cleanup;
    if (err instanceof ApiError && err.status === 404) {
      ctx.setTitle('Not found');
      main.replaceChildren(notFound('model', { href: '/models', label: 'See the models this server runs' }));
    } else main.replaceChildren(h('h1', {}, model), errorBox(err));
    return cleanup;
  }
  if (!ctx.current) return cleanup;

  const schema = inputFields(info.latest_version?.openapi_schema);
  const controls = schema.freeform ? [freeformControl()] : schema.fields.map(fieldControl);
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Run');
  const formStatus = h('p', { class: 'muted form-status', role: 'status', 'aria-live': 'polite' });
  const formError = h('div', { class: 'form-error' });
  const form = h(
    'form',
    { class: 'card run-form', 'aria-labelledby': 'form-title', novalidate: true },
    h('h2', { id: 'form-title' }, 'Input'),
    controls.length ? null : h('p', { class: 'muted' }, 'This model takes no input.'),
    ...controls.map((c) => c.wrap),
    formError,
    h('div', { class: 'form-actions' }, submit, formStatus),
  );
  const result = h('div', { class: 'run-result' });
  const code = h('div', { class: 'run-code' });
  const price = priceText(info.price);
  // What the account can spend, beside the price (an account's own; the admin has none).
  const balance = h('span', { class: 'model-balance' });
  const showBalance = async () => {
    if (!info.price || ctx.me?.admin) return;
    try {
      const c = await api('/v1/account/credits', { signal: page.signal });
      balance.replaceChildren(' You have ', h('a', { href: '/account' }, `${c.available} available`), '.');
    } catch {
      // The price still shows; the balance is a convenience.
    }
  };

  const clearErrors = () => {
    formError.replaceChildren();
    for (const c of controls) {
      c.error.textContent = '';
      c.control.removeAttribute('aria-invalid');
    }
  };
  const showError = (err) => {
    // The server names `input.<key>`; a client-side check names the key.
    const key = (err.field ?? '').replace(/^input\.?/, '').split(/[.[]/)[0];
    const c = controls.find((x) => (x.whole ? /^input\b/.test(err.field ?? '') : x.key === key));
    if (c) {
      c.error.textContent = err.message;
      c.control.setAttribute('aria-invalid', 'true');
      c.control.focus();
    }
    if (err instanceof ApiError && err.status === 402) {
      formError.replaceChildren(
        errorBox(err),
        h('p', {}, 'See your balance on the ', h('a', { href: '/account' }, 'Account'), ' page.'),
      );
    } else if (!c) {
      formError.replaceChildren(errorBox(err));
    }
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (submit.disabled) return;
    clearErrors();
    // Bounds and required fields first, with the browser's own words next to the field.
    for (const c of controls) {
      if (c.control.willValidate && !c.control.checkValidity()) {
        c.error.textContent = c.control.validationMessage;
        c.control.setAttribute('aria-invalid', 'true');
        c.control.focus();
        return;
      }
    }
    runCtrl?.abort();
    runCtrl = new AbortController();
    const ctrl = runCtrl;
    submit.disabled = true;
    try {
      const upload = async (key, file) => {
        formStatus.textContent = `Uploading ${file.name}…`;
        try {
          return await uploadFile(file, ctrl.signal);
        } catch (err) {
          if (err instanceof ApiError) err.field = key;
          throw err;
        }
      };
      let input = {};
      for (const c of controls) {
        const v = await c.read(upload);
        if (c.whole) input = v;
        else if (v !== undefined) input[c.key] = v;
      }
      formStatus.textContent = 'Starting…';
      const created = await api(`/v1/models/${encodeURIComponent(owner)}/${encodeURIComponent(name)}/predictions`, {
        method: 'POST',
        body: { input },
        signal: ctrl.signal,
      });
      formStatus.textContent = 'Running…';
      result.replaceChildren(
        runPanel(created, ctrl, () => {
          submit.disabled = false;
          formStatus.textContent = '';
          showBalance();
        }),
      );
      showBalance();
      // On a narrow screen the result is below the form: bring it into view.
      if (window.matchMedia('(max-width: 900px)').matches) result.scrollIntoView({ block: 'start' });
      code.replaceChildren(snippetTabs(snippets(location.origin, model, input, outputShape(info.latest_version?.openapi_schema))));
    } catch (err) {
      submit.disabled = false;
      formStatus.textContent = '';
      if (!ctrl.signal.aborted) showError(err);
    }
  });

  main.replaceChildren(
    h(
      'nav',
      { 'aria-label': 'Breadcrumb', class: 'breadcrumb' },
      h('a', { href: '/models' }, 'Models'),
      ' / ',
      h('span', { 'aria-current': 'page' }, model),
    ),
    h('h1', {}, model),
    info.description ? h('p', { class: 'model-description' }, info.description) : null,
    h(
      'p',
      { class: 'muted model-meta' },
      price ? `Costs ${price}.` : 'Free to run.',
      balance,
      info.latest_version?.id
        ? [' Version ', h('code', { title: info.latest_version.id }, info.latest_version.id.slice(0, 12)), '.']
        : '',
    ),
    h('div', { class: 'run-layout' }, form, h('div', { class: 'run-side' }, result, code)),
  );
  showBalance();
  return cleanup;
}
