// The explanation methods on the page (issue 12), against a daemon serving the tiny CNN and the
// tiny MLP that run_e2e.py made: the method picker (every method's heatmap at the model's size,
// its parameters in the request, Grad-CAM's layer), the compare view (all eight methods, one
// request at a time, the server's timing, a 429 asked again), on the MLP Grad-CAM refused with the
// server's reason, on a tanh MLP guided backprop too. Environment: LOUPE_URL, LOUPE_UPLOAD (a PNG),
// LOUPE_CNN, LOUPE_MODEL (a relu MLP), LOUPE_TANH (a tanh MLP), LOUPE_EXPECT_CLASS (what the API predicts for the PNG on the CNN), LOUPE_SCREENSHOTS,
// LOUPE_CHROMIUM; NODE_PATH finds playwright-core.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { launch } = require('./browser.cjs');

const env = (k) => {
  if (!process.env[k]) throw new Error('explain.test.cjs: ' + k + ' is not set');
  return process.env[k];
};
const URL_ = env('LOUPE_URL'), UPLOAD = env('LOUPE_UPLOAD'), CNN = env('LOUPE_CNN'), MLP = env('LOUPE_MODEL');
const TANH = env('LOUPE_TANH');
const EXPECT = env('LOUPE_EXPECT_CLASS'), SHOTS = env('LOUPE_SCREENSHOTS');

const METHODS = [['gradient', 'Gradient'], ['input_x_gradient', 'Input × gradient'], ['smoothgrad', 'SmoothGrad'],
  ['integrated_gradients', 'Integrated gradients'], ['guided_backprop', 'Guided backprop'], ['gradcam', 'Grad-CAM'],
  ['guided_gradcam', 'Guided Grad-CAM'], ['occlusion', 'Occlusion']];
// What the picker's request must carry for each method (the fields' defaults); gradient is /saliency.
const PARAMS = { smoothgrad: /&samples=25&noise=0\.15(&|$)/, integrated_gradients: /&steps=32&baseline=black(&|$)/,
  occlusion: /&window=4&stride=2(&|$)/ };

async function step(name, fn) {
  const t0 = Date.now();
  process.stdout.write('  ' + name + ' ... ');
  await fn();
  process.stdout.write('ok (' + ((Date.now() - t0) / 1000).toFixed(1) + ' s)\n');
}

const upload = fs.readFileSync(UPLOAD);
async function post(p) {
  const r = await fetch(new URL(p, URL_), { method: 'POST', body: upload, headers: { 'Content-Type': 'image/png' } });
  return [r.status, await r.json()];
}

const imgLoaded = (page, sel, w, h, notSrc) => page.waitForFunction(([s, w, h, b]) => {
  const e = document.querySelector(s);
  return e && !e.hidden && e.src && e.src !== b && e.complete && e.naturalWidth === w && e.naturalHeight === h;
}, [sel, w, h, notSrc || null]);

// A hash of the pixels an <img> shows (FNV-1a over its RGBA): tells two pictures apart.
const pixels = (page, sel) => page.$eval(sel, (i) => {
  const c = document.createElement('canvas');
  c.width = i.naturalWidth;
  c.height = i.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(i, 0, 0);
  let h = 0x811c9dc5;
  for (const v of g.getImageData(0, 0, c.width, c.height).data) h = Math.imul(h ^ v, 16777619) >>> 0;
  return h;
});

// The compare view's tiles: method, caption, image size (0 without an image), or the tile's text.
const tiles = (page) => page.$$eval('#compare-grid li', (lis) => lis.map((li) => {
  const img = li.querySelector('img');
  return { method: li.dataset.method, name: li.querySelector('.name').textContent, meta: li.querySelector('.meta').textContent,
    w: img && img.complete ? img.naturalWidth : 0, h: img && img.complete ? img.naturalHeight : 0,
    src: img ? img.src : '', alt: img ? img.alt : '', text: img ? '' : li.querySelector('figure > div').textContent };
}));

async function main() {
  const models = (await (await fetch(new URL('/v1/models', URL_))).json()).models;
  const cnn = models.find((m) => m.name === CNN), mlp = models.find((m) => m.name === MLP);
  assert.ok(cnn && mlp, 'the daemon serves ' + CNN + ' and ' + MLP);
  const H = cnn.input.height, W = cnn.input.width;
  const layers = (await (await fetch(new URL('/v1/models/' + CNN + '/layers', URL_))).json()).layers;
  // The server's own default Grad-CAM layer, and another one with room for a map (at least 4x4).
  const [st, cam] = await post('/v1/models/' + CNN + '/explain?method=gradcam&format=json&invert=auto');
  assert.equal(st, 200, JSON.stringify(cam));
  const defLayer = cam.layer.index;
  const other = layers.filter((l) => l.index !== defLayer && l.type === 'relu' && l.height >= 4).pop();
  assert.ok(other, 'the tiny CNN has a ReLU at 4x4 or more');
  // The MLP's answer to Grad-CAM: the reason the page must show.
  const [st2, refused] = await post('/v1/models/' + MLP + '/explain?method=gradcam&format=json');
  assert.equal(st2, 422, JSON.stringify(refused));
  const reason = refused.error.message;
  assert.ok(reason.length > 10, 'a 422 without a reason: ' + JSON.stringify(refused));
  const [st3, refused3] = await post('/v1/models/' + TANH + '/explain?method=guided_backprop&format=json');
  assert.equal(st3, 422, JSON.stringify(refused3));
  const reasonTanh = refused3.error.message;

  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    page.setDefaultTimeout(30000);
    // Errors fail the test, except the answers a step provokes on purpose (`expected`) and
    // Chromium's console line for each of them.
    const problems = [];
    let expected = null, provoked = [];
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));
    page.on('console', (m) => {
      if (m.type() === 'error' && !(expected && /Failed to load resource/.test(m.text()))) problems.push('console: ' + m.text());
    });
    page.on('response', (r) => {
      if (r.status() < 400) return;
      if (expected && expected.test(r.url())) provoked.push(r.status());
      else problems.push(r.status() + ' ' + r.url());
    });
    // Every explanation request, with when it started and ended: the compare view asks one at a time.
    const calls = [];
    page.on('request', (r) => { if (/\/(explain|saliency)\?/.test(r.url())) calls.push({ url: r.url(), start: Date.now(), end: 0 }); });
    const ended = (r) => { const c = calls.find((x) => x.url === r.url() && !x.end); if (c) c.end = Date.now(); };
    page.on('requestfinished', ended);
    page.on('requestfailed', ended);

    await step('the CNN explains the upload; the picker offers the eight methods, all enabled', async () => {
      await page.goto(URL_ + '?model=' + CNN);
      await page.waitForSelector('#pred-class');
      await page.setInputFiles('#file', UPLOAD);
      await page.waitForFunction((c) => (document.getElementById('pred-class') || {}).textContent === c, EXPECT);
      await page.waitForFunction((n) => document.getElementById('saliency').alt.includes(n), path.basename(UPLOAD));
      await imgLoaded(page, '#saliency', 8 * W, 8 * H);
      const opts = await page.$$eval('#method option', (os) => os.map((o) => [o.value, o.disabled]));
      assert.deepEqual(opts, METHODS.map(([m]) => [m, false]));
      assert.equal(await page.getByRole('combobox', { name: 'Method', exact: true }).inputValue(), 'gradient');
      assert.equal(await page.isHidden('#method-params'), true, 'gradient has no parameters to show');
    });

    await step('each method from the picker: its request, its heatmap at the model\'s size, its alt text', async () => {
      for (const [i, [m, name]] of METHODS.entries()) {
        if (i === 0) continue; // gradient: shown already
        const before = await page.getAttribute('#saliency', 'src');
        const resp = page.waitForResponse((r) => new RegExp('/explain\\?method=' + m + '&').test(r.url()));
        if (i === 1) { // the first by keyboard: Arrow Down on the focused picker
          await page.focus('#method');
          await page.keyboard.press('ArrowDown');
        } else {
          await page.selectOption('#method', m);
        }
        const r = await resp;
        assert.equal(r.status(), 200, m);
        assert.match(r.url(), /format=png&overlay=1&scale=8/);
        if (PARAMS[m]) assert.match(r.url(), PARAMS[m]);
        assert.doesNotMatch(r.url(), /layer=/, m + ' sent a layer');
        await imgLoaded(page, '#saliency', 8 * W, 8 * H, before);
        assert.match(await page.getAttribute('#saliency', 'alt'),
          new RegExp('^' + name.replace(/[-×]/g, '.') + ' of class ' + EXPECT + ' for the uploaded image ' + path.basename(UPLOAD)));
        const shown = await page.$$eval('#method-params label:not([hidden])', (ls) => ls.map((l) => l.dataset.for));
        assert.ok(shown.every((f) => f.split(' ').includes(m)), m + ' shows ' + shown);
      }
    });

    await step('a parameter out of range: the server\'s range next to the field, which is marked invalid', async () => {
      await page.selectOption('#method', 'integrated_gradients');
      await page.waitForResponse((r) => /method=integrated_gradients/.test(r.url()));
      expected = /method=integrated_gradients.*steps=0/;
      await page.fill('#p-steps', '0');
      await page.press('#p-steps', 'Enter');
      await page.waitForSelector('#params-error:not([hidden])');
      assert.match(await page.textContent('#params-error'), /^Integrated gradients: .*steps.*1.*1024.*\.$/);
      assert.equal(await page.getAttribute('#p-steps', 'aria-invalid'), 'true');
      assert.equal(await page.getAttribute('#p-samples', 'aria-invalid'), null);
      assert.deepEqual(provoked, [400]);
      expected = null;
      provoked = [];
      const resp = page.waitForResponse((r) => /method=integrated_gradients.*steps=8&/.test(r.url()));
      await page.fill('#p-steps', '8');
      await page.press('#p-steps', 'Enter');
      assert.equal((await resp).status(), 200);
      await imgLoaded(page, '#saliency', 8 * W, 8 * H);
      await page.waitForSelector('#params-error', { state: 'hidden' });
      assert.equal(await page.getAttribute('#p-steps', 'aria-invalid'), null);
    });

    await step('Grad-CAM\'s layer: the server\'s default first, another layer changes the request and the picture', async () => {
      let resp = page.waitForResponse((r) => /method=gradcam&/.test(r.url()));
      await page.selectOption('#method', 'gradcam');
      const r0 = await resp;
      assert.doesNotMatch(r0.url(), /layer=/);
      assert.equal(r0.status(), 200);
      await imgLoaded(page, '#saliency', 8 * W, 8 * H);
      await page.waitForFunction(() => /^Grad-CAM of/.test(document.getElementById('saliency').alt));
      const px0 = await pixels(page, '#saliency');
      const sel = page.getByRole('combobox', { name: 'Grad-CAM layer', exact: true });
      assert.equal(await sel.inputValue(), '');
      assert.match(await page.textContent('#p-layer option[value=""]'), new RegExp('^default: ' + defLayer + ' '));
      assert.equal(await page.locator('#p-layer option').count(), layers.length + 1);
      const before = await page.getAttribute('#saliency', 'src');
      resp = page.waitForResponse((r) => /method=gradcam&/.test(r.url()));
      await sel.selectOption(String(other.index));
      const r1 = await resp;
      assert.match(r1.url(), new RegExp('&layer=' + other.index + '($|&)'));
      assert.equal(r1.status(), 200);
      await imgLoaded(page, '#saliency', 8 * W, 8 * H, before);
      assert.notEqual(await pixels(page, '#saliency'), px0, 'layer ' + other.index + ' shows the same picture as the default');
      assert.match(await page.getAttribute('#saliency', 'alt'), new RegExp(', layer ' + other.index + ' \\('));
      await sel.selectOption('');
    });

    await step('compare (keyboard): all eight methods side by side, one request at a time, each with the server\'s time', async () => {
      await page.selectOption('#method', 'gradient');
      await page.waitForFunction(() => document.getElementById('saliency').alt.startsWith('Saliency'));
      calls.length = 0;
      const button = page.getByRole('button', { name: 'Compare every method' });
      await button.focus();
      await page.keyboard.press('Enter');
      assert.equal(await button.getAttribute('aria-pressed'), 'true');
      await page.waitForFunction((n) => /^All \d+ methods/.test(document.getElementById('compare-status').textContent), null, { timeout: 120000 });
      const ts = await tiles(page);
      assert.deepEqual(ts.map((t) => [t.method, t.name]), METHODS);
      for (const t of ts) {
        assert.deepEqual([t.w, t.h], [W, H], t.method + ': ' + (t.text || 'not at the model\'s size'));
        assert.match(t.meta, /^\d+\.\d ms/, t.method);
        assert.match(t.alt, new RegExp(' of class ' + EXPECT + ' for the uploaded image '));
      }
      assert.match(ts[5].meta, new RegExp('layer ' + defLayer + ' \\(relu, '));
      assert.match(ts[3].meta, /32 steps from black · Δ /);
      assert.match(await page.textContent('#compare-status'), new RegExp('^All 8 methods for class ' + EXPECT + ': 8 shown in [\\d.]+ ms of server time\\.$'));
      const ex = calls.filter((c) => /\/explain\?/.test(c.url));
      assert.deepEqual(ex.map((c) => /method=(\w+)/.exec(c.url)[1]), METHODS.map(([m]) => m));
      for (const c of ex) assert.match(c.url, /format=json/);
      for (let i = 1; i < ex.length; i++) assert.ok(ex[i].start >= ex[i - 1].end, 'two compare requests at once: ' + ex[i].url);
    });
    await page.evaluate(() => document.activeElement.blur()); // no focus ring in the docs' picture
    await page.locator('#compare-card').screenshot({ path: path.join(SHOTS, 'explore-compare.png') });

    await step('compare: the Grad-CAM layer picker asks Grad-CAM and guided Grad-CAM again at that layer', async () => {
      const sel = page.getByRole('combobox', { name: 'Grad-CAM layer of the comparison', exact: true });
      assert.match(await page.textContent('#compare-layer option[value=""]'), new RegExp('^default: ' + defLayer + ' '));
      const before = await tiles(page);
      calls.length = 0;
      await sel.selectOption(String(other.index));
      await page.waitForFunction(() => /^Grad-CAM and Guided Grad-CAM for class/.test(document.getElementById('compare-status').textContent));
      assert.deepEqual(calls.map((c) => /method=(\w+)/.exec(c.url)[1]), ['gradcam', 'guided_gradcam']);
      for (const c of calls) assert.match(c.url, new RegExp('&layer=' + other.index + '($|&)'));
      const after = await tiles(page);
      for (const i of [5, 6]) {
        assert.deepEqual([after[i].w, after[i].h], [W, H]);
        assert.notEqual(after[i].src, before[i].src, after[i].method + ': the same picture at layer ' + other.index);
        assert.match(after[i].meta, new RegExp('layer ' + other.index + ' \\('));
        assert.match(after[i].alt, new RegExp(', layer ' + other.index + ': '));
      }
      for (const i of [0, 1, 2, 3, 4, 7]) assert.equal(after[i].src, before[i].src, 'compare asked ' + after[i].method + ' again');
    });

    await step('compare: a 429 is asked again after its Retry-After, and says so meanwhile', async () => {
      let refusedOnce = false;
      await page.route('**/explain?method=occlusion*', (route) => {
        if (refusedOnce) return route.continue();
        refusedOnce = true;
        return route.fulfill({ status: 429, headers: { 'Retry-After': '1', 'Content-Type': 'application/json' },
          body: JSON.stringify({ error: { code: 'too_many_requests', message: 'the heavy lane is full' } }) });
      });
      expected = /method=occlusion/;
      calls.length = 0;
      await page.selectOption('#target', String(cnn.classes.indexOf(EXPECT) === 0 ? 1 : 0));
      await page.waitForFunction(() => /asking again in 1 s/.test((document.querySelector('#compare-grid li[data-method=occlusion]') || {}).textContent));
      await page.waitForFunction(() => /^All 8 methods/.test(document.getElementById('compare-status').textContent), null, { timeout: 60000 });
      const ts = await tiles(page);
      assert.deepEqual([ts[7].w, ts[7].h], [W, H], 'occlusion after the retry: ' + ts[7].text);
      assert.equal(calls.filter((c) => /method=occlusion/.test(c.url)).length, 2);
      assert.deepEqual(provoked, [429]);
      expected = null;
      provoked = [];
      await page.unroute('**/explain?method=occlusion*');
      await page.selectOption('#target', '');
      await page.waitForFunction(() => /^All 8 methods/.test(document.getElementById('compare-status').textContent), null, { timeout: 60000 });
    });

    await step('the MLP: Grad-CAM answered with the server\'s reason, in the picker and in the compare view', async () => {
      await page.getByRole('button', { name: 'Compare every method' }).click();
      assert.equal(await page.getAttribute('#compare', 'aria-pressed'), 'false');
      assert.equal(await page.locator('#compare-grid li').count(), 0);
      await page.selectOption('#method', 'gradcam');
      expected = /\/explain\?method=(gradcam|guided_gradcam)&/;
      await page.selectOption('#model', MLP);
      await page.waitForFunction(() => /is not available/.test(document.getElementById('saliency-empty').textContent));
      assert.equal(await page.textContent('#saliency-empty'), 'Grad-CAM is not available for ' + MLP + ': ' + reason.replace(/\.$/, '') + '.');
      assert.equal(await page.isHidden('#saliency'), true);
      assert.equal(await page.getAttribute('#saliency-empty', 'role'), 'status');
      await page.getByRole('button', { name: 'Compare every method' }).click();
      await page.waitForFunction(() => /^All 8 methods/.test(document.getElementById('compare-status').textContent), null, { timeout: 60000 });
      const ts = await tiles(page);
      for (const t of ts) {
        if (t.method === 'gradcam' || t.method === 'guided_gradcam') {
          assert.equal(t.w, 0);
          assert.match(t.text, /^Not available: .{10,}\.$/, t.method);
        } else {
          assert.deepEqual([t.w, t.h], [mlp.input.width, mlp.input.height], t.method + ': ' + t.text);
        }
      }
      assert.equal(ts[5].text, 'Not available: ' + reason.replace(/\.$/, '') + '.');
      assert.match(await page.textContent('#compare-status'), /: 6 shown in .* ms of server time, 2 not shown\.$/);
      assert.deepEqual(provoked, [422, 422, 422]);
      expected = null;
      provoked = [];
      // The picker learnt it: both Grad-CAMs disabled once another method is picked, the reason under it.
      await page.selectOption('#method', 'guided_backprop');
      await imgLoaded(page, '#saliency', 8 * mlp.input.width, 8 * mlp.input.height);
      const opts = await page.$$eval('#method option', (os) => os.filter((o) => o.disabled).map((o) => o.value));
      assert.deepEqual(opts, ['gradcam', 'guided_gradcam']);
      assert.match(await page.textContent('#method-why'), new RegExp('^Not available for ' + MLP + '\\. Grad-CAM: '));
      assert.equal(await page.getAttribute('#method', 'aria-describedby'), 'method-why');
    });

    await step('a tanh MLP: guided backprop answered with the server\'s reason too, the other five shown', async () => {
      expected = /\/explain\?method=(gradcam|guided_gradcam|guided_backprop)&/;
      await page.selectOption('#model', TANH);
      // The message must name this model: the one the relu MLP left may still be there for a moment.
      await page.waitForFunction((t) => document.getElementById('saliency-empty').textContent.includes('is not available for ' + t), TANH);
      assert.equal(await page.textContent('#saliency-empty'), 'Guided backprop is not available for ' + TANH + ': ' + reasonTanh.replace(/\.$/, '') + '.');
      await page.waitForFunction((m) => /^All 8 methods/.test(document.getElementById('compare-status').textContent) &&
        document.querySelectorAll('#compare-grid img').length === 5, null, { timeout: 60000 });
      const ts = await tiles(page);
      assert.deepEqual(ts.filter((t) => t.text).map((t) => t.method), ['guided_backprop', 'gradcam', 'guided_gradcam']);
      assert.equal(ts[4].text, 'Not available: ' + reasonTanh.replace(/\.$/, '') + '.');
      assert.deepEqual(provoked, [422, 422, 422, 422]);
      expected = null;
      await page.selectOption('#method', 'gradient');
      await imgLoaded(page, '#saliency', 224, 224);
      assert.deepEqual(await page.$$eval('#method option', (os) => os.filter((o) => o.disabled).map((o) => o.value)),
        ['guided_backprop', 'gradcam', 'guided_gradcam']);
    });

    await step('every image on the page says what it shows; every control has a name', async () => {
      const bad = await page.$$eval('img', (is) => is.filter((i) => !i.hidden && !/\w{3,}.*\s\w+/.test(i.alt)).map((i) => i.id || i.src.slice(0, 40)));
      assert.deepEqual(bad, []);
      for (const [role, name] of [['combobox', 'Method'], ['combobox', 'Grad-CAM layer of the comparison'], ['button', 'Compare every method'],
        ['list', 'attribution maps of every method']]) {
        assert.equal(await page.getByRole(role, { name, exact: true }).count(), 1, role + ' ' + name);
      }
    });

    assert.deepEqual(problems, [], 'errors on the page');
  } finally {
    await browser.close();
  }
}

main().then(() => console.log('explain.test.cjs: all passed'), (e) => {
  console.error('\nFAILED: ' + (e && e.stack || e));
  process.exit(1);
});
