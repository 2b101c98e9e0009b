// Credits and the ledger (run against a server that prices augur/demo-image per second): the
// account page shows balance, reserved and available as the API does; a prediction started
// while the page is open moves them live (reserved, then charged and released) and its charge
// appears in the ledger, in words, linking to the prediction, with the amount the API
// booked; the ledger pages through older entries on the server. Axe checks the page.

import { assert, checkA11y, scenario, screenshot, signIn, unique } from './lib.mjs';

await scenario('ledger', async (t) => {
  const alice = await t.api.account(unique('payer'), 100);
  const p = await t.openPage();
  const { page } = p;
  await signIn(p, alice.token, '/account');

  const figure = (name) => page.locator(`.credit-figure.${name} .credit-value`);
  const figures = async () => ({
    balance: Number(await figure('balance').innerText()),
    reserved: Number(await figure('reserved').innerText()),
    available: Number(await figure('available').innerText()),
  });
  await figure('balance').waitFor();
  const before = await alice.api.ok('GET', '/v1/account/credits');
  const shown = await figures();
  assert(JSON.stringify(shown) === JSON.stringify({ balance: before.balance, reserved: before.reserved, available: before.available }),
    `the figures are the API's: ${JSON.stringify(shown)} vs ${JSON.stringify(before)}`);
  await page.locator('tr[data-reason="grant"]').first().waitFor();

  // A priced prediction while the page is open: its hold shows, then its charge.
  const made = await alice.api.predict('augur/demo-image', { prompt: 'a coin', width: 32, height: 32, steps: 6, step_ms: 250 });
  await page.waitForFunction(() => Number(document.querySelector('.credit-figure.reserved .credit-value')?.textContent) > 0,
    null, { timeout: 15000 });
  await screenshot(page, 'account-reserved');
  const settled = await alice.api.waitFor(made.id);
  assert(settled.status === 'succeeded', `the prediction succeeded: ${settled.status}`);
  const charge = page.locator('tr[data-reason="charge"]', { has: page.locator(`a[href="/predictions/${made.id}"]`) });
  await charge.waitFor({ timeout: 15000 });
  const ledger = await alice.api.ok('GET', '/v1/account/ledger');
  const booked = ledger.results.find((e) => e.reason === 'charge' && e.reference === made.id);
  assert(booked && booked.delta < 0, `the API booked a charge: ${JSON.stringify(ledger.results)}`);
  const text = await charge.innerText();
  assert(text.includes('Charged for a prediction'), `the reason is in words: ${text}`);
  assert(text.includes(`−${-booked.delta}`), `the row shows the amount charged (${booked.delta}): ${text}`);
  assert(text.includes(String(booked.balance_after)), `the row shows the balance after: ${text}`);
  await page.locator('tr[data-reason="reserve"]', { has: page.locator(`a[href="/predictions/${made.id}"]`) }).waitFor();
  const after = await alice.api.ok('GET', '/v1/account/credits');
  assert(after.balance === before.balance + booked.delta && after.reserved === 0, `settled: ${JSON.stringify(after)}`);
  await page.waitForFunction((want) => Number(document.querySelector('.credit-figure.balance .credit-value')?.textContent) === want
    && Number(document.querySelector('.credit-figure.reserved .credit-value')?.textContent) === 0, after.balance, { timeout: 15000 });
  await checkA11y(page, 'the account page');
  await screenshot(page, 'account-ledger-charge');

  // Paging: more entries than a page; "Older" asks the server for the next one.
  for (let i = 0; i < 20; i++) {
    await t.api.ok('POST', `/v1/accounts/${alice.username}/credits`, { amount: 1, reason: 'grant', memo: `bonus ${i}` }, 200);
  }
  await page.reload();
  await page.locator('tr[data-reason="grant"]', { hasText: 'bonus 19' }).waitFor();
  assert((await page.locator('.ledger-entries tbody tr').count()) === 20, 'a page holds 20 entries');
  assert((await page.locator(`a[href="/predictions/${made.id}"]`).count()) === 0, 'the charge is on an older page now');
  await page.getByRole('button', { name: 'Older' }).click();
  await charge.waitFor();
  assert((await page.locator('tr[data-reason="grant"]', { hasText: 'bonus 19' }).count()) === 0, 'the newest entries are not on page 2');
  await page.getByRole('button', { name: 'Newest' }).click();
  await page.locator('tr[data-reason="grant"]', { hasText: 'bonus 19' }).waitFor();
  await screenshot(page, 'account-ledger-paged');
});
