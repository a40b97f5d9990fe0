// Household and need forms, built from the node's schema (/api/v1/schema), with the cheap
// checks of the server repeated here. The server still validates everything.
export const esc = (s) => String(s ?? '').replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

const fid = (part, key) => `f-${part}-${key}`;

function fieldHtml(part, f, value, taxonomy) {
  const id = fid(part, f.key);
  const name = `${part}.${f.key}`;
  let inner = '';
  switch (f.type) {
    case 'int':
      inner = `<label class="fl" for="${id}-i">${esc(f.label)}${f.required ? ' *' : ''}</label>
        <input id="${id}-i" name="${name}" type="number" inputmode="numeric" min="${f.min}" max="${f.max}" value="${esc(value ?? '')}">`;
      break;
    case 'bool':
      inner = `<label class="check"><input type="checkbox" name="${name}" ${value ? 'checked' : ''}>${esc(f.label)}</label>`;
      break;
    case 'select':
      inner = `<label class="fl" for="${id}-i">${esc(f.label)}</label><select id="${id}-i" name="${name}">
        ${f.required ? '' : '<option value="">未填写</option>'}${f.options.map(o => `<option value="${o.id}" ${value === o.id ? 'selected' : ''}>${esc(o.name)}</option>`).join('')}</select>`;
      break;
    case 'multi': {
      const set = value || {};
      inner = `<span class="fl">${esc(f.label)}</span><div class="chips">${f.options.map(o =>
        `<label class="chip"><input type="checkbox" name="${name}" value="${o.id}" ${set[o.id] ? 'checked' : ''}>${esc(o.name)}</label>`).join('')}</div>`;
      break;
    }
    case 'bands': {
      const set = value || {};
      inner = `<span class="fl">${esc(f.label)}</span>${f.options.map(o => {
        const band = set[o.id]?.[f.detail];
        return `<div class="band"><label class="chip"><input type="checkbox" name="${name}" value="${o.id}" ${set[o.id] ? 'checked' : ''}>${esc(o.name)}</label>
          <select name="${name}.${o.id}" aria-label="${esc(o.name)}规模">${f.bands.map((b, i) => `<option value="${i + 1}" ${band === i + 1 ? 'selected' : ''}>${esc(b)}</option>`).join('')}</select></div>`;
      }).join('')}`;
      break;
    }
    case 'needs': {
      const set = value || {};
      inner = `<span class="fl">${esc(f.label)}</span>${(taxonomy?.groups || []).map(g => {
        const tags = g.tags.filter(t => t.askable);
        if (!tags.length) return '';
        const n = tags.filter(t => set[t.id]).length;
        return `<details ${n ? 'open' : ''}><summary>${esc(g.name)}${n ? `（已选${n}项）` : ''}</summary>${tags.map(t => {
          const p = set[t.id]?.priority;
          return `<div class="need"><label><input type="checkbox" name="${name}" value="${t.id}" ${set[t.id] ? 'checked' : ''}>${esc(t.plain || t.name)}</label>
            <select name="${name}.${t.id}" aria-label="优先级"><option value="">不排序</option>${[1, 2, 3].map(i => `<option value="${i}" ${p === i ? 'selected' : ''}>优先${i}</option>`).join('')}</select></div>`;
        }).join('')}</details>`;
      }).join('')}`;
      break;
    }
    case 'tags': {
      const set = value || {};
      inner = `<span class="fl">${esc(f.label)}</span>${(taxonomy?.groups || []).map(g =>
        `<details ${g.tags.some(t => set[t.id]) ? 'open' : ''}><summary>${esc(g.name)}</summary>${g.tags.map(t =>
          `<div class="need"><label><input type="checkbox" name="${name}" value="${t.id}" ${set[t.id] ? 'checked' : ''}>${esc(t.plain || t.name)}</label></div>`).join('')}</details>`).join('')}`;
      break;
    }
    case 'textarea':
      inner = `<label class="fl" for="${id}-i">${esc(f.label)}</label><textarea id="${id}-i" name="${name}" maxlength="${f.max}">${esc(value)}</textarea>`;
      break;
    case 'date':
      inner = `<label class="fl" for="${id}-i">${esc(f.label)}</label><input id="${id}-i" name="${name}" type="date" value="${esc(value)}">`;
      break;
    case 'phone':
      inner = `<label class="fl" for="${id}-i">${esc(f.label)}</label><input id="${id}-i" name="${name}" type="tel" inputmode="tel" maxlength="${f.max}" value="${esc(value)}">`;
      break;
    default:
      inner = `<label class="fl" for="${id}-i">${esc(f.label)}</label><input id="${id}-i" name="${name}" type="text" maxlength="${f.max}" value="${esc(value)}">`;
  }
  return `<div class="field t-${f.type}" id="${id}">${inner}<p class="err" hidden></p></div>`;
}

/// The household form's HTML for `record` ({profile, private}).
export function householdForm(schema, taxonomy, record) {
  return schema.household.map(sec => `<fieldset><legend>${esc(sec.title)}</legend><div class="fields">${sec.fields.map(f =>
    fieldHtml(sec.part, f, record[sec.part]?.[f.key], taxonomy)).join('')}</div></fieldset>`).join('');
}

export function needForm(schema, taxonomy, need, transitions) {
  return schema.need.map(f => {
    if (f.key === 'status' && need.status) {
      // Only the changes NeedStatus::can_become allows, current status first.
      const allowed = [need.status, ...(transitions[need.status] || [])];
      f = { ...f, required: true, options: allowed.map(id => f.options.find(o => o.id === id)).filter(Boolean) };
    }
    const v = f.key === 'tags' ? (Array.isArray(need.tags) ? Object.fromEntries(need.tags.map(t => [t, true])) : (need.tags || {})) : need[f.key];
    const html = fieldHtml('need', f, v, taxonomy);
    // The rating exists only once resolved (shown when 已解决 is chosen; see watchNeedStatus).
    return f.key === 'satisfaction' && need.status !== 'resolved' ? html.replace('<div ', '<div hidden ') : html;
  }).join('');
}

/// Reads a form back into {part: {key: value}} following the schema's kinds.
export function readForm(formEl, fieldsByPart) {
  const out = {};
  for (const [part, fields] of Object.entries(fieldsByPart)) {
    const o = {};
    for (const f of fields) {
      const name = `${part}.${f.key}`;
      const el = formEl.elements[name];
      switch (f.type) {
        case 'int': { const v = el.value.trim(); o[f.key] = v === '' ? (f.required ? '' : (f.key === 'satisfaction' ? null : 0)) : Number(v); break; }
        case 'bool': o[f.key] = el.checked; break;
        case 'select': o[f.key] = el.value || null; break;
        case 'date': o[f.key] = el.value || null; break;
        case 'multi': case 'tags': {
          const m = {};
          formEl.querySelectorAll(`input[name="${name}"]:checked`).forEach(c => { m[c.value] = true; });
          o[f.key] = m; // {id: true}, as the protocol's sets are
          break;
        }
        case 'bands': case 'needs': {
          const m = {};
          formEl.querySelectorAll(`input[name="${name}"]:checked`).forEach(c => {
            const sel = formEl.elements[`${name}.${c.value}`];
            if (f.type === 'bands') m[c.value] = { [f.detail]: Number(sel.value) };
            else m[c.value] = { priority: sel.value ? Number(sel.value) : null };
          });
          o[f.key] = m;
          break;
        }
        default: o[f.key] = el.value;
      }
    }
    out[part] = o;
  }
  return out;
}

const PHONE = /^(1[3-9]\d{9}|0\d{2,3}-\d{7,8}|0\d{9,11})$/;

/// The server's cheap rules, for an instant answer (messages as the server words them).
export function checkHousehold(schema, v) {
  const errs = [];
  const push = (field, message) => errs.push({ field, message });
  for (const sec of schema.household) {
    for (const f of sec.fields) {
      const val = v[sec.part][f.key];
      const path = `${sec.part}.${f.key}`;
      if (f.type === 'int') {
        if (val === '' || val === null) { if (f.required) push(path, `${f.label}为必填项`); continue; }
        if (!Number.isInteger(val)) push(path, `${f.label}应为整数`);
        else if (val < f.min || val > f.max) push(path, `${f.label}应在${f.min}到${f.max}之间，现为${val}`);
      }
      if ((f.type === 'text' || f.type === 'textarea') && [...(val || '')].length > f.max) push(path, `${f.label}最多${f.max}个字`);
    }
  }
  const p = v.profile, q = v.private;
  if (q.phone && !PHONE.test(q.phone)) push('private.phone', `联系电话“${q.phone}”格式不正确，应为11位手机号或带区号的固定电话`);
  const ages = ['age_0_5', 'age_6_14', 'age_15_17', 'age_18_59', 'age_60_69', 'age_70_plus'].map(k => Number(p[k]) || 0);
  const r = Number(p.residents);
  const sum = ages.reduce((a, b) => a + b, 0);
  if (Number.isInteger(r) && p.residents !== '' && sum > r) push('profile.residents', `各年龄段人数之和（${sum}）超过家庭人口（${r}）`);
  if (Number.isInteger(r) && p.residents !== '' && p.working_away > r) push('profile.working_away', `外出务工人数（${p.working_away}）超过家庭人口（${r}）`);
  if (p.uses_wechat && !p.smartphones) push('profile.uses_wechat', '填写了使用微信，但智能手机数量为0');
  if (p.left_behind_elderly && ages[4] + ages[5] === 0) push('profile.left_behind_elderly', '标记了留守老人，但60岁以上人数为0');
  if (p.survey_date && p.next_review && p.next_review < p.survey_date) push('profile.next_review', `下次复核日期（${p.next_review}）早于调查日期（${p.survey_date}）`);
  const needs = Object.keys(p.stated_needs || {});
  if (needs.length > 10) push('profile.stated_needs', `自述需求最多10项，现有${needs.length}项`);
  const seen = {};
  for (const [t, n] of Object.entries(p.stated_needs || {})) {
    if (n.priority) { if (seen[n.priority]) push('profile.stated_needs', `优先级${n.priority}只能用一次`); seen[n.priority] = t; }
  }
  if (!q.separate_consent) {
    if (Object.keys(q.health_interests || {}).length) push('private.health_interests', '未取得单独同意，不能记录健康关注');
    if (q.aid_monitoring) push('private.aid_monitoring', '未取得单独同意，不能记录防返贫监测对象');
  }
  return errs;
}

/// Shows field errors (server paths like `profile.crops.citrus.area_band`) next to their fields;
/// returns the messages that match no field.
export function showErrors(formEl, errors) {
  formEl.querySelectorAll('.field').forEach(el => { el.classList.remove('bad'); const p = el.querySelector('.err'); p.hidden = true; p.textContent = ''; });
  const rest = [];
  for (const e of errors) {
    const [part, key] = e.field.split('.');
    const el = (key && formEl.querySelector(`#${fid(part, key)}`)) || formEl.querySelector(`#${fid('need', part)}`);
    if (!el) { rest.push(e.message); continue; }
    el.classList.add('bad');
    const p = el.querySelector('.err');
    p.hidden = false;
    p.textContent = p.textContent ? `${p.textContent}；${e.message}` : e.message;
  }
  const first = formEl.querySelector('.field.bad');
  if (first) first.scrollIntoView({ block: 'center' });
  return rest;
}

/// Shows the satisfaction rating only while 已解决 is chosen (and clears it otherwise).
export function watchNeedStatus(formEl) {
  const status = formEl.elements['need.status'];
  const box = formEl.querySelector('#f-need-satisfaction');
  if (!status || !box) return;
  const sync = () => {
    box.hidden = status.value !== 'resolved';
    if (box.hidden) formEl.elements['need.satisfaction'].value = '';
  };
  status.addEventListener('change', sync);
  sync();
}
