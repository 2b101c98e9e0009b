// No page shows another account's data: a second account opening the first account's
// prediction by its URL is told "Not found" (the API's 404) and sees none of it; the first
// account's predictions are not in its list; the admin sees both and filters by account.

import { assert, checkA11y, scenario, screenshot, signIn, unique } from './lib.mjs';

await scenario('isolation', async (t) => {
  const alice = await t.api.account(unique('alice'), 0);
  const mallory = await t.api.account(unique('mallory'), 0);
  const secret = `alice-secret-${Date.now()}`;
  const theirs = await alice.api.predict('augur/echo', { text: secret });
  await alice.api.waitFor(theirs.id);
  const mine = await mallory.api.predict('augur/echo', { text: 'mallory' });

  const p = await t.openPage();
  const { page } = p;
  p.expectStatus(404, `/v1/predictions/${theirs.id}`);
  await signIn(p, mallory.token, `/predictions/${theirs.id}`);
  await page.getByRole('heading', { name: 'Not found' }).waitFor();
  const text = await page.locator('main').innerText();
  assert(!text.includes(secret) && !text.includes('augur/echo'), 'nothing of the prediction is shown');
  await checkA11y(page, 'not found');
  await screenshot(page, 'isolation-not-found');

  // Its own list has its own prediction only.
  await p.goto('/');
  await page.locator(`tr[data-id="${mine.id}"]`).waitFor();
  assert((await page.locator(`tr[data-id="${theirs.id}"]`).count()) === 0, "alice's prediction is not listed");
  // An account filter in the URL is the admin's only: the page keeps to its own.
  await p.goto(`/?account=${alice.username}`);
  await page.locator(`tr[data-id="${mine.id}"]`).waitFor();
  assert((await page.locator('input[name="account"]').count()) === 0, 'no account filter for an account');
  const refused = await mallory.api.call('GET', `/v1/predictions?account=${alice.username}`);
  assert(refused.status === 403, `the API refuses another account's filter: ${refused.status}`);

  // The admin sees every account's, and filters by account.
  const admin = await t.openPage();
  await signIn(admin, t.api.token, `/?account=${alice.username}`);
  await admin.page.locator(`tr[data-id="${theirs.id}"]`).waitFor();
  assert((await admin.page.locator(`tr[data-id="${mine.id}"]`).count()) === 0, 'the account filter holds');
  assert((await admin.page.locator(`tr[data-id="${theirs.id}"]`).innerText()).includes(alice.username), 'the admin sees the account column');
  await checkA11y(admin.page, 'admin predictions list');
  await screenshot(admin.page, 'isolation-admin-filter');
  await admin.page.locator(`tr[data-id="${theirs.id}"] a`).click();
  await admin.page.locator('pre.input-json').filter({ hasText: secret }).waitFor();
});
