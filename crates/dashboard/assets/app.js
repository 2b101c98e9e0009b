// The client router: a path picks a page module (`/ui/pages/<name>.js`), whose
// `render(main, params, ctx)` draws the page and may return a cleanup function, called when
// the user navigates away (streams are closed there). Same-origin links are followed without
// a reload. Without a token every page but sign-in goes to `/signin?next=…`.

import { clearToken, getToken, onUnauthorized, whoami } from '/ui/lib/api.js';
import { errorBox, h, loading, mount, notFound } from '/ui/lib/ui.js';

const ROUTES = [
  ['/', 'predictions'],
  ['/signin', 'signin'],
  ['/predictions/:id', 'prediction'],
  ['/models', 'models'],
  ['/models/:owner/:name', 'model'],
  ['/batches', 'batches'],
  ['/batches/:id', 'batch'],
  ['/workflows', 'workflows'],
  ['/workflows/:owner/:name', 'workflow'],
  ['/runs/:id', 'run'],
  ['/account', 'account'],
  ['/admin', 'admin'],
];

// Which nav entry a page belongs to.
const SECTIONS = {
  predictions: 'predictions', prediction: 'predictions', models: 'models', model: 'models',
  batches: 'batches', batch: 'batches', workflows: 'workflows', workflow: 'workflows', run: 'workflows',
  account: 'account', admin: 'admin',
};

const main = document.getElementById('app');
let cleanup = null;
let generation = 0;

/** The page name and params for `path`, or null. */
export function match(path) {
  const parts = path.split('/').filter(Boolean);
  for (const [pattern, name] of ROUTES) {
    const want = pattern.split('/').filter(Boolean);
    if (want.length !== parts.length) continue;
    const params = {};
    let ok = true;
    for (let i = 0; i < want.length; i++) {
      if (want[i].startsWith(':')) {
        try { params[want[i].slice(1)] = decodeURIComponent(parts[i]); } catch { ok = false; break; }
      } else if (want[i] !== parts[i]) { ok = false; break; }
    }
    if (ok) return { name, params };
  }
  return null;
}

/** Goes to `path` (same origin) without a reload. */
export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  render({ focus: true });
}

function setTitle(text) {
  document.title = text ? `${text} · Augur` : 'Augur';
}

function signInPath() {
  const next = location.pathname + location.search;
  return next === '/' || next.startsWith('/signin') ? '/signin' : `/signin?next=${encodeURIComponent(next)}`;
}

async function showChrome(signedIn) {
  const nav = document.getElementById('nav');
  const session = document.getElementById('session');
  nav.hidden = !signedIn;
  session.hidden = !signedIn;
  if (!signedIn) return null;
  try {
    const me = await whoami();
    document.getElementById('who').textContent = me.admin ? `${me.username} (admin)` : me.username;
    document.getElementById('nav-admin').hidden = !me.admin;
    return me;
  } catch (err) {
    return null;
  }
}

function markSection(name) {
  const section = SECTIONS[name];
  for (const a of document.querySelectorAll('#nav a[data-section]')) {
    if (a.dataset.section === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function render({ focus = false } = {}) {
  const mine = ++generation;
  if (typeof cleanup === 'function') {
    try { cleanup(); } catch (e) { console.warn('page cleanup failed', e); }
  }
  cleanup = null;
  const route = match(location.pathname);
  const token = getToken();
  if (!token && (!route || route.name !== 'signin')) {
    history.replaceState(null, '', signInPath());
    return render({ focus });
  }
  const me = await showChrome(Boolean(token) && route && route.name !== 'signin');
  if (mine !== generation) return;
  if (token && !me && route && route.name !== 'signin') {
    // The token did not work: whoami's 401 already sent the user to sign-in.
    if (!getToken()) return;
  }
  markSection(route && route.name);
  if (!route) {
    setTitle('Not found');
    mount(main, notFound('page'));
    return;
  }
  mount(main, loading());
  const ctx = {
    me,
    query: new URLSearchParams(location.search),
    navigate,
    setTitle,
    /** True while this page is still the one shown (async work checks before drawing). */
    get current() { return mine === generation; },
  };
  try {
    const mod = await import(`/ui/pages/${route.name}.js`);
    if (mine !== generation) return;
    const result = await mod.render(main, route.params, ctx);
    if (mine !== generation) {
      if (typeof result === 'function') result();
      return;
    }
    cleanup = result;
  } catch (err) {
    if (mine !== generation) return;
    console.warn('page failed', err);
    setTitle('Error');
    mount(main, h('h1', {}, 'This page could not be shown'), errorBox(err));
  }
  if (focus) main.focus({ preventScroll: false });
}

onUnauthorized(() => {
  if (match(location.pathname)?.name !== 'signin') {
    history.replaceState(null, '', signInPath());
    render();
  }
});

document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const a = event.target.closest && event.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !match(url.pathname)) return;
  event.preventDefault();
  if (url.pathname === location.pathname && url.search === location.search) {
    if (url.hash) location.hash = url.hash;
    return;
  }
  navigate(url.pathname + url.search + url.hash);
});

window.addEventListener('popstate', () => render());

document.getElementById('signout').addEventListener('click', () => {
  clearToken();
  navigate('/signin');
});

render();
