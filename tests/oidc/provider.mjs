#!/usr/bin/env node
// Local OpenID provider for Exitnet integration tests (NOT for production).
//
//   node tests/oidc/provider.mjs --key KEYFILE [--port 0] [--audience urn:exitnet:test] [--access-token-ttl 300]
//
// stdout carries only JSON lines:
//   {"issuer":"http://127.0.0.1:PORT","port":PORT}     once, when ready
//   {"event":"rotated","kid":"..."}                    after each SIGHUP key reload
// Everything else (oidc-provider notices, errors) goes to stderr.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

// oidc-provider prints its development NOTICEs with console.info (stdout).
// Keep stdout machine-readable: route all console output to stderr.
for (const m of ['log', 'info', 'debug', 'warn']) {
  console[m] = (...args) => console.error(...args);
}

const { default: Provider, errors: oidcErrors } = await import('oidc-provider');

function usage(msg) {
  process.stderr.write(`${msg}\nusage: node provider.mjs --key KEYFILE [--port 0] [--audience urn:exitnet:test]\n`);
  process.exit(2);
}

const args = { port: 0, audience: 'urn:exitnet:test', key: undefined, ttl: 300 };
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const name = eq === -1 ? a : a.slice(0, eq);
    const take = () => (eq === -1 ? argv[++i] : a.slice(eq + 1));
    switch (name) {
      case '--key': args.key = take(); break;
      case '--port': args.port = Number(take()); break;
      case '--audience': args.audience = take(); break;
      case '--access-token-ttl': args.ttl = Number(take()); break;
      case '-h': case '--help': usage('');
      // falls through
      default: usage(`unknown argument: ${a}`);
    }
  }
  if (!args.key) usage('--key KEYFILE is required');
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) usage('bad --port');
  if (!args.audience) usage('bad --audience');
  if (!Number.isInteger(args.ttl) || args.ttl < 1) usage('bad --access-token-ttl');
}

const AUDIENCE = args.audience;
const ACCESS_TOKEN_TTL = args.ttl;

const ROLES_BY_ACCOUNT = {
  alice: ['case_manager'],
  bob: ['case_manager'],
  sue: ['supervisor'],
  audrey: ['auditor'],
};
const rolesFor = (accountId) => [...(ROLES_BY_ACCOUNT[accountId] ?? [])];

function readKey(file) {
  const raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  // Accept either a bare JWK or a {"keys":[jwk]} set with exactly one key.
  const jwk = Array.isArray(raw?.keys) ? raw.keys[0] : raw;
  if (Array.isArray(raw?.keys) && raw.keys.length !== 1) throw new Error(`${file}: expected exactly one key`);
  for (const f of ['kty', 'crv', 'x', 'y', 'd', 'kid']) {
    if (typeof jwk?.[f] !== 'string' || !jwk[f]) throw new Error(`${file}: JWK field "${f}" missing`);
  }
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256') throw new Error(`${file}: key must be EC P-256`);
  if (jwk.alg !== undefined && jwk.alg !== 'ES256') throw new Error(`${file}: alg must be ES256`);
  if (jwk.use !== undefined && jwk.use !== 'sig') throw new Error(`${file}: use must be sig`);
  // Validate it really is a usable private key.
  crypto.createPrivateKey({ key: jwk, format: 'jwk' });
  return {
    kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y, d: jwk.d, kid: jwk.kid, alg: 'ES256', use: 'sig',
  };
}

// In-memory storage shared by every Provider instance of this process, so grants,
// refresh tokens, sessions and pending device codes survive a SIGHUP key rotation
// (oidc-provider's built-in memory adapter is per instance).
const STORE = new Map(); // key -> { value, expiresAt }
const GRANT_MEMBERS = new Map(); // grantId -> Set(key)
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);

function storeGet(key) {
  const e = STORE.get(key);
  if (!e) return undefined;
  if (e.expiresAt <= Date.now()) { STORE.delete(key); return undefined; }
  return e.value;
}
function storeSet(key, value, expiresIn) {
  const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
  STORE.set(key, { value, expiresAt });
}
setInterval(() => {
  const now = Date.now();
  for (const [k, e] of STORE) if (e.expiresAt <= now) STORE.delete(k);
}, 60_000).unref();

class SharedMemoryAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    storeSet(key, payload, expiresIn);
    if (this.model === 'Session' && payload.uid) storeSet(`sessionUid:${payload.uid}`, id, expiresIn);
    if (payload.userCode) storeSet(`userCode:${payload.userCode}`, id, expiresIn);
    if (GRANTABLE.has(this.model) && payload.grantId) {
      if (!GRANT_MEMBERS.has(payload.grantId)) GRANT_MEMBERS.set(payload.grantId, new Set());
      GRANT_MEMBERS.get(payload.grantId).add(key);
    }
  }

  async find(id) { return id === undefined ? undefined : storeGet(this.key(id)); }

  async findByUid(uid) { return this.find(storeGet(`sessionUid:${uid}`)); }

  async findByUserCode(userCode) { return this.find(storeGet(`userCode:${userCode}`)); }

  async consume(id) {
    const v = storeGet(this.key(id));
    if (v) v.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { STORE.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const key of GRANT_MEMBERS.get(grantId) ?? []) STORE.delete(key);
    GRANT_MEMBERS.delete(grantId);
  }
}

// Stable across key rotations so that in-flight browser sessions keep working.
const COOKIE_KEYS = [crypto.randomBytes(32).toString('base64url')];

function buildProvider(issuer, jwk) {
  const configuration = {
    adapter: SharedMemoryAdapter,
    clients: [
      {
        client_id: 'agency-system',
        client_secret: 'agency-secret',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
        roles: ['system'],
      },
      {
        client_id: 'agency-norole',
        client_secret: 'norole-secret',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        // A public client whose ID is the resource's audience, so that its ID
        // tokens carry the same `aud` as access tokens for the node.
        client_id: AUDIENCE,
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'none',
        application_type: 'native',
      },
      {
        client_id: 'exitnetctl',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'none',
        application_type: 'native',
      },
    ],
    clientDefaults: {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      id_token_signed_response_alg: 'ES256',
      token_endpoint_auth_method: 'client_secret_basic',
    },
    extraClientMetadata: {
      properties: ['roles'],
      validator(ctx, key, value) {
        if (key === 'roles' && value !== undefined) {
          if (!Array.isArray(value) || !value.every((r) => typeof r === 'string')) {
            throw new Error('roles must be an array of strings');
          }
        }
      },
    },
    jwks: { keys: [jwk] },
    enabledJWA: {
      idTokenSigningAlgValues: ['ES256'],
      userinfoSigningAlgValues: ['ES256'],
      introspectionSigningAlgValues: ['ES256'],
      authorizationSigningAlgValues: ['ES256'],
      requestObjectSigningAlgValues: ['ES256'],
      clientAuthSigningAlgValues: ['ES256'],
    },
    cookies: { keys: COOKIE_KEYS },
    scopes: ['openid', 'offline_access', 'exitnet'],
    claims: { openid: ['sub'] },
    async findAccount(ctx, sub) {
      return {
        accountId: sub,
        async claims() { return { sub, roles: rolesFor(sub) }; },
      };
    },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      deviceFlow: { enabled: true },
      introspection: {
        enabled: true,
        // Only confidential clients may introspect (any token of this issuer).
        async allowedPolicy(ctx, client) { return client.clientAuthMethod !== 'none'; },
      },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      rpInitiatedLogout: { enabled: false },
      resourceIndicators: {
        enabled: true,
        async defaultResource() { return AUDIENCE; },
        async useGrantedResource() { return true; },
        async getResourceServerInfo(ctx, resourceIndicator) {
          if (resourceIndicator !== AUDIENCE) throw new oidcErrors.InvalidTarget(`unknown resource ${resourceIndicator}`);
          return {
            scope: 'exitnet',
            audience: AUDIENCE,
            accessTokenTTL: ACCESS_TOKEN_TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        },
      },
    },
    async extraTokenClaims(ctx, token) {
      if (token.kind === 'ClientCredentials') {
        const client = ctx.oidc.client ?? await ctx.oidc.provider.Client.find(token.clientId);
        const roles = client?.roles;
        return Array.isArray(roles) && roles.length ? { roles: [...roles] } : undefined;
      }
      if (token.accountId) return { roles: rolesFor(token.accountId) };
      return undefined;
    },
    async issueRefreshToken(ctx, client, code) {
      if (client.clientId === 'exitnetctl') return client.grantTypeAllowed('refresh_token');
      return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
    },
    // Public client: rotate on every use (one-time-use refresh tokens).
    rotateRefreshToken: true,
    pkce: { required: () => false },
    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      ClientCredentials: ACCESS_TOKEN_TTL,
      IdToken: ACCESS_TOKEN_TTL,
      DeviceCode: 600,
      Interaction: 600,
      Session: 3600,
      Grant: 14 * 24 * 3600,
      RefreshToken: 24 * 3600,
    },
    renderError(ctx, out, error) {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><body><h1>error</h1>${Object.entries(out)
        .map(([k, v]) => `<pre id="${k}">${k}: ${String(v).replace(/[<>&"]/g, '')}</pre>`).join('')}</body></html>`;
    },
  };

  const provider = new Provider(issuer, configuration);
  provider.on('server_error', (ctx, err) => { console.error('server_error', err); });
  // Surface the real reason behind generic OAuth errors (stderr only).
  for (const ev of ['grant.error', 'introspection.error', 'revocation.error', 'device_authorization.error',
    'code_verification.error', 'userinfo.error', 'jwks.error', 'discovery.error', 'authorization.error']) {
    provider.on(ev, (ctx, err) => {
      console.error(`${ev}: ${err.error}: ${err.error_description}${err.error_detail ? ` (${err.error_detail})` : ''}`);
    });
  }
  return provider;
}

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

// ---- RFC 7662 introspection of JWT access tokens ----------------------------
// oidc-provider refuses to introspect structured (JWT) access tokens
// ("unsupported_token_type"), because it does not store them. For tests we answer
// those requests here, on the same endpoint path: the token must be signed by the
// *current* key, have iss = this issuer and not be expired. Other tokens (e.g.
// refresh tokens) are passed through to oidc-provider unchanged.
const INTROSPECTION_PATH = '/token/introspection';
const CONFIDENTIAL_CLIENTS = { 'agency-system': 'agency-secret', 'agency-norole': 'norole-secret' };

let current; // { jwk, publicKey, handler }

function install(issuer, jwk) {
  const provider = buildProvider(issuer, jwk);
  const publicKey = crypto.createPublicKey({
    key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, format: 'jwk',
  });
  current = { jwk, publicKey, handler: provider.callback() };
}

function readBody(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let n = 0;
    req.on('data', (c) => {
      n += c.length;
      if (n > limit) { reject(new Error('body too large')); req.destroy(); } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function sendJson(res, status, body, headers = {}) {
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers,
  });
  res.end(JSON.stringify(body));
}

function decodeJwt(token) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3) return undefined;
  try {
    return {
      header: JSON.parse(Buffer.from(parts[0], 'base64url').toString()),
      payload: JSON.parse(Buffer.from(parts[1], 'base64url').toString()),
      signingInput: Buffer.from(`${parts[0]}.${parts[1]}`),
      signature: Buffer.from(parts[2], 'base64url'),
    };
  } catch {
    return undefined;
  }
}

function authenticateClient(req, params) {
  const formDecode = (s) => decodeURIComponent(s.replace(/\+/g, '%20'));
  let id;
  let secret;
  const auth = req.headers.authorization;
  if (auth && /^basic /i.test(auth)) {
    const raw = Buffer.from(auth.slice(6).trim(), 'base64').toString();
    const i = raw.indexOf(':');
    if (i < 0) return undefined;
    try { id = formDecode(raw.slice(0, i)); secret = formDecode(raw.slice(i + 1)); } catch { return undefined; }
  } else {
    id = params.get('client_id');
    secret = params.get('client_secret');
  }
  if (!id || !secret || CONFIDENTIAL_CLIENTS[id] === undefined) return undefined;
  const a = Buffer.from(secret);
  const b = Buffer.from(CONFIDENTIAL_CLIENTS[id]);
  return a.length === b.length && crypto.timingSafeEqual(a, b) ? id : undefined;
}

async function handle(req, res) {
  const { handler } = current;
  const path = (req.url || '').split('?')[0];
  if (req.method !== 'POST' || path !== INTROSPECTION_PATH) return handler(req, res);

  let raw;
  try { raw = await readBody(req); } catch { return sendJson(res, 400, { error: 'invalid_request' }); }
  const params = new URLSearchParams(raw.toString('utf8'));
  const jwt = decodeJwt(params.get('token'));
  if (!jwt) {
    req.body = raw; // oidc-provider uses a pre-read req.body when the stream is consumed
    return handler(req, res);
  }
  if (!authenticateClient(req, params)) {
    return sendJson(res, 401, { error: 'invalid_client', error_description: 'client authentication failed' },
      { 'www-authenticate': 'Basic realm="exitnet-test-oidc"' });
  }
  const { jwk, publicKey } = current;
  const now = Math.floor(Date.now() / 1000);
  const { header, payload } = jwt;
  const active = header.alg === 'ES256' && header.kid === jwk.kid
    && crypto.verify('sha256', jwt.signingInput, { key: publicKey, dsaEncoding: 'ieee-p1363' }, jwt.signature)
    && payload.iss === issuer && typeof payload.exp === 'number' && payload.exp > now;
  return sendJson(res, 200, active ? { active: true, token_type: 'Bearer', ...payload } : { active: false });
}

const server = http.createServer((req, res) => {
  if (!current) { res.statusCode = 503; res.end('starting'); return; }
  handle(req, res).catch((err) => {
    console.error('request error', err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
  });
});
server.on('clientError', (err, socket) => { socket.destroy(); });

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(args.port, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

try {
  install(issuer, readKey(args.key));
} catch (err) {
  console.error(`provider: cannot start: ${err.stack || err}`);
  process.exit(1);
}

emit({ issuer, port });

process.on('SIGHUP', () => {
  try {
    const jwk = readKey(args.key);
    install(issuer, jwk);
    emit({ event: 'rotated', kid: jwk.kid });
  } catch (err) {
    console.error(`provider: key rotation failed, keeping old key: ${err.stack || err}`);
  }
});

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
