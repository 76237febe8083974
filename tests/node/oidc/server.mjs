// A real, certified OpenID provider (`oidc-provider` from npm) for airlock's
// end-to-end tests, over TLS on 127.0.0.1 only.
//
// Usage: node server.mjs '<json>' where json is
//   { "cert": PEM path, "key": PEM path, "issuer_host": "auth.oidc.test",
//     "client_id", "client_secret", "machine_id", "machine_secret",
//     "access_ttl": seconds (default 60) }
// Prints one JSON line `{"port": N}` once it listens, then serves:
//   - the provider: /auth, /token, /token/introspection, /token/revocation;
//     PKCE (S256) required, refresh-token rotation with reuse detection,
//     opaque access tokens, client credentials;
//   - /interaction/:uid: logs in and consents automatically, so a plain HTTP
//     client following redirects (with a cookie jar) completes a flow;
//   - /api/*: a protected API that checks the bearer token with the
//     provider's own token lookup and answers 200 or 401;
//   - /_fixture/*: test control (state, expiring access tokens, redirect URIs).
// It records every provider and API request so tests can assert what it saw.

import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';

import Provider from 'oidc-provider';

// stdout carries only the port line; the provider's notices go to stderr.
console.info = console.error;

const opts = JSON.parse(process.argv[2] ?? '{}');
for (const field of ['cert', 'key', 'issuer_host', 'client_id', 'client_secret', 'machine_id', 'machine_secret']) {
  if (!opts[field]) {
    console.error(`missing option ${field}`);
    process.exit(2);
  }
}
const ACCESS_TTL = opts.access_ttl ?? 60;
const ACCOUNT = 'alice';

// Everything the tests may inspect. Holds real tokens: the tests read it but
// never print it.
const state = {
  requests: [], // provider endpoint calls
  api: [], // protected API calls
  tokens: [], // every access/refresh/client-credentials token issued
};

// An in-memory adapter (the provider's own is LRU-bound and hides its store):
// clients come from `clients`, so redirect URIs can be set once airlock runs.
const store = new Map();
// Endpoints made to fail by the test: path -> HTTP status.
const failures = new Map();
const clients = new Map();
const issuedKinds = new Set(['AccessToken', 'RefreshToken', 'ClientCredentials']);

class Adapter {
  constructor(name) {
    this.name = name;
  }

  key(id) {
    return `${this.name}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(this.key(id), { payload: { ...payload }, expiresAt });
    if (issuedKinds.has(this.name)) {
      state.tokens.push({
        kind: this.name,
        value: id,
        grant_id: payload.grantId ?? null,
        client_id: payload.clientId ?? null,
        exp: payload.exp ?? null,
        at: Date.now(),
      });
    }
  }

  async find(id) {
    if (this.name === 'Client') {
      return clients.get(id);
    }
    const entry = store.get(this.key(id));
    if (!entry || entry.expiresAt <= Date.now()) {
      return undefined;
    }
    return { ...entry.payload };
  }

  async findByUid(uid) {
    for (const [key, entry] of store) {
      if (key.startsWith(`${this.name}:`) && entry.payload.uid === uid) {
        return { ...entry.payload };
      }
    }
    return undefined;
  }

  async findByUserCode() {
    return undefined;
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) {
      entry.payload.consumed = Math.floor(Date.now() / 1000);
    }
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const [key, entry] of store) {
      if (key.startsWith(`${this.name}:`) && entry.payload.grantId === grantId) {
        store.delete(key);
      }
    }
  }
}

clients.set(opts.client_id, {
  client_id: opts.client_id,
  client_secret: opts.client_secret,
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/unset'],
  token_endpoint_auth_method: 'client_secret_basic',
  scope: 'openid offline_access api',
});
clients.set(opts.machine_id, {
  client_id: opts.machine_id,
  client_secret: opts.machine_secret,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  scope: 'api',
});

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test', use: 'sig', alg: 'RS256' };

const configuration = {
  adapter: Adapter,
  clients: [],
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  scopes: ['openid', 'offline_access', 'api'],
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  pkce: { required: () => true },
  rotateRefreshToken: true,
  ttl: {
    AccessToken: ACCESS_TTL,
    ClientCredentials: ACCESS_TTL,
    RefreshToken: 3600,
    AuthorizationCode: 60,
    Grant: 3600,
    Interaction: 600,
    Session: 3600,
    IdToken: 3600,
  },
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: true },
    revocation: { enabled: true },
    clientCredentials: { enabled: true },
    // Opaque tokens for the whole grant, not audience-bound JWTs.
    resourceIndicators: { enabled: false },
  },
};

const server = https.createServer({
  cert: fs.readFileSync(opts.cert),
  key: fs.readFileSync(opts.key),
});
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const { port } = server.address();
const provider = new Provider(`https://${opts.issuer_host}:${port}`, configuration);
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

// The provider's reason for a refused grant (`error_detail`, e.g. "refresh
// token already used"), attached to the request record below.
let pendingDetail = null;
for (const event of ['grant.error', 'introspection.error', 'revocation.error', 'authorization.error']) {
  provider.on(event, (_ctx, err) => {
    pendingDetail = err?.error_detail ?? null;
  });
}

// Records each provider call, after it ran, without secrets in the fields
// chosen (no codes, verifiers or tokens).
provider.use(async (ctx, next) => {
  await next();
  const { oidc } = ctx;
  if (!oidc) {
    return;
  }
  let params = {};
  try {
    params = oidc.params ?? {};
  } catch {
    // Parameters are not parsed on every route.
  }
  const entry = { route: oidc.route ?? null, status: ctx.status, at: Date.now() };
  for (const name of ['grant_type', 'scope', 'prompt', 'code_challenge_method', 'token_type_hint', 'redirect_uri']) {
    if (params[name] !== undefined) {
      entry[name] = params[name];
    }
  }
  entry.has_code_challenge = Boolean(params.code_challenge);
  entry.has_code_verifier = Boolean(params.code_verifier);
  let client;
  try {
    client = oidc.client;
  } catch {
    // Not authenticated.
  }
  entry.client_id = client?.clientId ?? null;
  if (ctx.status >= 400 && ctx.body && typeof ctx.body === 'object') {
    entry.error = ctx.body.error;
    entry.error_description = ctx.body.error_description;
    entry.error_detail = pendingDetail;
  }
  pendingDetail = null;
  state.requests.push(entry);
});

const callback = provider.callback();

function send(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

// Logs in as ACCOUNT and grants whatever was asked, one prompt at a time.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session, grantId } = details;
  const result = {};
  if (prompt.name === 'login') {
    result.login = { accountId: ACCOUNT };
  } else if (prompt.name === 'consent') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) {
      grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    }
    if (missing.missingOIDCClaims) {
      grant.addOIDCClaims(missing.missingOIDCClaims);
    }
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result.consent = { grantId: await grant.save() };
  } else {
    result.error = 'access_denied';
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

// The protected API: only a live access token of this provider passes.
async function api(req, res) {
  const authorization = req.headers.authorization ?? null;
  const match = /^Bearer (.+)$/.exec(authorization ?? '');
  let token;
  if (match) {
    token = (await provider.AccessToken.find(match[1])) ?? (await provider.ClientCredentials.find(match[1]));
  }
  const active = Boolean(token && !token.isExpired);
  const record = {
    method: req.method,
    path: req.url,
    authorization,
    active,
    kind: token?.kind ?? null,
    at: Date.now(),
  };
  state.api.push(record);
  for await (const _ of req) {
    // Drain the body.
  }
  if (!active) {
    send(res, 401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
    return;
  }
  send(res, 200, { ok: true, sub: token.accountId ?? null, client_id: token.clientId, path: req.url });
}

async function control(req, res, path) {
  if (req.method === 'GET' && path === '/_fixture/state') {
    send(res, 200, state);
  } else if (req.method === 'POST' && path === '/_fixture/redirect_uris') {
    const { redirect_uris: uris } = await readJson(req);
    clients.set(opts.client_id, { ...clients.get(opts.client_id), redirect_uris: uris });
    send(res, 200, { ok: true });
  } else if (req.method === 'POST' && path === '/_fixture/expire_access_tokens') {
    // Expiry at the provider, without revoking the grant (revoking an access
    // token at /token/revocation would revoke its refresh token too).
    let expired = 0;
    for (const [key] of store) {
      if (key.startsWith('AccessToken:') || key.startsWith('ClientCredentials:')) {
        store.delete(key);
        expired += 1;
      }
    }
    send(res, 200, { expired });
  } else if (req.method === 'POST' && path === '/_fixture/fail') {
    // `{"path": "/token", "status": 503}` makes that endpoint answer an
    // OAuth error with the status; status 0 (or none) restores it.
    const { path: failing, status } = await readJson(req);
    if (status) {
      failures.set(failing, status);
    } else {
      failures.delete(failing);
    }
    send(res, 200, { ok: true });
  } else {
    send(res, 404, { error: 'no such fixture route' });
  }
}

server.on('request', (req, res) => {
  const path = new URL(req.url, 'https://x').pathname;
  let handler;
  if (path.startsWith('/interaction/')) {
    handler = interaction;
  } else if (path.startsWith('/api/')) {
    handler = api;
  } else if (path.startsWith('/_fixture/')) {
    handler = (q, r) => control(q, r, path);
  } else if (failures.has(path)) {
    state.requests.push({ route: 'failed', path, status: failures.get(path), at: Date.now() });
    req.resume();
    send(res, failures.get(path), { error: 'temporarily_unavailable', error_description: 'provider outage (test)' });
    return;
  } else {
    callback(req, res);
    return;
  }
  handler(req, res).catch((err) => {
    console.error(err);
    if (!res.headersSent) {
      send(res, 500, { error: String(err?.message ?? err) });
    } else {
      res.destroy();
    }
  });
});

// A test harness that stopped reading must not crash the server.
process.stdout.on('error', () => {});
process.stdout.write(`${JSON.stringify({ port })}\n`);
// The test harness kills this process; also stop when its stdin closes.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
