// report.js - the interactive parts of a cnnscope report (the contract is vis/report.h).
//
// Reads window.CNNSCOPE_DATA (data.js) and window.CNNSCOPE_TIMINGS (timings.js), then
//   - fills <span id="time-taken">;
//   - draws every <div class="scatter" data-embedding="K"> as a canvas scatter of
//     embeddings[K].xy, one colour per true label, with a legend;
//   - hover: #tooltip shows the nearest point's thumbnail, name, label and prediction;
//   - click: #neighbors shows the point and its K nearest neighbours, and every scatter
//     highlights them (Escape clears);
//   - a click on any other picture of the page shows it full size.
// Plain browser JavaScript in one function scope, no modules and no fetch(): the page must
// open from file:// with no server and no network. Tests drive it through
// window.cnnscopeReport (end of file).
(function () {
  'use strict';

  const data = window.CNNSCOPE_DATA || null;
  const HIT_RADIUS = 6;        // CSS px: how close the cursor must be to "touch" a point
  const THUMB_TARGET = 84;     // CSS px: thumbnails are scaled up by a whole factor to ~this
  const UNLABELLED = '#8a8f98';
  // matplotlib's "tab10": the colours most embedding plots use, distinct on white.
  const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd',
                   '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

  function classColour(c) {
    if (c < 0) return UNLABELLED;
    if (c < PALETTE.length) return PALETTE[c];
    return 'hsl(' + ((c * 137.508) % 360).toFixed(1) + ', 60%, 45%)';   // golden angle
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---- names of things ---------------------------------------------------------------------
  // Labels index the dataset's class folders, predictions the model's outputs. The page
  // compares them index by index (accuracy, confusion matrix), so when the counts agree a
  // label is named like the model's class (as the rest of the page does), else by its folder.
  const labelled = !!data && data.labels.some(function (l) { return l >= 0; });
  function labelName(c) {
    if (c < 0) return 'unlabelled';
    if (data.classes.length === data.dataset_classes.length && data.classes[c]) return data.classes[c];
    return data.dataset_classes[c] || String(c);
  }
  function predName(c) { return data.classes[c] || data.dataset_classes[c] || String(c); }
  // Points are coloured by true label; a set without labels falls back to the prediction.
  function colourClass(i) { return labelled ? data.labels[i] : data.preds[i]; }
  function isWrong(i) { return data.labels[i] >= 0 && data.preds[i] !== data.labels[i]; }

  // ---- time taken --------------------------------------------------------------------------
  function formatSeconds(s) {
    if (s < 60) return s.toFixed(1) + ' s';
    const m = Math.floor(s / 60);
    return m + ' min ' + Math.round(s - 60 * m) + ' s';
  }

  function fillTimeTaken() {
    const span = document.getElementById('time-taken');
    const t = window.CNNSCOPE_TIMINGS;
    if (!span || !t) return;
    span.textContent = formatSeconds(t.total_seconds);
    // the breakdown per step, for the curious, on hover
    span.title = (t.steps || []).map(function (s) {
      return s[0] + ': ' + formatSeconds(s[1]);
    }).join('\n');
  }

  // ---- thumbnails: one cell of a sheet (data.thumbs), scaled up without blurring ------------
  const sheetWidths = [];      // natural width of each sheet once loaded (the last may be narrower)
  function preloadSheets() {
    data.thumbs.sheets.forEach(function (src, s) {
      const img = new Image();
      img.onload = function () { sheetWidths[s] = img.naturalWidth; };
      img.src = src;
    });
  }

  const thumbScale = data ? Math.max(1, Math.round(THUMB_TARGET / data.thumbs.size)) : 1;

  function thumb(i) {
    const t = data.thumbs;
    const sheet = Math.floor(i / t.per_sheet), cell = i % t.per_sheet;
    const x = (cell % t.cols) * t.size, y = Math.floor(cell / t.cols) * t.size;
    const width = sheetWidths[sheet] || t.cols * t.size;
    const div = el('div', 'thumb');
    div.style.width = div.style.height = t.size * thumbScale + 'px';
    div.style.backgroundImage = 'url("' + t.sheets[sheet] + '")';
    div.style.backgroundSize = width * thumbScale + 'px auto';
    div.style.backgroundPosition = -x * thumbScale + 'px ' + -y * thumbScale + 'px';
    return div;
  }

  // ---- scatter plots -----------------------------------------------------------------------
  // One plot per <div class="scatter">: its canvas, the points' CSS-pixel positions inside it
  // and a uniform grid over them, so that finding the point under the cursor looks at a few
  // cells instead of all 10,000 points.
  const plots = [];
  let selection = null;        // {query: i, neighbours: [K indices]} after a click

  // A fixed shuffle of the drawing order: drawn class by class, the last class would cover
  // the others wherever they overlap.
  let drawOrder = null;
  function makeDrawOrder(n) {
    const order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    let seed = 12345;
    for (let i = n - 1; i > 0; i--) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      const j = seed % (i + 1);
      const tmp = order[i]; order[i] = order[j]; order[j] = tmp;
    }
    return order;
  }

  function pointRadius(n) { return n > 5000 ? 1.5 : n > 1000 ? 2.2 : 3; }

  function makePlot(box) {
    const k = Number(box.getAttribute('data-embedding'));
    const embedding = data.embeddings[k];
    if (!embedding) throw new Error('report.js: no embedding ' + k + ' in data.js');
    box.textContent = '';
    box.appendChild(el('div', 'scatter-name', embedding.name));
    const canvas = el('canvas');
    canvas.setAttribute('aria-label', embedding.name + ' map of ' + data.n + ' images');
    box.appendChild(canvas);
    const marker = el('div', 'scatter-marker');   // ring around the hovered point
    box.appendChild(marker);
    box.appendChild(makeLegend());
    const plot = { k: k, box: box, canvas: canvas, marker: marker, xy: embedding.xy,
                   width: 0, height: 0, px: null, py: null };
    canvas.addEventListener('mousemove', function (e) { hover(plot, e); });
    canvas.addEventListener('mouseleave', hideTooltip);
    canvas.addEventListener('click', function (e) {
      const i = pointAt(plot, e.clientX, e.clientY);
      if (i >= 0) select(i);
    });
    return plot;
  }

  function makeLegend() {
    const ul = el('ul', 'legend');
    const names = labelled ? data.dataset_classes : data.classes;
    names.forEach(function (name, c) {
      const li = el('li');
      const swatch = el('span', 'swatch');
      swatch.style.background = classColour(c);
      li.appendChild(swatch);
      li.appendChild(document.createTextNode(labelled ? labelName(c) : predName(c)));
      ul.appendChild(li);
    });
    if (!labelled) ul.appendChild(el('li', 'legend-note', '(colour = predicted class: no labels)'));
    return ul;
  }

  // Maps the data to the canvas's current size (equal scale on both axes, so distances on
  // screen mean the same in every direction) and rebuilds the hit-test grid.
  // Returns false when the size has not changed.
  function layout(plot) {
    const rect = plot.canvas.getBoundingClientRect();
    const w = Math.round(rect.width), h = Math.round(rect.height);
    if (w === plot.width && h === plot.height && plot.px) return false;
    plot.width = w; plot.height = h;
    const n = data.n, xy = plot.xy;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = xy[2 * i], y = xy[2 * i + 1];
      if (x < x0) x0 = x; if (x > x1) x1 = x;
      if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    // margins leave room for the highlight rings, and at the top for the map's name
    const pad = 10 + pointRadius(n), padTop = 30;
    const scale = Math.min((w - 2 * pad) / Math.max(x1 - x0, 1e-12),
                           (h - pad - padTop) / Math.max(y1 - y0, 1e-12));
    const cx = w / 2, cy = (padTop + h - pad) / 2, mx = (x0 + x1) / 2, my = (y0 + y1) / 2;
    plot.px = new Float32Array(n);
    plot.py = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      plot.px[i] = cx + (xy[2 * i] - mx) * scale;
      plot.py[i] = cy - (xy[2 * i + 1] - my) * scale;   // y grows upwards, as in a textbook
    }
    // The grid: cells of HIT_RADIUS px; points sorted by cell (counting sort), so cell c holds
    // gridPoints[gridStart[c] .. gridStart[c + 1]).
    const cols = Math.ceil(w / HIT_RADIUS) + 1, rows = Math.ceil(h / HIT_RADIUS) + 1;
    const cellOf = new Int32Array(n), start = new Int32Array(cols * rows + 1);
    for (let i = 0; i < n; i++) {
      const gx = Math.min(cols - 1, Math.max(0, Math.floor(plot.px[i] / HIT_RADIUS)));
      const gy = Math.min(rows - 1, Math.max(0, Math.floor(plot.py[i] / HIT_RADIUS)));
      cellOf[i] = gy * cols + gx;
      start[cellOf[i] + 1]++;
    }
    for (let c = 0; c < cols * rows; c++) start[c + 1] += start[c];
    const fill = start.slice(0, cols * rows), points = new Int32Array(n);
    for (let i = 0; i < n; i++) points[fill[cellOf[i]]++] = i;
    plot.gridCols = cols; plot.gridRows = rows; plot.gridStart = start; plot.gridPoints = points;
    return true;
  }

  function draw(plot) {
    const dpr = window.devicePixelRatio || 1;   // draw at device resolution: sharp on HiDPI
    const canvas = plot.canvas;
    canvas.width = Math.round(plot.width * dpr);
    canvas.height = Math.round(plot.height * dpr);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, plot.width, plot.height);
    const r = pointRadius(data.n);
    // With a selection the other points fade, so that the neighbours stand out.
    ctx.globalAlpha = selection ? 0.25 : 0.75;
    for (let k = 0; k < drawOrder.length; k++) {
      const i = drawOrder[k];
      ctx.fillStyle = classColour(colourClass(i));
      ctx.beginPath();
      ctx.arc(plot.px[i], plot.py[i], r, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.globalAlpha = 1;
    if (!selection) return;
    ctx.lineWidth = 1.5;
    selection.neighbours.forEach(function (i) {
      ctx.beginPath();
      ctx.arc(plot.px[i], plot.py[i], r + 3, 0, 2 * Math.PI);
      ctx.fillStyle = classColour(colourClass(i));
      ctx.strokeStyle = '#111';
      ctx.fill();
      ctx.stroke();
    });
    const q = selection.query;   // the query: a larger disc with a double ring, drawn last
    ctx.beginPath();
    ctx.arc(plot.px[q], plot.py[q], r + 6, 0, 2 * Math.PI);
    ctx.fillStyle = classColour(colourClass(q));
    ctx.lineWidth = 3;
    ctx.strokeStyle = '#fff';
    ctx.fill();
    ctx.stroke();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = '#111';
    ctx.stroke();
  }

  function redrawAll() {
    plots.forEach(function (p) { layout(p); draw(p); });
  }

  // The nearest point within HIT_RADIUS of a client position, or -1.
  function pointAt(plot, clientX, clientY) {
    if (layout(plot)) draw(plot);
    const rect = plot.canvas.getBoundingClientRect();
    const x = clientX - rect.left, y = clientY - rect.top;
    const gx = Math.floor(x / HIT_RADIUS), gy = Math.floor(y / HIT_RADIUS);
    let best = -1, bestD2 = HIT_RADIUS * HIT_RADIUS;
    for (let cy = gy - 1; cy <= gy + 1; cy++) {
      if (cy < 0 || cy >= plot.gridRows) continue;
      for (let cx = gx - 1; cx <= gx + 1; cx++) {
        if (cx < 0 || cx >= plot.gridCols) continue;
        const c = cy * plot.gridCols + cx;
        for (let p = plot.gridStart[c]; p < plot.gridStart[c + 1]; p++) {
          const i = plot.gridPoints[p];
          const dx = plot.px[i] - x, dy = plot.py[i] - y, d2 = dx * dx + dy * dy;
          if (d2 <= bestD2) { best = i; bestD2 = d2; }
        }
      }
    }
    return best;
  }

  // ---- hover: the tooltip ------------------------------------------------------------------
  function hover(plot, e) {
    const i = pointAt(plot, e.clientX, e.clientY);
    plot.canvas.style.cursor = i >= 0 ? 'pointer' : 'default';
    if (i < 0) { hideTooltip(); return; }
    const m = plot.marker;   // canvas sits at the box's top left (report.css)
    m.style.left = plot.canvas.offsetLeft + plot.px[i] + 'px';
    m.style.top = plot.canvas.offsetTop + plot.py[i] + 'px';
    m.style.display = 'block';
    showTooltip(i, e.clientX, e.clientY);
  }

  function describe(i, parent) {
    parent.appendChild(el('div', 'tip-name', data.names[i]));
    if (data.labels[i] >= 0) parent.appendChild(el('div', 'tip-label', 'label: ' + labelName(data.labels[i])));
    const pred = el('div', 'tip-pred', 'predicted: ' + predName(data.preds[i]));
    if (isWrong(i)) { pred.classList.add('wrong'); pred.textContent += '  \u2717 wrong'; }
    parent.appendChild(pred);
  }

  function showTooltip(i, clientX, clientY) {
    const tip = document.getElementById('tooltip');
    if (!tip) return;
    if (Number(tip.getAttribute('data-index')) !== i || !tip.classList.contains('visible')) {
      tip.textContent = '';
      tip.setAttribute('data-index', String(i));
      tip.appendChild(thumb(i));
      describe(i, tip.appendChild(el('div', 'tip-text')));
      tip.classList.add('visible');
    }
    // beside the cursor, flipped to the other side near the window's right or bottom edge
    const w = tip.offsetWidth, h = tip.offsetHeight, gap = 14;
    let x = clientX + gap, y = clientY + gap;
    if (x + w > window.innerWidth - 4) x = clientX - gap - w;
    if (y + h > window.innerHeight - 4) y = clientY - gap - h;
    tip.style.left = Math.max(4, x) + 'px';
    tip.style.top = Math.max(4, y) + 'px';
  }

  function hideTooltip() {
    const tip = document.getElementById('tooltip');
    if (tip) tip.classList.remove('visible');
    plots.forEach(function (p) { p.marker.style.display = 'none'; });
  }

  // ---- click: the neighbours ---------------------------------------------------------------
  function select(i) {
    const K = data.neighbors.k;
    selection = { query: i, neighbours: data.neighbors.idx.slice(i * K, i * K + K) };
    plots.forEach(draw);
    const panel = document.getElementById('neighbors');
    if (!panel) return;
    panel.textContent = '';
    const title = el('p', 'neighbors-title');
    title.appendChild(document.createTextNode('The ' + K + ' images nearest to '));
    title.appendChild(el('b', null, data.names[i]));
    title.appendChild(document.createTextNode(' in the features of layer '));
    title.appendChild(el('code', null, data.neighbors.layer));
    title.appendChild(document.createTextNode(', nearest first (click one to make it the query; Esc clears):'));
    panel.appendChild(title);
    const row = el('div', 'thumb-row');
    [i].concat(selection.neighbours).forEach(function (j, rank) {
      const fig = el('figure', rank === 0 ? 'thumb-fig query' : 'thumb-fig');
      fig.setAttribute('data-index', String(j));
      fig.setAttribute('data-name', data.names[j]);
      fig.title = data.names[j] + '\npredicted: ' + predName(data.preds[j]);
      fig.appendChild(thumb(j));
      const cap = el('figcaption');
      cap.appendChild(el('span', 'rank', rank === 0 ? 'query' : '#' + rank));
      // the true label; an unlabelled image shows its prediction, with a question mark
      cap.appendChild(el('span', 'class-name', data.labels[j] >= 0 ? labelName(data.labels[j])
                                                                  : predName(data.preds[j]) + '?'));
      if (isWrong(j)) cap.appendChild(el('span', 'wrong', '\u2192 ' + predName(data.preds[j])));
      fig.appendChild(cap);
      fig.style.borderColor = classColour(colourClass(j));
      if (rank > 0) fig.addEventListener('click', function () { select(j); });
      row.appendChild(fig);
    });
    panel.appendChild(row);
  }

  function clearSelection() {
    if (!selection) return;
    selection = null;
    plots.forEach(draw);
    const panel = document.getElementById('neighbors');
    if (panel) panel.textContent = '';
  }

  // ---- pictures full size: click any picture of the page, click again or Esc to close ------
  function openLightbox(img) {
    const overlay = el('div', 'lightbox');
    const big = el('img');
    big.src = img.currentSrc || img.src;
    big.alt = img.alt;
    // the largest whole zoom that fits the window: pixels stay square and sharp
    const zoom = Math.max(1, Math.floor(Math.min(window.innerWidth * 0.92 / img.naturalWidth,
                                                 window.innerHeight * 0.82 / img.naturalHeight)));
    big.width = img.naturalWidth * zoom;
    overlay.appendChild(big);
    const fig = img.closest('figure');
    const caption = fig && fig.querySelector('figcaption');
    const text = caption ? caption.textContent : img.alt;
    if (text) overlay.appendChild(el('p', null, text));
    overlay.addEventListener('click', function () { overlay.remove(); });
    document.body.appendChild(overlay);
  }

  function closeLightbox() {
    const open = document.querySelector('.lightbox');
    if (open) open.remove();
  }

  // ---- table of contents: fills an empty <nav id="toc"> from the sections' headings --------
  function fillToc() {
    const nav = document.getElementById('toc');
    if (!nav || nav.children.length > 0) return;
    const ul = el('ul');
    document.querySelectorAll('section[id]').forEach(function (section) {
      const h = section.querySelector('h2');
      if (!h) return;
      const a = el('a', null, h.textContent);
      a.href = '#' + section.id;
      ul.appendChild(el('li')).appendChild(a);
    });
    nav.appendChild(ul);
  }

  // ---- start -------------------------------------------------------------------------------
  function init() {
    fillTimeTaken();
    fillToc();
    document.addEventListener('click', function (e) {
      const img = e.target.closest && e.target.closest('img');
      if (img && !img.closest('.lightbox') && img.naturalWidth > 0) openLightbox(img);
    });
    document.addEventListener('keydown', function (e) {
      if (e.key === 'Escape') { closeLightbox(); clearSelection(); }
    });
    const boxes = document.querySelectorAll('.scatter[data-embedding]');
    if (boxes.length > 0 && !data) throw new Error('report.js: data.js did not load');
    if (data) {
      preloadSheets();
      drawOrder = makeDrawOrder(data.n);
      boxes.forEach(function (box) { plots.push(makePlot(box)); });
      redrawAll();
      // Redraw when a box changes size (window resized, fonts loaded); one frame at most.
      let pending = false;
      const observer = new ResizeObserver(function () {
        if (pending) return;
        pending = true;
        requestAnimationFrame(function () { pending = false; redrawAll(); });
      });
      plots.forEach(function (p) { observer.observe(p.canvas); });
    }

    // Hooks for tests (tests/test_report_browser.sh) and the curious.
    window.cnnscopeReport = {
      // Client coordinates of point i in the scatter of data.embeddings[k].
      pointClientXY: function (k, i) {
        const plot = plots.find(function (p) { return p.k === k; });
        if (!plot) throw new Error('no scatter for embedding ' + k);
        if (layout(plot)) draw(plot);
        const rect = plot.canvas.getBoundingClientRect();
        return { x: rect.left + plot.px[i], y: rect.top + plot.py[i] };
      },
      select: select,
      clearSelection: clearSelection,
      ready: true
    };
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
