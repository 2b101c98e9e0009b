// Small pieces the batches, workflows, runs and admin pages share beyond lib/ui.js: cursor
// pages with previous/next links kept in the page's URL, output thumbnails, throttled
// refreshes, navigation through the router.

import { h } from '/ui/lib/ui.js';

export { notFound, loading, timeEl } from '/ui/lib/ui.js';
export { cursorOf } from '/ui/lib/api.js';
import { cursorOf } from '/ui/lib/api.js';

/** The page's own query parameters. */
export function pageQuery() {
  return new URLSearchParams(location.search);
}

/** A link to this page with `changes` applied to its query (null removes a key). */
export function hrefWith(changes) {
  const q = pageQuery();
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === undefined || v === '') q.delete(k);
    else q.set(k, v);
  }
  const s = q.toString();
  return s ? `${location.pathname}?${s}` : location.pathname;
}

/** Previous / next links for an API page, keeping the cursor in this page's URL. */
export function pageLinks(page, label) {
  const prev = cursorOf(page.previous);
  const next = cursorOf(page.next);
  if (!prev && !next && !pageQuery().get('cursor')) return null;
  return h(
    'nav',
    { class: 'pager', 'aria-label': label },
    prev || page.previous
      ? h('a', { href: hrefWith({ cursor: prev }), rel: 'prev' }, '← Newer')
      : pageQuery().get('cursor')
        ? h('a', { href: hrefWith({ cursor: null }), rel: 'prev' }, '← Newest')
        : h('span', { class: 'muted' }, '← Newer'),
    next
      ? h('a', { href: hrefWith({ cursor: next }), rel: 'next' }, 'Older →')
      : h('span', { class: 'muted' }, 'Older →'),
  );
}

const IMAGE = /\.(png|jpe?g|gif|webp|avif|bmp|svg)(\?|#|$)/i;

/** The first picture in an output (a URL or data URI, alone or in a list), or null. */
export function imageOf(output) {
  if (typeof output === 'string') {
    if (output.startsWith('data:image/')) return output;
    if (/^(https?:\/\/|\/)/.test(output) && IMAGE.test(output)) return output;
    return null;
  }
  if (Array.isArray(output)) {
    for (const o of output) {
      const found = imageOf(o);
      if (found) return found;
    }
  }
  return null;
}

/** A short text preview of an output that is not a picture. */
export function previewOf(output) {
  if (output === null || output === undefined) return '';
  const text = typeof output === 'string' ? output : JSON.stringify(output);
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

/**
 * Calls `fn` at most once per `ms`, always once more after the last request (so the final state
 * is never missed). Returns `{ request(), cancel() }`.
 */
export function throttled(fn, ms) {
  let timer = null;
  let last = 0;
  let again = false;
  let running = false;
  const run = async () => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = true;
    last = Date.now();
    try {
      await fn();
    } finally {
      running = false;
      if (again) {
        again = false;
        request();
      }
    }
  };
  const request = () => {
    if (timer !== null) return;
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  };
  return {
    request,
    cancel: () => {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      again = false;
    },
  };
}

/** Whether an error is the browser aborting a request we canceled on navigation. */
export function isAbort(err) {
  return err && (err.name === 'AbortError' || err.code === 20);
}

/** The JSON of an SSE event's data, whether the stream helper parsed it already or not. */
export function eventJson(data) {
  if (typeof data !== 'string') return data;
  try {
    return JSON.parse(data);
  } catch {
    return null;
  }
}

/** Items that have settled out of a batch's counts. */
export function settled(counts) {
  return (counts?.succeeded ?? 0) + (counts?.failed ?? 0) + (counts?.canceled ?? 0);
}

/** "3 succeeded, 1 failed" from counts, leaving zeros out. */
export function countsText(counts) {
  const parts = [];
  for (const k of ['starting', 'processing', 'succeeded', 'failed', 'canceled']) {
    if (counts?.[k]) parts.push(`${counts[k]} ${k}`);
  }
  return parts.join(', ') || 'no items';
}

/** Adds an event listener and returns the element, for use inside `h(...)` trees. */
export function on(el, type, fn) {
  el.addEventListener(type, fn);
  return el;
}

/** An `<option>`, selected or not (set as a property, whatever `h` does with booleans). */
export function option(value, text, selected) {
  const el = h('option', { value }, text);
  el.selected = Boolean(selected);
  return el;
}

/** Goes to a same-origin address through the client router (as a link click would). */
export function go(url, ctx) {
  if (ctx && typeof ctx.navigate === 'function') {
    ctx.navigate(url);
    return;
  }
  history.pushState({}, '', url);
  dispatchEvent(new PopStateEvent('popstate', { state: {} }));
}
