// Loupe's browser page: models, prediction, saliency, layers, training curves and reports,
// all from the daemon's own API (docs/api.md). No build step, no external assets.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;

  const state = {
    models: [],        // GET /v1/models entries
    model: null,       // the chosen entry
    detail: null,      // GET /v1/models/{m} of the chosen model (loaded with the Training tab)
    source: null,      // Blob sent to the image routes: the uploaded file or the drawn canvas as PNG
    drawn: false,      // the canvas has strokes (the source is the canvas)
    sourceName: '',    // the uploaded file's name, for alt texts and errors
    pred: null,        // the latest prediction of the source
    anim: null,        // the filter visualisation playing: {frames, i, timer, what, iterations}
    target: '',        // saliency class index as a string, '' = predicted
    urls: {},          // object URLs per <img> id, revoked when replaced
    run: 0,            // sequence number: only the latest analysis writes the page
    reportsLoaded: false,
  };

  // ==== HTTP ====

  // fetch that turns an error answer into an Error with the API's message and the status.
  // With --api-token the model routes answer 401 until the page sends the token: the user
  // types it once, the tab keeps it (sessionStorage), every call sends it.
  const TOKEN_KEY = 'loupe-api-token';
  async function api(path, opts) {
    opts = Object.assign({}, opts);
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) opts.headers = Object.assign({}, opts.headers, { Authorization: 'Bearer ' + token });
    const r = await fetch(path, opts);
    if (r.status === 401 && /^Bearer/.test(r.headers.get('WWW-Authenticate') || '') && !path.startsWith('/v1/admin')) {
      $('token-form').hidden = false;
      $('token').focus();
    }
    if (!r.ok) {
      let msg = r.status + ' ' + r.statusText;
      try {
        const j = await r.json();
        if (j && j.error) msg = typeof j.error === 'string' ? j.error : j.error.message || msg;
      } catch (e) { /* not JSON */ }
      const err = new Error(msg);
      err.status = r.status;
      err.retryAfter = r.headers.get('Retry-After');
      throw err;
    }
    return r;
  }

  const getJSON = async (path) => (await api(path)).json();

  function setImage(id, blob) {
    const img = $(id);
    if (state.urls[id]) URL.revokeObjectURL(state.urls[id]);
    state.urls[id] = blob ? URL.createObjectURL(blob) : null;
    if (blob) img.src = state.urls[id];
    else img.removeAttribute('src');
    img.hidden = !blob;
  }

  function banner(text) {
    const b = $('banner');
    b.textContent = text || '';
    b.hidden = !text;
  }

  // An error as a sentence next to the control that caused it; the controls that name the element
  // in aria-describedby are marked invalid while it shows. '' clears it.
  function fieldError(id, text) {
    const p = $(id);
    p.textContent = text || '';
    p.hidden = !text;
    for (const c of document.querySelectorAll('[aria-describedby~="' + id + '"]')) {
      if (text) c.setAttribute('aria-invalid', 'true');
      else c.removeAttribute('aria-invalid');
    }
  }

  // A message ended with a full stop, its words as they are (a server's message may begin with a name).
  const period = (s) => (s = String(s).trim(), /[.!?]$/.test(s) ? s : s + '.');

  const sentence = (s) => {
    s = String(s).trim();
    s = s.charAt(0).toUpperCase() + s.slice(1);
    return /[.!?]$/.test(s) ? s : s + '.';
  };

  // What the image routes were given, in words (alt texts, errors).
  const inputText = () => state.drawn ? 'the drawn image' :
    state.source instanceof File ? 'the uploaded image ' + state.sourceName :
    state.sourceName ? state.sourceName.charAt(0).toLowerCase() + state.sourceName.slice(1) : 'the current input';

  // A div that acts as a button: focusable, Enter and Space click it.
  function pressable(e, label, onPress) {
    e.setAttribute('role', 'button');
    e.tabIndex = 0;
    if (label) e.setAttribute('aria-label', label);
    e.addEventListener('click', onPress);
    e.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') {
        ev.preventDefault();
        onPress();
      }
    });
    return e;
  }

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }

  const pct = (v, d = 1) => (v === null || v === undefined || !isFinite(v) ? '—' : (100 * v).toFixed(d) + '%');

  // ==== Tabs ====

  function showTab(name) {
    for (const b of document.querySelectorAll('#tabs button')) b.setAttribute('aria-selected', String(b.dataset.tab === name));
    for (const s of document.querySelectorAll('.tab')) s.hidden = s.id !== 'tab-' + name;
    if (location.hash !== '#' + name) history.replaceState(null, '', '#' + name);
    if (name === 'training') loadTraining();
    if (name === 'reports') loadReports();
  }

  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token').value);
    $('token').value = '';
    $('token-form').hidden = true;
    banner('');
    loadModels();
  });

  // ==== Models ====

  // keep: the model to select when it is still there (a refresh), else ?model= or the default.
  async function loadModels(keep) {
    let list;
    try {
      list = await getJSON('/v1/models');
    } catch (e) {
      banner('Cannot list the models: ' + e.message);
      return;
    }
    state.models = list.models || [];
    unavailable = {}; // a reload may have replaced a model
    const sel = $('model');
    sel.textContent = '';
    for (const m of state.models) sel.append(el('option', { value: m.name }, m.name));
    if (!state.models.length) {
      banner('No model is loaded: train one (loupe train-mlp --out models/NAME) and reload the daemon.');
      sel.append(el('option', { value: '' }, '(none)'));
      return;
    }
    const want = keep || new URLSearchParams(location.search).get('model');
    sel.value = state.models.some((m) => m.name === want) ? want : list.default || state.models[0].name;
    selectModel(sel.value);
  }

  function describe(m) {
    const parts = [m.kind];
    if (m.mlp) parts.push(m.mlp.activation, (m.mlp.sizes || []).join('-'));
    else if (m.input) parts.push('input ' + [m.input.channels, m.input.height, m.input.width].join('×'));
    if (m.parameters) parts.push(m.parameters.toLocaleString('en') + ' parameters');
    if (m.test_accuracy !== null && m.test_accuracy !== undefined) parts.push('test accuracy ' + pct(m.test_accuracy, 2));
    return parts.filter(Boolean).join(' · ');
  }

  function selectModel(name) {
    state.model = state.models.find((m) => m.name === name) || null;
    state.detail = null;
    if (!state.model) return;
    $('model-info').textContent = describe(state.model);
    const inp = state.model.input || {};
    $('saliency-size').textContent = inp.height ? inp.height + '×' + inp.width : '';
    const t = $('target');
    t.textContent = '';
    t.append(el('option', { value: '' }, 'the predicted class'));
    (state.model.classes || []).forEach((c, i) => t.append(el('option', { value: String(i) }, c)));
    state.target = '';
    // Occlusion's window fits the input; the stride may reach across it.
    $('p-window').max = String(Math.min(inp.height || 28, inp.width || 28));
    $('p-stride').max = String(Math.max(inp.height || 28, inp.width || 28));
    if (whyNot($('method').value)) $('method').value = 'gradient';
    refreshMethods();
    showParams();
    fieldError('params-error', '');
    setupCnn();
    if (!$('tab-training').hidden) loadTraining();
    analyse();
  }

  // ==== Input: drawing, upload, drop ====

  const canvas = $('draw');
  const ctx = canvas.getContext('2d');

  function clearCanvas() {
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, 28, 28);
    state.drawn = false;
  }

  function canvasPoint(ev) {
    const r = canvas.getBoundingClientRect();
    return [(ev.clientX - r.left) * 28 / r.width, (ev.clientY - r.top) * 28 / r.height];
  }

  let last = null;
  function stroke(ev) {
    const p = canvasPoint(ev);
    ctx.strokeStyle = '#fff';
    ctx.fillStyle = '#fff';
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
    ctx.lineWidth = Number($('brush').value);
    ctx.beginPath();
    if (last) {
      ctx.moveTo(last[0], last[1]);
      ctx.lineTo(p[0], p[1]);
      ctx.stroke();
    } else {
      ctx.arc(p[0], p[1], ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fill();
    }
    last = p;
  }

  canvas.addEventListener('pointerdown', (ev) => {
    if (!state.drawn) clearCanvas(); // drawing over an uploaded preview starts a new drawing
    state.drawn = true;
    canvas.setPointerCapture(ev.pointerId);
    last = null;
    stroke(ev);
  });
  canvas.addEventListener('pointermove', (ev) => { if (last) stroke(ev); });
  const endStroke = () => {
    if (!last) return;
    last = null;
    useCanvas();
  };
  canvas.addEventListener('pointerup', endStroke);
  canvas.addEventListener('pointercancel', endStroke);

  function useCanvas() {
    canvas.toBlob((blob) => {
      state.source = blob;
      state.sourceName = '';
      fieldError('input-error', '');
      $('input-status').textContent = 'drawn, 28×28';
      analyse();
    }, 'image/png');
  }

  async function useFile(file) {
    if (!file) return;
    if (!/^image\/(png|jpeg)$/.test(file.type) && !/\.(png|jpe?g)$/i.test(file.name)) {
      fieldError('input-error', file.name + ' is not a PNG or JPEG: choose a PNG or JPEG image.');
      return;
    }
    fieldError('input-error', '');
    state.source = file;
    state.sourceName = file.name;
    state.drawn = false;
    $('input-status').textContent = file.name + ' (' + Math.ceil(file.size / 1024) + ' KB)';
    // Preview: the image fitted into the 28×28 canvas. The server gets the file as it is.
    try {
      const bmp = await createImageBitmap(file);
      const s = Math.min(28 / bmp.width, 28 / bmp.height);
      const w = bmp.width * s, h = bmp.height * s;
      ctx.fillStyle = '#000';
      ctx.fillRect(0, 0, 28, 28);
      ctx.imageSmoothingQuality = 'high';
      ctx.drawImage(bmp, (28 - w) / 2, (28 - h) / 2, w, h);
    } catch (e) { /* the server will say what is wrong with it */ }
    analyse();
  }

  $('file').addEventListener('change', (ev) => useFile(ev.target.files[0]));
  $('clear').addEventListener('click', () => {
    clearCanvas();
    state.source = null;
    state.sourceName = '';
    fieldError('input-error', '');
    $('file').value = '';
    $('input-status').textContent = '';
    resetResults();
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    useFile(ev.dataTransfer.files[0]);
  });
  // Dropping anywhere else must not navigate away from the page.
  window.addEventListener('dragover', (ev) => ev.preventDefault());
  window.addEventListener('drop', (ev) => ev.preventDefault());
  $('invert').addEventListener('change', analyse);
  $('target').addEventListener('change', (ev) => { state.target = ev.target.value; saliency(state.run); runCompare(); markTarget(); });

  // ==== Test images: samples and the model's mistakes (GET /v1/samples, /v1/models/{m}/mistakes) ====

  // An API error as a sentence in the <p> next to the control that caused it; '' clears it.
  function galleryError(id, text) {
    const p = $(id);
    text = String(text || '').trim();
    if (text && !/[.!?]$/.test(text)) text += '.';
    p.textContent = text ? text.charAt(0).toUpperCase() + text.slice(1) : '';
    p.hidden = !text;
  }

  // One test image as a button: its alt text says what it shows; a click analyses it.
  function thumb(s, alt, listId) {
    const b = el('button', { type: 'button', 'aria-pressed': 'false', 'data-index': String(s.index), title: alt },
      el('img', { src: 'data:image/png;base64,' + s.image, alt: alt, width: '28', height: '28' }));
    b.addEventListener('click', () => {
      for (const o of document.querySelectorAll('.thumbs button[aria-pressed="true"]')) o.setAttribute('aria-pressed', 'false');
      b.setAttribute('aria-pressed', 'true');
      useSample(s, alt);
    });
    return el('li', {}, b);
  }

  // Make a test image the input, as an upload of its PNG would; Fashion-MNIST is light on dark,
  // so the image goes as it is (invert: no).
  async function useSample(s, what) {
    const bytes = Uint8Array.from(atob(s.image), (c) => c.charCodeAt(0));
    const blob = new Blob([bytes], { type: 'image/png' });
    state.source = blob;
    state.drawn = false;
    if ('sourceName' in state) state.sourceName = what;
    $('file').value = '';
    $('invert').value = 'false';
    $('input-status').textContent = what;
    try {
      const bmp = await createImageBitmap(blob);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(bmp, 0, 0, 28, 28);
    } catch (e) { /* the preview only */ }
    analyse();
  }

  const sampleAlt = (s) => 'Test image ' + s.index + ': ' + s.class;

  // first: the page's first load: with nothing drawn or uploaded yet, the first sample becomes the input.
  async function loadSamples(first) {
    const cls = $('sample-class').value;
    const seed = first ? 1 : Math.floor(Math.random() * 2 ** 32);
    const list = $('samples');
    try {
      const r = await getJSON('/v1/samples?n=16&seed=' + seed + (cls ? '&class=' + enc(cls) : ''));
      galleryError('samples-error', '');
      list.textContent = '';
      for (const s of r.samples) list.append(thumb(s, sampleAlt(s), 'samples'));
      if (first && !state.source && !state.drawn && r.samples.length) list.querySelector('button').click();
    } catch (e) {
      list.textContent = '';
      galleryError('samples-error', 'No test images: ' + e.message);
    }
  }

  async function loadMistakes() {
    const list = $('mistakes');
    if (!state.model) return;
    const name = state.model.name;
    const btn = $('show-mistakes');
    btn.disabled = true;
    $('mistakes-status').textContent = 'classifying the 10,000 test images…';
    galleryError('mistakes-error', '');
    try {
      const r = await getJSON('/v1/models/' + enc(name) + '/mistakes?n=24');
      if (!state.model || state.model.name !== name) return;
      list.textContent = '';
      for (const m of r.mistakes) {
        const alt = 'Test image ' + m.index + ': ' + m.class + ', predicted ' + m.predicted_class + ' (' +
          (100 * m.probability).toFixed(0) + '%)';
        list.append(thumb(m, alt, 'mistakes'));
      }
      $('mistakes-status').textContent = name + ' gets ' + r.wrong + ' of ' + r.total + ' wrong; the first ' + r.count + ':';
    } catch (e) {
      $('mistakes-status').textContent = '';
      galleryError('mistakes-error', 'The mistakes could not be listed: ' + e.message +
        (e.retryAfter ? ' (try again in ' + e.retryAfter + ' s)' : ''));
    } finally {
      btn.disabled = false;
    }
  }

  $('more-samples').addEventListener('click', () => loadSamples(false));
  $('sample-class').addEventListener('change', () => loadSamples(false));
  $('show-mistakes').addEventListener('click', loadMistakes);
  // Another model has other mistakes: the list is asked for again.
  $('model').addEventListener('change', () => {
    $('mistakes').textContent = '';
    $('mistakes-status').textContent = '';
    galleryError('mistakes-error', '');
  });
  loadSamples(true);

  // ==== Prediction and saliency ====

  function resetResults() {
    $('prediction').className = 'empty';
    $('prediction').textContent = 'Draw or upload an image.';
    $('bars').textContent = '';
    $('entropy').hidden = true;
    setImage('saliency', null);
    $('saliency-empty').hidden = false;
    $('saliency-empty').textContent = 'The heatmap of the chosen method appears here.'; // not the last model's message
    setImage('acts-img', null);
    stopCompare(state.source ? '' : 'Draw or upload an image first.');
  }

  function imageOpts() {
    return { method: 'POST', body: state.source, headers: { 'Content-Type': state.source.type || 'application/octet-stream' } };
  }

  async function analyse() {
    if (!state.model || !state.source) return;
    const run = ++state.run;
    const m = enc(state.model.name);
    const inv = '&invert=' + $('invert').value;
    try {
      const p = await (await api('/v1/models/' + m + '/predict?top_k=' + state.model.classes.length + inv, imageOpts())).json();
      if (run !== state.run) return;
      banner('');
      fieldError('input-error', '');
      showPrediction(p);
    } catch (e) {
      if (run !== state.run) return;
      resetResults();
      $('prediction').textContent = 'Prediction failed: ' + e.message;
      fieldError('input-error', sentence('The server could not use ' + inputText() + ': ' + e.message));
      return;
    }
    saliency(run);
    runCompare();
    if (!$('cnn-controls').hidden && $('acts-img').src) activations();
  }

  function showPrediction(p) {
    state.pred = p;
    const box = $('prediction');
    box.className = '';
    box.textContent = '';
    box.append(el('span', { class: 'cls', id: 'pred-class' }, p.class), el('span', { class: 'prob' }, pct(p.probability)));
    if (p.inverted) box.append(el('div', { class: 'small muted' }, 'the image was inverted (dark on light)'));
    const bars = $('bars');
    bars.textContent = '';
    for (const t of p.top_k) {
      const row = el('div', { class: 'bar' + (t.index === p.index ? ' top' : ''), 'data-index': String(t.index), title: 'explain ' + t.class, 'aria-label': 'Explain ' + t.class + ', ' + pct(t.probability) },
        el('span', { class: 'name' }, t.class),
        el('span', { class: 'track' }, el('span', { class: 'fill', style: 'display:block;width:' + (100 * t.probability).toFixed(2) + '%' })),
        el('span', { class: 'pct' }, pct(t.probability)));
      pressable(row, null, () => {
        state.target = String(t.index);
        $('target').value = state.target;
        markTarget();
        saliency(state.run);
        runCompare();
      });
      bars.append(row);
    }
    markTarget();
    const maxH = Math.log(p.probabilities.length);
    $('entropy').hidden = false;
    $('entropy-fill').style.width = (100 * Math.min(1, p.entropy_nats / maxH)).toFixed(1) + '%';
    $('entropy-text').textContent = 'Entropy of the prediction: ' + p.entropy_nats.toFixed(3) + ' nats (' +
      p.entropy_bits.toFixed(3) + ' bits) of at most ' + maxH.toFixed(3) + ' nats. ' +
      (p.timing_ms ? 'Answered in ' + p.timing_ms.total.toFixed(2) + ' ms.' : '');
  }

  function markTarget() {
    for (const b of document.querySelectorAll('.bar')) b.classList.toggle('target', b.dataset.index === state.target);
  }

  // ==== Explanation methods (POST /v1/models/{m}/saliency and /explain?method=M) ====

  // The methods of the explain route, in the order the picker and the compare view show them.
  // note + ' over the preprocessed H×W input: ' + reading makes the sentence under the heatmap.
  const METHODS = [
    { id: 'gradient', name: 'Gradient', note: 'Vanilla-backprop saliency',
      reading: 'bright pixels change the class score most' },
    { id: 'input_x_gradient', name: 'Input × gradient', note: 'Input × gradient',
      reading: 'bright pixels have large values where the score is steep' },
    { id: 'smoothgrad', name: 'SmoothGrad', note: 'SmoothGrad (the gradient averaged over noisy copies)',
      reading: 'bright pixels change the score most, noise aside' },
    { id: 'integrated_gradients', name: 'Integrated gradients', note: 'Integrated gradients (the gradient along a path from the baseline)',
      reading: 'bright pixels account for most of the score\'s change from the baseline' },
    { id: 'guided_backprop', name: 'Guided backprop', note: 'Guided backprop (only positive gradients through each ReLU)',
      reading: 'bright pixels excite the class' },
    { id: 'gradcam', name: 'Grad-CAM', note: 'Grad-CAM (a layer\'s feature maps weighted by their gradients)',
      reading: 'bright regions support the class' },
    { id: 'guided_gradcam', name: 'Guided Grad-CAM', note: 'Guided Grad-CAM (guided backprop times Grad-CAM)',
      reading: 'bright pixels excite the class inside the regions that support it' },
    { id: 'occlusion', name: 'Occlusion', note: 'Occlusion (the score\'s drop when a window is filled with black)',
      reading: 'bright pixels lower the score most when hidden' },
  ];
  const METHOD = Object.fromEntries(METHODS.map((m) => [m.id, m]));
  const LAYERED = ['gradcam', 'guided_gradcam'];

  // What the server answered 422 for, per model and method: its reason. The server alone knows
  // which models split for Grad-CAM or have ReLUs, so the page learns it from the answers and
  // then disables those methods with the server's words.
  let unavailable = {};
  const whyNot = (method) => state.model && (unavailable[state.model.name] || {})[method];

  function learnUnavailable(method, message) {
    const m = state.model.name;
    unavailable[m] = Object.assign(unavailable[m] || {}, { [method]: message });
    refreshMethods();
  }

  // The picker's options: those the server refused for this model disabled, and the reasons
  // said under the picker (its aria-describedby).
  function refreshMethods() {
    const why = [];
    for (const o of $('method').options) {
      const reason = whyNot(o.value);
      o.disabled = !!reason && o.value !== $('method').value;
      o.textContent = METHOD[o.value].label + (reason ? ' (not available)' : '');
      if (reason) why.push(METHOD[o.value].name + ': ' + period(reason));
    }
    $('method-why').textContent = why.length ? 'Not available for ' + state.model.name + '. ' + why.join(' ') : '';
    $('method-why').hidden = !why.length;
  }
  for (const o of $('method').options) METHOD[o.value].label = o.textContent;

  // The parameter fields the chosen method takes are shown; the others are hidden.
  function showParams() {
    const method = $('method').value;
    let any = false;
    for (const l of $('method-params').querySelectorAll('label')) {
      l.hidden = !l.dataset.for.split(' ').includes(method);
      any = any || !l.hidden;
    }
    $('method-params').hidden = !any;
    const m = METHOD[method];
    $('method-note').textContent = m.note;
    $('method-reading').textContent = m.reading;
  }

  // The query of a method's own parameters from the fields (empty fields: the server's defaults);
  // layer: the Grad-CAM layer index as a string, '' for the server's default.
  function methodParams(method, fields, layer) {
    const q = [];
    const put = (k, id) => { const v = $(id).value.trim(); if (fields && v !== '') q.push(k + '=' + enc(v)); };
    if (method === 'smoothgrad') { put('samples', 'p-samples'); put('noise', 'p-noise'); }
    if (method === 'integrated_gradients') { put('steps', 'p-steps'); put('baseline', 'p-baseline'); }
    if (method === 'occlusion') { put('window', 'p-window'); put('stride', 'p-stride'); }
    if (LAYERED.includes(method) && layer) q.push('layer=' + enc(layer));
    return q.length ? '&' + q.join('&') : '';
  }

  const targetClass = () => state.target !== '' ? state.model.classes[Number(state.target)] :
    state.pred ? state.pred.class : 'the predicted class';

  // api() for the heavy lane: a 429 is asked again after its Retry-After (at most `tries` times),
  // onWait(seconds) telling the user meanwhile; alive() false stops asking. Then errors as api's.
  async function apiRetry(path, opts, onWait, alive, tries = 5) {
    for (let i = 1; ; i++) {
      try {
        return await api(path, opts);
      } catch (e) {
        if (e.status !== 429 || i >= tries || !alive()) throw e;
        const s = Math.min(30, Math.max(1, Number(e.retryAfter) || 1));
        onWait(s);
        await new Promise((r) => setTimeout(r, s * 1000));
        if (!alive()) throw e;
      }
    }
  }

  // An API error of an explanation, in words.
  function explainError(name, e) {
    if (e.status === 422) return name + ' is not available for ' + state.model.name + ': ' + e.message;
    return name + ' failed: ' + busyText(e);
  }

  // The heatmap of the chosen method for the current input and target. Gradient is the saliency
  // route (the cheap lane for an MLP); the other methods are the explain route.
  let salSeq = 0;
  async function saliency(run) {
    if (!state.model || !state.source) return;
    const seq = ++salSeq;
    const alive = () => run === state.run && seq === salSeq;
    const method = $('method').value, m = METHOD[method], model = state.model.name;
    const q = 'format=png&overlay=1&scale=8&invert=' + $('invert').value + (state.target !== '' ? '&target=' + state.target : '');
    const path = '/v1/models/' + enc(model) + (method === 'gradient' ? '/saliency?' + q :
      '/explain?method=' + method + '&' + q + methodParams(method, true, $('p-layer').value));
    const empty = $('saliency-empty');
    $('sal-card').querySelector('.saliency-box').setAttribute('aria-busy', 'true');
    try {
      const r = await apiRetry(path, imageOpts(), (s) => {
        empty.hidden = false;
        empty.textContent = 'The server is busy with other explanations; asking again in ' + s + ' s…';
      }, alive);
      const blob = await r.blob();
      if (!alive()) return;
      setImage('saliency', blob);
      const cls = targetClass();
      const layer = LAYERED.includes(method) && $('p-layer').value !== '' ? ', layer ' + $('p-layer').value : '';
      $('saliency').alt = method === 'gradient' ?
        'Saliency of class ' + cls + ' for ' + inputText() + ' (bright pixels change that score most)' :
        m.name + ' of class ' + cls + ' for ' + inputText() + layer + ' (' + m.reading.replace('the class', 'that class') + ')';
      empty.hidden = true;
      fieldError('params-error', '');
    } catch (e) {
      if (!alive()) return;
      setImage('saliency', null);
      empty.hidden = false;
      empty.textContent = method === 'gradient' && e.status !== 429 ? 'Saliency failed: ' + e.message : sentence(explainError(m.name, e));
      if (e.status === 422) learnUnavailable(method, e.message);
      if (e.status === 400 && method !== 'gradient') paramsError(m.name, e.message);
    } finally {
      if (alive()) $('sal-card').querySelector('.saliency-box').removeAttribute('aria-busy');
    }
  }

  // A parameter the server refused: the message next to the fields, the field it names invalid.
  function paramsError(name, message) {
    fieldError('params-error', sentence(name + ': ' + message));
    const shown = [...$('method-params').querySelectorAll('label:not([hidden]) [aria-describedby]')];
    const named = shown.filter((f) => new RegExp('\\b' + f.id.slice(2) + '\\b').test(message));
    for (const f of $('method-params').querySelectorAll('[aria-describedby]')) {
      if (!(named.length ? named : shown).includes(f)) f.removeAttribute('aria-invalid');
    }
  }

  // Grad-CAM's layer pickers, from GET /v1/models/{m}/layers: every module of `features`; the
  // first option sends no layer (the server's default), named as the contract defines it: the
  // first ReLU after the last Conv2d. A pick still in the new list is kept.
  function fillCamLayers(layers) {
    let conv = -1;
    layers.forEach((l, i) => { if (l.type === 'conv2d') conv = i; });
    const def = conv < 0 ? null : layers.slice(conv + 1).find((l) => l.type === 'relu');
    for (const id of ['p-layer', 'compare-layer']) {
      const sel = $(id), keep = sel.value;
      sel.textContent = '';
      sel.append(el('option', { value: '' }, def ? 'default: ' + def.index + ' (' + def.name + ', relu)' : 'the server\'s default'));
      for (const l of layers) {
        const shape = l.channels ? ', ' + l.channels + (l.height ? '×' + l.height + '×' + l.width : '') : '';
        sel.append(el('option', { value: String(l.index) }, l.index + ': ' + l.name + ' (' + l.type + shape + ')'));
      }
      sel.value = layers.some((l) => String(l.index) === keep) ? keep : '';
      sel.disabled = !layers.length;
      sel.title = layers.length ? '' : state.model.name + ' lists no layers';
    }
  }

  // ==== Compare: every method side by side ====

  // The server's colour map (img_colormap in core/img.c): ten stops over [0,1], linear between.
  const CMAP = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];

  // A JSON answer's map ([H][W] in [0,1]) as a PNG data URL of H×W pixels, coloured as the
  // server colours its PNGs; the page enlarges it without smoothing.
  function mapPng(map) {
    const h = map.length, w = h ? map[0].length : 0;
    const c = document.createElement('canvas');
    c.width = w;
    c.height = h;
    const g = c.getContext('2d'), im = g.createImageData(w, h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        let v = map[y][x];
        v = v > 0 ? Math.min(v, 1) : 0;
        const t = v * 9, i = Math.min(8, Math.floor(t)), f = t - i, o = 4 * (y * w + x);
        for (let k = 0; k < 3; k++) im.data[o + k] = Math.round(CMAP[i][k] + (CMAP[i + 1][k] - CMAP[i][k]) * f);
        im.data[o + 3] = 255;
      }
    }
    g.putImageData(im, 0, 0);
    return c.toDataURL('image/png');
  }

  // The parameters an answer says it used, in words.
  function paramsText(j) {
    const p = j.params || {};
    const parts = [];
    if (p.samples !== undefined) parts.push(p.samples + ' draws, noise ' + Number(Number(p.noise).toPrecision(6)));
    if (p.steps !== undefined) parts.push(p.steps + ' steps from ' + p.baseline);
    if (typeof j.convergence_delta === 'number') parts.push('Δ ' + j.convergence_delta.toPrecision(2));
    if (j.layer) parts.push('layer ' + j.layer.index + ' (' + j.layer.type + ', ' + j.layer.height + '×' + j.layer.width + ')');
    else if (p.layer !== undefined) parts.push('layer ' + p.layer);
    if (p.window !== undefined) parts.push('window ' + p.window + ', stride ' + p.stride);
    return parts.join(' · ');
  }

  const compare = { on: false, seq: 0, complete: false };

  // One tile per method: a placeholder with a status until the map arrives.
  function compareTile(m) {
    const box = el('div', { class: 'pending' }, 'waiting');
    const meta = el('span', { class: 'meta' });
    const li = el('li', { 'data-method': m.id }, el('figure', {}, box, el('figcaption', {}, el('span', { class: 'name' }, m.name), meta)));
    return li;
  }

  function tileStatus(li, text, bad) {
    const fig = li.querySelector('figure');
    const old = fig.firstChild;
    const box = el('div', { class: 'pending' + (bad ? ' unavailable' : '') }, text);
    fig.replaceChild(box, old);
    li.querySelector('.meta').textContent = '';
  }

  // only: the methods to ask again (a Grad-CAM layer change), when the last full run ended;
  // otherwise every method, one request after the other (the heavy lane has few workers).
  async function runCompare(only) {
    if (!compare.on) return;
    const grid = $('compare-grid'), status = $('compare-status');
    if (!state.model || !state.source) {
      grid.textContent = '';
      status.textContent = 'Draw or upload an image first.';
      return;
    }
    const seq = ++compare.seq;
    const alive = () => compare.on && seq === compare.seq;
    const partial = only && compare.complete && grid.children.length === METHODS.length;
    compare.complete = false;
    const methods = partial ? METHODS.filter((m) => only.includes(m.id)) : METHODS;
    if (!partial) {
      grid.textContent = '';
      for (const m of METHODS) grid.append(compareTile(m));
    }
    const model = state.model.name, cls = targetClass(), what = inputText(), opts = imageOpts();
    const layer = $('compare-layer').value;
    const q = 'format=json&invert=' + $('invert').value + (state.target !== '' ? '&target=' + state.target : '');
    grid.setAttribute('aria-busy', 'true');
    let served = 0, failed = 0, ms = 0;
    for (const m of methods) {
      const li = grid.querySelector('li[data-method="' + m.id + '"]');
      tileStatus(li, 'computing…');
      status.textContent = 'Explaining class ' + cls + ': ' + m.name + ' (' + (methods.indexOf(m) + 1) + ' of ' + methods.length + ')…';
      try {
        const r = await apiRetry('/v1/models/' + enc(model) + '/explain?method=' + m.id + '&' + q + methodParams(m.id, false, layer),
          opts, (s) => tileStatus(li, 'the server is busy: asking again in ' + s + ' s'), alive);
        const j = await r.json();
        if (!alive()) return;
        const fig = li.querySelector('figure');
        fig.replaceChild(el('img', { src: mapPng(j.map), width: String(j.width), height: String(j.height),
          alt: m.name + ' of class ' + j.target.class + ' for ' + what + (j.layer ? ', layer ' + j.layer.index : '') +
            ': ' + m.reading.replace('the class', 'that class') }), fig.firstChild);
        const t = j.timing_ms || {};
        li.querySelector('.meta').textContent = [typeof t.total === 'number' ? t.total.toFixed(1) + ' ms' : null, paramsText(j)].filter(Boolean).join(' · ');
        served++;
        ms += t.total || 0;
      } catch (e) {
        if (!alive()) return;
        failed++;
        if (e.status === 422) learnUnavailable(m.id, e.message);
        tileStatus(li, e.status === 422 ? 'Not available: ' + period(e.message) : sentence(explainError(m.name, e)), true);
      }
    }
    compare.complete = true;
    grid.removeAttribute('aria-busy');
    status.textContent = (partial ? methods.map((m) => m.name).join(' and ') : 'All ' + METHODS.length + ' methods') +
      ' for class ' + cls + ': ' + served + ' shown in ' + ms.toFixed(1) + ' ms of server time' +
      (failed ? ', ' + failed + ' not shown' : '') + '.';
  }

  // No input to explain (cleared, or the server refused it): the tiles go, the view stays on.
  function stopCompare(text) {
    if (!compare.on) return;
    compare.seq++;
    compare.complete = false;
    $('compare-grid').textContent = '';
    $('compare-grid').removeAttribute('aria-busy');
    $('compare-status').textContent = text;
  }

  function setCompare(on) {
    compare.on = on;
    compare.seq++;
    compare.complete = false;
    $('compare').setAttribute('aria-pressed', String(on));
    if (on) {
      runCompare();
    } else {
      $('compare-grid').textContent = '';
      $('compare-grid').removeAttribute('aria-busy');
      $('compare-status').textContent = '';
    }
  }

  $('compare').addEventListener('click', () => setCompare(!compare.on));
  $('compare-layer').addEventListener('change', () => runCompare(LAYERED));
  $('method').addEventListener('change', () => {
    refreshMethods();
    showParams();
    fieldError('params-error', '');
    saliency(state.run);
  });
  for (const id of ['p-samples', 'p-noise', 'p-steps', 'p-baseline', 'p-layer', 'p-window', 'p-stride']) {
    $(id).addEventListener('change', () => saliency(state.run));
  }
  showParams();

  // ==== CNN layers (torchscript models) ====

  function busyText(e) {
    if (e.status === 429) return 'the server is busy with other visualisations; try again' + (e.retryAfter ? ' in ' + e.retryAfter + ' s' : '') + '.';
    if (e.status === 404 || e.status === 405) return 'not available on this server (' + e.message + ').';
    return e.message;
  }

  async function setupCnn() {
    const card = $('cnn-card');
    const isCnn = state.model && state.model.kind === 'torchscript';
    card.hidden = !isCnn;
    $('cnn-controls').hidden = true;
    stopAnim();
    fieldError('cnn-error', '');
    setImage('filter-img', null);
    setImage('acts-img', null);
    $('filter-cap').textContent = '';
    $('acts-cap').textContent = '';
    fillCamLayers([]);
    if (!isCnn) return;
    const name = state.model.name;
    $('cnn-status').textContent = 'Loading the layers…';
    let layers;
    try {
      layers = (await getJSON('/v1/models/' + enc(name) + '/layers')).layers || [];
    } catch (e) {
      if (state.model.name === name) $('cnn-status').textContent = 'Layer visualisation is ' + busyText(e);
      return;
    }
    if (state.model.name !== name) return;
    fillCamLayers(layers);
    if (!layers.length) {
      $('cnn-status').textContent = 'This model lists no visualisable layers.';
      return;
    }
    const sel = $('layer');
    sel.textContent = '';
    for (const l of layers) {
      const shape = l.channels ? ', ' + l.channels + (l.height ? '×' + l.height + '×' + l.width : ' channels') : '';
      const o = el('option', { value: String(l.index) }, l.index + ': ' + l.name + ' (' + l.type + shape + ')');
      o.dataset.channels = String(l.channels || 1);
      o.dataset.name = l.name;
      o.dataset.type = l.type;
      o.dataset.conv = String(l.conv !== false); // older servers list no "conv": let the server decide
      sel.append(o);
    }
    const fitFilter = () => {
      const opt = sel.selectedOptions[0];
      const n = Number(opt.dataset.channels);
      $('filter').max = String(n - 1);
      if (Number($('filter').value) > n - 1) $('filter').value = String(n - 1);
      const conv = opt.dataset.conv === 'true';
      $('show-filter').disabled = !conv;
      $('show-filter').title = conv ? '' : 'filters are visualised on convolution layers';
    };
    const firstConv = layers.find((l) => l.conv);
    if (firstConv) sel.value = String(firstConv.index);
    sel.onchange = fitFilter;
    fitFilter();
    $('cnn-status').textContent = 'Activation maximisation from a seeded random image, and the feature maps the current input makes.';
    $('cnn-controls').hidden = false;
  }

  // The layer picked, in words: "layer 3 (features.3, conv2d)".
  function layerText() {
    const o = $('layer').selectedOptions[0];
    return 'layer ' + $('layer').value + (o ? ' (' + o.dataset.name + ', ' + o.dataset.type + ')' : '');
  }

  // ==== Filter visualisation: the optimised input, played frame by frame ====

  const FILTER_ITERATIONS = 40, FILTER_EVERY = 2, FRAME_MS = 200;

  function stopAnim() {
    if (state.anim) clearInterval(state.anim.timer);
    state.anim = null;
    $('play-filter').hidden = true;
  }

  function showFrame() {
    const a = state.anim, fr = a.frames[a.i], img = $('filter-img');
    img.src = 'data:image/png;base64,' + fr.png;
    img.alt = a.what + ': the input optimised to excite it, at iteration ' + fr.iteration + ' of ' + a.iterations;
    $('filter-cap').textContent = a.what + ': the input that excites it most, iteration ' + fr.iteration + ' of ' + a.iterations + '.';
  }

  function playAnim(on) {
    const a = state.anim;
    if (!a) return;
    clearInterval(a.timer);
    a.timer = on ? setInterval(() => { a.i = (a.i + 1) % a.frames.length; showFrame(); }, FRAME_MS) : null;
    $('play-filter').textContent = on ? 'Pause' : 'Play';
    $('play-filter').title = (on ? 'pause' : 'play') + ' the filter visualisation';
  }

  async function filterViz() {
    const m = enc(state.model.name), l = $('layer').value, f = $('filter').value;
    const what = 'Filter ' + f + ' of ' + layerText();
    stopAnim();
    fieldError('cnn-error', '');
    $('filter-cap').textContent = 'Optimising an input for filter ' + f + ' of layer ' + l + '…';
    $('show-filter').disabled = true;
    try {
      const j = await getJSON('/v1/models/' + m + '/filters/' + enc(l) + '/' + enc(f) + '?format=json&scale=4&iterations=' +
        FILTER_ITERATIONS + '&every=' + FILTER_EVERY);
      setImage('filter-img', null);
      state.anim = { frames: j.frames, i: 0, timer: null, what, iterations: j.iterations };
      $('filter-img').hidden = false;
      $('play-filter').hidden = false;
      const still = window.matchMedia && window.matchMedia('(prefers-reduced-motion: reduce)').matches;
      if (still) state.anim.i = j.frames.length - 1;
      showFrame();
      playAnim(!still);
    } catch (e) {
      setImage('filter-img', null);
      $('filter-cap').textContent = '';
      fieldError('cnn-error', sentence(what + ' cannot be visualised: ' + (e.status === 429 ? busyText(e) : e.message)));
    } finally {
      $('show-filter').disabled = $('layer').selectedOptions[0].dataset.conv !== 'true';
    }
  }

  async function activations() {
    if (!state.source) {
      $('acts-cap').textContent = 'Draw or upload an image first.';
      return;
    }
    const m = enc(state.model.name), l = $('layer').value;
    $('show-acts').disabled = true;
    try {
      setImage('acts-img', await (await api('/v1/models/' + m + '/activations/' + enc(l) + '?scale=2&invert=' + $('invert').value, imageOpts())).blob());
      const n = $('layer').selectedOptions[0].dataset.channels;
      $('acts-img').alt = 'Feature maps of ' + layerText() + ' for ' + inputText() + ', ' + n + ' tiles, one per channel';
      $('acts-cap').textContent = 'Feature maps of layer ' + l + ' for the current input, one tile per channel.';
      fieldError('cnn-error', '');
    } catch (e) {
      setImage('acts-img', null);
      $('acts-cap').textContent = '';
      fieldError('cnn-error', sentence('The feature maps of ' + layerText() + ' failed: ' + busyText(e)));
    } finally {
      $('show-acts').disabled = false;
    }
  }
  $('show-filter').addEventListener('click', filterViz);
  $('play-filter').addEventListener('click', () => playAnim(!state.anim.timer));
  $('show-acts').addEventListener('click', activations);

  // ==== Charts on <canvas> ====

  // A canvas sized to its CSS box at the device's pixel ratio; returns [ctx, width, height] in CSS pixels.
  function fitCanvas(c) {
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 480, h = c.clientHeight || 260;
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    g.font = '12px system-ui, sans-serif';
    return [g, w, h];
  }

  function niceTicks(lo, hi, n) {
    const span = hi - lo || 1;
    const step0 = span / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 2.5, 5, 10].map((k) => k * mag).find((s) => s >= step0);
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toFixed(10));
    return ticks;
  }

  // Decimals that tell ticks `step` apart.
  const digits = (step) => Math.max(0, Math.min(4, -Math.floor(Math.log10(step) + 1e-9)));

  // series: [{label, color, points: [[x, y]], dash}]; non-finite y values are gaps.
  // opts: {ylo, yhi, yfmt(value, tick step), hlines: [{y, label, color}]}
  function lineChart(c, series, opts) {
    const [g, W, H] = fitCanvas(c);
    const L = 52, R = 12, T = 26, B = 34;
    const xs = series.flatMap((s) => s.points.map((p) => p[0]));
    const ys = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite)
      .concat((opts.hlines || []).map((h) => h.y));
    if (!xs.length || !ys.length) {
      g.fillStyle = '#687083';
      g.fillText('no data', W / 2 - 20, H / 2);
      return;
    }
    let xlo = Math.min(...xs), xhi = Math.max(...xs);
    if (xlo === xhi) { xlo -= 1; xhi += 1; }
    let ylo = opts.ylo !== undefined ? opts.ylo : Math.min(...ys), yhi = opts.yhi !== undefined ? opts.yhi : Math.max(...ys);
    if (opts.ylo === undefined) ylo -= 0.05 * (yhi - ylo || 1);
    if (opts.yhi === undefined) yhi += 0.05 * (yhi - ylo || 1);
    const X = (x) => L + (x - xlo) / (xhi - xlo) * (W - L - R);
    const Y = (y) => T + (1 - (Math.min(Math.max(y, ylo), yhi) - ylo) / (yhi - ylo)) * (H - T - B);
    g.strokeStyle = '#e6e9ef';
    g.fillStyle = '#687083';
    g.lineWidth = 1;
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    const yt = niceTicks(ylo, yhi, 5);
    const ystep = yt.length > 1 ? yt[1] - yt[0] : 1;
    for (const t of yt) {
      g.beginPath(); g.moveTo(L, Y(t)); g.lineTo(W - R, Y(t)); g.stroke();
      g.fillText(opts.yfmt ? opts.yfmt(t, ystep) : String(t), L - 6, Y(t));
    }
    g.textAlign = 'center';
    g.textBaseline = 'top';
    for (const t of niceTicks(xlo, xhi, Math.min(8, Math.max(1, xhi - xlo)))) {
      if (!Number.isInteger(t)) continue;
      g.fillText(String(t), X(t), H - B + 6);
    }
    g.fillText('epoch', (L + W - R) / 2, H - 15);
    g.strokeStyle = '#9aa3b2';
    g.beginPath(); g.moveTo(L, T); g.lineTo(L, H - B); g.lineTo(W - R, H - B); g.stroke();
    for (const h of opts.hlines || []) {
      g.strokeStyle = h.color;
      g.setLineDash([5, 4]);
      g.beginPath(); g.moveTo(L, Y(h.y)); g.lineTo(W - R, Y(h.y)); g.stroke();
      g.setLineDash([]);
    }
    for (const s of series) {
      g.strokeStyle = s.color;
      g.fillStyle = s.color;
      g.lineWidth = 2;
      g.setLineDash(s.dash || []);
      g.beginPath();
      let pen = false;
      for (const [x, y] of s.points) {
        if (!Number.isFinite(y)) { pen = false; continue; }
        if (pen) g.lineTo(X(x), Y(y)); else g.moveTo(X(x), Y(y));
        pen = true;
      }
      g.stroke();
      g.setLineDash([]);
      if (s.points.length <= 40) for (const [x, y] of s.points) if (Number.isFinite(y)) { g.beginPath(); g.arc(X(x), Y(y), 2.5, 0, 2 * Math.PI); g.fill(); }
    }
    // Legend along the top.
    let lx = L;
    g.textAlign = 'left';
    g.textBaseline = 'middle';
    for (const s of series.concat((opts.hlines || []).map((h) => ({ label: h.label, color: h.color, dash: [5, 4] })))) {
      g.strokeStyle = s.color;
      g.lineWidth = 2;
      g.setLineDash(s.dash || []);
      g.beginPath(); g.moveTo(lx, 11); g.lineTo(lx + 18, 11); g.stroke();
      g.setLineDash([]);
      g.fillStyle = '#1d2330';
      g.fillText(s.label, lx + 22, 11);
      lx += 30 + g.measureText(s.label).width;
    }
  }

  // Row-normalised heatmap with counts; rows true class, columns predicted.
  function confusionChart(c, m, classes) {
    const n = m.length, left = 92, top = 88;
    const cell = Math.max(10, Math.floor(((c.clientWidth || 560) - left - 8) / n));
    c.style.height = (top + n * cell + 8) + 'px'; // before sizing the bitmap, so nothing is stretched
    const [g] = fitCanvas(c);
    const short = classes.map((s) => s.length > 11 ? s.slice(0, 10) + '…' : s);
    g.textBaseline = 'middle';
    for (let i = 0; i < n; i++) {
      const rowSum = m[i].reduce((a, b) => a + b, 0) || 1;
      for (let j = 0; j < n; j++) {
        const f = m[i][j] / rowSum;
        // white to the accent blue; the diagonal in green
        const [r0, g0, b0] = i === j ? [46, 139, 87] : [48, 86, 211];
        g.fillStyle = 'rgb(' + [r0, g0, b0].map((v) => Math.round(255 - (255 - v) * Math.sqrt(f))).join(',') + ')';
        g.fillRect(left + j * cell, top + i * cell, cell - 1, cell - 1);
        if (cell >= 26 && m[i][j]) {
          g.fillStyle = f > 0.35 ? '#fff' : '#1d2330';
          g.textAlign = 'center';
          g.font = (cell >= 44 ? 12 : 10) + 'px system-ui, sans-serif';
          g.fillText(String(m[i][j]), left + j * cell + cell / 2, top + i * cell + cell / 2);
        }
      }
      g.fillStyle = '#1d2330';
      g.textAlign = 'right';
      g.font = '12px system-ui, sans-serif';
      g.fillText(short[i], left - 6, top + i * cell + cell / 2);
    }
    for (let j = 0; j < n; j++) {
      g.save();
      g.translate(left + j * cell + cell / 2, top - 6);
      g.rotate(-Math.PI / 3);
      g.textAlign = 'left';
      g.fillText(short[j], 0, 0);
      g.restore();
    }
    g.textAlign = 'left';
    g.fillStyle = '#687083';
    g.font = '12px system-ui, sans-serif';
    g.fillText('predicted →', left, 10);
  }

  async function loadTraining() {
    if (!state.model) return;
    const name = state.model.name;
    if (!state.detail || state.detail.name !== name) {
      $('training-status').textContent = 'Loading ' + name + '…';
      try {
        state.detail = await getJSON('/v1/models/' + enc(name));
      } catch (e) {
        $('training-status').textContent = 'Cannot load ' + name + ': ' + e.message;
        return;
      }
      if (state.model.name !== name) return;
    }
    const d = state.detail, h = d.history, met = d.metrics;
    const epochs = (h && h.epochs) || [];
    const notes = [];
    if (!epochs.length) notes.push('no training history (history.json) for this model');
    if (!met) notes.push('no test metrics (metrics.json) for this model');
    $('training-status').textContent = notes.length ? name + ': ' + notes.join('; ') + '.' :
      name + ': ' + epochs.length + ' epoch' + (epochs.length === 1 ? '' : 's') +
      (met ? ', test accuracy ' + pct(met.test_accuracy, 2) + ' on ' + (met.n || '') + ' images' : '') + '.';
    const col = (k) => epochs.map((e) => [e.epoch, e[k] === null || e[k] === undefined ? NaN : e[k]]);
    lineChart($('loss-chart'), [
      { label: 'train', color: '#3056d3', points: col('train_loss') },
      { label: 'validation', color: '#e8833a', points: col('val_loss') },
    ], { yfmt: (v, st) => v.toFixed(digits(st)), hlines: met && Number.isFinite(met.test_loss) ? [{ y: met.test_loss, label: 'test', color: '#2e8b57' }] : [] });
    lineChart($('acc-chart'), [
      { label: 'train', color: '#3056d3', points: col('train_accuracy') },
      { label: 'validation', color: '#e8833a', points: col('val_accuracy') },
    ], { yfmt: (v, st) => (100 * v).toFixed(digits(100 * st)) + '%', hlines: met ? [{ y: met.test_accuracy, label: 'test', color: '#2e8b57' }] : [] });
    const classes = (met && met.classes) || state.model.classes;
    const tbl = $('class-table');
    tbl.textContent = '';
    if (met && met.confusion) {
      confusionChart($('confusion'), met.confusion, classes);
      const rows = classes.map((c, i) => {
        const o = (met.one_vs_rest || [])[i] || {};
        return el('tr', {}, el('td', {}, c), el('td', { class: 'num' }, pct(met.class_accuracy[i])),
          el('td', { class: 'num' }, String(o.fp ?? '—')), el('td', { class: 'num' }, String(o.fn ?? '—')));
      });
      tbl.append(el('table', {}, el('tr', {}, el('th', {}, 'class'), el('th', { class: 'num' }, 'accuracy'),
        el('th', { class: 'num' }, 'false +'), el('th', { class: 'num' }, 'false −')), ...rows));
      if (met.most_confused && met.most_confused.length) {
        tbl.append(el('p', { class: 'small' }, 'Most confused: ' + met.most_confused.slice(0, 3)
          .map((x) => x.true + ' → ' + x.predicted + ' (' + x.count + ')').join('; ') + '.'));
      }
    } else {
      fitCanvas($('confusion'));
      tbl.append(el('p', { class: 'muted' }, 'No metrics.'));
    }
  }

  // ==== Reports ====

  // A small, safe Markdown subset: headings, paragraphs, lists, tables, **bold**, `code`, and
  // images of the report's own figures/ (nothing else is fetched). Text is never parsed as HTML.
  function inline(text, report) {
    const out = document.createDocumentFragment();
    const re = /(\*\*[^*]+\*\*|`[^`]+`|!\[[^\]]*\]\([^)]*\))/g;
    let i = 0, m;
    while ((m = re.exec(text))) {
      if (m.index > i) out.append(text.slice(i, m.index));
      const t = m[0];
      if (t.startsWith('**')) out.append(el('strong', {}, t.slice(2, -2)));
      else if (t.startsWith('`')) out.append(el('code', {}, t.slice(1, -1)));
      else out.append(figure(t, report));
      i = m.index + t.length;
    }
    out.append(text.slice(i));
    return out;
  }

  function figure(t, report) {
    const m = /^!\[([^\]]*)\]\(figures\/([A-Za-z0-9_-][A-Za-z0-9._-]*\.png)\)$/.exec(t);
    if (!m || m[2].includes('..')) return t;
    const src = '/v1/reports/' + enc(report) + '/figures/' + enc(m[2]);
    return el('a', { href: src, target: '_blank', title: m[2] + ' (full size)' }, el('img', { src, alt: (m[1] || m[2]) + ', a figure of the report ' + report, loading: 'lazy' }));
  }

  function renderMarkdown(md, report) {
    const frag = document.createDocumentFragment();
    const lines = md.replace(/\r/g, '').split('\n');
    let para = [];
    const flush = () => {
      if (para.length) frag.append(el('p', {}, inline(para.join(' '), report)));
      para = [];
    };
    for (let i = 0; i < lines.length; i++) {
      const ln = lines[i];
      let m;
      if (!ln.trim()) { flush(); continue; }
      if ((m = /^(#{1,6})\s+(.*)$/.exec(ln))) {
        flush();
        frag.append(el('h' + Math.min(6, m[1].length), {}, inline(m[2], report)));
      } else if (/^\s*\|/.test(ln) && i + 1 < lines.length && /^\s*\|?\s*:?-+/.test(lines[i + 1])) {
        flush();
        const cells = (s) => s.trim().replace(/^\||\|$/g, '').split('|').map((c) => c.trim());
        const head = el('tr', {}, ...cells(ln).map((c) => el('th', {}, inline(c, report))));
        const body = [];
        for (i += 2; i < lines.length && /^\s*\|/.test(lines[i]); i++) body.push(el('tr', {}, ...cells(lines[i]).map((c) => el('td', {}, inline(c, report)))));
        i--;
        frag.append(el('table', {}, head, ...body));
      } else if (/^\s*[-*]\s+/.test(ln)) {
        flush();
        const items = [];
        for (; i < lines.length && /^\s*[-*]\s+/.test(lines[i]); i++) items.push(el('li', {}, inline(lines[i].replace(/^\s*[-*]\s+/, ''), report)));
        i--;
        frag.append(el('ul', {}, ...items));
      } else {
        para.push(ln.trim());
      }
    }
    flush();
    return frag;
  }

  async function loadReports() {
    if (state.reportsLoaded) return;
    state.reportsLoaded = true;
    const ul = $('report-list');
    ul.textContent = '';
    let doc;
    try {
      doc = await getJSON('/v1/reports');
    } catch (e) {
      ul.append(el('li', { class: 'muted' }, 'Cannot list the reports: ' + e.message));
      state.reportsLoaded = false;
      return;
    }
    if (!doc.reports.length) {
      ul.append(el('li', { class: 'muted' }, 'No reports yet: make reproduce (or training/reproduce.py --quick) writes them under reports/.'));
    }
    for (const r of doc.reports) {
      const li = el('li', { 'data-name': r.name },
        el('div', { class: 'name' }, r.name, r.quick ? el('span', { class: 'badge' }, 'quick') : null),
        el('div', { class: 'small muted' }, [r.date ? r.date.replace('T', ' ').replace(/\+00:00$/, ' UTC') : 'no date',
          r.commit ? 'commit ' + r.commit : null, r.figures.length + ' figure' + (r.figures.length === 1 ? '' : 's')].filter(Boolean).join(' · ')));
      pressable(li, null, () => showReport(r));
      ul.append(li);
    }
    for (const s of doc.skipped || []) ul.append(el('li', { class: 'small muted' }, s.name + ': ' + s.error));
    if (doc.reports.length) showReport(doc.reports[0]);
  }

  async function showReport(r) {
    for (const li of document.querySelectorAll('#report-list li')) li.classList.toggle('current', li.dataset.name === r.name);
    const view = $('report-view');
    view.textContent = '';
    view.append(el('p', { class: 'muted' }, 'Loading ' + r.name + '…'));
    let rep;
    try {
      rep = await getJSON('/v1/reports/' + enc(r.name));
    } catch (e) {
      view.textContent = 'Cannot load ' + r.name + ': ' + e.message;
      return;
    }
    view.textContent = '';
    if (rep.markdown) {
      view.append(renderMarkdown(rep.markdown, r.name));
    } else {
      view.append(el('h1', {}, r.name), el('p', { class: 'muted' }, 'This report has no report.md; its figures:'));
    }
    // Figures the markdown does not show, so every figure of the report is on the page.
    const shown = new Set([...view.querySelectorAll('img')].map((i) => decodeURIComponent(i.src.split('/').pop())));
    const rest = r.figures.filter((f) => !shown.has(f));
    if (rest.length) {
      view.append(el('h2', {}, 'Figures'), el('div', { class: 'gallery' }, ...rest.map((f) =>
        el('figure', {}, el('img', { src: '/v1/reports/' + enc(r.name) + '/figures/' + enc(f), alt: f + ', a figure of the report ' + r.name, loading: 'lazy' }),
          el('figcaption', { class: 'small muted' }, f)))));
    }
  }

  // ==== Trainings in progress (GET /v1/training) ====
  // `make run` trains a CNN in the background and the daemon (--watch) serves it once written:
  // say so, with the time left, and add it to the model list when it appears.

  let training = [];
  const about = (s) => (s < 60 ? 'less than a minute' : 'about ' + Math.round(s / 60) + ' min');

  async function pollTraining() {
    let list = [];
    try {
      list = (await getJSON('/v1/training')).trainings || [];
    } catch (e) { /* an older daemon, or no token yet: show nothing */ }
    const p = $('train-progress');
    p.textContent = list.map((t) => 'Training ' + t.name + '…: ' +
      (t.phase === 'training' ? 'epoch ' + t.epoch + (t.epochs ? '/' + t.epochs : '') : t.phase) +
      (t.eta_seconds === null ? '' : ', ready in ' + about(t.eta_seconds))).join(' · ');
    p.hidden = !list.length;
    const done = training.filter((n) => !list.some((t) => t.name === n));
    training = list.map((t) => t.name);
    if (done.length) awaitModels(done, 30);
    setTimeout(pollTraining, list.length ? 5000 : 30000);
  }

  // A finished training's model shows once the daemon has loaded it (a poll and a load later).
  async function awaitModels(names, tries) {
    try {
      const list = await getJSON('/v1/models');
      if (names.some((n) => (list.models || []).some((m) => m.name === n))) {
        loadModels(state.model && state.model.name);
        return;
      }
    } catch (e) { /* try again */ }
    if (tries > 1) setTimeout(() => awaitModels(names, tries - 1), 2000);
  }

  // ==== Start ====

  for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => showTab(b.dataset.tab));
  $('model').addEventListener('change', (ev) => selectModel(ev.target.value));
  window.addEventListener('resize', () => { if (!$('tab-training').hidden && state.detail) loadTraining(); });
  clearCanvas();
  loadModels();
  pollTraining();
  const first = location.hash.slice(1);
  showTab(['explore', 'training', 'reports'].includes(first) ? first : 'explore');
})();
