// Sign-in: a visitor without a token is sent to the sign-in form; a wrong token is refused
// in words; an account's token and the admin token sign in (only the admin sees Admin);
// sign-out forgets the token. Axe checks the sign-in page.

import { assert, checkA11y, scenario, screenshot, signIn, unique } from './lib.mjs';

await scenario('signin', async (t) => {
  const alice = await t.api.account(unique('alice'), 0);

  const p = await t.openPage();
  const { page } = p;
  await p.goto('/?status=failed');
  await page.waitForURL((url) => url.pathname === '/signin');
  assert(new URL(page.url()).searchParams.get('next') === '/?status=failed', `next is kept: ${page.url()}`);
  await page.locator('input[name="token"]').waitFor();
  await checkA11y(page, 'sign-in');
  await screenshot(page, 'signin-form');

  // A wrong token: refused in words, and the token is not kept.
  p.expectStatus(401, '/v1/account');
  await page.locator('input[name="token"]').fill('aug_not-a-real-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'not valid' }).waitFor();
  assert(new URL(page.url()).pathname === '/signin', 'still on the sign-in page');
  await screenshot(page, 'signin-refused');

  // An account's token: lands where it was going, signed in as itself, no Admin link.
  await page.locator('input[name="token"]').fill(alice.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL((url) => url.pathname === '/' && url.searchParams.get('status') === 'failed');
  await page.locator('select[name="status"]').waitFor();
  await page.locator('#who').filter({ hasText: alice.username }).waitFor();
  assert(!(await page.locator('#nav-admin').isVisible()), 'no Admin link for an account');

  // Sign out: back to the form, and a page needs signing in again.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL((url) => url.pathname === '/signin');
  await p.goto('/');
  await page.waitForURL((url) => url.pathname === '/signin');

  // The admin token sees the Admin link.
  await signIn(p, t.api.token);
  await page.locator('#who').filter({ hasText: 'admin' }).waitFor();
  assert(await page.locator('#nav-admin').isVisible(), 'the admin sees the Admin link');
  await screenshot(page, 'signin-admin-home');
});
