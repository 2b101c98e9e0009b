// DOM helpers shared by every page. Data goes into the page as text nodes and attributes
// only, never as HTML: nothing here parses markup, so what a model or a user wrote cannot run.

import { ApiError } from '/ui/lib/api.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
const BOOLEAN_PROPS = new Set(['hidden', 'disabled', 'checked', 'selected', 'required', 'readOnly', 'multiple', 'open', 'autofocus']);

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'style' && typeof value === 'object') {
      // CSSOM, not a style attribute: the CSP forbids inline style attributes.
      Object.assign(el.style, value);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'class' && Array.isArray(value)) {
      el.setAttribute('class', value.filter(Boolean).join(' '));
    } else if (BOOLEAN_PROPS.has(key) && !(el instanceof SVGElement)) {
      el[key] = Boolean(value);
    } else if (key === 'value' && 'value' in el) {
      el.value = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** `h('a', {href: '/x', class: 'c', onClick: f}, 'text', child, [more])`: an element. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** Like `h`, for SVG elements (`svg`, `g`, `path`, `rect`, `text`…). */
export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces `el`'s children. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Loads `/ui/pages/<name>.css` once (pages that have their own styles call it). */
export function ensureCss(name) {
  const href = `/ui/pages/${name}.css`;
  const existing = document.querySelector(`link[data-page-css="${name}"]`);
  if (existing) return Promise.resolve();
  return new Promise((resolve) => {
    const link = h('link', { rel: 'stylesheet', href, dataset: { pageCss: name } });
    link.addEventListener('load', () => resolve(), { once: true });
    link.addEventListener('error', () => resolve(), { once: true });
    document.head.appendChild(link);
  });
}

const STATUS_LABELS = {
  starting: 'Starting', processing: 'Processing', succeeded: 'Succeeded', failed: 'Failed',
  canceled: 'Canceled', aborted: 'Aborted', running: 'Running', pending: 'Pending',
  queued: 'Queued', completed: 'Completed', skipped: 'Skipped', canceling: 'Canceling',
};

/** A status as a coloured badge with its name in words (colour is never the only signal). */
export function statusBadge(status) {
  const s = String(status || 'unknown');
  const label = STATUS_LABELS[s] || (s.charAt(0).toUpperCase() + s.slice(1).replace(/_/g, ' '));
  return h('span', { class: `badge badge-${s.replace(/[^a-z_]/g, '')}`, dataset: { status: s } }, label);
}

/** True for statuses that will not change any more. */
export function isTerminal(status) {
  return ['succeeded', 'failed', 'canceled', 'aborted', 'completed', 'skipped'].includes(status);
}

/** An RFC 3339 time as local date and time, or '—'. */
export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** A `<time>` element showing `fmtTime(iso)`, with the exact time as its datetime and title. */
export function timeEl(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: iso }, fmtTime(iso));
}

/** How long ago, in words ("12 s ago", "3 min ago"). */
export function fmtAgo(iso, now = Date.now()) {
  if (!iso) return '—';
  const seconds = (now - new Date(iso).getTime()) / 1000;
  if (!Number.isFinite(seconds)) return '—';
  if (seconds < 5) return 'just now';
  return `${fmtDuration(seconds)} ago`;
}

/** A duration in seconds, readable: "320 ms", "4.2 s", "3 min 4 s", "2 h 5 min". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return '—';
  const s = Math.max(0, Number(seconds));
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** Seconds between two RFC 3339 times, or null. */
export function secondsBetween(a, b) {
  if (!a || !b) return null;
  return (new Date(b).getTime() - new Date(a).getTime()) / 1000;
}

const IMAGE = /\.(png|jpe?g|gif|webp|avif|bmp|svg)$/i;
const AUDIO = /\.(mp3|wav|ogg|oga|flac|m4a|aac|opus)$/i;
const VIDEO = /\.(mp4|webm|mov|m4v|ogv)$/i;

function urlKind(value) {
  if (typeof value !== 'string') return null;
  if (value.startsWith('data:')) {
    const type = value.slice(5, value.indexOf(';') > 0 ? value.indexOf(';') : value.indexOf(','));
    if (type.startsWith('image/')) return 'image';
    if (type.startsWith('audio/')) return 'audio';
    if (type.startsWith('video/')) return 'video';
    return 'file';
  }
  if (!/^https?:\/\//i.test(value)) return null;
  let path;
  try { path = new URL(value).pathname; } catch { return null; }
  if (IMAGE.test(path)) return 'image';
  if (AUDIO.test(path)) return 'audio';
  if (VIDEO.test(path)) return 'video';
  return 'file';
}

function fileName(url) {
  if (url.startsWith('data:')) return 'data';
  try { return decodeURIComponent(new URL(url).pathname.split('/').pop() || url); } catch { return url; }
}

function renderUrl(url, kind, index) {
  const label = index === undefined ? 'Output' : `Output ${index + 1}`;
  switch (kind) {
    case 'image':
      return h('figure', { class: 'output-media' },
        h('a', { href: url, target: '_blank', rel: 'noopener' }, h('img', { src: url, alt: `${label}: ${fileName(url)}`, loading: 'lazy' })),
        h('figcaption', {}, fileName(url)));
    case 'audio':
      return h('figure', { class: 'output-media' }, h('audio', { src: url, controls: true, preload: 'metadata', 'aria-label': label }), h('figcaption', {}, fileName(url)));
    case 'video':
      return h('figure', { class: 'output-media' }, h('video', { src: url, controls: true, preload: 'metadata', 'aria-label': label }), h('figcaption', {}, fileName(url)));
    default:
      return h('p', { class: 'output-file' }, h('a', { href: url, target: '_blank', rel: 'noopener', download: '' }, `Download ${fileName(url)}`));
  }
}

/** An output value by type: images and image lists as pictures, audio and video players,
 *  file links, text, and anything else as JSON. */
export function renderOutput(value) {
  if (value === null || value === undefined) return emptyState('No output yet.');
  const kind = urlKind(value);
  if (kind) return h('div', { class: 'output' }, renderUrl(value, kind));
  if (typeof value === 'string') return h('pre', { class: 'output-text' }, value);
  if (Array.isArray(value)) {
    if (value.length === 0) return emptyState('The output is an empty list.');
    const kinds = value.map(urlKind);
    if (kinds.every(Boolean)) {
      return h('div', { class: 'output output-grid' }, value.map((v, i) => renderUrl(v, kinds[i], i)));
    }
    // A language model's output: a list of text pieces.
    if (value.every((v) => typeof v === 'string')) return h('pre', { class: 'output-text' }, value.join(''));
  }
  return h('pre', { class: 'output-json' }, JSON.stringify(value, null, 2));
}

/** An error in words a person understands, with the server's own explanation. */
export function errorMessage(err) {
  if (err instanceof ApiError) {
    switch (err.status) {
      case 0: return err.message;
      case 401: return 'Your session ended or the token is no longer valid. Sign in again.';
      case 403: return `This needs more rights than your token has: ${err.message}`;
      case 404: return 'Not found: it does not exist, or your account may not see it.';
      case 409: return `That conflicts with the current state: ${err.message}`;
      case 413: return `That is too large: ${err.message}`;
      case 429: return `Too many requests right now. Wait a moment and try again. (${err.message})`;
      case 402: return `Not enough credits: ${err.message}`;
      default:
        if (err.status >= 500) return `The server had a problem (${err.status}). Try again in a moment.`;
        return err.field ? `${err.message} (field: ${err.field})` : err.message;
    }
  }
  return `Something went wrong: ${err && err.message ? err.message : String(err)}`;
}

/** An error box (role=alert) saying what went wrong. */
export function errorBox(err, { title = 'That did not work' } = {}) {
  return h('div', { class: 'callout callout-error', role: 'alert' },
    h('strong', {}, title), h('p', {}, errorMessage(err)));
}

/** The page for something missing or not this account's to see. */
export function notFound(what = 'page', back = { href: '/', label: 'Back to predictions' }) {
  return h('section', { class: 'not-found', 'aria-labelledby': 'not-found-title' },
    h('h1', { id: 'not-found-title' }, 'Not found'),
    h('p', {}, `This ${what} does not exist, or your account may not see it.`),
    h('p', {}, h('a', { href: back.href }, back.label)));
}

/** A calm "nothing here" message, with an optional action (a node). */
export function emptyState(text, action = null) {
  return h('div', { class: 'empty' }, h('p', {}, text), action);
}

/** A loading line, announced politely to screen readers. */
export function loading(text = 'Loading…') {
  return h('p', { class: 'loading', role: 'status' }, text);
}

/** A progress bar with its numbers in words: `done` of `total`. */
export function progressBar(done, total, { label = 'Progress' } = {}) {
  const max = Math.max(1, Number(total) || 0);
  const value = Math.min(max, Math.max(0, Number(done) || 0));
  const percent = Math.round((value / max) * 100);
  return h('div', { class: 'progress' },
    h('progress', { max, value, 'aria-label': `${label}: ${value} of ${total}` }),
    h('span', { class: 'progress-text' }, `${value} / ${total} (${percent}%)`));
}

/** Paging controls: "Newest" (back to the first page) and "Older" (the next page). */
export function pager({ onNewest, onOlder, hasNewer, hasOlder, label = 'Pages' }) {
  return h('nav', { class: 'pager', 'aria-label': label },
    h('button', { type: 'button', class: 'button', disabled: !hasNewer, onClick: onNewest }, '« Newest'),
    h('button', { type: 'button', class: 'button', disabled: !hasOlder, onClick: onOlder }, 'Older »'));
}

let fieldCounter = 0;
/** A labelled form control: `field('Prompt', h('input', {name: 'prompt'}), 'hint')`. */
export function field(labelText, control, hint = null) {
  if (!control.id) control.id = `f-${control.name || 'field'}-${++fieldCounter}`;
  const hintEl = hint ? h('p', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, labelText), control, hintEl);
}

/** A button that copies `text` to the clipboard and says so. */
export function copyButton(text, label = 'Copy') {
  const button = h('button', { type: 'button', class: 'button subtle' }, label);
  button.addEventListener('click', async () => {
    try { await navigator.clipboard.writeText(typeof text === 'function' ? text() : text); button.textContent = 'Copied'; }
    catch { button.textContent = 'Select and copy'; }
    setTimeout(() => { button.textContent = label; }, 1500);
  });
  return button;
}

/** A definition list from `[term, value]` pairs (values may be nodes). */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
}

/** A short id for tables (the full id stays in the link's title). */
export function shortId(id) {
  return id && id.length > 14 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id;
}
