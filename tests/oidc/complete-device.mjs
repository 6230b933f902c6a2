#!/usr/bin/env node
// Approves a pending OAuth device authorization on the local test provider
// (tests/oidc/provider.mjs) by driving its built-in development pages over
// plain HTTP, like a user with a browser would:
//
//   node tests/oidc/complete-device.mjs VERIFICATION_URI USER_CODE LOGIN
//
// enter user code -> sign in as LOGIN (any password) -> consent -> confirm device.
// Exit 0 when the provider shows its success page; otherwise non-zero with a
// message on stderr. Forms are discovered from the returned HTML (action,
// hidden inputs), so exact field names/paths do not matter much.

const [verificationUri, userCode, login] = process.argv.slice(2);
if (!verificationUri || !userCode || !login) {
  process.stderr.write('usage: node complete-device.mjs VERIFICATION_URI USER_CODE LOGIN\n');
  process.exit(2);
}

const VERBOSE = !!process.env.COMPLETE_DEVICE_VERBOSE;
const log = (...a) => { if (VERBOSE) console.error('[complete-device]', ...a); };
function fail(msg) {
  process.stderr.write(`complete-device: FAILED: ${msg}\n`);
  process.exit(1);
}

// ---- minimal cookie jar (name + path scoped, single host) -----------------
const jar = new Map(); // key `${path}\0${name}` -> { name, value, path }

function storeCookies(res, url) {
  const list = typeof res.headers.getSetCookie === 'function' ? res.headers.getSetCookie() : [];
  for (const line of list) {
    const [pair, ...attrs] = line.split(';');
    const eq = pair.indexOf('=');
    if (eq <= 0) continue;
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    let path = null;
    let expired = false;
    for (const attr of attrs) {
      const [k, ...v] = attr.split('=');
      const key = k.trim().toLowerCase();
      const val = v.join('=').trim();
      if (key === 'path') path = val || '/';
      if (key === 'max-age' && Number(val) <= 0) expired = true;
      if (key === 'expires' && Date.parse(val) <= Date.now()) expired = true;
    }
    if (path === null) {
      // default-path per RFC 6265 5.1.4
      const p = new URL(url).pathname;
      path = p.lastIndexOf('/') > 0 ? p.slice(0, p.lastIndexOf('/')) : '/';
    }
    const key = `${path}\0${name}`;
    if (expired || value === '') jar.delete(key);
    else jar.set(key, { name, value, path });
  }
}

function cookieHeader(url) {
  const p = new URL(url).pathname;
  const matching = [...jar.values()].filter((c) => p === c.path
    || (p.startsWith(c.path) && (c.path.endsWith('/') || p[c.path.length] === '/')));
  matching.sort((a, b) => b.path.length - a.path.length); // more specific first
  return matching.map((c) => `${c.name}=${c.value}`).join('; ');
}

// ---- HTTP with manual redirects -------------------------------------------
async function request(url, { method = 'GET', form } = {}) {
  let current = url;
  let body = form ? new URLSearchParams(form).toString() : undefined;
  for (let hops = 0; hops < 20; hops += 1) {
    const headers = { accept: 'text/html' };
    const cookie = cookieHeader(current);
    if (cookie) headers.cookie = cookie;
    if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    log(method, current, body ?? '');
    const res = await fetch(current, { method, headers, body, redirect: 'manual' });
    storeCookies(res, current);
    if (res.status >= 300 && res.status < 400 && res.headers.get('location')) {
      current = new URL(res.headers.get('location'), current).href;
      method = 'GET';
      body = undefined;
      await res.arrayBuffer();
      continue;
    }
    return { status: res.status, url: current, html: await res.text() };
  }
  throw new Error(`too many redirects starting at ${url}`);
}

// ---- HTML form parsing -----------------------------------------------------
const decode = (s) => s
  .replace(/&quot;/g, '"').replace(/&#0*39;|&#x0*27;|&apos;/gi, "'")
  .replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&#x2f;|&#0*47;/gi, '/')
  .replace(/&amp;/g, '&');

function attrs(s) {
  const out = {};
  const re = /([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?/g;
  let m;
  while ((m = re.exec(s))) out[m[1].toLowerCase()] = decode(m[2] ?? m[3] ?? m[4] ?? '');
  return out;
}

function parseForms(html, baseUrl) {
  const forms = [];
  const formRe = /<form\b([^>]*)>([\s\S]*?)<\/form>/gi;
  let m;
  while ((m = formRe.exec(html))) {
    const a = attrs(m[1]);
    const inputs = [];
    const inRe = /<input\b([^>]*?)\/?>/gi;
    let i;
    while ((i = inRe.exec(m[2]))) inputs.push(attrs(i[1]));
    forms.push({
      id: a.id || '',
      method: (a.method || 'get').toUpperCase(),
      action: new URL(a.action || baseUrl, baseUrl).href,
      inputs,
    });
  }
  return forms;
}

function fieldsOf(form) {
  const fields = {};
  for (const inp of form.inputs) {
    if (!inp.name) continue;
    const type = (inp.type || 'text').toLowerCase();
    if (type === 'submit' || type === 'button') continue;
    fields[inp.name] = inp.value ?? '';
  }
  return fields;
}

function pageSummary(page) {
  const text = page.html.replace(/<style[\s\S]*?<\/style>/gi, '').replace(/<[^>]+>/g, ' ')
    .replace(/\s+/g, ' ').trim();
  return `HTTP ${page.status} at ${page.url}: ${text.slice(0, 400)}`;
}

// ---- the walk ----------------------------------------------------------------
const steps = [];
let page = await request(verificationUri);

for (let round = 0; round < 12; round += 1) {
  if (page.status >= 400) fail(`${steps.join(' -> ')}: ${pageSummary(page)}`);
  if (/Sign-in Success/i.test(page.html)) {
    steps.push('success');
    log(steps.join(' -> '));
    process.stdout.write(`device authorization approved for ${login}\n`);
    process.exit(0);
  }
  if (/incorrect|error|aborted|interrupted|went wrong/i.test(page.html.replace(/<style[\s\S]*?<\/style>/gi, ''))
      && !parseForms(page.html, page.url).length) {
    fail(`${steps.join(' -> ')}: ${pageSummary(page)}`);
  }

  const forms = parseForms(page.html, page.url).filter((f) => f.method === 'POST');
  const names = (f) => new Set(f.inputs.map((x) => x.name).filter(Boolean));
  const hidden = (f, n) => f.inputs.find((x) => x.name === n)?.value;

  let form;
  let step;
  const fields = {};
  if ((form = forms.find((f) => names(f).has('login')))) {
    step = 'login';
    Object.assign(fields, fieldsOf(form), { login, password: 'test' });
  } else if ((form = forms.find((f) => hidden(f, 'confirm') !== undefined || /confirm/i.test(f.id)))) {
    step = 'confirm';
    Object.assign(fields, fieldsOf(form));
    delete fields.abort;
  } else if ((form = forms.find((f) => names(f).has('user_code')))) {
    if (steps.includes('user_code')) fail(`user code rejected: ${pageSummary(page)}`);
    step = 'user_code';
    Object.assign(fields, fieldsOf(form), { user_code: userCode });
  } else if ((form = forms.find((f) => hidden(f, 'prompt') === 'consent'))) {
    step = 'consent';
    Object.assign(fields, fieldsOf(form));
  } else {
    fail(`${steps.join(' -> ')}: no known form on page: ${pageSummary(page)}`);
  }
  steps.push(step);
  log(`step ${step}: POST ${form.action}`, fields);
  page = await request(form.action, { method: 'POST', form: fields });
}
fail(`too many steps: ${steps.join(' -> ')}: ${pageSummary(page)}`);
