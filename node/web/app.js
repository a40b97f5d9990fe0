// 村云 cadre app: hash-routed single page, offline-first.
// Every household edit goes through the outbox (IndexedDB) with the heads it was based on; the
// outbox is sent whenever the node is reachable, and the node merges each edit at those heads.
import * as db from './db.js';
import { esc, householdForm, needForm, readForm, checkHousehold, showErrors, watchNeedStatus } from './form.js';

const $ = (s) => document.querySelector(s);
const view = () => $('#view');
let online = navigator.onLine;
let flushing = null;

class Offline extends Error {}

/// Calls the node's API. Throws Offline when the node cannot be reached.
async function api(path, opts = {}) {
  let resp;
  const method = opts.method || 'GET';
  const headers = opts.body !== undefined ? { 'content-type': 'application/json' } : {};
  // CSRF: every state-changing call echoes the (non-HttpOnly) cookie the login set.
  if (method !== 'GET' && method !== 'HEAD') {
    const m = document.cookie.match(/(?:^|;\s*)cunyun_csrf=([^;]*)/);
    if (m) headers['x-csrf-token'] = decodeURIComponent(m[1]);
  }
  try {
    resp = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers,
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
    });
  } catch (e) {
    setOnline(false);
    throw new Offline('无法连接村节点');
  }
  setOnline(true);
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (resp.status === 401 && !path.endsWith('/login')) {
    await db.kvPut('me', null);
    if (!location.hash.startsWith('#/login')) location.hash = '#/login';
  }
  return { status: resp.status, body };
}

function setOnline(v) {
  if (online !== v) {
    online = v;
    if (v) flush();
  }
  updateNet();
}

async function updateNet() {
  const pending = (await db.all('outbox')).length;
  const el = $('#net');
  el.textContent = online ? (pending ? `在线 · 待上传${pending}` : '在线') : `离线${pending ? ` · 待上传${pending}` : ''}`;
  el.className = online ? 'net' : 'net off';
  const b = $('#banner');
  const notice = await db.kvGet('notice');
  if (!online) {
    b.hidden = false; b.className = 'banner';
    b.textContent = '离线模式：修改保存在本机，联网后自动上传。';
  } else if (notice) {
    b.hidden = false; b.className = 'banner conflict';
    b.innerHTML = `${esc(notice)} <a href="#/sync">查看</a>`;
  } else b.hidden = true;
}

function toast(msg) {
  const t = $('#toast');
  t.textContent = msg; t.hidden = false;
  toast.at = Date.now();
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 3500);
}

/// A random UUID (version 4, canonical lowercase) from crypto.getRandomValues, which works on the
/// plain-HTTP LAN address too (crypto.randomUUID needs a secure context). Used for outbox ids and
/// as the `client_id` of a create, which the node requires in exactly this form.
function newId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map(x => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ---------- cached data ----------

async function cached(key, path) {
  try {
    const r = await api(path);
    if (r.status === 200) { await db.kvPut(key, r.body); await db.kvPut(`${key}@`, Date.now()); return r.body; }
  } catch (e) { if (!(e instanceof Offline)) throw e; }
  return db.kvGet(key);
}
const schema = () => cached('schema', '/api/v1/schema');
const taxonomy = () => cached('taxonomy', '/api/v1/taxonomy');

/// A household record: fresh from the node when reachable (and kept), else the kept copy with
/// queued edits applied.
async function loadHousehold(id) {
  let rec = null;
  if (!id.startsWith('local-')) {
    try {
      const r = await api(`/api/v1/households/${encodeURIComponent(id)}`);
      if (r.status === 200) {
        rec = r.body;
        const pending = (await db.all('outbox')).filter(e => e.household_id === id);
        const keep = await db.get('records', id);
        if (pending.length && keep) return keep;
        await db.put('records', { id, rec, local: null });
        return { id, rec, local: null };
      }
      if (r.status === 404) { await forget(id); return null; }
    } catch (e) { if (!(e instanceof Offline)) throw e; }
  }
  return db.get('records', id);
}

/// Drops everything this phone keeps of a household the node no longer has (deleted on request,
/// here or on another device): the kept copy and any queued edits of it.
async function forget(id) {
  await db.del('records', id);
  for (const e of await db.all('outbox')) if (e.household_id === id) await db.del('outbox', e.edit_id);
}

function mergePatch(target, patch) {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out = (target && typeof target === 'object' && !Array.isArray(target)) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k]; else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/// RFC 7396 patch turning `a` into `b`.
function diff(a, b) {
  const p = {};
  for (const k of new Set([...Object.keys(a || {}), ...Object.keys(b || {})])) {
    const x = a?.[k], y = b?.[k];
    if (JSON.stringify(x) === JSON.stringify(y)) continue;
    if (y === undefined || y === null) { if (x !== undefined && x !== null) p[k] = null; continue; }
    if (x && y && typeof x === 'object' && typeof y === 'object' && !Array.isArray(y)) p[k] = diff(x, y);
    else p[k] = y;
  }
  return p;
}

// ---------- outbox ----------

/// Queues an edit of household `id` (already validated locally) and tries to send it.
/// A create not yet sent takes the edit into its body. Once a create was sent (its answer may
/// have been lost, and its resend must carry the same body), the edit is queued on its own and
/// gets its household id and base heads when the create's answer arrives (see `rebase`).
async function queueEdit(id, base, before, after) {
  const patch = { profile: diff(before.profile, after.profile), private: diff(before.private, after.private) };
  const entries = (await db.all('outbox')).filter(e => e.household_id === id && e.status !== 'failed');
  const create = entries.find(e => e.kind === 'create');
  const prev = entries.find(e => e.kind === 'edit');
  if (create && !create.sent && !prev) {
    create.body = { profile: mergePatch(create.body.profile, patch.profile), private: mergePatch(create.body.private, patch.private) };
    await db.put('outbox', create);
  } else if (prev) {
    // Same base: fold into the queued edit (the later value wins), under a new id.
    await db.del('outbox', prev.edit_id);
    await db.put('outbox', { ...prev, edit_id: newId(), created_ms: prev.created_ms,
      patch: { profile: mergePatch(prev.patch.profile, patch.profile), private: mergePatch(prev.patch.private, patch.private) } });
  } else {
    await db.put('outbox', { edit_id: newId(), kind: 'edit', household_id: id, base: create ? null : base, patch, created_ms: Date.now(), status: 'pending' });
  }
}

/// A create was answered: the queued changes of its local record now belong to the record the
/// node made (`realId`); `fill` sets the base each of them was made on (the created record).
/// Both the stored entries (one may have been queued while the create was on its way) and this
/// flush's copies of them are moved.
async function rebase(entries, localId, realId, fill) {
  const mine = new Map(entries.map(x => [x.edit_id, x]));
  let moved = 0;
  for (const stored of await db.all('outbox')) {
    const x = mine.get(stored.edit_id) || stored;
    if (x.kind === 'edit' && x.household_id === localId) x.household_id = realId;
    else if (x.kind === 'need-edit' && x.need_id === localId) x.need_id = realId;
    else continue;
    fill(x);
    await db.put('outbox', x);
    moved++;
  }
  return moved;
}

/// Before a create is first sent: its `client_id` (made once, kept with the entry; older entries
/// get one here) and the mark that it was sent, after which its body no longer changes.
async function markSent(e) {
  if (e.sent && e.client_id) return;
  e.client_id = e.client_id || newId();
  e.sent = true;
  await db.put('outbox', e);
}

/// Sends the queued edits in order. Stops at the first one the node cannot be reached for.
/// A page that shows the queue (概况, 同步) is drawn again once a flush changed it, so its
/// 待上传 count follows the upload instead of waiting for the next visit.
function flush() {
  if (!flushing) {
    flushing = (async () => {
      const before = await outboxState();
      try { return await doFlush(); } finally {
        if (await outboxState() !== before && /^#\/(sync)?$/.test(location.hash || '#/')) render(true);
      }
    })().finally(() => { flushing = null; updateNet(); });
  }
  return flushing;
}

/// What the outbox holds, as one comparable string (entry ids and their state).
async function outboxState() {
  return JSON.stringify((await db.all('outbox')).map(e => [e.edit_id, e.status]).sort());
}

/// What a queued change is, in words: its kind and the household's head or the need's title
/// (never a record id).
async function outboxLabel(e) {
  const kinds = { create: '新登记农户', edit: '修改农户', 'need-create': '新需求', 'need-edit': '修改需求' };
  let what = '';
  if (e.kind === 'create') what = e.body?.private?.head_name;
  else if (e.kind === 'edit') {
    const r = await db.get('records', e.household_id);
    what = e.patch?.private?.head_name || (r?.local || r?.rec)?.private?.head_name;
  } else if (e.kind === 'need-create') what = e.body?.title;
  else if (e.kind === 'need-edit') {
    const cachedNeeds = (await db.kvGet('needs'))?.items || [];
    what = e.patch?.title || e.base_need?.title || cachedNeeds.find(n => n.key?.split('/').pop() === e.need_id)?.need?.title;
  }
  const need = String(e.kind).startsWith('need');
  return `${kinds[e.kind] || (need ? '修改需求' : '修改农户')}：${what || (need ? '（未填标题）' : '（未填姓名）')}`;
}

async function doFlush() {
  const entries = (await db.all('outbox')).filter(e => e.status !== 'failed').sort((a, b) => a.created_ms - b.created_ms);
  const results = [];
  for (const e of entries) {
    let r;
    // An edit of a record whose create has not been answered yet waits for it.
    const waiting = (e.kind === 'edit' && entries.some(c => c.kind === 'create' && c.status !== 'failed' && c.household_id === e.household_id))
      || (e.kind === 'need-edit' && entries.some(c => c.kind === 'need-create' && c.status !== 'failed' && c.need_id === e.need_id));
    if (waiting) continue;
    if (e.kind === 'need-create' || e.kind === 'need-edit') {
      let res;
      try { res = await sendNeed(e, entries); } catch (err) { if (err instanceof Offline) break; throw err; }
      if (res.stop) break;
      results.push(res);
      continue;
    }
    try {
      if (e.kind === 'create') await markSent(e);
      // A create is sent with the same client_id every time: if an answer was lost, the node
      // answers the resend with the record it made then (200) instead of making a second one.
      r = e.kind === 'create'
        ? await api('/api/v1/households', { method: 'POST', body: { ...e.body, client_id: e.client_id } })
        : await api(`/api/v1/households/${encodeURIComponent(e.household_id)}/edits`, { method: 'POST', body: { edit_id: e.edit_id, base: e.base, patch: e.patch } });
    } catch (err) {
      if (err instanceof Offline) break;
      throw err;
    }
    if (r.status === 401) break;
    if (r.status === 200 || r.status === 201) {
      const rec = e.kind === 'create' ? r.body : r.body.record;
      let local = null;
      if (e.kind === 'create') {
        const kept = await db.get('records', e.household_id);
        const moved = await rebase(entries, e.household_id, rec.id, x => { x.base = { profile: rec.heads, private: rec.private_heads }; });
        if (moved) local = kept?.local || null;
      }
      await db.put('records', { id: rec.id, rec, local });
      if (e.kind === 'create') await db.del('records', e.household_id);
      await db.del('outbox', e.edit_id);
      const conflicts = e.kind === 'create' ? [] : r.body.conflicts;
      if (conflicts.length) {
        const names = conflicts.map(c => fieldLabel(c.field)).join('、');
        const msg = `户 ${rec.private.head_name || rec.id} 的“${names}”在另一处也被修改，已自动合并，保留了${conflicts.map(c => JSON.stringify(c.kept)).join('、')}。请核对。`;
        const log = (await db.kvGet('conflicts')) || [];
        log.unshift({ at: Date.now(), id: rec.id, msg, fields: conflicts });
        await db.kvPut('conflicts', log.slice(0, 50));
        await db.kvPut('notice', msg);
      }
      results.push({ entry: e, ok: true, rec, conflicts });
    } else {
      // Refused (invalid, unknown base, gone): keep it, marked, for the cadre to fix or drop.
      e.status = 'failed';
      e.error = r.body?.message || `错误 ${r.status}`;
      e.fields = r.body?.fields || [];
      await db.put('outbox', e);
      results.push({ entry: e, ok: false, body: r.body, status: r.status });
    }
  }
  return results;
}

/// Sends one queued need change. A new need is POSTed; an edit is a merge patch of the fields
/// the cadre changed, so the node keeps other fields changed meanwhile (e.g. the hub's status).
/// A field the cadre changed that was also changed elsewhere since is reported; the node checks
/// the status transition against its current status and refuses one that is not allowed.
async function sendNeed(e, entries) {
  if (e.kind === 'need-create') {
    await markSent(e);
    const r = await api('/api/v1/needs', { method: 'POST', body: { ...e.body, client_id: e.client_id } });
    if (r.status === 401) return { stop: true };
    if (r.status === 201 || r.status === 200) {
      await rebase(entries, e.need_id, r.body.key.split('/').pop(), x => { x.base_need = r.body.need; });
      await db.del('outbox', e.edit_id);
      return { entry: e, ok: true, conflicts: [] };
    }
    return failEntry(e, r);
  }
  const path = `/api/v1/needs/${encodeURIComponent(e.need_id)}`;
  const now = await api(path);
  if (now.status === 401) return { stop: true };
  if (now.status !== 200) return failEntry(e, now);
  const conflicts = [];
  for (const k of Object.keys(e.patch)) {
    const was = e.base_need?.[k], cur = now.body.need[k];
    if (JSON.stringify(was ?? null) !== JSON.stringify(cur ?? null) && JSON.stringify(cur ?? null) !== JSON.stringify(e.patch[k] ?? null)) {
      conflicts.push({ field: `need.${k}`, other: cur, kept: e.patch[k] });
    }
  }
  const r = await api(path, { method: 'PATCH', body: e.patch });
  if (r.status === 401) return { stop: true };
  if (r.status !== 200) return failEntry(e, r);
  await db.del('outbox', e.edit_id);
  if (conflicts.length) {
    const name = (f) => needLabel(f.field.slice(5));
    const msg = `需求“${r.body.need.title}”的“${conflicts.map(name).join('、')}”在另一处也被修改（${conflicts.map(c => `${name(c)}：${showNeedValue(c.field.slice(5), c.other)}`).join('，')}），已改为本机的修改。请核对。`;
    const log = (await db.kvGet('conflicts')) || [];
    log.unshift({ at: Date.now(), id: e.need_id, msg, fields: conflicts });
    await db.kvPut('conflicts', log.slice(0, 50));
    await db.kvPut('notice', msg);
  }
  return { entry: e, ok: true, conflicts };
}

/// Refused (invalid, not allowed, gone): kept, marked, for the cadre to fix or drop.
async function failEntry(e, r) {
  e.status = 'failed';
  // The field messages say what is wrong (e.g. which status changes are still allowed).
  e.error = (r.body?.fields || []).map(f => f.message).join('；') || r.body?.message || `错误 ${r.status}`;
  e.fields = r.body?.fields || [];
  await db.put('outbox', e);
  return { entry: e, ok: false, body: r.body, status: r.status };
}

let needSchema = null;
function needLabel(key) { return needSchema?.need.find(f => f.key === key)?.label || key; }
function statusName(id) { return needSchema?.need.find(f => f.key === 'status')?.options.find(o => o.id === id)?.name || id; }
function showNeedValue(key, v) { return key === 'status' ? statusName(v) : (v === null || v === undefined || v === '' ? '空' : String(v)); }

/// The kept needs (the pages last loaded from the node) with the queued changes applied; each
/// row is {id, need, pending, failed}. `list` is a page to use instead of the kept ones.
async function needRows(list) {
  list = list || (await db.kvGet('needs'));
  const out = (await db.all('outbox')).filter(e => e.kind === 'need-create' || e.kind === 'need-edit');
  const rows = new Map((list?.items || []).map(n => [n.key.split('/').pop(), { id: n.key.split('/').pop(), need: n.need, heads: n.heads }]));
  for (const e of out.sort((a, b) => a.created_ms - b.created_ms)) {
    const row = rows.get(e.need_id) || { id: e.need_id, need: {} };
    row.need = e.kind === 'need-create' ? e.body : mergePatch(row.need, e.patch);
    row.pending = true;
    if (e.status === 'failed') row.failed = e.error;
    rows.set(e.need_id, row);
  }
  return [...rows.values()];
}

/// Queues a need change (new, or the fields that differ from `before`) and tries to send it.
/// A new need keeps `clientId` (made before it was first sent online, if it was) as the
/// `client_id` of every send. As for households, a create already sent no longer changes: a
/// later change is queued on its own and rebased when the create is answered.
async function queueNeed(id, before, after, clientId) {
  if (!id) {
    const nid = `local-${newId()}`;
    await db.put('outbox', { edit_id: newId(), kind: 'need-create', need_id: nid, client_id: clientId || newId(), sent: !!clientId, body: after, created_ms: Date.now(), status: 'pending' });
    return nid;
  }
  const patch = diff(before, after);
  const entries = (await db.all('outbox')).filter(e => e.need_id === id && e.status !== 'failed');
  const create = entries.find(e => e.kind === 'need-create');
  const prev = entries.find(e => e.kind === 'need-edit');
  if (create && !create.sent && !prev) {
    create.body = mergePatch(create.body, patch);
    await db.put('outbox', create);
  } else if (prev) {
    await db.del('outbox', prev.edit_id);
    await db.put('outbox', { ...prev, edit_id: newId(), patch: mergePatch(prev.patch, patch) });
  } else if (Object.keys(patch).length) {
    await db.put('outbox', { edit_id: newId(), kind: 'need-edit', need_id: id, base_need: create ? null : before, patch, created_ms: Date.now(), status: 'pending' });
  }
  return id;
}

let labels = null;
function fieldLabel(path) {
  const [part, key] = path.split('.');
  return labels?.[`${part}.${key}`] || path;
}
async function loadLabels() {
  const s = await schema();
  if (!s) return;
  labels = {};
  for (const sec of s.household) for (const f of sec.fields) labels[`${sec.part}.${f.key}`] = f.label;
}

// ---------- views ----------

const routes = [];
const route = (re, fn) => routes.push([re, fn]);

// Renders never overlap: a hash change during a render renders again once it is done, so a
// slow view cannot overwrite a newer one.
let rendering = null, again = false, forced = false, rendered = null;
function render(force = false) {
  forced = forced || force;
  if (rendering) { again = true; return rendering; }
  rendering = (async () => {
    do {
      again = false;
      const h = location.hash || '#/';
      // A hash change to the page already shown (e.g. after a redirect) does not rebuild it.
      if (forced || h !== rendered) { forced = false; rendered = await renderOnce(); }
    } while (again);
  })().finally(() => { rendering = null; });
  return rendering;
}

let lastHash = null;
async function renderOnce() {
  const hash = location.hash || '#/';
  if (hash !== lastHash) {
    window.scrollTo(0, 0);
    lastHash = hash;
    // A toast belongs to the page it was shown on (or the one a save just moved to).
    if (Date.now() - (toast.at || 0) > 800) $('#toast').hidden = true;
  }
  const me = await db.kvGet('me');
  $('#tabs').hidden = !me;
  if (!me && !hash.startsWith('#/login')) { location.hash = '#/login'; return null; }
  const tab = hash.split('/')[1]?.split('?')[0] || 'home';
  document.querySelectorAll('#tabs a').forEach(a => a.classList.toggle('on', (a.dataset.tab === (tab === '' ? 'home' : tab)) || (tab === 'h' && a.dataset.tab === 'households')));
  for (const [re, fn] of routes) {
    const m = hash.match(re);
    if (m) {
      try { await fn(...m.slice(1)); } catch (e) { view().innerHTML = `<div class="card">出错了：${esc(e.message)}</div>`; }
      updateNet();
      return hash;
    }
  }
  view().innerHTML = '<div class="card">没有这个页面。<a href="#/">返回首页</a></div>';
  return hash;
}

route(/^#\/login$/, async () => {
  view().innerHTML = `<h1>村干部登录</h1><form id="login" class="card">
    <label class="f"><span>用户名</span><input name="name" autocomplete="username" autocapitalize="off" required></label>
    <label class="f"><span>密码</span><input name="password" type="password" autocomplete="current-password" required></label>
    <p class="err" id="login-err" hidden></p>
    <button class="wide" type="submit">登录</button></form>
    <p class="muted pad">没有账户或忘记密码，请联系村节点管理员。</p>`;
  $('#login').onsubmit = async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const err = $('#login-err');
    try {
      const r = await api('/api/v1/login', { method: 'POST', body: { name: f.name.value.trim(), password: f.password.value } });
      if (r.status === 200) {
        await db.kvPut('me', r.body.cadre);
        location.hash = '#/';
        // Keep what the forms need for working offline later.
        loadLabels().then(taxonomy).catch(() => {});
        flush();
      } else { err.hidden = false; err.textContent = r.body?.message || '登录失败'; }
    } catch (e) { err.hidden = false; err.textContent = '无法连接村节点，请靠近村委会Wi-Fi后重试。'; }
  };
});

route(/^#\/$/, async () => {
  const me = await db.kvGet('me');
  const c = await cached('coverage', '/api/v1/coverage');
  const pending = (await db.all('outbox')).length;
  if (!c) { view().innerHTML = '<div class="card">离线，且本机还没有概况数据。</div>'; return; }
  const cover = c.households ? Math.round(100 * c.with_recommendations / c.households) : 0;
  const at = await db.kvGet('coverage@');
  view().innerHTML = `<h1>${esc(c.place || me?.name || '')} · 本村概况</h1>
    ${online ? '' : `<p class="muted">离线：以下为 ${esc(new Date(at).toLocaleString('zh-CN'))} 的数据。</p>`}
    <div class="stats">
      <div class="stat"><b>${esc(c.households)}</b><span>已登记农户</span></div>
      <div class="stat"><b>${esc(cover)}%</b><span>已有推荐内容（${esc(c.with_recommendations)}户）</span></div>
      <div class="stat"><b>${esc(c.unsynced_upstream)}</b><span>尚未同步到县里的记录</span></div>
      <div class="stat"><b>${pending}</b><span>本机待上传的修改</span></div>
    </div>
    <div class="card"><h2>各小组登记户数</h2><table>${Object.entries(c.by_group).map(([g, n]) =>
      `<tr><td><a href="#/households?group=${encodeURIComponent(g)}">第${esc(g)}小组</a></td><td>${esc(n)} 户</td></tr>`).join('') || '<tr><td>还没有登记农户</td></tr>'}</table></div>
    <div class="card"><p>本地科技需求 <b>${esc(c.needs)}</b> 条。${c.last_upstream_sync_ms ? `最近与县节点同步：${new Date(c.last_upstream_sync_ms).toLocaleString('zh-CN')}` : (c.sync_enabled ? '尚未与县节点同步。' : '本节点未启用同步。')}</p></div>
    <div class="actions noprint"><a class="btn" href="#/new">登记新农户</a><button class="secondary" id="logout">退出登录</button></div>`;
  $('#logout').onclick = async () => {
    const queued = (await db.all('outbox')).length;
    if (queued && !confirm(`还有${queued}条修改未上传。退出后它们仍保存在本机，下次登录后上传。确定退出？`)) return;
    try { await api('/api/v1/logout', { method: 'POST' }); } catch (e) { /* offline: forget locally */ }
    // Personal data leaves the phone with the cadre; queued edits stay until sent.
    const keep = new Set((await db.all('outbox')).map(e => e.household_id));
    for (const r of await db.all('records')) if (!keep.has(r.id)) await db.del('records', r.id);
    for (const k of ['me', 'list', 'needs', 'coverage', 'conflicts', 'notice']) await db.kvPut(k, null);
    location.hash = '#/login';
  };
});

/// Rows per list page asked of the node (it pages every list, see the API's `next_cursor`).
const PAGE = 100;
/// Requests one 「加载更多」 makes at most while the node answers empty pages (a page reads a
/// bounded part of the index, so a narrow filter may find nothing on one page).
const MORE_TRIES = 5;

/// One page of a node list: `{items, next_cursor}` from the node, with `params` as the filter,
/// or `null` when the node cannot be reached. Throws on other errors.
async function nodePage(path, params, cursor) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) qs.set(k, v);
  qs.set('limit', String(PAGE));
  if (cursor) qs.set('cursor', cursor);
  try {
    for (let i = 0; i < MORE_TRIES; i++) {
      const r = await api(`${path}?${qs}`);
      if (r.status !== 200) throw new Error(r.body?.message || `加载失败（${r.status}）`);
      if (r.body.items.length || !r.body.next_cursor || i === MORE_TRIES - 1) return r.body;
      qs.set('cursor', r.body.next_cursor);
    }
  } catch (e) { if (!(e instanceof Offline)) throw e; }
  return null;
}

/// Adds a page to a kept list (kv `key`, `{items, next_cursor}`): the first page replaces it,
/// a later one is appended. Kept pages are what the list shows offline.
async function keepPage(key, page, first, idOf) {
  const kept = first ? { items: [] } : ((await db.kvGet(key)) || { items: [] });
  const ids = new Set(kept.items.map(idOf));
  kept.items.push(...page.items.filter(x => !ids.has(idOf(x))));
  kept.next_cursor = page.next_cursor;
  await db.kvPut(key, kept);
  await db.kvPut(`${key}@`, Date.now());
}

/// Households of this phone's queued creates and edits, as list rows.
async function pendingHouseholds(byId) {
  const recs = await db.all('records');
  const pending = new Set((await db.all('outbox')).map(e => e.household_id));
  const rows = [];
  for (const r of recs) {
    if (!pending.has(r.id)) continue;
    const v = r.local || r.rec;
    rows.push({ id: r.id, group: v.profile.group, head_name: v.private.head_name, roster_no: v.private.roster_no,
      residents: v.profile.residents, tags: byId.get(r.id)?.tags || v.derived_tags?.map(t => t.tag) || [], pending: true });
  }
  return rows;
}

/// Whether a household row passes the list's filter (used offline, and for queued rows).
function rowMatches(h, f) {
  return (!f.q || (h.head_name || '').includes(f.q) || (h.roster_no || '').includes(f.q))
    && (!f.group || String(h.group) === f.group) && (!f.tag || (h.tags || []).includes(f.tag));
}

function listHtml(items) {
  return items.map(h => `<li><a href="#/h/${esc(h.id)}"><span><span class="n">${esc(h.head_name || '（未填姓名）')}</span><br><span class="s">第${esc(h.group)}小组 · ${esc(h.roster_no || '无编号')} · ${esc(h.residents)}人</span></span>${h.pending ? '<span class="pending">待上传</span>' : ''}</a></li>`).join('');
}

let lastItems = [];
let lastMore = false;
/// Renders the list into the page and returns how long it took (ms), layout included.
function renderList(items, more = lastMore) {
  const t0 = performance.now();
  const ul = $('#hlist');
  ul.innerHTML = listHtml(items);
  void ul.offsetHeight;
  const ms = performance.now() - t0;
  $('#hcount').textContent = more ? `已显示 ${items.length} 户，还有更多` : `共 ${items.length} 户`;
  $('#hmore').hidden = !more;
  return ms;
}
window.cunyun = {
  renderListMs: () => renderList(lastItems),
  flush: () => flush().then(r => r.map(x => ({ ok: x.ok, conflicts: x.conflicts || [] }))),
  pending: async () => (await db.all('outbox')).length,
  conflicts: async () => (await db.kvGet('conflicts')) || [],
};

/// The household list: the node's first page for the filter when reachable, 「加载更多」 for the
/// next; offline, the kept pages filtered on the phone. Queued households come first.
route(/^#\/households(?:\?(.*))?$/, async (qs) => {
  const params = new URLSearchParams(qs || '');
  const tax = await taxonomy();
  const cover = await db.kvGet('coverage');
  const kept = (await db.kvGet('list')) || { items: [] };
  const groups = [...new Set([...Object.keys(cover?.by_group || {}).map(Number), ...kept.items.map(h => h.group)])].sort((a, b) => a - b);
  const tagNames = {};
  (tax?.groups || []).forEach(g => g.tags.forEach(t => { tagNames[t.id] = t.plain || t.name; }));
  const tags = Object.keys(tagNames).length ? Object.keys(tagNames).sort() : [...new Set(kept.items.flatMap(h => h.tags))].sort();
  view().innerHTML = `<h1>农户</h1><div class="search">
    <input id="q" type="search" placeholder="搜索户主姓名或花名册编号" value="${esc(params.get('q') || '')}">
    <div class="row2"><select id="g"><option value="">全部小组</option>${groups.map(g => `<option value="${esc(g)}" ${params.get('group') === String(g) ? 'selected' : ''}>第${esc(g)}小组</option>`).join('')}</select>
    <select id="t"><option value="">全部需求</option>${tags.map(t => `<option value="${esc(t)}" ${params.get('tag') === t ? 'selected' : ''}>${esc(tagNames[t] || t)}</option>`).join('')}</select></div>
    <p class="muted" id="hcount"></p><p class="err" id="herr" hidden></p></div><ul class="list" id="hlist"></ul>
    <button class="secondary wide" id="hmore" hidden>加载更多</button>`;
  let cursor = null, shown = [], run = 0;
  const filter = () => ({ q: $('#q').value.trim(), group: $('#g').value, tag: $('#t').value });
  /// Loads the first page (`first`) or the next one for the filter now set.
  const load = async (first) => {
    const f = filter(), mine = ++run;
    $('#herr').hidden = true;
    $('#hmore').disabled = true;
    let page;
    try { page = await nodePage('/api/v1/households', f, first ? null : cursor); } catch (e) { page = e; }
    if (mine !== run) return; // the filter changed meanwhile
    $('#hmore').disabled = false;
    if (page instanceof Error) { $('#herr').hidden = false; $('#herr').textContent = page.message; return; }
    const filtered = !!(f.q || f.group || f.tag);
    let items;
    if (page) {
      if (!filtered) await keepPage('list', page, first, h => h.id);
      cursor = page.next_cursor;
      items = page.items;
    } else {
      // Offline: the pages kept from the node, filtered here.
      const k = (await db.kvGet('list')) || { items: [] };
      cursor = null;
      items = first ? k.items.filter(h => rowMatches(h, f)) : [];
    }
    if (first) {
      const byId = new Map(items.map(h => [h.id, h]));
      const queued = (await pendingHouseholds(byId)).filter(h => rowMatches(h, f));
      const qids = new Set(queued.map(h => h.id));
      shown = [...queued, ...items.filter(h => !qids.has(h.id))];
    } else {
      const ids = new Set(shown.map(h => h.id));
      shown.push(...items.filter(h => !ids.has(h.id)));
    }
    lastItems = shown;
    lastMore = !!cursor;
    window.cunyun.lastRenderMs = renderList(shown, lastMore);
  };
  let timer;
  $('#q').oninput = () => { clearTimeout(timer); timer = setTimeout(() => load(true), 300); };
  $('#g').onchange = () => load(true); $('#t').onchange = () => load(true);
  $('#hmore').onclick = () => load(false);
  await load(true);
});

/// Derived tags with their reasons, grouped by reason so the long "every household" list takes
/// one line on a small screen.
function tagsHtml(tags) {
  if (!tags.length) return '<p class="muted">暂无。</p>';
  const byReason = new Map();
  for (const t of tags) byReason.set(t.reason, [...(byReason.get(t.reason) || []), t.name]);
  const rows = [...byReason.entries()].sort((a, b) => a[1].length - b[1].length);
  return `<ul class="tags">${rows.map(([reason, names]) => `<li><b>${esc(reason)}：</b>${names.map(n => `<span class="tag">${esc(n)}</span>`).join('')}</li>`).join('')}</ul>`;
}

/// The viewer element for a rendition of the content contract, chosen by mime type.
function viewerHtml(src, mime, title) {
  if (mime.startsWith('image/')) return `<img src="${src}" alt="${esc(title)}">`;
  if (mime.startsWith('audio/')) return `<audio controls preload="none" src="${src}"></audio>`;
  if (mime.startsWith('video/')) return `<video controls preload="none" src="${src}"></video>`;
  if (mime === 'application/pdf') return `<iframe src="${src}" title="${esc(title)}"></iframe><a href="${src}">打开PDF</a>`;
  if (mime.startsWith('text/')) return `<div class="article">正在打开…</div>`;
  return `<a class="btn secondary" href="${src}">打开文件</a>`;
}

/// Opens one recommended item of household `hid` in `box`: asks the node for the content's
/// renditions, shows the file by mime type (or that it is still downloading), records the open.
/// An article (Markdown, HTML, text) comes rendered and sanitised by the node
/// (`/content/{item}/{rendition}/html`) and is inserted as it is.
async function openContent(hid, item, box) {
  box.textContent = '正在打开…';
  let meta = null;
  try {
    const r = await api(`/api/v1/content/${encodeURIComponent(item.id)}`);
    if (r.status === 200) meta = r.body;
  } catch (e) { if (!(e instanceof Offline)) throw e; }
  const rend = meta && (meta.renditions || []).find(x => x.name === item.rendition);
  if (!rend || !rend.available) { box.innerHTML = '<p class="muted">内容正在下载，请稍后再看</p>'; return; }
  const src = `/content/${encodeURIComponent(item.id)}/${encodeURIComponent(item.rendition)}`;
  box.innerHTML = viewerHtml(esc(src), rend.mime || '', item.title);
  const article = box.querySelector('.article');
  if (article) {
    try {
      const resp = await fetch(`${src}/html`, { credentials: 'same-origin' });
      if (resp.ok) article.innerHTML = await resp.text();
      else article.textContent = ((await resp.json().catch(() => null)) || {}).message || '暂时无法显示，请稍后再试。';
    } catch (e) { article.textContent = '暂时无法显示，请稍后再试。'; }
  }
  api(`/api/v1/households/${encodeURIComponent(hid)}/items/${encodeURIComponent(item.id)}/view`, { method: 'POST' }).catch(() => {});
}

function recsHtml(recs) {
  return recs.map((i, n) => `<div class="content" data-n="${n}"><h3>${esc(i.title)}</h3><p>${esc(i.reason || '')}</p><p class="muted">推荐于${esc(i.week_zh || i.week || '')}</p><button class="secondary show">查看内容</button><div class="viewer"></div></div>`).join('');
}

route(/^#\/h\/([^/?]+)$/, async (id) => {
  const r = await loadHousehold(id);
  if (!r) { view().innerHTML = '<div class="card">没有找到这户。可能尚未保存到本机，请联网后再打开。</div>'; return; }
  const v = r.local || r.rec;
  const pending = (await db.all('outbox')).filter(e => e.household_id === id);
  const failed = pending.filter(e => e.status === 'failed');
  const conflicts = ((await db.kvGet('conflicts')) || []).filter(c => c.id === id).slice(0, 3);
  let recs = null;
  if (!id.startsWith('local-')) {
    try {
      const rr = await api(`/api/v1/households/${encodeURIComponent(id)}/recommendations`);
      if (rr.status === 200) recs = rr.body.items;
    } catch (e) { if (!(e instanceof Offline)) throw e; }
  }
  view().innerHTML = `<h1>${esc(v.private.head_name || '（未填姓名）')}</h1>
    ${pending.length ? `<div class="card pending">${failed.length ? `上传被拒：${esc(failed[0].error)}（请重新修改）` : '有修改待上传，联网后自动上传。'}</div>` : ''}
    ${conflicts.map(c => `<div class="card banner conflict">${esc(c.msg)}</div>`).join('')}
    <div class="card"><p>第${esc(v.profile.group)}小组 · 花名册编号 ${esc(v.private.roster_no || '无')} · ${esc(v.profile.residents)}人（外出务工${esc(v.profile.working_away)}人）</p>
    <p>电话：${esc(v.private.phone || '未填')}</p>
    <div class="actions noprint"><a class="btn" href="#/h/${esc(id)}/edit">修改</a>${id.startsWith('local-') ? '' : `<a class="btn secondary" href="#/print/${esc(id)}">村民二维码</a><a class="btn secondary" id="delete" href="#/h/${esc(id)}/delete">删除此户</a>`}</div></div>
    <div class="card"><h2>需求标签及原因</h2>${tagsHtml(r.rec?.derived_tags || [])}${r.local ? '<p class="muted">（按上传前的内容；上传后更新）</p>' : ''}</div>
    <div class="card"><h2>推荐内容</h2>${recs === null ? '<p class="muted">离线时无法查看推荐内容。</p>' : recs.length ? recsHtml(recs) : '<p class="muted">暂无推荐内容。省级平台接入后，这里会显示适合这户的科普文章、图片、音频、视频和PDF。</p>'}</div>`;
  for (const el of view().querySelectorAll('.content[data-n]')) {
    const item = recs[Number(el.dataset.n)];
    el.querySelector('button.show').addEventListener('click', () => openContent(id, item, el.querySelector('.viewer')));
  }
});

async function householdEditor(id) {
  const [s, tax] = [await schema(), await taxonomy()];
  if (!s) { view().innerHTML = '<div class="card">离线，且本机还没有表单数据，请先联网打开一次。</div>'; return; }
  let r = id ? await loadHousehold(id) : null;
  if (id && !r) { view().innerHTML = '<div class="card">没有找到这户。</div>'; return; }
  const start = r ? (r.local || r.rec) : { profile: { group: '', residents: '' }, private: {} };
  const fieldsByPart = { profile: [], private: [] };
  s.household.forEach(sec => fieldsByPart[sec.part].push(...sec.fields));
  view().innerHTML = `<h1>${id ? '修改农户信息' : '登记新农户'}</h1><form id="hform" novalidate>${householdForm(s, tax, start)}
    <div class="card"><h2>根据回答得出的需求标签</h2><div id="derived">${tagsHtml(r?.rec?.derived_tags || [])}</div></div>
    <p class="err" id="form-err" hidden></p>
    <button class="wide" type="submit">保存</button><a class="btn secondary wide" href="${id ? `#/h/${esc(id)}` : '#/households'}">取消</a></form>`;
  const form = $('#hform');
  const current = () => {
    const v = readForm(form, fieldsByPart);
    if (start.profile.village) v.profile.village = start.profile.village;
    return v;
  };
  let dt;
  form.oninput = () => {
    clearTimeout(dt);
    dt = setTimeout(async () => {
      const v = current();
      if (checkHousehold(s, v).length) return;
      try {
        const d = await api('/api/v1/derive-tags', { method: 'POST', body: { profile: v.profile } });
        if (d.status === 200) $('#derived').innerHTML = tagsHtml(d.body.derived_tags);
      } catch (e) { $('#derived').innerHTML = '<p class="muted">离线：联网后显示由回答得出的标签。</p>'; }
    }, 400);
  };
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    const v = current();
    const errs = checkHousehold(s, v);
    const ferr = $('#form-err');
    ferr.hidden = true;
    if (errs.length) { showErrors(form, errs); return; }
    form.querySelector('button[type=submit]').disabled = true;
    try {
      if (!id) {
        // One client_id for this new household, online or queued: if the answer to this POST is
        // lost, the outbox resends it with the same id and the node does not make a second one.
        const clientId = newId();
        let res = null;
        try { res = await api('/api/v1/households', { method: 'POST', body: { ...v, client_id: clientId } }); } catch (e) { if (!(e instanceof Offline)) throw e; }
        if (res && (res.status === 201 || res.status === 200)) {
          await db.put('records', { id: res.body.id, rec: res.body, local: null });
          toast('已保存'); location.hash = `#/h/${res.body.id}`; return;
        }
        if (res && res.status === 422) { const rest = showErrors(form, res.body.fields); if (rest.length) { ferr.hidden = false; ferr.textContent = rest.join('；'); } return; }
        if (res) { ferr.hidden = false; ferr.textContent = res.body?.message || `保存失败（${res.status}）`; return; }
        const lid = `local-${clientId}`;
        // `sent`: it may have reached the node; its body must stay as sent (see queueEdit).
        await db.put('outbox', { edit_id: newId(), kind: 'create', household_id: lid, client_id: clientId, sent: true, body: v, created_ms: Date.now(), status: 'pending' });
        await db.put('records', { id: lid, rec: null, local: v });
        toast('离线：已保存在本机，联网后上传'); location.hash = `#/h/${lid}`; return;
      }
      await queueEdit(id, { profile: r.rec?.heads || [], private: r.rec?.private_heads || [] }, start, v);
      await db.put('records', { id, rec: r.rec, local: v });
      const results = await flush();
      const mine = results.find(x => x.entry.household_id === id);
      if (mine && !mine.ok) {
        // Refused at once: show why next to the fields and let the cadre fix it.
        await db.del('outbox', mine.entry.edit_id);
        await db.put('records', { id, rec: r.rec, local: null });
        const rest = showErrors(form, mine.body?.fields || []);
        if (rest.length || !(mine.body?.fields || []).length) { ferr.hidden = false; ferr.textContent = [mine.body?.message, ...rest].filter(Boolean).join('；'); }
        return;
      }
      toast(mine?.ok ? (mine.conflicts.length ? '已保存；有冲突已自动合并，请核对' : '已保存') : '离线：已保存在本机，联网后上传');
      location.hash = `#/h/${id}`;
    } finally {
      const b = form.querySelector('button[type=submit]');
      if (b) b.disabled = false;
    }
  };
}

// Deletion on request (e.g. the household withdraws its consent): online only, with a reason and
// the typed confirmation the node requires; the tombstone then removes it on every node.
const DELETE_REASONS = [['withdrawn', '本人撤回同意'], ['moved', '迁出本村'], ['duplicate', '重复登记'], ['mistake', '误录'], ['other', '其他']];
route(/^#\/h\/([^/?]+)\/delete$/, async (id) => {
  const r = await loadHousehold(id);
  if (!r) { view().innerHTML = '<div class="card">没有找到这户。</div>'; return; }
  const v = r.local || r.rec;
  view().innerHTML = `<h1>删除农户：${esc(v.private.head_name || '（未填姓名）')}</h1>
    <form class="card" id="delform"><p>删除后无法恢复：这户的登记信息、推荐和反馈会从本村节点删除，并随同步从县级节点和省级平台删除。</p>
    <label>删除原因<select name="reason"><option value="">请选择</option>${DELETE_REASONS.map(([k, n]) => `<option value="${k}">${n}</option>`).join('')}</select></label>
    <label>请输入“确认删除”<input name="confirm" autocomplete="off"></label>
    <p class="err" id="delerr" hidden></p>
    <button class="wide" type="submit">删除</button><a class="btn secondary wide" href="#/h/${esc(id)}">取消</a></form>`;
  $('#delform').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const err = $('#delerr');
    err.hidden = true;
    if (!f.reason.value) { err.hidden = false; err.textContent = '请选择删除原因'; return; }
    if (f.confirm.value.trim() !== '确认删除') { err.hidden = false; err.textContent = '请输入“确认删除”四个字'; return; }
    let res;
    try {
      res = await api(`/api/v1/households/${encodeURIComponent(id)}`, { method: 'DELETE', body: { reason: f.reason.value, confirm: '确认删除' } });
    } catch (e) {
      if (!(e instanceof Offline)) throw e;
      err.hidden = false; err.textContent = '删除需要连接村节点，请联网后再试。'; return;
    }
    if (res.status === 200 || res.status === 404) {
      await forget(id);
      const list = await db.kvGet('list');
      if (list?.items) { list.items = list.items.filter(h => h.id !== id); await db.kvPut('list', list); }
      toast('已删除'); location.hash = '#/households'; return;
    }
    err.hidden = false; err.textContent = res.body?.message || `删除失败（${res.status}）`;
  });
});

route(/^#\/new$/, () => householdEditor(null));
route(/^#\/h\/([^/?]+)\/edit$/, (id) => householdEditor(id));

route(/^#\/print\/([^/?]+)$/, async (id) => {
  // The node knows the plain-HTTP address villagers' phones use (the app may be on HTTPS).
  let link = `${location.origin}/v/${id}`;
  try { const r = await api(`/api/v1/households/${encodeURIComponent(id)}/villager-link`); if (r.status === 200) link = r.body.link; } catch (e) { /* offline */ }
  view().innerHTML = `<div class="card qr"><h1>扫码查看为您家推荐的科普内容</h1>
    <img src="/api/v1/households/${encodeURIComponent(id)}/qr.svg" alt="二维码">
    <p>${esc(link)}</p><p class="muted">连接村委会Wi-Fi后扫码。页面不含任何个人信息。</p></div>
    <div class="actions noprint"><button id="print">打印</button><a class="btn secondary" href="#/h/${esc(id)}">返回</a></div>`;
  $('#print').onclick = () => window.print();
});

/// The needs list: the node's first page when reachable (kept for offline), 「加载更多」 for the
/// next ones; offline, the kept pages.
route(/^#\/needs$/, async () => {
  needSchema = (await schema()) || needSchema;
  const rating = (n) => (n.status === 'resolved' && n.satisfaction ? ` · 满意度${esc(n.satisfaction)}` : '');
  const rowHtml = (r) => `<li><a href="#/needs/${esc(r.id)}"><span><span class="n">${esc(r.need.title)}</span><br><span class="s">${esc(r.need.updated || '')}${rating(r.need)}${r.failed ? ` · <span class="err">上传被拒：${esc(r.failed)}</span>` : ''}</span></span><span class="tag">${esc(statusName(r.need.status || 'open'))}</span>${r.pending ? '<span class="pending">待上传</span>' : ''}</a></li>`;
  view().innerHTML = `<h1>本地科技需求</h1><a class="btn wide" href="#/needs/new">新建需求</a>
    <p class="err" id="nerr" hidden></p><ul class="list" id="nlist"></ul><button class="secondary wide" id="nmore" hidden>加载更多</button>`;
  let cursor = null;
  const load = async (first) => {
    $('#nerr').hidden = true;
    let page;
    try { page = await nodePage('/api/v1/needs', {}, first ? null : cursor); } catch (e) { $('#nerr').hidden = false; $('#nerr').textContent = e.message; return; }
    if (page) { await keepPage('needs', page, first, n => n.key); cursor = page.next_cursor; } else cursor = null;
    const rows = await needRows();
    $('#nlist').innerHTML = rows.map(rowHtml).join('') || '<li class="muted pad">还没有需求。</li>';
    $('#nmore').hidden = !cursor;
  };
  $('#nmore').onclick = () => load(false);
  await load(true);
});


/// The hub's expert suggestions for a need: who, from where, what they offer, how to reach them,
/// with the cadre's two answers (选定这位专家 / 请换一位). Offline the card says so.
function expertCard(need, experts, online) {
  if (!online) return need.status === 'matched' ? '<div class="card"><h2>对接专家</h2><p class="muted">离线：联网后可查看平台推荐的专家。</p></div>' : '';
  if (!experts.length) {
    return need.status === 'matched' ? '<div class="card"><h2>对接专家</h2><p class="muted">平台已匹配专家，专家信息正在同步到本村，请稍后再看。</p></div>' : '';
  }
  const accepted = experts.find(e => e.choice === 'accepted');
  return `<div class="card experts"><h2>对接专家</h2>
    <p class="muted">${accepted ? `已选定 ${esc(accepted.name)}，请按下方联系方式与专家或其单位联系。` : '省级平台根据需求推荐了以下专家。请选定一位，或请平台换一位。'}</p>
    <ul class="list">${experts.map(e => `<li class="expert${e.choice ? ` ${esc(e.choice)}` : ''}"><span>
      <span class="n">${esc(e.name)}${e.title ? ` · ${esc(e.title)}` : ''}</span>
      ${e.choice === 'accepted' ? '<span class="tag">已选定</span>' : e.choice === 'declined' ? '<span class="tag muted">已请换人</span>' : ''}<br>
      <span class="s">${esc(e.organisation)}</span><br>
      <span class="s">服务方式：${esc(e.services.join('、'))}</span><br>
      ${e.contact ? `<span class="s">联系方式：${esc(e.contact)}</span><br>` : '<span class="s muted">联系方式：请通过其单位联系</span><br>'}
      <span class="s muted">${esc(e.reason)}</span>
      ${e.choice === 'declined' ? '' : `<span class="row">${e.choice === 'accepted' ? '' : `<button type="button" data-expert="${esc(e.id)}" data-choice="accepted">选定这位专家</button>`}
        <button type="button" class="secondary" data-expert="${esc(e.id)}" data-choice="declined">请换一位</button></span>`}
    </span></li>`).join('')}</ul></div>`;
}

/// Writes the cadre's answer to one suggested expert into the need (at most one accepted): online
/// at once, offline through the outbox like every need edit.
async function answerExpert(nid, need, expertId, choice) {
  const answers = { ...(need.expert_choice || {}) };
  if (choice === 'accepted') for (const [k, v] of Object.entries(answers)) if (v === 'accepted') delete answers[k];
  answers[expertId] = choice;
  const after = { ...need, expert_choice: answers };
  let r = null;
  try {
    r = await api(`/api/v1/needs/${encodeURIComponent(nid)}`, { method: 'PATCH', body: diff(need, after) });
  } catch (e) { if (!(e instanceof Offline)) throw e; }
  if (r && r.status === 200) { toast(choice === 'accepted' ? '已选定专家' : '已请平台换一位专家'); render(true); return; }
  if (r && r.status !== 401) { toast(r.body?.message || '保存失败'); return; }
  await queueNeed(nid, need, after);
  toast(r ? '已保存在本机，重新登录后上传' : '离线：已保存在本机，联网后上传');
  render(true);
}

route(/^#\/needs\/([^/?]+)$/, async (nid) => {
  const [s, tax] = [await schema(), await taxonomy()];
  if (!s) { view().innerHTML = '<div class="card">离线，且本机还没有表单数据。</div>'; return; }
  needSchema = s;
  let need = { requester: 'village_collective', status: 'open', tags: {} };
  let failed = null;
  let fresh = null;
  if (nid !== 'new') {
    if (!nid.startsWith('local-')) {
      try {
        const r = await api(`/api/v1/needs/${encodeURIComponent(nid)}`);
        if (r.status === 200) fresh = r.body;
        else if (r.status === 404) { view().innerHTML = `<div class="card">${esc(r.body?.message || '没有找到')}</div>`; return; }
      } catch (e) { if (!(e instanceof Offline)) throw e; }
    }
    // The node's copy (or the kept one) with this phone's queued changes on top.
    const row = (await needRows()).find(x => x.id === nid);
    if (fresh && !row?.pending) need = fresh.need;
    else if (row) { need = row.need; failed = row.failed; }
    else { view().innerHTML = '<div class="card">离线，且本机没有这条需求。请联网后再打开。</div>'; return; }
  }
  const experts = fresh?.experts || [];
  view().innerHTML = `<h1>${nid === 'new' ? '新建需求' : '需求详情'}</h1>
    ${failed ? `<div class="card pending">上传被拒：${esc(failed)}（请修改后重新保存，或在“同步”页放弃）</div>` : ''}
    ${nid === 'new' ? '' : expertCard(need, experts, !!fresh)}
    <form id="nform" novalidate>${needForm(s, tax, need, s.need_transitions)}
    <p class="err" id="form-err" hidden></p><button class="wide" type="submit">保存</button><a class="btn secondary wide" href="#/needs">返回</a></form>`;
  view().querySelectorAll('[data-expert]').forEach(b => {
    b.onclick = () => answerExpert(nid, need, b.dataset.expert, b.dataset.choice);
  });
  const form = $('#nform');
  watchNeedStatus(form);
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    const v = readForm(form, { need: s.need }).need;
    if (need.area) v.area = need.area;
    // Answered on the expert card, not in the form: keep it as it is.
    if (need.expert_choice) v.expert_choice = need.expert_choice;
    if (v.status !== 'resolved') v.satisfaction = null;
    const ferr = $('#form-err');
    ferr.hidden = true;
    const local = [];
    if (![...(v.title || '')].length) local.push({ field: 'need.title', message: '需求标题为必填项' });
    if ([...(v.title || '')].length > 60) local.push({ field: 'need.title', message: '需求标题最多60个字' });
    if (v.status === 'resolved' && v.satisfaction !== null && !(v.satisfaction >= 1 && v.satisfaction <= 5)) local.push({ field: 'need.satisfaction', message: '满意度应为1到5' });
    if (local.length) { showErrors(form, local); return; }
    if (failed) { for (const e of (await db.all('outbox')).filter(e => e.need_id === nid && e.status === 'failed')) await db.del('outbox', e.edit_id); }
    // Online: saved at once, errors shown next to the fields. Offline: queued in the outbox.
    let r = null;
    // A new need's client_id, kept if it has to be queued (the answer may have been lost).
    const clientId = nid === 'new' ? newId() : null;
    try {
      r = nid === 'new' ? await api('/api/v1/needs', { method: 'POST', body: { ...v, client_id: clientId } })
        : nid.startsWith('local-') ? null
          : await api(`/api/v1/needs/${encodeURIComponent(nid)}`, { method: 'PATCH', body: diff(need, v) });
    } catch (e) { if (!(e instanceof Offline)) throw e; }
    if (r && (r.status === 200 || r.status === 201)) { toast('已保存'); location.hash = '#/needs'; return; }
    if (r && r.status !== 401) {
      const rest = showErrors(form, r.body?.fields || []);
      ferr.hidden = false; ferr.textContent = [r.body?.message, ...rest].filter(Boolean).join('；');
      return;
    }
    await queueNeed(nid === 'new' ? null : nid, need, v, r ? null : clientId);
    toast(r ? '已保存在本机，重新登录后上传' : '离线：已保存在本机，联网后上传');
    location.hash = '#/needs';
  };
});

route(/^#\/sync$/, async () => {
  let s = null;
  try { const r = await api('/api/v1/sync'); if (r.status === 200) s = r.body; } catch (e) { /* offline */ }
  const out = await db.all('outbox');
  const log = (await db.kvGet('conflicts')) || [];
  await db.kvPut('notice', null);
  const peers = s?.status?.peers || [];
  const what = new Map();
  for (const e of out) what.set(e.edit_id, await outboxLabel(e));
  view().innerHTML = `<h1>同步状态</h1>
    <div class="card"><h2>本机待上传（${out.length}）</h2>${out.length ? `<ul>${out.map(e => `<li>${esc(what.get(e.edit_id))} · ${new Date(e.created_ms).toLocaleString('zh-CN')}${e.status === 'failed' ? ` · <span class="err">被拒：${esc(e.error)}</span> <button class="secondary" data-drop="${esc(e.edit_id)}">放弃</button>` : ''}</li>`).join('')}</ul>` : '<p class="muted">全部已上传。</p>'}
    <button class="wide" id="now">立即上传</button></div>
    <div class="card"><h2>已自动解决的冲突</h2>${log.length ? `<ul>${log.map(c => `<li>${new Date(c.at).toLocaleString('zh-CN')}：${esc(c.msg)}</li>`).join('')}</ul>` : '<p class="muted">没有。</p>'}</div>
    <div class="card"><h2>村节点与其他节点</h2>${!s ? '<p class="muted">离线：无法读取节点的同步状态。</p>' : !s.enabled ? `<p class="muted">${esc(s.message)}</p>` :
      peers.length ? `<table>${peers.map(p => `<tr><td title="${esc(p.place || '')}">${esc(p.title || p.role_name || '其他节点')}</td><td>${p.last_sync_ms ? new Date(p.last_sync_ms).toLocaleString('zh-CN') : '从未同步'}${p.last_error ? `<br><span class="err">${esc(p.last_error)}</span>` : ''}</td></tr>`).join('')}</table>` : '<p class="muted">尚未发现其他节点。</p>'}</div>`;
  $('#now').onclick = async () => { await flush(); render(true); };
  // The node answered: send what is queued now rather than at the next round (the page is
  // drawn again when that changed the queue).
  if (s && out.some(e => e.status !== 'failed')) flush();
  view().querySelectorAll('[data-drop]').forEach(b => { b.onclick = async () => { await db.del('outbox', b.dataset.drop); render(true); }; });
});

window.addEventListener('hashchange', () => render());
window.addEventListener('online', () => flush());
window.addEventListener('offline', () => setOnline(false));
setInterval(() => { flush(); }, 20000);
if ('serviceWorker' in navigator) navigator.serviceWorker.register('/sw.js').catch(() => {});
loadLabels().catch(() => {});
render().then(() => flush());
