// The admin page: health and models load from GET /v1/admin/status (counting a running
// prediction), an account is created and granted credits from its forms (checked through the
// API and its ledger), a mistake is said in words; an account's token sees "Admin only" and
// no admin data. Axe checks the page.

import { assert, checkA11y, scenario, screenshot, signIn, unique } from './lib.mjs';

await scenario('admin', async (t) => {
  // Something to count: a slow picture running for an account.
  const busy = await t.api.account(unique('busy'), 0);
  const running = await busy.api.predict('augur/demo-image', { prompt: 'slow', width: 16, height: 16, steps: 100, step_ms: 200 });

  const p = await t.openPage();
  const { page } = p;
  await signIn(p, t.api.token, '/admin');
  await page.locator('[data-stat="store"] .stat-value').waitFor();
  const backend = (await page.locator('[data-stat="store"] .stat-value').textContent()).trim();
  assert(backend === 'embedded', `the store card says ${backend}, not embedded`);
  const image = page.locator('tr[data-model="augur/demo-image"]');
  await image.waitFor();
  // Refreshed every 5 s: the running prediction shows as running or queued.
  await page.waitForFunction(() => {
    const row = document.querySelector('tr[data-model="augur/demo-image"]');
    const n = (f) => Number(row.querySelector(`[data-field="${f}"]`).textContent);
    return n('running') + n('queued') >= 1;
  }, null, { timeout: 15000 });
  // This server is the one node serving its store.
  const nodeRows = await page.locator('.nodes-table tbody tr').count();
  assert(nodeRows === 1, `the nodes table lists ${nodeRows} nodes, not 1`);
  await screenshot(page, 'admin');
  await checkA11y(page, 'admin page');
  await busy.api.ok('POST', `/v1/predictions/${running.id}/cancel`, undefined, 200);

  const username = unique('granted');
  await page.locator('#create-username').fill(username);
  await page.locator('#create-name').fill('Granted Person');
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.locator(`tr[data-account="${username}"]`).waitFor();
  const before = await t.api.ok('GET', `/v1/accounts/${username}/credits`, undefined, 200);
  assert((await page.locator('#grant-username').inputValue()) === username, 'the grant form names the new account');
  await page.locator('#grant-amount').fill('25');
  await page.locator('#grant-memo').fill('dashboard test');
  await page.getByRole('button', { name: 'Grant credits', exact: true }).click();
  await page.locator('[data-result="granted"]').waitFor();
  const after = await t.api.ok('GET', `/v1/accounts/${username}/credits`, undefined, 200);
  assert(after.balance === before.balance + 25, `balance went from ${before.balance} to ${after.balance}, not +25`);
  const ledger = await t.api.ok('GET', `/v1/accounts/${username}/ledger`, undefined, 200);
  assert(ledger.results.some((e) => e.reason === 'grant' && e.delta === 25 && e.memo === 'dashboard test'),
    `no ledger entry for the grant: ${JSON.stringify(ledger.results)}`);
  await page.locator(`tr[data-account="${username}"] [data-field="credits"]`)
    .filter({ hasText: `${after.available} available` }).waitFor();
  await screenshot(page, 'admin-granted');

  // A mistake, in words: a grant to an account that does not exist.
  p.expectStatus(404, '/v1/accounts/nobody-here/credits');
  await page.locator('#grant-username').fill('nobody-here');
  await page.locator('#grant-amount').fill('5');
  await page.getByRole('button', { name: 'Grant credits', exact: true }).click();
  await page.locator('[data-form="grant-credits"] [role="alert"]').filter({ hasText: 'Not found' }).waitFor();

  // An account's token: no admin data.
  const { token } = await t.api.ok('POST', `/v1/accounts/${username}/tokens`, { name: 'ui' }, 201);
  const q = await t.openPage();
  await signIn(q, token, '/admin');
  await q.page.getByRole('heading', { name: 'Admin only' }).waitFor();
  assert((await q.page.locator('[data-stat="store"]').count()) === 0, 'a non-admin sees the health cards');
});
