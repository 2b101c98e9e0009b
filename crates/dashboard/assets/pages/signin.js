// Sign-in: an API token (an account's `aug_…` token or the admin token), kept in
// sessionStorage for this tab's session. The token is checked with `GET /v1/account` before
// it is kept.

import { ApiError, clearToken, getToken, setToken, whoami } from '/ui/lib/api.js';
import { errorMessage, field, h, mount } from '/ui/lib/ui.js';

/** Only a path on this site: never an absolute or protocol-relative URL. */
function safeNext(next) {
  return next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\') ? next : '/';
}

export function render(main, _params, ctx) {
  ctx.setTitle('Sign in');
  const next = safeNext(ctx.query.get('next'));
  const input = h('input', {
    name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true,
    placeholder: 'aug_…',
  });
  const status = h('div', { class: 'form-status', 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Sign in');
  const form = h('form', { class: 'card signin', 'aria-labelledby': 'signin-title', novalidate: true },
    h('h1', { id: 'signin-title' }, 'Sign in to Augur'),
    h('p', { class: 'muted' }, 'Paste an API token. It is kept for this browser tab only, until you sign out or close it.'),
    field('API token', input, 'An account token (aug_…) from your operator, or the admin token.'),
    status,
    h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      mount(status, h('p', { class: 'error', role: 'alert' }, 'Enter a token to sign in.'));
      input.focus();
      return;
    }
    submit.disabled = true;
    mount(status, h('p', { role: 'status' }, 'Checking the token…'));
    setToken(token);
    try {
      await whoami({ noRedirect: true });
      ctx.navigate(next, { replace: true });
    } catch (err) {
      clearToken();
      const text = err instanceof ApiError && err.status === 401
        ? 'That token is not valid. Check it and try again.'
        : errorMessage(err);
      mount(status, h('p', { class: 'error', role: 'alert' }, text));
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    } finally {
      submit.disabled = false;
    }
  });
  mount(main, h('div', { class: 'signin-wrap' }, form));
  if (getToken()) {
    mount(status, h('p', {}, 'You are signed in already; a new token replaces the current one.'));
  }
  input.focus();
}
