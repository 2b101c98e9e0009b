// Watch a workflow run's graph complete: the blueprint's graph is drawn (4 nodes, 4 edges
// from its references), a run started from the page's form opens the run's page, whose nodes
// turn to succeeded live through the run's stream, each linking to its prediction, while the
// workflows page's list of runs follows it too. Axe checks the workflows, workflow and run pages.

import { assert, checkA11y, scenario, screenshot, signIn, unique } from './lib.mjs';

await scenario('workflow_run', async (t) => {
  const owner = await t.api.account(unique('flows'), 0);
  const name = `${owner.username}/variants`;
  await owner.api.ok('POST', '/v1/workflows', {
    name,
    description: 'one image, two variants, a contact sheet',
    input_schema: { type: 'object', required: ['prompt'], properties: { prompt: { type: 'string' } } },
    // The first node takes 4 s, so the run's page opens on a graph still in progress.
    nodes: {
      draw: {
        model: 'augur/demo-image',
        input: { prompt: '{{ input.prompt }}', width: 48, height: 48, steps: 20, step_ms: 200 },
      },
      left: { model: 'augur/echo', input: { image: '{{ nodes.draw.output }}', side: 'left' } },
      right: { model: 'augur/echo', input: { image: '{{ nodes.draw.output }}', side: 'right' } },
      sheet: { model: 'augur/echo', input: { a: '{{ nodes.left.output }}', b: '{{ nodes.right.output }}' } },
    },
    output: '{{ nodes.sheet.output }}',
  }, 201);

  const p = await t.openPage();
  const { page } = p;
  await signIn(p, owner.token, '/workflows');
  await page.locator(`.workflow-card[data-workflow="${name}"] h3 a`).click();
  await page.locator('.workflow-page .wf-graph').waitFor();
  const drawn = await page.evaluate(() => {
    const graph = document.querySelector('.workflow-page .wf-graph');
    return {
      nodes: graph.querySelectorAll('.wf-node').length,
      edges: [...graph.querySelectorAll('.wf-edge')].map((e) => `${e.dataset.from}->${e.dataset.to}`).sort(),
    };
  });
  assert(drawn.nodes === 4, `the blueprint's graph has ${drawn.nodes} nodes, not 4`);
  const want = ['draw->left', 'draw->right', 'left->sheet', 'right->sheet'];
  assert(JSON.stringify(drawn.edges) === JSON.stringify(want), `edges ${drawn.edges} are not ${want}`);
  await screenshot(page, 'workflow');
  await checkA11y(page, 'workflow page');

  // Start a run from the form: the run's page opens.
  await page.locator('input[name="prompt"]').fill('a lighthouse');
  await page.getByRole('button', { name: 'Start run' }).click();
  await page.waitForURL(/\/runs\/[^/]+$/);
  await page.locator('.run-page .wf-graph').waitFor();
  await page.evaluate(() => { window.sameDocument = true; });
  const first = await page.$$eval('.run-page .wf-node', (ns) => ns.map((n) => n.dataset.status));
  assert(!first.every((s) => s === 'succeeded'), 'the run was already complete when its page opened');
  console.log(`  node statuses when the run page opened: ${first.join(', ')}`);
  const runId = new URL(page.url()).pathname.split('/').pop();

  // Meanwhile the workflows page lists the run, and follows it to the end without a reload.
  const list = await t.openPage();
  await signIn(list, owner.token, '/workflows');
  await list.page.locator(`tr[data-run="${runId}"]`).waitFor();
  await list.page.evaluate(() => { window.sameDocument = true; });
  await page.waitForFunction(
    () => document.querySelectorAll('.run-page .wf-node[data-status="succeeded"]').length === 4
      && document.querySelector('.run-summary')?.dataset.status === 'succeeded',
    null,
    { timeout: 60000 },
  );
  assert(await page.evaluate(() => window.sameDocument === true), 'the run page reloaded');

  // Each node links to its prediction.
  const run = await owner.api.ok('GET', `/v1/runs/${runId}`, undefined, 200);
  const links = await page.$$eval('.run-page .wf-node-link', (as) => as.map((a) => a.getAttribute('href')));
  for (const [node, n] of Object.entries(run.nodes)) {
    const href = `/predictions/${n.prediction_ids.at(-1)}`;
    assert(links.includes(href), `node ${node} does not link to ${href}: ${links}`);
  }
  await screenshot(page, 'run-complete');
  await checkA11y(page, 'run page');

  // A node's link opens its prediction's page without a reload.
  const draw = run.nodes.draw.prediction_ids.at(-1);
  await page.locator('.wf-node[data-node="draw"]').click();
  await page.waitForURL((url) => url.pathname === `/predictions/${draw}`);
  assert(await page.evaluate(() => window.sameDocument === true), 'following a node reloaded the page');

  // The workflows page shows the run succeeded, without a reload.
  await list.page.locator(`tr[data-run="${runId}"][data-status="succeeded"]`).waitFor({ timeout: 15000 });
  assert(await list.page.evaluate(() => window.sameDocument === true), 'the workflows page reloaded');
  await screenshot(list.page, 'workflows');
  await checkA11y(list.page, 'workflows page');
});
