// The browser page in headless Chromium, against a live daemon that run_e2e.py started.
// Environment: LOUPE_URL, LOUPE_UPLOAD (a PNG), LOUPE_MODEL, LOUPE_EXPECT_CLASS (what the API
// predicts for that PNG), LOUPE_SCREENSHOTS (a folder), LOUPE_CHROMIUM; NODE_PATH finds playwright-core.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { launch } = require('./browser.cjs');

const env = (k) => {
  if (!process.env[k]) throw new Error('page.test.cjs: ' + k + ' is not set');
  return process.env[k];
};
const URL_ = env('LOUPE_URL'), UPLOAD = env('LOUPE_UPLOAD'), MODEL = env('LOUPE_MODEL');
const EXPECT = env('LOUPE_EXPECT_CLASS'), SHOTS = env('LOUPE_SCREENSHOTS');

// Every step says what it checks, so a failure names it.
async function step(name, fn) {
  process.stdout.write('  ' + name + ' ... ');
  await fn();
  process.stdout.write('ok\n');
}

// Fail on page errors, console errors and any answer >= 400 (the expected ones aside).
function watch(page, allowed) {
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => { if (m.type() === 'error' && !allowed(m.text())) problems.push('console: ' + m.text()); });
  page.on('response', (r) => { if (r.status() >= 400 && !allowed(r.url())) problems.push(r.status() + ' ' + r.url()); });
  return problems;
}

// Fraction of non-background pixels of a canvas (it was drawn on).
const inked = (page, sel) => page.$eval(sel, (c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n / (d.length / 4);
});

async function main() {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems = watch(page, () => false);
    page.setDefaultTimeout(20000);

    // A training in progress, as train_vgg.py --status writes it into the store (<store>/.training/).
    const statusDir = path.join(env('LOUPE_MODELS'), '.training');
    const statusFile = path.join(statusDir, 'vgg-e2e.json');
    fs.mkdirSync(statusDir, { recursive: true });
    const now = Date.now() / 1000;
    fs.writeFileSync(statusFile, JSON.stringify({ name: 'vgg-e2e', phase: 'training', epoch: 2, epochs: 8,
      progress: 0.25, eta_seconds: 240, started: now - 60, updated: now, pid: process.pid }));

    await step('the page loads and lists the model', async () => {
      await page.goto(URL_);
      assert.equal(await page.title(), 'Loupe');
      await page.waitForFunction((m) => document.getElementById('model').value === m, MODEL);
      assert.match(await page.textContent('#model-info'), /mlp · relu .* test accuracy \d+\.\d+%/);
    });

    await step('a training in progress shows in the header, and goes when it ends', async () => {
      await page.waitForSelector('#train-progress:not([hidden])');
      assert.equal(await page.textContent('#train-progress'), 'Training vgg-e2e…: epoch 2/8, ready in about 4 min');
      fs.unlinkSync(statusFile);  // the trainer removes its file when it ends
      await page.waitForSelector('#train-progress', { state: 'hidden', timeout: 15000 });
    });

    await step('the empty state is a test image: a gallery click (keyboard) predicts it and draws its heatmap', async () => {
      await page.waitForFunction(() => document.querySelectorAll('#samples button').length === 16);
      // On load the first sample is the input: not a black canvas and a broken image.
      await page.waitForSelector('#samples button[aria-pressed="true"]');
      await page.waitForSelector('#pred-class');
      assert.ok(await inked(page, '#draw') > 0.05);
      for (const alt of await page.$$eval('#samples img', (is) => is.map((i) => i.alt)))
        assert.match(alt, /^Test image \d+: (T-shirt\/top|Trouser|Pullover|Dress|Coat|Sandal|Shirt|Sneaker|Bag|Ankle boot)$/);
      const thumb = page.locator('#samples button').nth(5);
      const alt = await thumb.locator('img').getAttribute('alt');
      const before = await page.getAttribute('#saliency', 'src');
      await thumb.focus();
      await page.keyboard.press('Enter');
      await page.waitForFunction((a) => document.getElementById('input-status').textContent === a, alt);
      assert.equal(await thumb.getAttribute('aria-pressed'), 'true');
      // What the API says for that very PNG, sent as the page sends it.
      const want = await page.evaluate(async (args) => {
        const src = document.querySelectorAll('#samples img')[5].src;
        const body = await (await fetch(src)).blob();
        const r = await fetch('/v1/models/' + args.m + '/predict?invert=false', { method: 'POST', body, headers: { 'Content-Type': 'image/png' } });
        return (await r.json()).class;
      }, { m: MODEL });
      await page.waitForFunction((w) => (document.getElementById('pred-class') || {}).textContent === w, want);
      await page.waitForFunction((b) => {
        const i = document.getElementById('saliency');
        return !i.hidden && i.src !== b && i.complete && i.naturalWidth === 224;
      }, before);
    });

    await step('the model\'s mistakes: a click shows the wrong class the list names', async () => {
      await page.click('#show-mistakes');
      await page.waitForFunction(() => document.querySelectorAll('#mistakes button').length > 0, null, { timeout: 120000 });
      assert.match(await page.textContent('#mistakes-status'), /gets \d+ of 10000 wrong/);
      const img = page.locator('#mistakes img').first();
      const alt = await img.getAttribute('alt');
      const m = /^Test image \d+: (.+), predicted (.+) \(\d+%\)$/.exec(alt);
      assert.ok(m, alt);
      assert.notEqual(m[1], m[2]);
      await page.locator('#mistakes button').first().click();
      await page.waitForFunction((a) => document.getElementById('input-status').textContent === a, alt);
      await page.waitForFunction((w) => (document.getElementById('pred-class') || {}).textContent === w, m[2]);
      await page.screenshot({ path: path.join(SHOTS, 'explore-gallery.png'), fullPage: true });
    });

    await step('uploading a PNG shows the prediction, top-k bars and entropy', async () => {
      await page.setInputFiles('#file', UPLOAD);
      await page.waitForSelector('#pred-class');
      assert.equal(await page.textContent('#pred-class'), EXPECT);
      assert.equal(await page.locator('#bars .bar').count(), 10);
      assert.equal(await page.textContent('#bars .bar.top .name'), EXPECT);
      assert.match(await page.textContent('#entropy-text'), /Entropy of the prediction: \d+\.\d{3} nats/);
      assert.match(await page.textContent('#input-status'), /boot\.png/);
    });

    await step('the saliency heatmap appears (28x28 at scale 8)', async () => {
      await page.waitForFunction(() => {
        const i = document.getElementById('saliency');
        return !i.hidden && i.complete && i.naturalWidth === 224 && i.naturalHeight === 224;
      });
    });

    await step('clicking a bar explains that class', async () => {
      const before = await page.getAttribute('#saliency', 'src');
      const second = page.locator('#bars .bar').nth(1);
      const idx = await second.getAttribute('data-index');
      await second.click();
      await page.waitForFunction((b) => {
        const i = document.getElementById('saliency');
        return i.src !== b && i.complete && i.naturalWidth === 224;
      }, before);
      assert.equal(await page.inputValue('#target'), idx);
      assert.equal(await page.getAttribute('#bars .bar.target', 'data-index'), idx);
      await page.selectOption('#target', '');
    });

    await step('the CNN card stays hidden for an MLP', async () => {
      assert.equal(await page.isHidden('#cnn-card'), true);
    });

    await page.screenshot({ path: path.join(SHOTS, 'explore.png'), fullPage: true });

    await step('drawing with the mouse predicts the drawing', async () => {
      await page.click('#clear');
      assert.equal(await page.textContent('#prediction'), 'Draw or upload an image.');
      const box = await page.locator('#draw').boundingBox();
      // A pair of trousers: two legs from a waistband.
      await page.mouse.move(box.x + 90, box.y + 40);
      await page.mouse.down();
      await page.mouse.move(box.x + 190, box.y + 40, { steps: 8 });
      await page.mouse.up();
      for (const x of [100, 180]) {
        await page.mouse.move(box.x + x, box.y + 40);
        await page.mouse.down();
        await page.mouse.move(box.x + x, box.y + 250, { steps: 12 });
        await page.mouse.up();
      }
      await page.waitForFunction(() => document.getElementById('input-status').textContent.startsWith('drawn'));
      await page.waitForSelector('#pred-class');
      assert.ok((await page.textContent('#pred-class')).length > 0);
      await page.waitForFunction(() => {
        const i = document.getElementById('saliency');
        return !i.hidden && i.complete && i.naturalWidth === 224;
      });
    });
    await page.screenshot({ path: path.join(SHOTS, 'explore-drawn.png'), fullPage: true });

    await step('dropping a file on the canvas predicts that file again', async () => {
      const b64 = fs.readFileSync(UPLOAD).toString('base64');
      const dt = await page.evaluateHandle((data) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const d = new DataTransfer();
        d.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
        return d;
      }, b64);
      await page.dispatchEvent('#drop', 'drop', { dataTransfer: dt });
      await page.waitForFunction(() => /dropped\.png/.test(document.getElementById('input-status').textContent));
      await page.waitForFunction((c) => {
        const e = document.getElementById('pred-class');
        return e && e.textContent === c;
      }, EXPECT);
    });

    await step('the Training tab draws the curves and the confusion matrix', async () => {
      await page.click('#tabs button[data-tab=training]');
      await page.waitForFunction(() => /1 epoch, test accuracy/.test(document.getElementById('training-status').textContent));
      assert.ok(await inked(page, '#loss-chart') > 0.005, 'the loss chart is blank');
      assert.ok(await inked(page, '#acc-chart') > 0.005, 'the accuracy chart is blank');
      assert.ok(await inked(page, '#confusion') > 0.2, 'the confusion matrix is blank');
      assert.equal(await page.locator('#class-table tr').count(), 11);
      assert.equal(new URL(page.url()).hash, '#training');
    });
    await page.screenshot({ path: path.join(SHOTS, 'training.png'), fullPage: true });

    await step('the Reports tab lists the report and shows its markdown and figure', async () => {
      await page.click('#tabs button[data-tab=reports]');
      await page.waitForSelector('#report-list li[data-name="seed-reproduction-quick"] .badge');
      await page.waitForSelector('#report-view h1');
      assert.equal(await page.textContent('#report-view h1'), 'Reproduction of the seed report (quick)');
      await page.waitForFunction(() => {
        const imgs = [...document.querySelectorAll('#report-view img')];
        return imgs.length === 1 && imgs.every((i) => i.complete && i.naturalWidth === 16);
      });
      assert.match(await page.textContent('#report-view'), /KL\(y ‖ p\)/);
    });
    await page.screenshot({ path: path.join(SHOTS, 'reports.png'), fullPage: true });

    await step('a reload on #reports opens that tab', async () => {
      await page.reload();
      await page.waitForSelector('#report-view h1');
      assert.equal(await page.isHidden('#tab-explore'), true);
    });

    assert.deepEqual(problems, [], 'errors on the page');
    await page.close();

    // A CNN whose layer routes are missing on this server: the page says so and keeps working.
    // The model list is rewritten in the browser to add one; the server answers 404 for it.
    const page2 = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems2 = watch(page2, (u) => /fake-cnn|404|Not Found/.test(u));
    await step('a CNN without the layer routes degrades gracefully', async () => {
      await page2.route('**/v1/models', async (route) => {
        const r = await route.fetch();
        const j = await r.json();
        j.models.push(Object.assign({}, j.models[0], { name: 'fake-cnn', kind: 'torchscript', mlp: undefined }));
        await route.fulfill({ response: r, json: j });
      });
      await page2.goto(URL_ + '?model=fake-cnn');
      await page2.waitForFunction(() => document.getElementById('model').value === 'fake-cnn');
      await page2.waitForSelector('#cnn-card:not([hidden])');
      await page2.waitForFunction(() => /not available on this server/.test(document.getElementById('cnn-status').textContent));
      assert.equal(await page2.isHidden('#cnn-controls'), true);
      await page2.selectOption('#model', MODEL);
      await page2.waitForSelector('#cnn-card[hidden]', { state: 'attached' });
    });
    assert.deepEqual(problems2, [], 'errors on the page (CNN case)');
  } finally {
    await browser.close();
  }
}

main().then(() => console.log('page.test.cjs: all passed'), (e) => {
  console.error('\nFAILED: ' + (e && e.stack || e));
  process.exit(1);
});
