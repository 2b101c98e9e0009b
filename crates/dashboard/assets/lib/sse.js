// Server-Sent Events over fetch: EventSource cannot send an Authorization header, so the
// stream is read from a ReadableStream and parsed here. A dropped connection is resumed with
// `Last-Event-ID`, so a resumable stream (a prediction's, a batch's, a run's) loses nothing.

import { ApiError, apiPath, authHeaders, clearToken } from '/ui/lib/api.js';

/**
 * Opens `path` as an event stream.
 * - `onEvent(type, data, id)`: each event (`data` is the raw text; JSON.parse it if JSON).
 * - `onError(err)`: a refusal (4xx: not found, forbidden…) ends the stream; network drops and
 *   5xx are retried (after 1 s, then up to 10 s apart) and only reported, with `retrying`.
 * - `onOpen()`: each time the stream is (re)connected.
 * - `endOn`: event types after which the stream is over (default `['done']`): no reconnect.
 * - `signal`: an AbortSignal that closes it.
 * Returns `{ close() }`.
 */
export function openStream(path, { onEvent, onError = () => {}, onOpen = () => {}, endOn = ['done'], signal } = {}) {
  const controller = new AbortController();
  let closed = false;
  let lastId = null;
  let delay = 1000;
  const close = () => { closed = true; controller.abort(); };
  if (signal) {
    if (signal.aborted) close();
    else signal.addEventListener('abort', close, { once: true });
  }

  async function connect() {
    while (!closed) {
      let ended = false;
      try {
        const headers = { Accept: 'text/event-stream', ...authHeaders() };
        if (lastId) headers['Last-Event-ID'] = lastId;
        const response = await fetch(apiPath(path), { headers, signal: controller.signal, cache: 'no-store' });
        if (!response.ok) {
          let detail = response.statusText;
          try { const body = await response.json(); detail = body.detail || body.title || detail; } catch { /* not JSON */ }
          const err = new ApiError(response.status, detail);
          if (response.status === 401) clearToken();
          if (response.status >= 400 && response.status < 500 && response.status !== 429) {
            closed = true;
            onError(err);
            return;
          }
          throw err;
        }
        delay = 1000;
        onOpen();
        ended = await read(response.body, (type, data, id) => {
          if (id !== null) lastId = id;
          onEvent && onEvent(type, data, id);
          return endOn.includes(type);
        });
        if (ended) { closed = true; return; }
      } catch (e) {
        if (closed || (e && e.name === 'AbortError')) return;
        onError(Object.assign(e instanceof Error ? e : new Error(String(e)), { retrying: true }));
      }
      if (closed) return;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  connect();
  return { close };
}

/** Reads an event stream until it closes; `emit` returns true for an event that ends it. */
async function read(body, emit) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let type = 'message';
  let data = [];
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith('\r\n', newline) ? 2 : 1));
      if (line === '') {
        if (data.length > 0) {
          if (emit(type, data.join('\n'), id)) { reader.cancel().catch(() => {}); return true; }
        }
        type = 'message';
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'event') type = val;
      else if (field === 'data') data.push(val);
      else if (field === 'id') id = val;
    }
  }
}
