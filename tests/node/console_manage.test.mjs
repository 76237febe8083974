// Drives everything an operator does in airlock's console, in Debian's
// chromium (never a downloaded browser): connect at workspace level with
// chosen scopes, re-authorize with other scopes, create and edit apps,
// providers (add, duplicate, delete, refused while in use), the config
// file's secrets, environments, sandboxes with pinned connections. Bad
// input shows a clear message and changes nothing (checked through the
// admin API); data with markup shows as text. Screenshots: manage-*.png.
import { createRequire } from "node:module";
import { writeFileSync } from "node:fs";
const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const { CONSOLE_URL, ADMIN_TOKEN, SCREENSHOTS, RESOLVER_RULES } = process.env;
const XSS = `<img src=x onerror="document.title='pwned'">`;
const shot = async (page, name) => page.screenshot({ path: `${SCREENSHOTS}/manage-${name}.png`, fullPage: true });
const pages = [];

const api = async (method, path, body) => {
  const response = await fetch(new URL(path, CONSOLE_URL), {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: response.status, body: await response.json().catch(() => null) };
};
const check = (ok, message) => {
  if (!ok) throw new Error(message);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    `--host-resolver-rules=${RESOLVER_RULES}`, "--ignore-certificate-errors",
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.on("load", async () => pages.push(await page.content().catch(() => "")));

// Submits `form` and expects the error page: its message must contain `expected`.
const refused = async (name, submit, expected) => {
  await Promise.all([page.waitForNavigation(), submit()]);
  const message = (await page.locator(".message").innerText()).trim();
  check(message.includes(expected), `${name}: expected a message with ${JSON.stringify(expected)}, saw ${JSON.stringify(message)}`);
  check((await page.locator("text=Nothing was changed").count()) === 1, `${name}: the page says nothing changed`);
  await shot(page, `refused-${name}`);
  await page.goto(CONSOLE_URL);
};
// Submits a connect form; the flow runs in the popup, which closes; the console reloads.
const connectThrough = async (submit) => {
  const [popup] = await Promise.all([page.waitForEvent("popup"), submit()]);
  const reloaded = page.waitForEvent("load", { timeout: 30000 });
  // It may have closed already: its close event is not replayed.
  if (!popup.isClosed()) await popup.waitForEvent("close", { timeout: 30000 });
  await reloaded;
};
// A popup that shows a refusal: its message, then closed (the console reloads).
const popupMessage = async (submit, name) => {
  const [popup] = await Promise.all([page.waitForEvent("popup"), submit()]);
  await popup.waitForLoadState("load");
  const message = popup.locator(".message");
  const text = await message.innerText();
  const markup = await message.locator("b").count();
  await popup.screenshot({ path: `${SCREENSHOTS}/manage-refused-${name}.png` });
  const reloaded = page.waitForEvent("load", { timeout: 30000 });
  await popup.close();
  await reloaded;
  return { text, markup };
};
const connectionNamed = async (name) => {
  const { body } = await api("GET", "/v1/connections");
  return body.find((c) => c.name === name);
};

try {
  await page.goto(CONSOLE_URL);
  await page.fill("input[name=token]", ADMIN_TOKEN);
  await page.click("button[type=submit]");
  await page.waitForSelector("text=Sign out");
  await shot(page, "signed-in");

  // 5. The config file's secret: listed, marked, read-only, without its value.
  const configRow = page.locator("tr[data-secret=CONFIG_KEY]");
  check((await configRow.innerText()).includes("config file"), "the config secret is marked as from the config file");
  check((await configRow.innerText()).includes("api.config.test"), "its hosts are listed");
  check((await configRow.locator("button, input").count()) === 0, "nothing to edit on a config secret");

  // 1. Connect at workspace level, named, with chosen scopes.
  const connect = page.locator("form.connect-form");
  await connect.locator("select[name=provider]").selectOption("acme");
  const defaults = await connect.locator("textarea[name=scopes]").inputValue();
  check(defaults.split(/\s+/).join(" ") === "read write", `the scopes start as the provider's defaults, saw ${JSON.stringify(defaults)}`);
  await connect.locator("select[name=owner]").selectOption("workspace");
  await connect.locator("input[name=owner_name]").fill("ws1");
  await connect.locator("select[name=environment]").selectOption("default");
  await connect.locator("input[name=name]").fill("work");
  await connect.locator("textarea[name=scopes]").fill("read\nadmin");
  await shot(page, "connect-form");
  await connectThrough(() => connect.locator("button[type=submit]").click());
  let work = await connectionNamed("work");
  check(work && work.scope === "workspace:ws1" && work.environment === "default", `connected at workspace ws1: ${JSON.stringify(work)}`);
  check(work.scopes.join(" ") === "read admin", `granted the chosen scopes: ${JSON.stringify(work.scopes)}`);
  const row = page.locator(`tr[data-connection="${work.id}"]`);
  check((await row.locator(".scopes").innerText()).trim() === "read admin", "the console shows the granted scopes");
  await shot(page, "connected-workspace");

  // Bad owner and scope input: a clear message, no flow started.
  await connect.locator("select[name=owner]").selectOption("user");
  await connect.locator("input[name=owner_name]").fill("");
  await connect.locator("input[name=name]").fill("");
  const noUser = await popupMessage(() => connect.locator("button[type=submit]").click(), "connect-no-user");
  check(noUser.text.includes("needs the user's name"), `a user connection without a user: ${noUser.text}`);

  // A connection name with markup is refused, and shown as text.
  const connect2 = page.locator("form.connect-form");
  await connect2.locator("input[name=name]").fill("<b>bold</b>");
  const named = await popupMessage(() => connect2.locator("button[type=submit]").click(), "connect-markup-name");
  check(named.text.includes("<b>bold</b>"), `the name shows as text: ${named.text}`);
  check(named.markup === 0, "no markup from the name");
  // A scope that is not an OAuth scope-token.
  const connect3 = page.locator("form.connect-form");
  await connect3.locator("textarea[name=scopes]").fill('read "quoted"');
  const badScope = await popupMessage(() => connect3.locator("button[type=submit]").click(), "connect-bad-scope");
  check(badScope.text.includes("may not contain"), `an unknown scope format: ${badScope.text}`);
  check((await api("GET", "/v1/connections")).body.length === 1, "no connection was made by refused input");

  // 2. Re-authorize the same connection with other scopes.
  await page.goto(CONSOLE_URL);
  await row.locator("details.reauthorize summary").click();
  await row.locator("details.reauthorize textarea[name=scopes]").fill("read, write extra");
  await shot(page, "reauthorize-form");
  await connectThrough(() => row.locator("details.reauthorize button[type=submit]").click());
  const again = await connectionNamed("work");
  check(again.id === work.id, `the same connection, re-authorized: ${JSON.stringify(again)}`);
  check(again.scopes.join(" ") === "read write extra", `the new scopes were granted: ${JSON.stringify(again.scopes)}`);
  check((await page.locator(`tr[data-connection="${work.id}"] .scopes`).innerText()).trim() === "read write extra", "the console shows the new scopes");
  await shot(page, "reauthorized");
  work = again;

  // 3. Apps: empty client id refused; create in another environment; edit.
  const appForm = () => page.locator("form.app-form");
  await appForm().locator("select[name=provider]").selectOption("acme");
  await appForm().locator("input[name=environment]").fill("staging");
  await refused("empty-client-id", () => appForm().locator("button[type=submit]").click(), "needs a client id");
  check(!(await api("GET", "/v1/apps")).body.some((a) => a.environment === "staging"), "no app saved from the refused form");
  await appForm().locator("select[name=provider]").selectOption("acme");
  await appForm().locator("input[name=environment]").fill("staging");
  await appForm().locator("input[name=client_id]").fill("staging-client");
  await appForm().locator("input[name=client_secret]").fill("cs_STAGING_secret_abcdef");
  await Promise.all([page.waitForNavigation(), appForm().locator("button[type=submit]").click()]);
  let staging = (await api("GET", "/v1/apps")).body.find((a) => a.environment === "staging");
  check(staging && staging.client_id === "staging-client" && staging.client_secret === "••••cdef", `the staging app: ${JSON.stringify(staging)}`);
  const stagingRow = page.locator('tr[data-app="acme/staging"]');
  check((await stagingRow.innerText()).includes("••••cdef"), "the secret shows only its last four");
  await Promise.all([page.waitForNavigation(), stagingRow.locator("a:has-text('Edit')").click()]);
  check((await appForm().locator("input[name=client_id]").inputValue()) === "staging-client", "the edit form holds the app");
  check((await appForm().locator("input[name=client_secret]").inputValue()) === "", "the secret is never filled in");
  await appForm().locator("input[name=client_id]").fill("staging-client-2");
  await shot(page, "app-edit");
  await Promise.all([page.waitForNavigation(), appForm().locator("button[type=submit]").click()]);
  staging = (await api("GET", "/v1/apps")).body.find((a) => a.environment === "staging");
  check(staging.client_id === "staging-client-2" && staging.client_secret === "••••cdef", `edited, secret kept: ${JSON.stringify(staging)}`);
  // A catalog/config provider's URLs are fixed.
  await Promise.all([page.waitForNavigation(), page.locator('tr[data-app="acme/staging"] a:has-text("Edit")').click()]);
  check((await appForm().locator("text=its URLs and scopes are fixed").count()) === 1, "the form says acme's endpoints are fixed");

  // Deleting an app in use: refused with the reason.
  await refused(
    "app-in-use",
    () => page.locator('tr[data-app="acme/default"] button:has-text("Delete")').click(),
    "still used by 1 connection",
  );
  check((await api("GET", "/v1/apps")).body.some((a) => a.environment === "default"), "the app in use is kept");

  // 6. Environments: listed, and a filter.
  check((await page.locator("a[data-environment=staging]").count()) === 1, "staging is listed");
  await Promise.all([page.waitForNavigation(), page.locator("a[data-environment=staging]").click()]);
  check((await page.locator(`tr[data-connection="${work.id}"]`).count()) === 0, "the default environment's connection is filtered out");
  check((await page.locator('tr[data-app="acme/default"]').count()) === 0, "the default app is filtered out");
  check((await page.locator('tr[data-app="acme/staging"]').count()) === 1, "the staging app is shown");
  check((await page.locator("form.connect-form select[name=environment]").inputValue()) === "staging", "connect chooses the shown environment");
  await shot(page, "environment-staging");
  await page.goto(CONSOLE_URL);

  // 4. Providers: bad input refused; add with markup in its label; duplicate; delete.
  const providerForm = () => page.locator("form.provider-form");
  const fillProvider = async (authorize, scopes) => {
    await providerForm().locator("input[name=name]").fill("beta");
    await providerForm().locator("input[name=display_name]").fill(XSS);
    await providerForm().locator("input[name=authorize_url]").fill(authorize);
    await providerForm().locator("input[name=token_url]").fill("https://auth.beta.test/token");
    await providerForm().locator("input[name=hosts]").fill("api.beta.test");
    await providerForm().locator("input[name=env]").fill("BETA_TOKEN");
    await providerForm().locator("textarea[name=scopes]").fill(scopes);
  };
  await fillProvider("not a url", "one");
  await refused("provider-bad-url", () => providerForm().locator("button[type=submit]").click(), "is not a URL");
  await fillProvider("https://auth.beta.test/authorize", 'one "two"');
  await refused("provider-bad-scope", () => providerForm().locator("button[type=submit]").click(), "may not contain");
  check(!(await api("GET", "/v1/providers")).body.some((p) => p.name === "beta"), "no provider from refused input");
  await fillProvider("https://auth.beta.test/authorize", "one, two");
  await Promise.all([page.waitForNavigation(), providerForm().locator("button[type=submit]").click()]);
  let beta = (await api("GET", "/v1/providers")).body.find((p) => p.name === "beta");
  check(beta && beta.scopes.join(" ") === "one two" && beta.display_name === XSS, `beta added: ${JSON.stringify(beta)}`);
  const betaRow = page.locator("tr[data-provider-def=beta]");
  check((await betaRow.locator(".label").innerText()) === XSS, "the label with markup shows as text");
  check((await page.locator("img").count()) === 0, "no element from the label");
  check((await page.title()) !== "pwned", "no script ran");
  await shot(page, "provider-added");

  // An added provider's app edits its URLs and scopes; a bad URL changes nothing.
  await appForm().locator("select[name=provider]").selectOption("beta");
  await appForm().locator("input[name=client_id]").fill("beta-client");
  await Promise.all([page.waitForNavigation(), appForm().locator("button[type=submit]").click()]);
  await Promise.all([page.waitForNavigation(), page.locator('tr[data-app="beta/default"] a:has-text("Edit")').click()]);
  check((await appForm().locator("input[name=authorize_url]").inputValue()) === "https://auth.beta.test/authorize", "the editor shows beta's URLs");
  await appForm().locator("input[name=authorize_url]").fill("ftp://auth.beta.test/authorize");
  await refused("app-bad-url", () => appForm().locator("button[type=submit]").click(), "must be https://");
  beta = (await api("GET", "/v1/providers")).body.find((p) => p.name === "beta");
  check(beta.authorize_url === "https://auth.beta.test/authorize", "the refused URL changed nothing");
  await Promise.all([page.waitForNavigation(), page.locator('tr[data-app="beta/default"] a:has-text("Edit")').click()]);
  await appForm().locator("input[name=authorize_url]").fill("https://auth2.beta.test/authorize");
  await appForm().locator("textarea[name=scopes]").fill("three\nfour");
  await Promise.all([page.waitForNavigation(), appForm().locator("button[type=submit]").click()]);
  beta = (await api("GET", "/v1/providers")).body.find((p) => p.name === "beta");
  check(beta.authorize_url === "https://auth2.beta.test/authorize" && beta.scopes.join(" ") === "three four", `beta edited: ${JSON.stringify(beta)}`);

  // Delete refused while its app uses it; duplicate acme; delete the copy.
  await refused(
    "provider-in-use",
    () => page.locator("tr[data-provider-def=beta] button:has-text('Delete')").click(),
    "is still used by",
  );
  check((await api("GET", "/v1/providers")).body.some((p) => p.name === "beta"), "beta is kept");
  const acmeRow = page.locator("tr[data-provider-def=acme]");
  check((await acmeRow.locator("button:has-text('Delete')").count()) === 0, "a config-file provider has no Delete");
  await acmeRow.locator("details.duplicate summary").click();
  await acmeRow.locator("details.duplicate input[name=name]").fill("acme-copy");
  await Promise.all([page.waitForNavigation(), acmeRow.locator("details.duplicate button[type=submit]").click()]);
  const copy = (await api("GET", "/v1/providers")).body.find((p) => p.name === "acme-copy");
  check(copy && copy.env === "ACME_COPY_TOKEN" && copy.hosts.join() === "api.acme.test", `the copy: ${JSON.stringify(copy)}`);
  await shot(page, "provider-duplicated");
  await Promise.all([page.waitForNavigation(), page.locator("tr[data-provider-def=acme-copy] button:has-text('Delete')").click()]);
  check(!(await api("GET", "/v1/providers")).body.some((p) => p.name === "acme-copy"), "the copy is deleted");

  // 7. Sandboxes: create with the pinned connection, then delete.
  const sandboxForm = page.locator("form.sandbox-form");
  await sandboxForm.locator("input[name=workspace]").fill("ws1");
  await sandboxForm.locator('input[name=pin][value="acme:work"]').check();
  await shot(page, "sandbox-form");
  await Promise.all([page.waitForNavigation(), sandboxForm.locator("button[type=submit]").click()]);
  const sandboxId = (await page.locator("code.sandbox-id").innerText()).trim();
  const env = await page.locator("pre.env").innerText();
  check(/ACME_TOKEN=miosa-tok-/.test(env), `the sandbox's environment has the pinned placeholder: ${env.slice(0, 400)}`);
  await shot(page, "sandbox-created");
  const sandboxes = (await api("GET", "/v1/sandboxes")).body;
  const created = sandboxes.find((s) => s.id === sandboxId);
  check(created && created.workspace === "ws1", `the sandbox: ${JSON.stringify(created)}`);
  check(created.bindings.some(([variable]) => variable === "ACME_TOKEN"), "bound to the connection");
  await page.goto(CONSOLE_URL);
  await Promise.all([page.waitForNavigation(), page.locator(`tr[data-sandbox="${sandboxId}"] button:has-text('Delete')`).click()]);
  check(!(await api("GET", "/v1/sandboxes")).body.some((s) => s.id === sandboxId), "the sandbox is deleted");
  await shot(page, "done");

  writeFileSync(`${SCREENSHOTS}/manage-pages.html`, pages.join("\n<!-- page -->\n"));
  console.log(JSON.stringify({ done: true, connection: work.id }));
  await browser.close();
} catch (error) {
  await shot(page, "failure").catch(() => {});
  writeFileSync(`${SCREENSHOTS}/manage-pages.html`, pages.join("\n<!-- page -->\n"));
  console.error(String((error && error.stack) || error));
  console.error((await page.content().catch(() => "")).slice(0, 3000));
  await browser.close();
  process.exit(1);
}
