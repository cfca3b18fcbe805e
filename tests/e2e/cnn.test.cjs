// The page with a real CNN (a tiny VGG trained by run_e2e.py), driven from the keyboard where a
// user could: the layer picker, the filter visualisation's animation, the feature-map grid,
// saliency, alt texts, and API errors shown as sentences next to the control that caused them.
// Environment: LOUPE_URL, LOUPE_UPLOAD (a PNG), LOUPE_CNN (the model), LOUPE_EXPECT_CLASS
// (what the API predicts for that PNG), LOUPE_SCREENSHOTS, LOUPE_CHROMIUM; NODE_PATH finds playwright-core.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { launch } = require('./browser.cjs');

const env = (k) => {
  if (!process.env[k]) throw new Error('cnn.test.cjs: ' + k + ' is not set');
  return process.env[k];
};
const URL_ = env('LOUPE_URL'), UPLOAD = env('LOUPE_UPLOAD'), CNN = env('LOUPE_CNN');
const EXPECT = env('LOUPE_EXPECT_CLASS'), SHOTS = env('LOUPE_SCREENSHOTS');

async function step(name, fn) {
  process.stdout.write('  ' + name + ' ... ');
  await fn();
  process.stdout.write('ok\n');
}

// Width and height of a PNG from its IHDR chunk.
function pngSize(buf) {
  assert.equal(buf.toString('latin1', 1, 4), 'PNG');
  return [buf.readUInt32BE(16), buf.readUInt32BE(20)];
}

async function api(p, opts) {
  const r = await fetch(new URL(p, URL_), opts);
  assert.equal(r.status, 200, p + ': ' + r.status);
  return r;
}

// Press Tab until `sel` has the focus; the number of presses it took, or a failure.
async function tabTo(page, sel, max = 60) {
  for (let n = 1; n <= max; n++) {
    await page.keyboard.press('Tab');
    if (await page.evaluate((s) => document.activeElement === document.querySelector(s), sel)) return n;
  }
  throw new Error(sel + ' not reached with ' + max + ' Tab presses');
}

// The outline that shows where the keyboard focus is, on `sel` (or the element it styles).
const outline = (page, sel) => page.$eval(sel, (e) => {
  const s = getComputedStyle(e);
  return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 1;
});

const imgLoaded = (page, id, w, h, notSrc) => page.waitForFunction(([i, w, h, b]) => {
  const e = document.getElementById(i);
  return !e.hidden && e.src && e.src !== b && e.complete && e.naturalWidth === w && e.naturalHeight === h;
}, [id, w, h, notSrc || null]);

async function main() {
  const upload = fs.readFileSync(UPLOAD);
  const layers = (await (await api('/v1/models/' + CNN + '/layers')).json()).layers;
  const convs = layers.filter((l) => l.conv);
  assert.ok(convs.length >= 2, 'the tiny CNN lists conv layers');
  // The fifth convolution (the third block's first): its filters show stripes and blobs where the
  // first layers' saturate, which makes the better screenshot.
  const conv = convs[Math.min(4, convs.length - 1)];
  const actsPng = Buffer.from(await (await api('/v1/models/' + CNN + '/activations/' + conv.index + '?scale=2&invert=auto',
    { method: 'POST', body: upload, headers: { 'Content-Type': 'image/png' } })).arrayBuffer());
  const [actsW, actsH] = pngSize(actsPng);
  const fj = await (await api('/v1/models/' + CNN + '/filters/' + conv.index + '/0?format=json&scale=4&iterations=40&every=2')).json();
  const [filtW, filtH] = pngSize(Buffer.from(fj.frames[0].png, 'base64'));
  assert.equal(fj.frames.length, 20);

  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    page.setDefaultTimeout(30000);
    // Listening from the start: Playwright intercepts the file chooser only once someone listens,
    // and a listener added just before the key press can miss it.
    const choosers = [];
    page.on('filechooser', (c) => choosers.push(c));
    // Errors fail the test, except the answers a step provokes on purpose (and Chromium's console
    // line for each of them).
    const problems = [];
    let expected = null; // RegExp of the URL a step provokes an error answer from
    let provoked = 0;
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      if (expected && /Failed to load resource/.test(m.text())) return;
      problems.push('console: ' + m.text());
    });
    page.on('response', (r) => {
      if (r.status() < 400) return;
      if (expected && expected.test(r.url())) provoked++;
      else problems.push(r.status() + ' ' + r.url());
    });

    await step('the page lists the CNN and its layers from GET /v1/models/{m}/layers', async () => {
      await page.goto(URL_ + '?model=' + CNN);
      await page.waitForSelector('#cnn-controls:not([hidden])');
      const opts = await page.$$eval('#layer option', (os) => os.map((o) => Number(o.value)));
      assert.deepEqual(opts, layers.map((l) => l.index));
      for (const c of convs) assert.ok(opts.includes(c.index));
      assert.equal(Number(await page.inputValue('#layer')), convs[0].index, 'the first conv is picked');
      assert.match(await page.textContent('#model-info'), /torchscript · input 1×32×32/);
      await page.waitForSelector('#pred-class'); // the first test image, the page's empty state
    });

    await step('keyboard only: Tab to the file input, Space opens the chooser, the prediction is the API\'s', async () => {
      await page.focus('body');
      const n = await tabTo(page, '#file');
      assert.ok(n <= 10, 'the file input is ' + n + ' Tab presses away');
      assert.ok(await outline(page, 'label[for=file]'), 'the focused file input shows no focus outline');
      await page.keyboard.press('Space');
      for (let i = 0; i < 100 && !choosers.length; i++) await page.waitForTimeout(100);
      assert.equal(choosers.length, 1, 'Space on the file input opened no file chooser');
      await choosers.pop().setFiles(UPLOAD);
      await page.waitForFunction((n) => document.getElementById('input-status').textContent.startsWith(n), path.basename(UPLOAD));
      await page.waitForFunction((c) => { const e = document.getElementById('pred-class'); return e && e.textContent === c; }, EXPECT);
      await page.waitForFunction((n) => document.getElementById('saliency').alt.includes(n), path.basename(UPLOAD));
      await imgLoaded(page, 'saliency', 256, 256);
      assert.equal(await page.getAttribute('#saliency', 'alt'),
        'Saliency of class ' + EXPECT + ' for the uploaded image ' + path.basename(UPLOAD) +
        ' (bright pixels change that score most)');
    });

    await step('keyboard only: a top-k bar is a button; Enter explains that class, the alt text follows', async () => {
      const before = await page.getAttribute('#saliency', 'src');
      await tabTo(page, '#bars .bar:nth-child(2)');
      assert.ok(await outline(page, '#bars .bar:nth-child(2)'), 'the focused bar shows no focus outline');
      const cls = await page.textContent('#bars .bar:nth-child(2) .name');
      await page.keyboard.press('Enter');
      await imgLoaded(page, 'saliency', 256, 256, before);
      assert.equal(await page.getAttribute('#saliency', 'alt'),
        'Saliency of class ' + cls + ' for the uploaded image ' + path.basename(UPLOAD) +
        ' (bright pixels change that score most)');
      await page.selectOption('#target', '');
    });

    await step('keyboard only: a test image of the gallery (Tab, Enter) predicts what the API predicts for it', async () => {
      const samples = (await (await api('/v1/samples?n=16&seed=1')).json()).samples;
      await page.waitForFunction((n) => document.querySelectorAll('#samples button').length === n, samples.length);
      const s = samples[2];
      const want = (await (await api('/v1/models/' + CNN + '/predict?invert=false',
        { method: 'POST', body: Buffer.from(s.image, 'base64'), headers: { 'Content-Type': 'image/png' } })).json()).class;
      await tabTo(page, '#samples li:nth-child(3) button');
      assert.ok(await outline(page, '#samples li:nth-child(3) button'), 'the focused test image shows no focus outline');
      const before = await page.getAttribute('#saliency', 'src');
      await page.keyboard.press('Enter');
      await page.waitForFunction((c) => { const e = document.getElementById('pred-class'); return e && e.textContent === c; }, want);
      await imgLoaded(page, 'saliency', 256, 256, before);
      assert.match(await page.getAttribute('#saliency', 'alt'), new RegExp('^Saliency of class ' + want.replace(/[/]/g, '\\/') +
        ' for test image ' + s.index + ': '));
      // Back to the upload for the steps below.
      await page.setInputFiles('#file', UPLOAD);
      await page.selectOption('#invert', 'auto');
      await page.waitForFunction((n) => document.getElementById('saliency').alt.includes(n), path.basename(UPLOAD));
    });

    await step('the filter visualisation plays its frames (Enter on the button), Space pauses it', async () => {
      await page.selectOption('#layer', String(conv.index));
      await page.fill('#filter', '0');
      await page.focus('#show-filter');
      await page.keyboard.press('Enter');
      await imgLoaded(page, 'filter-img', filtW, filtH);
      const seen = new Set();
      const alts = new Set();
      const t0 = Date.now();
      while (Date.now() - t0 < 2000) {
        seen.add(await page.getAttribute('#filter-img', 'src'));
        alts.add(await page.getAttribute('#filter-img', 'alt'));
        await page.waitForTimeout(100);
      }
      assert.ok(seen.size >= 4, 'the animation showed ' + seen.size + ' distinct frames in 2 s');
      for (const a of alts) {
        assert.match(a, new RegExp('^Filter 0 of layer ' + conv.index + ' \\(' + conv.name.replace('.', '\\.') +
          ', conv2d\\): the input optimised to excite it, at iteration \\d+ of 40$'));
      }
      assert.ok(await page.$eval('#filter-img', (i) => i.complete && i.naturalWidth > 0));
      await page.focus('#play-filter');
      await page.keyboard.press('Space');
      assert.equal(await page.textContent('#play-filter'), 'Play');
      const a = await page.getAttribute('#filter-img', 'src');
      await page.waitForTimeout(700);
      assert.equal(await page.getAttribute('#filter-img', 'src'), a, 'a paused animation still moves');
    });

    await step('the feature-map grid of the input has the API\'s size and says what it shows', async () => {
      await page.focus('#show-acts');
      await page.keyboard.press('Enter');
      await imgLoaded(page, 'acts-img', actsW, actsH);
      assert.equal(await page.getAttribute('#acts-img', 'alt'), 'Feature maps of layer ' + conv.index + ' (' + conv.name +
        ', conv2d) for the uploaded image ' + path.basename(UPLOAD) + ', ' + conv.channels + ' tiles, one per channel');
    });
    await page.screenshot({ path: path.join(SHOTS, 'explore-cnn.png'), fullPage: true });

    await step('an invalid filter index: the API\'s error as a sentence next to the filter field', async () => {
      expected = /\/filters\/\d+\/999\?/;
      await page.fill('#filter', '999');
      await page.focus('#show-filter');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#cnn-error:not([hidden])');
      const msg = await page.textContent('#cnn-error');
      assert.match(msg, new RegExp('^Filter 999 of layer ' + conv.index + ' .* cannot be visualised: .{10,}\\.$'));
      assert.equal(await page.getAttribute('#filter', 'aria-invalid'), 'true');
      assert.equal(await page.isHidden('#banner'), true, 'the error went to the top banner');
      assert.equal(provoked, 1);
      await page.fill('#filter', '1');
      await page.focus('#show-filter');
      await page.keyboard.press('Enter');
      await imgLoaded(page, 'filter-img', filtW, filtH);
      assert.equal(await page.isHidden('#cnn-error'), true);
      assert.equal(await page.getAttribute('#filter', 'aria-invalid'), null);
      expected = null;
    });

    await step('a non-image upload: a sentence next to the file input, from the client or the API', async () => {
      await page.setInputFiles('#file', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not an image') });
      await page.waitForSelector('#input-error:not([hidden])');
      assert.equal(await page.textContent('#input-error'), 'notes.txt is not a PNG or JPEG: choose a PNG or JPEG image.');
      expected = /\/predict\?/;
      await page.setInputFiles('#file', { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('not an image either') });
      await page.waitForFunction(() => /notes\.png/.test(document.getElementById('input-error').textContent));
      assert.match(await page.textContent('#input-error'), /^The server could not use the uploaded image notes\.png: .{10,}\.$/);
      assert.equal(await page.getAttribute('#file', 'aria-invalid'), 'true');
      assert.equal(provoked, 2);
      expected = null;
      await page.setInputFiles('#file', UPLOAD);
      await page.waitForFunction((c) => { const e = document.getElementById('pred-class'); return e && e.textContent === c; }, EXPECT);
      assert.equal(await page.isHidden('#input-error'), true);
    });

    await step('keyboard only: the tabs and a report open with Enter', async () => {
      await page.focus('#tabs button[data-tab=reports]');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#tab-reports:not([hidden])');
      await page.focus('#tabs button[data-tab=explore]');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#tab-explore:not([hidden])');
    });

    await step('every image on the page says what it shows', async () => {
      const bad = await page.$$eval('img', (is) => is.filter((i) => !i.hidden && !/\w{3,}.*\s\w+/.test(i.alt)).map((i) => i.id || i.src));
      assert.deepEqual(bad, []);
    });

    assert.deepEqual(problems, [], 'errors on the page');
  } finally {
    await browser.close();
  }
}

main().then(() => console.log('cnn.test.cjs: all passed'), (e) => {
  console.error('\nFAILED: ' + (e && e.stack || e));
  process.exit(1);
});
