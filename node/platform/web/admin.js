// 村云 admin pages and login page (node and hub): account actions with the CSRF header.
'use strict';

function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)cunyun_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : '';
}

async function call(method, url, body) {
  const r = await fetch(url, {
    method,
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json', 'x-csrf-token': csrf() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = {};
  try { data = await r.json(); } catch (_) { /* empty body */ }
  if (!r.ok) throw new Error(data.message || ('请求失败（' + r.status + '）'));
  return data;
}

function say(text) {
  const m = document.getElementById('msg');
  if (m) m.textContent = text;
}

const login = document.getElementById('login');
if (login) {
  login.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = new FormData(login);
    try {
      await call('POST', '/api/v1/login', { name: f.get('name'), password: f.get('password') });
      const next = new URLSearchParams(location.search).get('next') || '/';
      location.href = next.startsWith('/') && !next.startsWith('//') ? next : '/';
    } catch (e) { say(e.message); }
  });
}

const logout = document.getElementById('logout');
if (logout) {
  logout.addEventListener('click', async () => {
    try { await call('POST', '/api/v1/logout'); location.href = '/login'; } catch (e) { say(e.message); }
  });
}

const add = document.getElementById('add');
if (add) {
  add.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = new FormData(add);
    try {
      await call('POST', '/admin/api/accounts', {
        name: f.get('name'), role: f.get('role'), scope: f.get('scope'), password: f.get('password'),
      });
      location.reload();
    } catch (e) { say(e.message); }
  });
}

const table = document.getElementById('accounts');
if (table) {
  table.addEventListener('click', async (ev) => {
    const b = ev.target.closest('button[data-act]');
    if (!b) return;
    const name = b.closest('tr').dataset.name;
    const act = b.dataset.act;
    const url = '/admin/api/accounts/' + encodeURIComponent(name) + '/' + act;
    try {
      if (act === 'password') {
        const pw = prompt('为“' + name + '”设置新密码（至少8个字符）：');
        if (!pw) return;
        await call('POST', url, { password: pw });
        say('已重置“' + name + '”的密码，其已登录的会话均已失效。');
      } else {
        await call('POST', url);
        location.reload();
      }
    } catch (e) { say(e.message); }
  });
}
