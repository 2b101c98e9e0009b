// The predictions pages: the list updates live (a prediction created through the API appears
// and settles without a reload), filters by status and model on the server, pages with
// cursors; a running prediction's page streams its logs and is canceled with its button;
// both pages pass axe in light and dark, and on a phone's width.

import { assert, checkA11y, scenario, screenshot, signIn, unique } from './lib.mjs';

await scenario('predictions', async (t) => {
  const bob = await t.api.account(unique('bob'), 0);
  // Some history: echo predictions, settled at once.
  for (let i = 0; i < 3; i++) await bob.api.predict('augur/echo', { text: `hello ${i}` });

  const p = await t.openPage();
  const { page } = p;
  await signIn(p, bob.token);
  const rows = page.locator('table.predictions tbody tr');
  await rows.nth(2).waitFor();
  assert((await rows.count()) === 3, `three rows, got ${await rows.count()}`);
  await page.locator('.live.on').waitFor();

  // Live: a slow prediction appears at the top without a reload, and its row follows it.
  const slow = await bob.api.predict('augur/demo-image', { prompt: 'a slow lighthouse', steps: 40, step_ms: 500 });
  const row = page.locator(`tr[data-id="${slow.id}"]`);
  await row.waitFor({ timeout: 10000 });
  assert((await rows.first().getAttribute('data-id')) === slow.id, 'the new prediction is on top');
  await row.locator('[data-status="processing"]').waitFor({ timeout: 15000 });
  await checkA11y(page, 'predictions list');
  await screenshot(page, 'predictions-list-live');

  // Filters are the server's: status, then model.
  await page.locator('select[name="status"]').selectOption('succeeded');
  await page.waitForURL((url) => url.searchParams.get('status') === 'succeeded');
  await page.locator('table.predictions tbody tr').first().waitFor();
  assert((await page.locator('tbody [data-status]').evaluateAll((els) => els.every((e) => e.dataset.status === 'succeeded'))), 'only succeeded rows');
  assert((await page.locator(`tr[data-id="${slow.id}"]`).count()) === 0, 'the running one is filtered out');
  await p.goto('/?model=augur/demo-image');
  await page.locator(`tr[data-id="${slow.id}"]`).waitFor();
  assert((await page.locator('table.predictions tbody tr').count()) === 1, 'only the demo-image prediction');

  // The running prediction's page: logs stream in, then cancel it with the button.
  await page.locator(`tr[data-id="${slow.id}"] a`).click();
  await page.waitForURL((url) => url.pathname === `/predictions/${slow.id}`);
  await page.locator('h1 [data-status="processing"]').waitFor({ timeout: 15000 });
  await page.locator('pre.logs').filter({ hasText: /\d+\/40/ }).waitFor({ timeout: 15000 });
  await checkA11y(page, 'running prediction');
  await screenshot(page, 'prediction-running');
  await page.getByRole('button', { name: 'Cancel prediction' }).click();
  await page.locator('h1 [data-status="canceled"]').waitFor({ timeout: 10000 });
  await page.locator('.timeline').filter({ hasText: 'Canceled' }).waitFor();
  const after = await bob.api.ok('GET', `/v1/predictions/${slow.id}`);
  assert(after.status === 'canceled', `the API says canceled, got ${after.status}`);
  assert(!(await page.getByRole('button', { name: 'Cancel prediction' }).isVisible()), 'no cancel button once settled');
  await screenshot(page, 'prediction-canceled');

  // A settled prediction with an image: the picture, the timeline, dark mode, a phone.
  const done = await bob.api.predict('augur/demo-image', { prompt: 'a calm sea', steps: 2, step_ms: 0 });
  await bob.api.waitFor(done.id);
  const dark = await t.openPage({ colorScheme: 'dark', viewport: { width: 390, height: 844 } });
  await signIn(dark, bob.token, `/predictions/${done.id}`);
  await dark.page.locator('.output-media img').waitFor();
  // The element appears before its bytes arrive: wait for them (a picture that never loads
  // fails this wait, and the failed request fails the scenario).
  await dark.page.waitForFunction(() => {
    const img = document.querySelector('.output-media img');
    return img && img.complete && img.naturalWidth > 0;
  }, null, { timeout: 10000 });
  await dark.page.locator('.timeline').filter({ hasText: 'Succeeded' }).waitFor();
  await checkA11y(dark.page, 'settled prediction, dark, phone');
  await screenshot(dark.page, 'prediction-succeeded-dark-phone');
  await dark.goto('/');
  await dark.page.locator('table.predictions tbody tr').first().waitFor();
  await checkA11y(dark.page, 'predictions list, dark, phone');
  await screenshot(dark.page, 'predictions-list-dark-phone');
});
