// A prediction's webhook deliveries on its page: every attempt (a receiver that fails once,
// then succeeds) with its HTTP status, and the Redeliver button sends the message again.

import http from 'node:http';
import { assert, checkA11y, scenario, screenshot, signIn, unique } from './lib.mjs';

await scenario('webhooks', async (t) => {
  let received = 0;
  const receiver = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      received += 1;
      res.writeHead(received === 1 ? 500 : 200, { 'Content-Type': 'text/plain' });
      res.end(received === 1 ? 'not yet' : 'ok');
    });
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${receiver.address().port}/hook`;
  try {
    const carol = await t.api.account(unique('carol'), 0);
    const created = await carol.api.predict('augur/echo', { text: 'hooked' }, { webhook: url, webhook_events_filter: ['completed'] });
    // The first attempt fails, the retry (AUGUR_WEBHOOK_BACKOFF_BASE is short here) succeeds.
    const until = Date.now() + 30000;
    for (;;) {
      const log = await carol.api.ok('GET', `/v1/predictions/${created.id}/webhooks`);
      if (log.results[0] && log.results[0].status === 'delivered') break;
      assert(Date.now() < until, `not delivered: ${JSON.stringify(log)}`);
      await new Promise((r) => setTimeout(r, 100));
    }

    const p = await t.openPage();
    const { page } = p;
    await signIn(p, carol.token, `/predictions/${created.id}`);
    const row = page.locator('table.webhooks tbody tr').first();
    await row.locator('[data-status="delivered"]').waitFor();
    await row.locator('.attempts li').nth(1).waitFor();
    assert((await row.locator('.attempts li').count()) === 2, 'two attempts are listed');
    assert((await row.locator('.attempts li').first().innerText()).includes('HTTP 500'), 'the failed attempt shows its status');
    assert((await row.locator('.attempts li').nth(1).innerText()).includes('HTTP 200'), 'the retry shows its status');
    await checkA11y(page, 'prediction with webhooks');
    await screenshot(page, 'webhooks-deliveries');

    await row.getByRole('button', { name: /Redeliver/ }).click();
    await page.getByRole('status').filter({ hasText: 'queued for delivery again' }).waitFor();
    await row.locator('.attempts li').nth(2).waitFor({ timeout: 15000 }).catch(async () => {
      // The page re-reads the log a second after the click; once more if the send was slower.
      await p.goto(`/predictions/${created.id}`);
      await page.locator('table.webhooks tbody tr .attempts li').nth(2).waitFor({ timeout: 15000 });
    });
    assert(received === 3, `the receiver got 3 requests, got ${received}`);
    await screenshot(page, 'webhooks-redelivered');
  } finally {
    receiver.close();
  }
});
