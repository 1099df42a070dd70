// unicheck viewer page: loads the wasm, reads metadata (picker, drag and drop, ?src=, or embedded),
// lists tensors, and draws source vs target partitions. No framework, no network beyond ?src=.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { viewer: null, doc: null, index: -1, focus: 0, renders: 0 };

function b64bytes(s) {
  return Uint8Array.from(atob(s.trim()), (c) => c.charCodeAt(0));
}

// The wasm-bindgen module: embedded (self-contained page) or ./pkg/ next to this file.
async function loadWasm() {
  const embedded = $('uc-wasm');
  if (embedded) {
    const glue = new TextDecoder().decode(b64bytes($('uc-glue').textContent));
    const url = URL.createObjectURL(new Blob([glue], { type: 'text/javascript' }));
    const mod = await import(url);
    await mod.default({ module_or_path: b64bytes(embedded.textContent) });
    return mod;
  }
  const mod = await import('./pkg/uc_wasm.js');
  await mod.default();
  return mod;
}

function setState(s) {
  state.renders += 1;
  document.body.dataset.state = s;
  document.body.dataset.renders = String(state.renders);
}

function showError(msg) {
  const e = $('error');
  e.textContent = msg;
  e.hidden = !msg;
}

function errText(e) {
  return e instanceof Error ? e.message : String(e);
}

function el(tag, props = {}, ...kids) {
  const n = document.createElement(tag);
  Object.assign(n, props);
  for (const k of kids) n.append(k);
  return n;
}

function bytes(n) {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i += 1; }
  return i ? `${Math.round(n * 10) / 10} ${u[i]}` : `${n} B`;
}

function topoFromForm() {
  const f = $('target');
  const v = (k) => Math.max(1, parseInt(f.elements[k].value, 10) || 1);
  return { tp: v('tp'), dp: v('dp'), ep: v('ep'), pp: v('pp'), zero_stage: parseInt(f.elements.zero_stage.value, 10) || 0 };
}

function setForm(t) {
  const f = $('target');
  for (const k of ['tp', 'dp', 'ep', 'pp']) f.elements[k].value = t[k];
  f.elements.zero_stage.value = String(t.zero_stage);
}

// Loads metadata text; any error (bad JSON, invalid layout) is shown as the library words it.
function load(text, name = '') {
  state.viewer = null;
  state.doc = null;
  state.index = -1;
  $('tensors').replaceChildren();
  $('diagram').replaceChildren();
  $('tables').replaceChildren();
  $('docinfo').replaceChildren();
  $('count').textContent = '';
  try {
    state.viewer = new state.mod.Viewer(text);
  } catch (e) {
    showError(errText(e));
    setState('error');
    return false;
  }
  showError('');
  const doc = JSON.parse(state.viewer.summary());
  state.doc = doc;
  // A DCP source has no tp/dp/… topology: its ranks are the ones that wrote files (see the notes).
  const source = doc.format === 'dcp' ? '' : ` · source ${topoLabel(doc.source)}`;
  const info = el('div', { textContent: `${name ? name + ' · ' : ''}${doc.format}${source} · ${doc.tensors.length} tensors` });
  const notes = el('ul');
  for (const n of doc.notes) notes.append(el('li', { textContent: n }));
  if (doc.errors.length) notes.append(el('li', { textContent: `${doc.errors.length} tensors have invalid metadata (red)` }));
  $('docinfo').append(info, notes);
  const t = { ...doc.source };
  for (const k of ['tp', 'dp', 'ep', 'pp']) if (params.has(k)) t[k] = parseInt(params.get(k), 10) || 1;
  if (params.has('zero')) t.zero_stage = parseInt(params.get('zero'), 10) || 0;
  setForm(t);
  listTensors();
  const want = params.get('tensor');
  let idx = doc.tensors.findIndex((x) => x.name === want);
  if (idx < 0) idx = doc.tensors.findIndex((x) => !x.error);
  select(Math.max(0, idx));
  return true;
}

function topoLabel(t) {
  return `tp=${t.tp} dp=${t.dp} ep=${t.ep} pp=${t.pp} zero=${t.zero_stage}`;
}

function listTensors() {
  const ul = $('tensors');
  ul.replaceChildren();
  for (const t of state.doc.tensors) {
    const li = el('li', { title: t.error || `${t.cut} · ${t.layout}${t.dcp ? ' · ' + t.dcp : ''}` },
      t.name, ' ', el('small', { textContent: `${t.role === 'param' ? '' : t.role + ' '}[${t.shape.join('×')}] ${t.cut}` }));
    li.dataset.index = String(t.index);
    li.dataset.name = t.name;
    if (t.error) li.classList.add('bad');
    li.addEventListener('click', () => select(t.index));
    ul.append(li);
  }
  filter();
}

function filter() {
  const q = $('filter').value.trim().toLowerCase();
  let shown = 0;
  for (const li of $('tensors').children) {
    const hit = !q || li.dataset.name.toLowerCase().includes(q);
    li.hidden = !hit;
    if (hit) shown += 1;
  }
  if (state.doc) $('count').textContent = `${shown} of ${state.doc.tensors.length} tensors`;
}

function select(i) {
  state.index = i;
  for (const li of $('tensors').children) li.classList.toggle('sel', li.dataset.index === String(i));
  render();
}

function fillFocus(ranks) {
  const s = $('focus');
  const keep = state.focus;
  s.replaceChildren(el('option', { value: '-1', textContent: 'all ranks' }));
  for (let r = 0; r < ranks; r += 1) s.append(el('option', { value: String(r), textContent: `r${r}` }));
  state.focus = keep < ranks ? keep : 0;
  s.value = String(state.focus);
}

// Shows only the reads of the focused target rank (no redraw).
function applyFocus() {
  for (const g of $('diagram').querySelectorAll('g[data-kind="read"]')) {
    g.classList.toggle('on', state.focus < 0 || g.dataset.dstRank === String(state.focus));
  }
  const svg = $('diagram').querySelector('svg[data-view="reshard"]');
  if (svg) svg.dataset.focus = state.focus < 0 ? '' : String(state.focus);
}

function render() {
  const { viewer, doc, index } = state;
  $('diagram').replaceChildren();
  $('tables').replaceChildren();
  delete $('tables').dataset.dcp;
  if (!viewer || index < 0 || index >= doc.tensors.length) { setState('empty'); return; }
  const t = doc.tensors[index];
  if (t.error) { showError(t.error); setState('error'); return; }
  const topo = topoFromForm();
  let out;
  try {
    out = JSON.parse(viewer.reshard(index, JSON.stringify(topo), state.focus));
  } catch (e) {
    // The target does not fit this tensor: say why, and still show the source.
    showError(`target ${topoLabel(topo)}: ${errText(e)}`);
    try {
      const src = JSON.parse(viewer.tensor(index));
      $('diagram').innerHTML = src.svg;
      if (src.summary.dcp) dcpTable(src.summary.dcp);
    } catch (e2) {
      showError(errText(e2));
    }
    setState('error');
    return;
  }
  showError('');
  const s = out.summary;
  if (s.target.ranks !== $('focus').options.length - 1) fillFocus(s.target.ranks);
  $('diagram').innerHTML = out.svg;
  for (const g of $('diagram').querySelectorAll('g[data-kind="piece"]')) {
    if (g.closest('g[data-side="target"]')) {
      g.addEventListener('click', () => { state.focus = parseInt(g.dataset.rank, 10); $('focus').value = String(state.focus); applyFocus(); });
    }
  }
  applyFocus();
  tables(out.summary);
  if (s.dcp) dcpTable(s.dcp);
  setState('ready');
}

// A DCP tensor's facts: the mesh and placements inferred from its chunks, and every chunk (empty
// ones too) with the rank that wrote it and where its bytes are.
function dcpTable(d) {
  const t = el('table', { id: 'chunks' });
  t.append(el('caption', { textContent: `DCP ${d.key} · ${d.label} · ${d.world} ranks wrote files` }));
  const head = el('tr');
  for (const h of ['writer', 'offsets', 'sizes', 'stored at', 'file', 'byte offset', 'length']) head.append(el('th', { textContent: h }));
  t.append(head);
  for (const c of d.chunks) {
    const sw = el('span', { className: 'sw' });
    if (c.color) sw.style.background = c.color;
    const tr = el('tr', {},
      el('th', {}, sw, c.rank === null ? 'not stored' : `r${c.rank}`),
      el('td', { textContent: `[${c.offsets.join(', ')}]` }),
      el('td', { textContent: `[${c.sizes.join(', ')}]${c.empty ? ' empty' : ''}` }),
      el('td', { textContent: `[${c.stored_offsets.join(', ')}]` }),
      el('td', { textContent: c.file || '' }),
      el('td', { textContent: String(c.offset) }),
      el('td', { textContent: bytes(c.length) }));
    tr.dataset.rank = c.rank === null ? '' : String(c.rank);
    tr.dataset.box = c.box;
    tr.dataset.file = c.file || '';
    if (c.empty) tr.classList.add('empty');
    t.append(tr);
  }
  $('tables').append(t);
  $('tables').dataset.dcp = d.mesh_label;
}

function tables(s) {
  const src = [...new Set(s.source.pieces.flatMap((p) => p.ranks))].sort((a, b) => a - b);
  const cell = new Map(s.matrix.map((m) => [`${m.dst}/${m.src}`, m.bytes]));
  const m = el('table', { id: 'matrix' });
  m.append(el('caption', { textContent: 'bytes each target rank reads from each source rank' }));
  const head = el('tr', {}, el('th', { textContent: 'target \\ source' }));
  for (const r of src) head.append(el('th', { textContent: `r${r}` }));
  head.append(el('th', { textContent: 'total' }));
  m.append(head);
  for (const [d, total] of s.written_bytes) {
    const tr = el('tr', {}, el('th', { textContent: `r${d}` }));
    for (const r of src) {
      const b = cell.get(`${d}/${r}`) || 0;
      const td = el('td', { textContent: b ? bytes(b) : '·' });
      td.dataset.dst = String(d);
      td.dataset.src = String(r);
      td.dataset.bytes = String(b);
      tr.append(td);
    }
    tr.append(el('td', { textContent: bytes(total) }));
    m.append(tr);
  }
  const read = el('tr', {}, el('th', { textContent: 'read' }));
  const rb = new Map(s.read_bytes);
  for (const r of src) read.append(el('td', { textContent: bytes(rb.get(r) || 0) }));
  read.append(el('td', { textContent: bytes(s.read_bytes.reduce((a, x) => a + x[1], 0)) }));
  m.append(read);
  $('tables').append(m);
}

async function fetchSrc(src) {
  try {
    const r = await fetch(src);
    if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
    load(await r.text(), src.split('/').pop());
  } catch (e) {
    showError(`could not load ${src}: ${errText(e)}`);
    setState('error');
  }
}

async function readFile(f) {
  if (f) load(await f.text(), f.name);
}

function wire() {
  $('file').addEventListener('change', (e) => readFile(e.target.files[0]));
  const drop = $('drop');
  for (const ev of ['dragenter', 'dragover']) {
    document.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add('over'); });
  }
  for (const ev of ['dragleave', 'drop']) {
    document.addEventListener(ev, () => drop.classList.remove('over'));
  }
  document.addEventListener('drop', (e) => { e.preventDefault(); readFile(e.dataTransfer.files[0]); });
  $('filter').addEventListener('input', filter);
  $('target').addEventListener('input', () => render());
  $('target').addEventListener('submit', (e) => e.preventDefault());
  $('focus').addEventListener('change', (e) => { state.focus = parseInt(e.target.value, 10); applyFocus(); });
}

async function main() {
  wire();
  try {
    state.mod = await loadWasm();
  } catch (e) {
    showError(`could not start the viewer's wasm: ${errText(e)}`);
    setState('error');
    return;
  }
  $('version').textContent = `uc-wasm ${state.mod.version()}`;
  window.uc = { load, state, render };
  const meta = $('uc-meta');
  if (meta) {
    for (const n of document.querySelectorAll('.examples')) n.hidden = true;
    const dec = (id) => new TextDecoder().decode(b64bytes($(id).textContent));
    load(dec('uc-meta'), $('uc-name') ? dec('uc-name') : '');
  } else if (params.has('src')) {
    await fetchSrc(params.get('src'));
  } else {
    setState('empty');
  }
  if (params.has('focus')) {
    state.focus = parseInt(params.get('focus'), 10);
    $('focus').value = String(state.focus);
    applyFocus();
  }
}

main();
