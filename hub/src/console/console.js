// The hub operator console's only script. Plain JavaScript, no build step.
//
// Every API call goes through api(), which sends the x-csrf-token header (the value of the
// cunyun_csrf cookie) on every write. Forms are submitted as JSON (or, for the content upload,
// multipart) and the API's 422 field list is shown next to the fields. Everything from the
// server is put into the page with textContent, never as HTML.
'use strict';

function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)cunyun_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : '';
}

// The single API helper: {method, json, body} → {status, ok, data}.
async function api(url, opts) {
  const o = opts || {};
  const method = o.method || 'GET';
  const headers = new Headers();
  let body = o.body;
  if (method !== 'GET' && method !== 'HEAD') headers.set('x-csrf-token', csrfToken());
  if (o.json !== undefined) {
    headers.set('content-type', 'application/json');
    body = JSON.stringify(o.json);
  }
  let resp;
  try {
    resp = await fetch(url, { method, headers, body, credentials: 'same-origin' });
  } catch (e) {
    return { status: 0, ok: false, data: { message: '连不上枢纽，请检查网络后重试' } };
  }
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  return { status: resp.status, ok: resp.ok, data };
}

function clearErrors(form) {
  form.querySelectorAll('.field.bad').forEach((f) => f.classList.remove('bad'));
  form.querySelectorAll('.field .err').forEach((p) => { p.textContent = ''; });
  const msg = form.querySelector('.form-msg');
  if (msg) msg.textContent = '';
}

// Shows {message, fields: [{field, message}]} next to the fields (by the field path's first
// segment: `regions[0]` → regions, `tags.plt.nope` → tags); the rest in the form message.
function showErrors(form, data, status) {
  const msg = form.querySelector('.form-msg');
  const rest = [];
  const fields = (data && Array.isArray(data.fields)) ? data.fields : [];
  for (const e of fields) {
    const name = String(e.field || '').split(/[.[]/)[0];
    const box = name ? form.querySelector('.field[data-field="' + CSS.escape(name) + '"]') : null;
    if (box) {
      box.classList.add('bad');
      const p = box.querySelector('.err');
      p.textContent = (p.textContent ? p.textContent + '；' : '') + e.message;
    } else {
      rest.push(e.message);
    }
  }
  if (msg) {
    const head = (data && data.message) ? data.message : ('保存失败（' + status + '）');
    msg.textContent = [head].concat(rest).join('；');
    msg.className = 'form-msg bad';
  }
  const first = form.querySelector('.field.bad');
  if (first) first.scrollIntoView({ block: 'center' });
}

function checked(form, name) {
  return Array.from(form.querySelectorAll('input[name="' + name + '"]:checked')).map((i) => i.value);
}

function value(form, name) {
  const el = form.elements.namedItem(name);
  return el ? el.value : undefined;
}

function words(s) {
  return String(s || '').split(/[\s,，、]+/).filter((w) => w.length > 0);
}

// `1.5 MB`-style size, as the server writes it.
function sizeText(b) {
  if (b >= 1048576) return (b / 1048576).toFixed(1) + ' MB';
  if (b >= 1024) return (b / 1024).toFixed(1) + ' KB';
  return b + ' B';
}

function asMap(list) {
  const m = {};
  for (const v of list) m[v] = true;
  return m;
}

function contentMeta(form) {
  const meta = {
    title: value(form, 'title'),
    summary: value(form, 'summary'),
    tags: checked(form, 'tags'),
    regions: words(value(form, 'regions')),
    months: checked(form, 'months').map(Number),
    audience: checked(form, 'audience'),
    language: value(form, 'language'),
    source: value(form, 'source'),
    review_date: value(form, 'review_date') || null,
    expires: value(form, 'expires') || null,
  };
  const format = value(form, 'format');
  if (format !== undefined) meta.format = format || null;
  return meta;
}

function expertBody(form) {
  return {
    name: value(form, 'name'),
    organisation: value(form, 'organisation'),
    title: value(form, 'title'),
    fields: asMap(checked(form, 'fields')),
    regions: asMap(words(value(form, 'regions'))),
    services: asMap(checked(form, 'services')),
    contact: value(form, 'contact') || '',
  };
}

async function submitForm(form) {
  clearErrors(form);
  const kind = form.dataset.kind;
  const url = form.dataset.api;
  const method = form.dataset.method || 'POST';
  let r;
  if (kind === 'content-upload') {
    const fd = new FormData();
    fd.append('meta', JSON.stringify(contentMeta(form)));
    const file = form.elements.namedItem('file').files[0];
    const max = Number(form.dataset.maxBytes || 0);
    if (file && max > 0 && file.size > max) {
      // Refused before sending: no point pushing a large file over a slow link for a 413.
      showErrors(form, { message: '文件太大', fields: [{ field: 'file',
        message: '文件有 ' + sizeText(file.size) + '，超过上传上限 ' + sizeText(max) }] }, 413);
      return;
    }
    if (file) fd.append('file', file, file.name);
    r = await api(url, { method, body: fd });
  } else if (kind === 'content-edit') {
    r = await api(url, { method, json: { meta: contentMeta(form) } });
  } else if (kind === 'expert') {
    r = await api(url, { method, json: expertBody(form) });
  } else {
    return;
  }
  if (r.ok) {
    const msg = form.querySelector('.form-msg');
    if (msg) { msg.textContent = '已保存'; msg.className = 'form-msg ok'; }
    window.location.href = form.dataset.done;
  } else {
    showErrors(form, r.data, r.status);
  }
}

function pageMessage(text, ok) {
  let msg = document.querySelector('main .form-msg');
  if (!msg) {
    msg = document.createElement('p');
    msg.className = 'form-msg';
    document.querySelector('main').prepend(msg);
  }
  msg.textContent = text;
  msg.className = 'form-msg ' + (ok ? 'ok' : 'bad');
}

document.addEventListener('submit', (ev) => {
  const form = ev.target;
  if (form.dataset && form.dataset.api) {
    ev.preventDefault();
    const button = form.querySelector('button[type=submit]');
    if (button) button.disabled = true;
    submitForm(form).finally(() => { if (button) button.disabled = false; });
  }
});

document.addEventListener('click', async (ev) => {
  const b = ev.target.closest('button');
  if (!b) return;
  if (b.dataset.delete) {
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    b.disabled = true;
    const r = await api(b.dataset.delete, { method: 'DELETE' });
    if (r.ok) {
      window.location.reload();
    } else {
      b.disabled = false;
      pageMessage((r.data && r.data.message) || ('删除失败（' + r.status + '）'), false);
    }
  } else if (b.dataset.post) {
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    b.disabled = true;
    const r = await api(b.dataset.post, { method: 'POST' });
    if (r.ok) {
      window.location.reload();
    } else {
      b.disabled = false;
      pageMessage((r.data && r.data.message) || ('操作失败（' + r.status + '）'), false);
    }
  } else if (b.dataset.status && b.dataset.url) {
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    b.disabled = true;
    const r = await api(b.dataset.url, { method: 'POST', json: { status: b.dataset.status } });
    if (r.ok) {
      window.location.reload();
    } else {
      b.disabled = false;
      pageMessage((r.data && r.data.message) || ('修改失败（' + r.status + '）'), false);
    }
  }
});
