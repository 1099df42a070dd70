// Headless-Chromium test of the viewer page: serves web/ on 127.0.0.1, loads the GQA example at
// TP=2 → TP=3 and checks the SVG against uc-merge's plan (expected.json from the expected_plan
// example), plus the tensor filter, drag and drop, typed errors, a DCP checkpoint's chunks, the
// self-contained page, and the pages `uc view` writes without a viewer build (diagrams pre-rendered).
//
// node web/test/browser-test.mjs [OUT_DIR]   (OUT_DIR holds expected.json, standalone.html and
// view_static.html (+ view_static_dcp.html when the shared fixtures exist); screenshots are written
// there; default target/web-test)

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const out = path.resolve(process.argv[2] || path.join(root, '..', 'target', 'web-test'));
const expected = JSON.parse(fs.readFileSync(path.join(out, 'expected.json'), 'utf8'));
const CHROMIUM = process.env.UC_CHROMIUM || '/usr/bin/chromium';

let passed = 0;
let failed = 0;
async function test(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}\n     ${String(e && e.stack ? e.stack : e).split('\n').slice(0, 6).join('\n     ')}`);
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}
function eq(a, b, msg) {
  const sa = JSON.stringify(a);
  const sb = JSON.stringify(b);
  if (sa !== sb) throw new Error(`${msg}\n  got      ${sa}\n  expected ${sb}`);
}
const near = (a, b) => Math.abs(a - b) < 0.011;
const parseBox = (s) => {
  const [o, l] = s.split(':');
  return { off: o.split(',').map(Number), len: l.split(',').map(Number) };
};
const inside = (a, b) => a.off.every((o, d) => o >= b.off[d] && o + a.len[d] <= b.off[d] + b.len[d]);
const numel = (b) => b.len.reduce((x, y) => x * y, 1);

// A static file server for web/ on a free loopback port.
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm' };
const server = http.createServer((req, res) => {
  const p = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  const f = path.join(root, path.normalize(p.endsWith('/') ? p + 'index.html' : p));
  if (!f.startsWith(root + path.sep)) { res.writeHead(403).end(); return; }
  fs.readFile(f, (err, data) => {
    if (err) { res.writeHead(404).end('not found'); return; }
    res.writeHead(200, { 'content-type': TYPES[path.extname(f)] || 'application/octet-stream' });
    res.end(data);
  });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const base = `http://127.0.0.1:${server.address().port}/`;

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'uc-chromium-'));
const ctx = await chromium.launchPersistentContext(userDataDir, {
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 900 },
});
// Offline: anything but the local server, file:, blob: and data: is refused.
const outside = [];
await ctx.route('**/*', (route) => {
  const u = route.request().url();
  if (u.startsWith(base) || /^(file|blob|data):/.test(u)) return route.continue();
  outside.push(u);
  return route.abort();
});
const page = ctx.pages()[0] || (await ctx.newPage());
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));
page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });

const renders = () => page.evaluate(() => document.body.dataset.renders || '0');
async function act(fn) {
  const before = await renders();
  await fn();
  await page.waitForFunction((b) => (document.body.dataset.renders || '0') !== b, before, { timeout: 15000 });
}
async function ready() {
  await page.waitForFunction(() => ['ready', 'error', 'empty'].includes(document.body.dataset.state), null, { timeout: 20000 });
}

// Everything the diagram shows, read from its data attributes.
const scrape = () => page.$$eval('#diagram g[data-kind="panel"]', (panels) => panels.map((p) => {
  const rects = (g) => [...g.querySelectorAll('rect')].map((r) => ['x', 'y', 'width', 'height'].map((k) => +r.getAttribute(k)));
  const d = p.dataset;
  return {
    side: d.side, x: +d.x, y: +d.y, w: +d.w, h: +d.h, rows: +d.rows, cols: +d.cols,
    pieces: [...p.querySelectorAll('g[data-kind="piece"]')].map((g) => ({
      ranks: g.dataset.ranks, rank: +g.dataset.rank, box: g.dataset.box, fill: g.getAttribute('fill'),
      label: g.querySelector('text[data-kind="label"]')?.textContent, rects: rects(g),
    })),
    reads: [...p.querySelectorAll('g[data-kind="read"]')].map((g) => ({
      src: +g.dataset.srcRank, dst: +g.dataset.dstRank, box: g.dataset.box, bytes: +g.dataset.bytes,
      on: g.classList.contains('on'), visible: getComputedStyle(g).display !== 'none', rects: rects(g),
    })),
    subs: [...p.querySelectorAll('g[data-kind="subparam"]')].map((g) => [g.dataset.sub, g.dataset.box]),
    padding: [...p.querySelectorAll('g[data-kind="padding"]')].map((g) => g.dataset.box),
    experts: p.querySelectorAll('g[data-kind="expert"]').length,
    zero: p.querySelectorAll('g[data-kind="piece"][data-zero="1"]').length,
  };
}));
const bytesOf = (side) => page.$$eval(`#diagram g[data-kind="bytes"][data-side="${side}"]`,
  (gs) => gs.map((g) => [+g.dataset.rank, +g.dataset.bytes]));
const sortBy = (xs, key) => [...xs].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
const pieceKey = (p) => `${p.rank}|${p.box}`;
const rankBoxes = (ps) => sortBy(ps.map((x) => ({ rank: x.rank, box: x.box })), pieceKey);
const opKey = (o) => `${o.src}|${o.dst}|${o.box}`;

const gqa = 'index.html?src=examples/gqa_tp2_deepspeed.json&tensor=blocks.0.qkv.weight';
let panels;

await test('page loads the GQA example and lists its tensors', async () => {
  await page.goto(base + gqa);
  await ready();
  eq(await page.evaluate(() => document.body.dataset.state), 'ready', 'state');
  const names = await page.$$eval('#tensors li', (l) => l.map((x) => x.dataset.name));
  assert(names.length === 27, `27 tensors listed, got ${names.length}`);
  eq(await page.$eval('#tensors li.sel', (x) => x.dataset.name), expected.tensor, 'selected tensor');
  eq(await page.$eval('#error', (e) => e.hidden), true, 'no error shown');
});

await test('filter box narrows the tensor list', async () => {
  await page.fill('#filter', 'QKV');
  const shown = await page.$$eval('#tensors li:not([hidden])', (l) => l.map((x) => x.dataset.name));
  eq(shown, ['blocks.0.qkv.weight', 'blocks.0.qkv.bias', 'blocks.1.qkv.weight', 'blocks.1.qkv.bias'], 'filtered');
  await page.fill('#filter', '');
  eq((await page.$$eval('#tensors li:not([hidden])', (l) => l.length)), 27, 'cleared filter');
});

await test('target TP=3 redraws with uc-merge pieces for source and target', async () => {
  await act(() => page.fill('input[name="tp"]', '3'));
  eq(await page.evaluate(() => document.body.dataset.state), 'ready', 'state');
  panels = await scrape();
  eq(panels.map((p) => p.side), ['source', 'target'], 'two panels');
  const [src, dst] = panels;
  eq(rankBoxes(src.pieces), rankBoxes(expected.source_pieces), 'source pieces');
  eq(rankBoxes(dst.pieces), rankBoxes(expected.target_pieces), 'target pieces');
  eq(dst.pieces.length, 9, '3 target ranks × q, k, v');
  for (const p of [...src.pieces, ...dst.pieces]) {
    eq(p.ranks, String(p.rank), 'no replicas in a fused TP layout');
    eq(p.label, `r${p.rank}`, `label of ${p.box}`);
  }
  const fills = new Set(dst.pieces.map((p) => `${p.rank}${p.fill}`));
  eq(fills.size, 3, 'one colour per target rank');
});

await test('piece rectangles sit where their boxes are', async () => {
  for (const p of panels) {
    eq([p.rows, p.cols], expected.shape, `${p.side} fold`);
    for (const pc of p.pieces) {
      const b = parseBox(pc.box);
      eq(pc.rects.length, 1, 'one rectangle per 2-D box');
      const [x, y, w, h] = pc.rects[0];
      const want = [p.x + (b.off[1] * p.w) / p.cols, p.y + (b.off[0] * p.h) / p.rows, (b.len[1] * p.w) / p.cols, (b.len[0] * p.h) / p.rows];
      assert([x, y, w, h].every((v, i) => near(v, want[i])), `${p.side} ${pc.box}: ${[x, y, w, h]} vs ${want}`);
    }
  }
});

await test('Q/K/V sub-param boundaries are drawn on both sides', async () => {
  for (const p of panels) eq(p.subs, expected.subparams, `${p.side} sub-params`);
});

await test('highlighted reads are exactly the plan ops, each inside its source and target piece', async () => {
  const want = sortBy(expected.ops.map((o) => ({ src: o.src, dst: o.dst, box: o.box })), opKey);
  for (const p of panels) {
    const got = sortBy(p.reads.map((o) => ({ src: o.src, dst: o.dst, box: o.box })), opKey);
    eq(got, want, `${p.side} read regions`);
  }
  const [src, dst] = panels;
  for (const o of src.reads) {
    const b = parseBox(o.box);
    assert(src.pieces.some((p) => p.rank === o.src && inside(b, parseBox(p.box))), `read ${o.box} lies in a piece of source r${o.src}`);
    assert(dst.pieces.some((p) => p.rank === o.dst && inside(b, parseBox(p.box))), `read ${o.box} lies in a piece of target r${o.dst}`);
  }
  for (const t of [0, 1, 2]) {
    const cells = src.reads.filter((o) => o.dst === t).reduce((a, o) => a + numel(parseBox(o.box)), 0);
    const held = dst.pieces.filter((p) => p.rank === t).reduce((a, p) => a + numel(parseBox(p.box)), 0);
    eq(cells, held, `target r${t} reads all it holds`);
  }
});

await test('focus shows one target rank\'s reads; clicking a target piece moves it', async () => {
  const vis = async () => (await scrape())[0].reads.filter((o) => o.visible).map((o) => o.dst);
  const v0 = await vis();
  assert(v0.length > 0 && v0.every((d) => d === 0), `initial focus r0: ${v0}`);
  await page.click('#diagram g[data-side="target"] g[data-kind="piece"][data-rank="2"]', { force: true });
  const v2 = await vis();
  eq(v2.length, expected.ops.filter((o) => o.dst === 2).length, 'reads of r2 shown');
  assert(v2.every((d) => d === 2), `focus r2: ${v2}`);
  await page.selectOption('#focus', '-1');
  eq((await vis()).length, expected.ops.length, 'all reads shown');
  await page.selectOption('#focus', '1');
  eq(await page.$eval('#diagram svg[data-view="reshard"]', (s) => s.dataset.focus), '1', 'svg focus attribute');
});

await test('bytes per rank match the plan', async () => {
  eq(await bytesOf('source'), expected.read_bytes, 'bytes read from each source rank');
  eq(await bytesOf('target'), expected.written_bytes, 'bytes each target rank reads');
  const cells = await page.$$eval('#matrix td[data-bytes]', (t) => t.map((c) => [+c.dataset.dst, +c.dataset.src, +c.dataset.bytes]));
  for (const [d, s, b] of cells) {
    const want = expected.ops.filter((o) => o.dst === d && o.src === s).reduce((a, o) => a + o.bytes, 0);
    eq(b, want, `matrix r${d} ← r${s}`);
  }
});

await test('screenshot of TP=2 → TP=3 (focus r1)', async () => {
  const file = path.join(out, 'gqa_tp2_to_tp3.png');
  await page.screenshot({ path: file, fullPage: true });
  assert(fs.statSync(file).size > 10000, 'screenshot written');
});

await test('invalid metadata shows uc-schema\'s own error text', async () => {
  await act(() => page.setInputFiles('#file', { name: 'bad.json', mimeType: 'application/json', buffer: Buffer.from(expected.invalid_doc) }));
  eq(await page.$eval('#error', (e) => e.textContent), expected.invalid_error, 'error text');
  eq(await page.$eval('#error', (e) => e.hidden), false, 'error shown');
  eq(await page.$eval('#tensors li.sel', (x) => [x.dataset.name, x.classList.contains('bad')]), [expected.tensor, true], 'tensor marked invalid');
  await page.screenshot({ path: path.join(out, 'invalid_tensor.png') });
  await act(() => page.setInputFiles('#file', { name: 'broken.json', mimeType: 'application/json', buffer: Buffer.from('{"tensors": [') }));
  const msg = await page.$eval('#error', (e) => e.textContent);
  assert(msg.startsWith('metadata is not valid JSON: '), msg);
  eq(await page.evaluate(() => document.body.dataset.state), 'error', 'state');
  await page.screenshot({ path: path.join(out, 'invalid_json.png') });
});

await test('drag and drop of a model description: experts, vocab padding, a target that does not fit', async () => {
  const text = fs.readFileSync(path.join(root, 'examples', 'moe_model.json'), 'utf8');
  await act(() => page.evaluate((t) => {
    const dt = new DataTransfer();
    dt.items.add(new File([t], 'moe_model.json', { type: 'application/json' }));
    document.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, text));
  eq(await page.$eval('#docinfo', (d) => d.textContent.includes('model · source tp=2 dp=4 ep=2 pp=2 zero=1')), true, 'doc info');
  await act(() => page.click('#tensors li[data-name="blocks.2.moe.experts.w1"]'));
  let [src] = await scrape();
  eq(src.experts, 8, 'eight expert blocks');
  eq(src.zero > 0, true, 'ZeRO-1 pieces');
  await page.screenshot({ path: path.join(out, 'moe_experts.png'), fullPage: true });
  await act(() => page.click('#tensors li[data-name="embed.weight"]'));
  [src] = await scrape();
  eq(src.padding, ['1000,0:24,64'], 'vocab padding rows 1000..1024 hatched');
  await page.screenshot({ path: path.join(out, 'moe_embed.png'), fullPage: true });
  await act(() => page.click('#tensors li[data-name="blocks.0.moe.experts.w1"]'));
  await act(() => page.fill('input[name="ep"]', '3'));
  const err = await page.$eval('#error', (e) => e.textContent);
  eq(err, 'target tp=2 dp=4 ep=3 pp=2 zero=1: topology: ep 3 does not divide dp 4 (experts are spread over data-parallel ranks)', 'target error');
  assert((await scrape()).length === 1, 'source still drawn');
});

await test('uc.json manifest: ZeRO-1 flat ranges under TP and a padded vocabulary', async () => {
  await page.goto(base + 'index.html?src=examples/uc_tp2_dp2_zero1.json&tensor=embed.weight');
  await ready();
  const [src, dst] = await scrape();
  eq(src.zero, src.pieces.length, 'every source piece is a ZeRO range');
  eq(src.padding.length > 0, true, 'padding drawn');
  eq(dst.side, 'target', 'target drawn');
});

await test('self-contained page (uc view) works from file:// without a server', async () => {
  const file = path.join(out, 'standalone.html');
  await page.goto('file://' + file);
  await ready();
  eq(await page.evaluate(() => document.body.dataset.state), 'ready', 'state');
  await act(() => page.click(`#tensors li[data-name="${expected.tensor}"]`));
  const [src] = await scrape();
  eq(rankBoxes(src.pieces), rankBoxes(expected.source_pieces), 'source pieces');
  await page.screenshot({ path: path.join(out, 'standalone.png') });
});

await test('DCP checkpoint (uc view of fsdp2_tp_2x2): chunks drawn by writer rank, mesh line, chunk table', async () => {
  await page.goto(base + 'index.html?src=examples/dcp_fsdp2_tp_2x2.json&tensor=blocks.0.qkv.weight');
  await ready();
  eq(await page.evaluate(() => document.body.dataset.state), 'ready', 'state');
  assert((await page.$eval('#docinfo', (d) => d.textContent)).includes('dcp · '), 'format dcp');
  const [src, dst] = await scrape();
  // tp splits the rows first, dp splits each tp block: r0 0..15, r2 16..31, r1 32..47, r3 48..63.
  const want = [[0, '0,0:16,32'], [2, '16,0:16,32'], [1, '32,0:16,32'], [3, '48,0:16,32']];
  eq(rankBoxes(src.pieces), rankBoxes(want.map(([rank, box]) => ({ rank, box }))), 'source pieces by writer rank');
  for (const p of src.pieces) eq(p.label, `r${p.rank}`, `label of ${p.box}`);
  eq(new Set(src.pieces.map((p) => p.fill)).size, 4, 'one colour per writer');
  eq(dst.side, 'target', 'target drawn');
  const mesh = await page.$eval('#diagram text[data-kind="dcp-mesh"]', (t) => t.textContent);
  eq(mesh, 'mesh (4) · (Shard(0)) · 4 chunks · layout shard(dim 0)', 'mesh / placements line');
  const rows = await page.$$eval('#chunks tr[data-box]', (rs) => rs.map((r) => [+r.dataset.rank, r.dataset.box, r.dataset.file]));
  eq(sortBy(rows, (r) => r[1]), sortBy(want.map(([r, b]) => [r, b, `__${r}_0.distcp`]), (r) => r[1]), 'chunk table');
  const cols = await page.$$eval('#matrix tr:first-of-type th', (t) => t.map((x) => x.textContent));
  eq(cols, ['target \\ source', 'r0', 'r1', 'r2', 'r3', 'total'], 'reads come from the writer ranks');
  await page.screenshot({ path: path.join(out, 'dcp_qkv.png'), fullPage: true });
  await act(() => page.click('#tensors li[data-name="blocks.0.fc2.weight"]'));
  eq(await page.$eval('#tables', (t) => t.dataset.dcp), 'mesh (2, 2) · (Shard(0), Shard(1))', 'fc2 grid');
  await act(() => page.click('#tensors li[data-name="logit_scale"]'));
  const empty = await page.$$eval('#chunks tr.empty', (rs) => rs.map((r) => r.dataset.box));
  eq(empty, ['1:0'], 'the empty chunk is listed');
  eq((await scrape())[0].pieces.length, 1, 'and not drawn');
});

// Every diagram of a pre-rendered page (uc view without --pkg): tensor, size, pieces drawn.
const staticDiagrams = () => page.$$eval('#diagram section.tensor', (ss) => ss.map((s) => {
  const svg = s.querySelector('svg');
  const r = svg ? svg.getBoundingClientRect() : { width: 0, height: 0 };
  const pieces = svg ? [...svg.querySelectorAll('g[data-kind="piece"] rect')] : [];
  const boxes = pieces.map((p) => p.getBoundingClientRect()).filter((b) => b.width > 0 && b.height > 0);
  return {
    name: s.dataset.name, tensor: svg && svg.dataset.tensor, w: r.width, h: r.height,
    pieces: pieces.length, shown: boxes.length, ranks: [...new Set(pieces.map((p) => p.parentNode.dataset.rank))],
    subs: svg ? [...svg.querySelectorAll('g[data-kind="subparam"]')].map((g) => g.dataset.sub) : [],
    err: s.querySelector('.err')?.textContent || '',
  };
}));

// Loads a page uc view wrote without --pkg; returns what it drew. Any request but the page fails it.
async function openStatic(file) {
  const requests = [];
  const onRequest = (r) => requests.push(r.url());
  page.on('request', onRequest);
  await page.goto('file://' + file);
  await page.waitForLoadState('load');
  page.off('request', onRequest);
  eq(requests, ['file://' + file], 'the page loads nothing else');
  eq(await page.evaluate(() => document.body.dataset.state), 'static', 'state');
  const n = +(await page.evaluate(() => document.body.dataset.tensors));
  const drawn = await staticDiagrams();
  eq(drawn.length, n, 'one section per tensor');
  const listed = await page.$$eval('#tensors li', (l) => l.map((x) => x.dataset.name));
  eq(listed, drawn.map((d) => d.name), 'the list names every drawn tensor');
  for (const d of drawn) {
    eq(d.err, '', `${d.name} drawn without error`);
    eq(d.tensor, d.name, `${d.name} has its svg`);
    assert(d.w > 100 && d.h > 50, `${d.name}: svg ${d.w}×${d.h}`);
    assert(d.pieces > 0 && d.shown > 0, `${d.name}: ${d.shown}/${d.pieces} pieces with a size`);
  }
  return drawn;
}

await test('uc view without a viewer build, run from another directory: every tensor\'s diagram renders', async () => {
  const file = path.join(out, 'view_static.html');
  const drawn = await openStatic(file);
  eq(drawn.length, 27, 'tensors of tp2_dp2_zero2_bf16');
  const qkv = drawn.find((d) => d.name === 'blocks.0.qkv.weight');
  assert(qkv, 'qkv drawn');
  eq(qkv.subs, ['q', 'k', 'v'], 'Q/K/V sub-params');
  eq([...new Set(drawn.flatMap((d) => d.ranks))].sort(), ['0', '1', '2', '3'], 'tp 2 × dp 2 ranks');
  await page.screenshot({ path: path.join(out, 'view_static.png') });
  await page.locator('section.tensor[data-name="blocks.0.qkv.weight"]').screenshot({ path: path.join(out, 'view_static_qkv.png') });
  assert(fs.statSync(path.join(out, 'view_static.png')).size > 10000, 'screenshot written');
  await page.fill('#filter', 'qkv');
  const shown = await page.$$eval('#diagram section.tensor:not([hidden])', (ss) => ss.map((s) => s.dataset.name));
  eq(shown.sort(), ['blocks.0.qkv.bias', 'blocks.0.qkv.weight', 'blocks.1.qkv.bias', 'blocks.1.qkv.weight'], 'filter');
});

await test('uc view without a viewer build of a DCP checkpoint: chunks by writer rank and their table', async () => {
  const file = path.join(out, 'view_static_dcp.html');
  if (!fs.existsSync(file)) {
    console.log('     (skipped: no ../shared/fixtures/dcp/fsdp2_tp_2x2)');
    return;
  }
  const drawn = await openStatic(file);
  const qkv = drawn.find((d) => d.name === 'blocks.0.qkv.weight');
  eq(qkv.ranks.sort(), ['0', '1', '2', '3'], 'qkv written by 4 ranks');
  const rows = await page.$$eval('#diagram section.tensor', (ss) => ss.find((s) => s.dataset.name === 'blocks.0.qkv.weight')
    .querySelectorAll('table.chunks tr[data-box]').length);
  eq(rows, 4, 'qkv chunk table');
  await page.screenshot({ path: path.join(out, 'view_static_dcp.png') });
});

await test('no page errors and no request left the machine', async () => {
  eq(pageErrors, [], 'page errors');
  eq(outside, [], 'outside requests');
});

await ctx.close();
server.close();
fs.rmSync(userDataDir, { recursive: true, force: true });
console.log(`\n${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
