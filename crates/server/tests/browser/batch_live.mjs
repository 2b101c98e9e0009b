// Watch a 20-item batch fill in live: the batch page shows its grid before the items finish,
// and every item's picture appears through the batch stream, without a reload; the history
// lists it with a full progress bar; a slow batch is canceled from its page; another account
// finds a batch "Not found". Axe checks both pages, on a laptop and on a phone in dark mode.

import { assert, checkA11y, scenario, screenshot, signIn, unique } from './lib.mjs';

await scenario('batch_live', async (t) => {
  const owner = await t.api.account(unique('batcher'), 0);
  // Items take 0.45 s to 9 s (3 steps of 150 ms to 3 s), so the grid is seen filling in.
  const inputs = Array.from({ length: 20 }, (_, i) => ({
    prompt: `tile ${i}`, width: 32, height: 32, steps: 3, step_ms: 150 + i * 150,
  }));
  const batch = await owner.api.ok('POST', '/v1/batches', { model: 'augur/demo-image', inputs }, 201);
  assert(batch.total === 20, `the batch has ${batch.total} items, not 20`);

  const p = await t.openPage();
  const { page } = p;
  await signIn(p, owner.token, `/batches/${batch.id}`);
  await page.locator('.batch-grid li[data-prediction]').first().waitFor();
  // A mark on the document: a reload would drop it.
  await page.evaluate(() => { window.sameDocument = true; });
  const early = await page.locator('.batch-grid img').count();
  assert(early < 20, 'every picture was there at once: nothing was seen filling in');
  await page.waitForFunction(
    () => document.querySelectorAll('.batch-grid li[data-status="succeeded"] img').length === 20
      && [...document.querySelectorAll('.batch-grid img')].every((i) => i.complete && i.naturalWidth > 0),
    null,
    { timeout: 60000 },
  );
  assert(await page.evaluate(() => window.sameDocument === true), 'the page reloaded while the batch ran');
  const summary = page.locator('.batch-summary');
  await summary.filter({ hasText: '20 of 20 done' }).waitFor();
  assert((await summary.getAttribute('data-status')) === 'succeeded', 'the batch is shown as succeeded');
  console.log(`  pictures shown when the page opened: ${early} of 20`);
  await screenshot(page, 'batch-filled');
  await checkA11y(page, 'batch page');

  // The history: the batch with its progress bar full.
  await page.locator('.breadcrumbs a[href="/batches"]').click();
  const row = page.locator(`tr[data-batch="${batch.id}"][data-status="succeeded"]`);
  await row.waitFor();
  assert((await row.locator('progress').getAttribute('value')) === '20', 'the progress bar is full');
  await screenshot(page, 'batches');
  await checkA11y(page, 'batches page');

  // On a phone the grid still fits the screen.
  const phone = await t.openPage({ viewport: { width: 390, height: 844 }, colorScheme: 'dark' });
  await signIn(phone, owner.token, `/batches/${batch.id}`);
  await phone.page.locator('.batch-grid li[data-status="succeeded"] img').first().waitFor();
  const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert(overflow <= 1, `the batch page is ${overflow}px wider than a phone's screen`);
  await screenshot(phone.page, 'batch-phone-dark');
  await checkA11y(phone.page, 'batch page on a phone, dark');

  // Cancel from the page: a slow batch ends canceled, its items with it, live.
  const slow = await owner.api.ok('POST', '/v1/batches', {
    model: 'augur/demo-image',
    inputs: Array.from({ length: 4 }, (_, i) => ({ prompt: `slow ${i}`, width: 16, height: 16, steps: 100, step_ms: 200 })),
  }, 201);
  await p.goto(`/batches/${slow.id}`);
  await page.getByRole('button', { name: 'Cancel batch' }).click();
  await page.locator('.batch-summary[data-status="canceled"]').waitFor({ timeout: 30000 });
  await page.waitForFunction(
    () => document.querySelectorAll('.batch-grid li[data-status="canceled"]').length === 4,
    null,
    { timeout: 30000 },
  );
  assert((await page.getByRole('button', { name: 'Cancel batch' }).count()) === 0, 'a canceled batch still offers Cancel');
  const canceled = await owner.api.ok('GET', `/v1/batches/${slow.id}`, undefined, 200);
  assert(canceled.status === 'canceled' && canceled.counts.canceled === 4, `the API says ${JSON.stringify(canceled)}`);
  await screenshot(page, 'batch-canceled');

  // Another account: not found, and nothing of the batch shown.
  const other = await t.api.account(unique('onlooker'), 0);
  const q = await t.openPage();
  q.expectStatus(404, `/v1/batches/${batch.id}`);
  await signIn(q, other.token, `/batches/${batch.id}`);
  await q.page.locator('.not-found').waitFor();
  assert((await q.page.locator('.batch-grid img').count()) === 0, "another account's batch showed its items");
});
