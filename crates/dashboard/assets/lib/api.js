// The JSON API client: every page's data comes through `api()`, with the signed-in token as
// `Authorization: Bearer`. The token is kept in sessionStorage: for this tab's session only.

const KEY = 'augur.token';

/** The API's error, in words: `status` (0 when the server could not be reached), `message`
 *  (the server's `detail`), `code`, `field` (the input it names, if any). */
export class ApiError extends Error {
  constructor(status, message, { code = null, field = null, body = null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
    this.body = body;
  }
}

export function getToken() {
  try { return sessionStorage.getItem(KEY); } catch { return null; }
}

export function setToken(token) {
  sessionStorage.setItem(KEY, token);
  me = null;
}

export function clearToken() {
  try { sessionStorage.removeItem(KEY); } catch { /* storage unavailable */ }
  me = null;
}

let unauthorized = () => {};
/** Sets what happens on a 401 (the app sends the user back to sign-in). */
export function onUnauthorized(handler) { unauthorized = handler; }

/** The request headers for the current token (for fetches `api()` does not make). */
export function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** A same-origin path for an API URL: absolute URLs the API hands out (`next`, `urls.get`)
 *  are under the public URL, which may not be this page's origin. */
export function apiPath(url) {
  if (!url) return url;
  const u = new URL(url, location.origin);
  return u.pathname + u.search;
}

/** The `cursor` of a list page's `next`/`previous` URL, or null. */
export function cursorOf(url) {
  if (!url) return null;
  return new URL(url, location.origin).searchParams.get('cursor');
}

/**
 * Calls the API. `path` is relative (`/v1/predictions`) or an absolute API URL; `query` keys
 * with empty values are left out; `body` is sent as JSON (or as is for FormData/Blob).
 * Resolves to the parsed JSON (null for an empty body); throws `ApiError` otherwise. A 401
 * clears the token and calls the unauthorized handler unless `noRedirect`.
 */
export async function api(path, { method = 'GET', body, query, signal, headers = {}, noRedirect = false } = {}) {
  const url = new URL(apiPath(path), location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
  }
  const init = { method, signal, headers: { Accept: 'application/json', ...authHeaders(), ...headers } };
  if (body !== undefined) {
    if (body instanceof FormData || body instanceof Blob) {
      init.body = body;
    } else {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'The server could not be reached. Check the connection and try again.');
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!response.ok) {
    const detail = data && typeof data === 'object'
      ? (data.detail || data.title || (data.error && (data.error.message || data.error)))
      : null;
    const err = new ApiError(response.status, String(detail || response.statusText || `HTTP ${response.status}`), {
      code: data && data.code, field: data && data.field, body: data,
    });
    if (response.status === 401 && !noRedirect) {
      clearToken();
      unauthorized(err);
    }
    throw err;
  }
  return data;
}

let me = null;
/** The signed-in account (`GET /v1/account`), cached until the token changes. `admin` is true
 *  for the admin token. */
export function whoami({ noRedirect = false } = {}) {
  if (!me) {
    me = api('/v1/account', { noRedirect }).then((a) => ({ ...a, admin: a.admin === true }));
    me.catch(() => { me = null; });
  }
  return me;
}
