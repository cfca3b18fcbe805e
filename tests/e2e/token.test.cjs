// The page against a daemon started with --api-token (run_e2e.py): the model routes answer 401
// until the user gives the token in the form the page shows; then it lists and serves the model.
// Environment: LOUPE_URL, LOUPE_MODEL, LOUPE_TOKEN, LOUPE_CHROMIUM; NODE_PATH finds playwright-core.
'use strict';

const assert = require('node:assert/strict');
const { launch } = require('./browser.cjs');

async function main() {
  const url = process.env.LOUPE_URL, model = process.env.LOUPE_MODEL, token = process.env.LOUPE_TOKEN;
  assert.ok(url && model && token, 'token.test.cjs: LOUPE_URL, LOUPE_MODEL and LOUPE_TOKEN must be set');
  const browser = await launch();
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(20000);
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const statuses = [];
    page.on('response', (r) => { if (r.url().includes('/v1/models')) statuses.push(r.status()); });

    process.stdout.write('  a 401 shows the token form and says why ... ');
    await page.goto(url);
    await page.waitForSelector('#token-form:not([hidden])');
    assert.match(await page.textContent('#banner'), /Authorization: Bearer/);
    assert.deepEqual(statuses, [401]);
    assert.equal(await page.evaluate(() => document.activeElement.id), 'token');
    process.stdout.write('ok\n');

    process.stdout.write('  the token, typed and submitted with the keyboard, opens the models ... ');
    await page.keyboard.type(token);
    await page.keyboard.press('Enter');
    await page.waitForFunction((m) => document.getElementById('model').value === m, model);
    assert.ok(await page.$eval('#token-form', (f) => f.hidden));
    assert.equal(statuses[statuses.length - 1], 200);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('loupe-api-token')), token);
    process.stdout.write('ok\n');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
