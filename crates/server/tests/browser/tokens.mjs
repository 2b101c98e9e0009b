// API tokens on the account page: create one (shown once, and it works against the API), see
// it listed, revoke it (it no longer works against the API), and revoke the token this session
// signed in with (which signs out). The admin token's account page says it has no account.
// Axe checks the page with a new token shown, and on a phone in the dark.

import { BASE, assert, checkA11y, scenario, screenshot, signIn, unique } from './lib.mjs';

/** The status of `GET /v1/account` with `token`. */
async function statusWith(token) {
  const r = await fetch(`${BASE}/v1/account`, { headers: { Authorization: `Bearer ${token}` } });
  return r.status;
}

await scenario('tokens', async (t) => {
  const alice = await t.api.account(unique('keeper'), 0);
  const p = await t.openPage();
  const { page } = p;
  await signIn(p, alice.token, '/account');
  const rows = page.locator('.token-table tbody tr');
  await rows.first().waitFor();
  assert((await rows.count()) === 1, 'one token at first');
  assert((await rows.first().innerText()).includes('this session'), 'the session\'s token is marked');

  // Create: the token is shown once, works, and is listed.
  await page.getByLabel('Name of a new token').fill('ci runner');
  await page.getByRole('button', { name: 'Create token' }).click();
  const shown = page.locator('input[name="new_token"]');
  await shown.waitFor();
  const token = await shown.inputValue();
  assert(/^aug_[a-z0-9]{52}$/.test(token), `a whole token is shown: ${token}`);
  const row = page.locator('.token-table tbody tr', { hasText: 'ci runner' });
  await row.waitFor();
  assert((await statusWith(token)) === 200, 'the new token works against the API');
  await checkA11y(page, 'the account page with a new token');
  await screenshot(page, 'tokens-created');
  await page.getByRole('button', { name: 'Done, hide it' }).click();
  assert((await page.content()).indexOf(token) === -1, 'hidden, the token is gone from the page');
  await page.reload();
  await row.waitFor();
  assert((await page.content()).indexOf(token) === -1, 'the token is never shown again');

  // Revoke it: asked first, then gone from the list, and refused by the API.
  await row.getByRole('button', { name: /Revoke/ }).click();
  await row.getByRole('alert').filter({ hasText: 'Programs using it stop working' }).waitFor();
  await screenshot(page, 'tokens-revoke-asked');
  await row.getByRole('button', { name: 'Yes, revoke' }).click();
  await row.waitFor({ state: 'detached' });
  assert((await rows.count()) === 1, 'one token left');
  assert((await statusWith(token)) === 401, 'the revoked token no longer works against the API');
  assert((await statusWith(alice.token)) === 200, 'the other token still works');

  // Revoking this session's own token signs out.
  p.expectStatus(401, '/v1/');
  const mine = rows.first();
  await mine.getByRole('button', { name: /Revoke/ }).click();
  await mine.getByRole('alert').filter({ hasText: 'signs you out' }).waitFor();
  await mine.getByRole('button', { name: 'Yes, revoke' }).click();
  await page.waitForURL((u) => u.pathname === '/signin');
  assert((await statusWith(alice.token)) === 401, 'the session\'s revoked token no longer works');
  await screenshot(page, 'tokens-signed-out');

  // The admin token has no account: the page says so and points to Admin.
  const admin = await t.openPage();
  await signIn(admin, t.api.token, '/account');
  await admin.page.getByText('admin token, which has no account of its own').waitFor();
  await checkA11y(admin.page, 'the account page as the admin');

  // On a phone, in the dark: the account page fits and passes axe.
  const bob = await t.api.account(unique('phone'), 0);
  const phone = await t.openPage({ viewport: { width: 390, height: 844 }, colorScheme: 'dark' });
  await signIn(phone, bob.token, '/account');
  await phone.page.locator('.token-table tbody tr').first().waitFor();
  await phone.page.locator('.ledger-entries').waitFor();
  const wide = await phone.page.evaluate(() => document.documentElement.scrollWidth);
  assert(wide <= 390, `nothing makes the page wider than the phone: ${wide}px`);
  await checkA11y(phone.page, 'the account page on a phone, dark');
  await screenshot(phone.page, 'account-phone-dark');
});
