// check_report.js - opens a cnnscope report (index.html, vis/report.h) in headless Chromium,
// uses it as a student would, and fails on anything broken.
//
//   node tests/browser/check_report.js REPORT_DIR OUT_DIR
//
// Checks: every section of the contract is there, in order; every <img> loads (lazy ones are
// forced); #time-taken is filled; every scatter has a canvas drawn at device resolution and a
// legend; hovering a point (window.cnnscopeReport.pointClientXY) shows #tooltip with that
// point's name, label and a thumbnail whose sheet loaded; clicking it shows the query and its K
// neighbours (names as in data.neighbors.idx) and redraws every scatter; a picture opens full
// size on click; no console error, page error or failed request at any point.
// Writes OUT_DIR/report-screenshot.png (whole page), OUT_DIR/report-tooltip.png (the hovered
// map with its tooltip), OUT_DIR/report-thumb.png (the tooltip's thumbnail alone) and prints
// one line "hovered: {json}" for the caller's pixel check of that thumbnail.
// Uses the system Chromium (CHROMIUM, default /usr/bin/chromium): no browser download.
'use strict';
const path = require('path');
const { chromium } = require('playwright-core');

const SECTIONS = ['model', 'classes', 'filters', 'maps', 'patches', 'space', 'mistakes', 'explain'];

async function main() {
  const [reportDir, outDir] = process.argv.slice(2);
  if (!reportDir || !outDir) throw new Error('usage: node check_report.js REPORT_DIR OUT_DIR');
  const url = 'file://' + path.resolve(reportDir, 'index.html');
  const problems = [];
  const fail = (msg) => { problems.push(msg); console.log('FAIL: ' + msg); };
  const check = (ok, msg) => { if (!ok) fail(msg); return ok; };

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    // the sandbox needs user namespaces, which containers and root shells often lack
    args: ['--no-sandbox'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('console', (m) => { if (m.type() === 'error') fail('console error: ' + m.text()); });
    page.on('pageerror', (e) => fail('page error: ' + e.message));
    page.on('requestfailed', (r) => fail('failed to load ' + r.url() + ': ' + r.failure().errorText));

    await page.goto(url, { waitUntil: 'load' });
    await page.waitForFunction(() => window.cnnscopeReport && window.cnnscopeReport.ready,
                               null, { timeout: 20000 })
      .catch(() => fail('window.cnnscopeReport.ready never became true (report.js did not run)'));

    // --- structure ---
    const ids = await page.$$eval('section[id]', (s) => s.map((e) => e.id));
    const order = ids.filter((id) => SECTIONS.includes(id));
    check(JSON.stringify(order) === JSON.stringify(SECTIONS),
          'sections ' + JSON.stringify(ids) + ', expected ' + JSON.stringify(SECTIONS) + ' in that order');
    const timeTaken = await page.$eval('#time-taken', (e) => e.textContent.trim()).catch(() => '');
    check(/\d/.test(timeTaken), '#time-taken is empty or missing: "' + timeTaken + '"');
    // report.css applied (an empty embedded stylesheet would load without any error)
    const tooltipPosition = await page.$eval('#tooltip', (e) => getComputedStyle(e).position).catch(() => '');
    check(tooltipPosition === 'fixed', '#tooltip is position "' + tooltipPosition + '", not "fixed": report.css not applied');

    // --- every picture loads: lazy ones are made eager, and the page is scrolled through ---
    await page.evaluate(async () => {
      document.querySelectorAll('img[loading="lazy"]').forEach((img) => { img.loading = 'eager'; });
      for (let y = 0; y < document.body.scrollHeight; y += window.innerHeight / 2) {
        window.scrollTo(0, y);
        await new Promise((r) => requestAnimationFrame(r));
      }
      window.scrollTo(0, 0);
      await Promise.all([...document.images].map((img) => img.complete ? null :
        new Promise((r) => { img.onload = img.onerror = r; })));
    });
    const images = await page.$$eval('img', (imgs) =>
      imgs.map((i) => ({ src: i.getAttribute('src'), w: i.naturalWidth })));
    check(images.length > 0, 'the page has no <img> at all');
    for (const img of images) check(img.w > 0, '<img src="' + img.src + '"> did not load (naturalWidth 0)');

    // --- the data and the maps ---
    const info = await page.evaluate(() => {
      const d = window.CNNSCOPE_DATA;
      if (!d) return null;
      const scatters = [...document.querySelectorAll('.scatter[data-embedding]')].map((box) => {
        const c = box.querySelector('canvas');
        const r = c ? c.getBoundingClientRect() : { width: 0 };
        return { k: Number(box.getAttribute('data-embedding')), canvas: !!c, cssWidth: r.width,
                 width: c ? c.width : 0, legend: box.querySelectorAll('.legend li').length };
      });
      return { n: d.n, names: d.names, labels: d.labels, preds: d.preds, k: d.neighbors.k,
               idx: d.neighbors.idx, embeddings: d.embeddings.map((e) => e.name),
               xyLength: d.embeddings.map((e) => e.xy.length), thumbs: d.thumbs,
               classes: d.classes, datasetClasses: d.dataset_classes, scatters: scatters,
               dpr: window.devicePixelRatio };
    });
    if (!check(info !== null, 'window.CNNSCOPE_DATA is missing (data.js)')) throw new Error('no data');
    check(info.n > 0 && info.names.length === info.n && info.labels.length === info.n &&
          info.preds.length === info.n, 'data.js: n, names, labels, preds disagree');
    check(info.idx.length === info.n * info.k, 'data.js: neighbors.idx has ' + info.idx.length +
          ' entries, expected n * k = ' + info.n * info.k);
    info.xyLength.forEach((len, k) => check(len === 2 * info.n, 'embedding ' + k + ': xy has ' + len +
                                                                ' numbers, expected ' + 2 * info.n));
    check(info.scatters.length === info.embeddings.length && info.scatters.length > 0,
          info.scatters.length + ' scatter boxes for ' + info.embeddings.length + ' embeddings');
    for (const s of info.scatters) {
      check(s.canvas && s.cssWidth > 100, 'scatter ' + s.k + ': no canvas, or narrower than 100 px');
      check(s.width === Math.round(s.cssWidth * info.dpr), 'scatter ' + s.k + ': canvas is ' + s.width +
            ' px for ' + s.cssWidth + ' CSS px at devicePixelRatio ' + info.dpr);
      check(s.legend > 0, 'scatter ' + s.k + ': no legend');
    }

    // --- hover: the point farthest (on screen) from its nearest other point, so that the
    // cursor on it can only mean it ---
    const k0 = info.scatters[0].k;
    await page.locator('.scatter[data-embedding="' + k0 + '"]').scrollIntoViewIfNeeded();
    const target = await page.evaluate((k) => {
      const report = window.cnnscopeReport, n = window.CNNSCOPE_DATA.n;
      const pts = [];
      for (let i = 0; i < n; i++) pts.push(report.pointClientXY(k, i));
      let best = 0, bestGap = -1;
      const step = Math.max(1, Math.floor(n / 300));   // candidates: up to ~300 points
      for (let i = 0; i < n; i += step) {
        let gap = Infinity;
        for (let j = 0; j < n; j++) {
          if (j === i) continue;
          gap = Math.min(gap, Math.hypot(pts[i].x - pts[j].x, pts[i].y - pts[j].y));
        }
        if (gap > bestGap) { bestGap = gap; best = i; }
      }
      return { i: best, x: pts[best].x, y: pts[best].y, gap: bestGap };
    }, k0);
    const i = target.i, name = info.names[i];
    await page.mouse.move(target.x + 1, target.y);
    const tooltip = page.locator('#tooltip');
    await tooltip.waitFor({ state: 'visible', timeout: 5000 })
      .catch(() => fail('hovering point ' + i + ' at (' + target.x + ', ' + target.y + ') shows no #tooltip'));
    const tip = await page.evaluate(async () => {
      const tip = document.getElementById('tooltip');
      const thumb = tip.querySelector('.thumb');
      if (!thumb) return { text: tip.textContent, thumb: null };
      const bg = getComputedStyle(thumb).backgroundImage;
      const m = /url\("?(.*?)"?\)$/.exec(bg);
      // the thumbnail's sheet, loaded again to see that it exists and decodes
      const loaded = m ? await new Promise((r) => {
        const img = new Image();
        img.onload = () => r(img.naturalWidth);
        img.onerror = () => r(0);
        img.src = m[1];
      }) : 0;
      const rect = thumb.getBoundingClientRect();
      return { text: tip.textContent, thumb: bg, loaded: loaded, w: rect.width, h: rect.height };
    });
    check(tip.text.includes(name), 'the tooltip says "' + tip.text + '", expected the name ' + name);
    const label = info.labels[i] >= 0 ? (info.classes.length === info.datasetClasses.length ?
                  info.classes[info.labels[i]] : info.datasetClasses[info.labels[i]]) : null;
    if (label) check(tip.text.includes(label), 'the tooltip does not name the label ' + label);
    if (check(tip.thumb, 'the tooltip has no .thumb')) {
      check(tip.loaded > 0, 'the tooltip thumbnail\'s sheet ' + tip.thumb + ' did not load');
      check(tip.w >= info.thumbs.size && tip.h >= info.thumbs.size,
            'the tooltip thumbnail is ' + tip.w + 'x' + tip.h + ' px, smaller than the thumbnail size');
    }
    await page.locator('#tooltip .thumb').screenshot({ path: path.join(outDir, 'report-thumb.png') })
      .catch((e) => fail('cannot screenshot the thumbnail: ' + e.message));
    const box = await page.locator('.scatter[data-embedding="' + k0 + '"]').boundingBox();
    const tipBox = await tooltip.boundingBox();
    if (box && tipBox) {
      const x0 = Math.max(0, Math.min(box.x, tipBox.x) - 10), y0 = Math.max(0, Math.min(box.y, tipBox.y) - 10);
      const x1 = Math.max(box.x + box.width, tipBox.x + tipBox.width) + 10;
      const y1 = Math.max(box.y + box.height, tipBox.y + tipBox.height) + 10;
      await page.screenshot({ path: path.join(outDir, 'report-tooltip.png'),
                              clip: { x: x0, y: y0, width: x1 - x0, height: y1 - y0 } });
    }
    console.log('hovered: ' + JSON.stringify({ index: i, name: name, size: info.thumbs.size,
                                               width: tip.w, gap: target.gap }));

    // --- click: the neighbours, and a highlight in every map ---
    const before = await page.$$eval('.scatter canvas', (cs) => cs.map((c) => c.toDataURL()));
    await page.mouse.click(target.x + 1, target.y);
    const expected = [name].concat(info.idx.slice(i * info.k, (i + 1) * info.k).map((j) => info.names[j]));
    await page.waitForFunction((count) =>
      document.querySelectorAll('#neighbors .thumb').length === count, expected.length, { timeout: 5000 })
      .catch(() => fail('clicking point ' + i + ' does not show ' + expected.length + ' thumbnails in #neighbors'));
    const shown = await page.$$eval('#neighbors [data-name]', (fs) => fs.map((f) => f.getAttribute('data-name')));
    check(JSON.stringify(shown) === JSON.stringify(expected), '#neighbors shows ' + JSON.stringify(shown) +
          ', expected the query and data.neighbors.idx: ' + JSON.stringify(expected));
    check(await page.locator('#neighbors').isVisible(), '#neighbors is not visible after a click');
    const after = await page.$$eval('.scatter canvas', (cs) => cs.map((c) => c.toDataURL()));
    after.forEach((png, s) => check(png !== before[s], 'scatter ' + s + ' did not change (no highlight) after the click'));

    // --- a picture opens full size, and closes again ---
    const firstImg = page.locator('section img').first();
    if (await firstImg.count() > 0) {
      await firstImg.scrollIntoViewIfNeeded();
      await firstImg.click();
      const big = await page.locator('.lightbox img').evaluate((e) => e.naturalWidth).catch(() => 0);
      check(big > 0, 'clicking a picture does not show it full size (.lightbox)');
      await page.locator('.lightbox').click().catch(() => {});
    }

    // --- the whole page, with the neighbours panel filled, for the CI artifact ---
    await page.mouse.move(0, 0);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: path.join(outDir, 'report-screenshot.png'), fullPage: true });
  } finally {
    await browser.close();
  }
  if (problems.length > 0) {
    console.log(problems.length + ' problem(s) in ' + url);
    process.exit(1);
  }
  console.log('ok: ' + url);
}

main().catch((e) => { console.log('FAIL: ' + (e && e.stack || e)); process.exit(1); });
