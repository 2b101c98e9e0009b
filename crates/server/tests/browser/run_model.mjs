// Run a model: the models list shows descriptions and links to each run form; the form of
// augur/demo-image is generated from its input schema (types, defaults, bounds); a value out of
// bounds is refused next to its field without a request; a run shows live progress and then
// the picture on the same page, without a reload; the curl, Python and JavaScript snippets for
// what was just run are shown, and they work: each makes the same picture (the model is
// deterministic for a prompt, seed and size). The schema reader also handles Cog's shapes
// (enums behind `allOf`/`$ref`, optional values as `anyOf` with null, files, lists), and a
// file input uploads through the files API and passes the file by its URL. A model that takes
// any object gets a JSON box; an unknown model is "Not found". Axe checks the
// models page, the form and the result (also on a phone in the dark).

import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

import { BASE, assert, checkA11y, scenario, screenshot, signIn, unique } from './lib.mjs';

/** The bytes at `url` (output files are served without a token). */
async function bytesOf(url) {
  const response = await fetch(url);
  assert(response.ok, `GET ${url}: ${response.status}`);
  return Buffer.from(await response.arrayBuffer());
}

/** Runs `command` with `args` and `env` added, failing unless it exits 0; its stdout. */
function run(what, command, args, env, input) {
  const r = spawnSync(command, args, { env: { ...process.env, ...env }, input, encoding: 'utf8', timeout: 60000 });
  assert(r.status === 0, `the ${what} snippet failed (${r.status ?? r.signal ?? r.error}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

await scenario('run-model', async (t) => {
  // Credits: the server prices the model.
  const alice = await t.api.account(unique('runner'), 100);
  const p = await t.openPage();
  const { page } = p;
  await signIn(p, alice.token, '/models');

  // The list: every model with its description, linking to its form.
  const card = page.locator('.model-card', { hasText: 'augur/demo-image' });
  await card.waitFor();
  assert((await card.innerText()).includes('Draws a deterministic abstract PNG'), 'the description is shown');
  assert((await page.locator('.model-card').count()) >= 2, 'both built-in models are listed');
  // The server prices demo-image per second (dashboard.rs); echo stays free.
  assert((await card.innerText()).includes('Costs 2 credits a second of run time (at most 10 seconds)'), 'the price is shown');
  assert((await page.locator('.model-card', { hasText: 'augur/echo' }).innerText()).includes('Free to run'), 'echo is free');
  await checkA11y(page, 'the models page');
  await screenshot(page, 'models-list');
  await page.getByLabel('Filter models').fill('returns input');
  await page.locator('.model-card').first().filter({ hasText: 'augur/echo' }).waitFor();
  assert((await page.locator('.model-card').count()) === 1, 'the filter narrows the list');
  await page.getByLabel('Filter models').fill('');
  await card.getByRole('link', { name: 'augur/demo-image' }).click();
  await page.waitForURL((u) => u.pathname === '/models/augur/demo-image');

  // The form, from the schema: one field per input, named after its key, typed and bounded.
  const field = (key) => page.locator(`[name="${key}"]`);
  await field('prompt').waitFor();
  const attrs = (key) =>
    field(key).evaluate((el) => ({
      tag: el.tagName.toLowerCase(), type: el.type, min: el.min, max: el.max, value: el.value,
      required: el.required, label: el.labels?.[0]?.textContent ?? '',
    }));
  const prompt = await attrs('prompt');
  assert(prompt.tag === 'input' && prompt.type === 'text' && prompt.required, `prompt: ${JSON.stringify(prompt)}`);
  assert(prompt.label.startsWith('Prompt'), `prompt is labelled: ${JSON.stringify(prompt)}`);
  const width = await attrs('width');
  assert(width.type === 'number' && width.min === '8' && width.max === '2048' && width.value === '512',
    `width has its bounds and default: ${JSON.stringify(width)}`);
  const steps = await attrs('steps');
  assert(steps.min === '1' && steps.max === '200' && steps.value === '10', `steps: ${JSON.stringify(steps)}`);
  const seed = await attrs('seed');
  assert(seed.type === 'number' && seed.value === '' && !seed.required, `seed is optional and empty: ${JSON.stringify(seed)}`);
  assert((await page.locator('.run-form [name]').count()) === 6, 'one field per input');
  const credits = await alice.api.ok('GET', '/v1/account/credits');
  await page.locator('.model-meta', { hasText: `You have ${credits.available} available` }).waitFor();
  await checkA11y(page, 'the run form');

  // Out of bounds: refused next to the field, before any request.
  let creates = 0;
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url().includes('/predictions')) creates += 1;
  });
  await field('prompt').fill('a lighthouse at dusk');
  await field('width').fill('4');
  await page.getByRole('button', { name: 'Run' }).click();
  const widthError = page.locator('[data-field="width"] .field-error');
  await widthError.filter({ hasText: /8/ }).waitFor();
  assert((await field('width').getAttribute('aria-invalid')) === 'true', 'the field is marked invalid');
  assert(creates === 0, 'nothing was sent');
  await screenshot(page, 'model-form-refused');

  // A run: live progress, then the picture, on the same page.
  await page.evaluate(() => {
    window.__samePage = true;
  });
  await field('width').fill('96');
  await field('height').fill('64');
  await field('steps').fill('8');
  await field('step_ms').fill('150');
  await field('seed').fill('7');
  await page.getByRole('button', { name: 'Run' }).click();
  await page.locator('.run-progress progress').waitFor({ timeout: 15000 });
  await page.locator('.run-logs', { hasText: '/8' }).waitFor();
  const picture = page.locator('.run-output img');
  await picture.waitFor({ timeout: 30000 });
  await page.waitForFunction(() => {
    const img = document.querySelector('.run-output img');
    return img && img.complete && img.naturalWidth === 96 && img.naturalHeight === 64;
  }, null, { timeout: 15000 });
  assert(await page.evaluate(() => window.__samePage === true), 'the page did not reload');
  assert(creates === 1, `one create was sent, not ${creates}`);
  await page.locator('.run-head [data-status="succeeded"]').waitFor();
  const progress = await page.locator('.run-progress progress').evaluate((el) => [el.value, el.max]);
  assert(progress[0] === 8 && progress[1] === 8, `the progress bar is full: ${progress}`);
  const id = (await page.locator('.run-link').getAttribute('href')).split('/').pop();
  const made = await alice.api.ok('GET', `/v1/predictions/${id}`);
  const src = await picture.getAttribute('src');
  assert(made.status === 'succeeded' && made.output === src, `the picture is the output: ${src} vs ${made.output}`);
  const sorted = (o) => JSON.stringify(Object.fromEntries(Object.entries(o).sort()));
  assert(sorted(made.input) === sorted({ prompt: 'a lighthouse at dusk', width: 96, height: 64, steps: 8, seed: 7, step_ms: 150 }),
    `the input is what the form said: ${JSON.stringify(made.input)}`);
  const png = await bytesOf(src);
  await checkA11y(page, 'the run result');
  await screenshot(page, 'model-run-result');

  // A long run can be canceled from the result.
  await field('steps').fill('100');
  await field('step_ms').fill('200');
  await page.getByRole('button', { name: 'Run' }).click();
  await page.locator('.run-logs', { hasText: '/100' }).waitFor({ timeout: 15000 });
  await page.getByRole('button', { name: 'Cancel' }).click();
  await page.locator('.run-head [data-status="canceled"]').waitFor({ timeout: 15000 });
  const canceledId = (await page.locator('.run-link').getAttribute('href')).split('/').pop();
  assert((await alice.api.ok('GET', `/v1/predictions/${canceledId}`)).status === 'canceled', 'the API says canceled');
  assert(!(await page.getByRole('button', { name: 'Run' }).isDisabled()), 'the form can run again');
  await screenshot(page, 'model-run-canceled');

  // Back to the first run's input, to check its snippets.
  await field('steps').fill('8');
  await field('step_ms').fill('150');
  await page.getByRole('button', { name: 'Run' }).click();
  await page.locator('.run-head [data-status="succeeded"]').waitFor({ timeout: 30000 });

  // The snippets: what was just run, in curl, Python and JavaScript; each makes the same picture.
  const snippet = async (tab) => {
    await page.getByRole('tab', { name: tab }).click();
    return page.getByRole('tabpanel', { name: tab }).locator('pre').innerText();
  };
  const env = { REPLICATE_API_TOKEN: alice.token };
  const curl = await snippet('curl');
  assert(curl.includes(`${new URL(BASE).origin}/v1/models/augur/demo-image/predictions`) && curl.includes('"seed": 7'),
    `curl names the model and the input:\n${curl}`);
  assert(!curl.includes(alice.token), 'the snippet does not show the token');
  const answer = JSON.parse(run('curl', 'sh', ['-c', curl], env));
  assert(answer.status === 'succeeded', `curl's prediction succeeded: ${JSON.stringify(answer)}`);
  assert((await bytesOf(answer.output)).equals(png), 'curl made the same picture');
  console.log('  the curl snippet made the same picture');

  const python = await snippet('Python');
  assert(python.includes('client.run("augur/demo-image"') && python.includes('"seed": 7'), `python:\n${python}`);
  if (process.env.AUGUR_TEST_PYTHON) {
    const url = run('Python', process.env.AUGUR_TEST_PYTHON, ['-'], env, python).trim();
    assert((await bytesOf(url)).equals(png), `the Python snippet made the same picture: ${url}`);
    console.log('  the Python snippet made the same picture');
  } else {
    console.log('  not running the Python snippet: AUGUR_TEST_PYTHON is not set');
  }

  const js = await snippet('JavaScript');
  assert(js.includes('replicate.run("augur/demo-image"') && js.includes('"seed": 7'), `js:\n${js}`);
  let client = null;
  try {
    client = createRequire(new URL('../js/package.json', import.meta.url)).resolve('replicate');
  } catch {
    console.log('  not running the JavaScript snippet: npm package replicate is not installed in tests/js');
  }
  if (client) {
    // The snippet as a user runs it, with the package found where the tests installed it.
    const code = js.replace('from "replicate"', `from ${JSON.stringify(pathToFileURL(client).href)}`);
    const url = run('JavaScript', process.execPath, ['--input-type=module', '-'], env, code).trim();
    assert((await bytesOf(url)).equals(png), `the JavaScript snippet made the same picture: ${url}`);
    console.log('  the JavaScript snippet made the same picture');
  }
  await screenshot(page, 'model-run-snippets');

  // The schema reader on Cog's shapes, through the page's own module.
  const read = await page.evaluate(async () => {
    const m = await import('/ui/pages/model.js');
    const schema = {
      components: {
        schemas: {
          Input: {
            type: 'object',
            required: ['image'],
            properties: {
              image: { type: 'string', format: 'uri', 'x-order': 1 },
              color: { allOf: [{ $ref: '#/components/schemas/color' }], default: 'red', 'x-order': 0 },
              scale: { anyOf: [{ type: 'number', minimum: 0.5 }, { type: 'null' }], 'x-order': 2 },
              tags: { type: 'array', items: { type: 'string' }, 'x-order': 3 },
              masks: { type: 'array', items: { type: 'string', format: 'uri' }, 'x-order': 4 },
              api_key: { type: 'string', format: 'password', 'x-order': 5 },
              extra: { type: 'object', 'x-order': 6 },
              fast: { type: 'boolean', default: true, 'x-order': 7 },
            },
          },
          color: { title: 'color', type: 'string', enum: ['red', 'green'] },
        },
      },
    };
    const { fields } = m.inputFields(schema);
    return fields.map((f) => [f.key, m.fieldKind(f), f.required, f.default ?? null, f.minimum ?? null]);
  });
  assert(JSON.stringify(read) === JSON.stringify([
    ['color', 'select', false, 'red', null],
    ['image', 'file', true, null, null],
    ['scale', 'number', false, null, 0.5],
    ['tags', 'lines', false, null, null],
    ['masks', 'files', false, null, null],
    ['api_key', 'secret', false, null, null],
    ['extra', 'json', false, null, null],
    ['fast', 'checkbox', false, true, null],
  ]), `Cog's schema shapes are read: ${JSON.stringify(read)}`);

  // The controls those shapes get read back typed values: a menu of numbers answers a number,
  // a checkbox a boolean, a list one value a line.
  const values = await page.evaluate(async () => {
    const m = await import('/ui/pages/model.js');
    const size = m.fieldControl({ key: 'size', type: 'integer', enum: [256, 512, 1024], default: 512 });
    const fast = m.fieldControl({ key: 'fast', type: 'boolean', default: true });
    const seeds = m.fieldControl({ key: 'seeds', type: 'array', items: { type: 'integer' } });
    const before = [size.control.tagName, size.control.options.length, size.read(), fast.control.type, fast.read()];
    size.control.value = '2';
    fast.control.checked = false;
    seeds.control.value = '3\n 5 \n\n8';
    const bad = m.fieldControl({ key: 'seeds', type: 'array', items: { type: 'integer' } });
    bad.control.value = '1\n1.5';
    let refused = null;
    try {
      bad.read();
    } catch (e) {
      refused = e.message;
    }
    return [...before, size.read(), fast.read(), seeds.read(), refused];
  });
  assert(JSON.stringify(values) === JSON.stringify(['SELECT', 3, 512, 'checkbox', true, 1024, false, [3, 5, 8], 'Seeds has "1.5", which is not a whole number']),
    `the controls read typed values: ${JSON.stringify(values)}`);

  // A file input uploads through the files API and passes the file by its URL, which a
  // prediction of this account accepts.
  const uploaded = await page.evaluate(async () => {
    const m = await import('/ui/pages/model.js');
    const control = m.fieldControl({ key: 'image', type: 'string', format: 'uri', required: true });
    const files = new DataTransfer();
    files.items.add(new File([new Uint8Array([1, 2, 3, 4, 5])], 'five.bin', { type: 'application/octet-stream' }));
    control.control.files = files.files;
    return control.read((_key, file) => m.uploadFile(file));
  });
  assert(new URL(uploaded).pathname.startsWith('/v1/files/'), `the file input's value is the upload's URL: ${uploaded}`);
  const file = await alice.api.ok('GET', new URL(uploaded).pathname);
  assert(file.size === 5 && file.name === 'five.bin', `the upload is this account's file: ${JSON.stringify(file)}`);
  const echoed = await alice.api.predict('augur/echo', { image: uploaded });
  const done = await alice.api.waitFor(echoed.id);
  // The model gets the file's bytes (built-in models see them as a data URI).
  assert(done.status === 'succeeded' && done.output.image === `data:application/octet-stream;base64,${Buffer.from([1, 2, 3, 4, 5]).toString('base64')}`,
    `a prediction takes it, and the model gets its bytes: ${JSON.stringify(done)}`);

  // A model that takes any object gets one JSON box; bad JSON is refused next to it.
  await page.goto(`${BASE}/models/augur/echo`);
  const box = page.locator('textarea[name="input"]');
  await box.waitFor();
  await box.fill('{"text": ');
  await page.getByRole('button', { name: 'Run' }).click();
  await page.locator('[data-field="input"] .field-error', { hasText: 'not valid JSON' }).waitFor();
  await box.fill('{"text": "hello", "n": [1, 2]}');
  await page.getByRole('button', { name: 'Run' }).click();
  await page.locator('.run-output pre', { hasText: '"hello"' }).waitFor({ timeout: 15000 });
  await checkA11y(page, 'the echo form and result');

  // A model this server does not run: "Not found", in words.
  p.expectStatus(404, '/v1/models/nobody/nothing');
  await page.goto(`${BASE}/models/nobody/nothing`);
  await page.getByRole('heading', { name: 'Not found' }).waitFor();

  // On a phone, in the dark: the form and the result fit the screen and pass axe.
  const phone = await t.openPage({ viewport: { width: 390, height: 844 }, colorScheme: 'dark' });
  await signIn(phone, alice.token, '/models/augur/demo-image');
  const on = phone.page;
  await on.locator('[name="prompt"]').fill('a small fox');
  await on.locator('[name="steps"]').fill('2');
  await on.locator('[name="width"]').fill('32');
  await on.locator('[name="height"]').fill('32');
  await on.getByRole('button', { name: 'Run' }).click();
  await on.locator('.run-output img').waitFor({ timeout: 30000 });
  const wide = await on.evaluate(() => document.documentElement.scrollWidth);
  assert(wide <= 390, `nothing makes the page wider than the phone: ${wide}px`);
  await checkA11y(on, 'the run result on a phone, dark');
  await screenshot(on, 'model-run-phone-dark');
});
