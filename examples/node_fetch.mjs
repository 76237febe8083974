#!/usr/bin/env node
// GitHub's API with fetch through airlock, in Node.
//
// Node's built-in fetch ignores HTTPS_PROXY (before Node 24's
// NODE_USE_ENV_PROXY), so this uses undici's fetch with EnvHttpProxyAgent,
// which reads HTTPS_PROXY, HTTP_PROXY and NO_PROXY. Node trusts airlock's CA
// through NODE_EXTRA_CA_CERTS, printed by airlock. GITHUB_TOKEN holds a
// placeholder.
//
//   npm install undici          (or NODE_PATH=/path/to/node_modules)
//   GITHUB_API_URL              API base URL (default https://api.github.com)
import { createRequire } from "node:module";

// require() honours NODE_PATH; a bare `import "undici"` would not.
const require = createRequire(import.meta.url);
const { fetch, EnvHttpProxyAgent, setGlobalDispatcher } = require("undici");

setGlobalDispatcher(new EnvHttpProxyAgent());

const api = (process.env.GITHUB_API_URL ?? "https://api.github.com").replace(/\/+$/, "");
const token = process.env.GITHUB_TOKEN;
if (!token) {
  console.error("GITHUB_TOKEN (the placeholder airlock printed) is not set");
  process.exit(2);
}

const response = await fetch(`${api}/user`, {
  headers: {
    authorization: `Bearer ${token}`,
    accept: "application/vnd.github+json",
    "user-agent": "airlock-example",
  },
});
const text = await response.text();
let who;
try {
  who = JSON.parse(text).login;
} catch {
  who = text.trim();
}
console.log(`GET /user -> ${response.status}: ${who}`);
process.exit(response.ok ? 0 : 1);
