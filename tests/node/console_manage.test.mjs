// Drives everything an operator does in airlock's console, in Debian's
// chromium (never a downloaded browser): connect at workspace level with
// chosen scopes, re-authorize with other scopes, create and edit apps,
// providers (add, duplicate, delete, refused while in use), the config
// file's secrets, environments, sandboxes with pinned connections, OAuth
// 1.0a providers, tenants' white-label settings and connecting for a tenant,
// machine accounts in one call, vault secrets deleted (refused in use). Bad
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
  // Waited for from before the submit: on a fast flow the console reloads
  // before the click's promise settles, and a load is not replayed.
  const reloaded = page.waitForEvent("load", { timeout: 30000 });
  const [popup] = await Promise.all([page.waitForEvent("popup"), submit()]);
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

  // 8. OAuth 1.0a providers: a request-token URL without an authorize URL is
  // refused; with one, the provider is OAuth 1.0a (no machine accounts).
  const fillLegacy = async (authorize) => {
    await providerForm().locator("input[name=name]").fill("legacy");
    await providerForm().locator("input[name=display_name]").fill("Legacy API");
    await providerForm().locator("input[name=authorize_url]").fill(authorize);
    await providerForm().locator("input[name=token_url]").fill("https://api.legacy.test/oauth/access_token");
    await providerForm().locator("input[name=request_token_url]").fill("https://api.legacy.test/oauth/request_token");
    await providerForm().locator("input[name=hosts]").fill("api.legacy.test");
    await providerForm().locator("input[name=env]").fill("LEGACY_TOKEN");
  };
  await fillLegacy("");
  await refused("provider-oauth1-no-authorize", () => providerForm().locator("button[type=submit]").click(), "needs authorize_url");
  await fillLegacy("https://api.legacy.test/oauth/authorize");
  await shot(page, "provider-oauth1-form");
  await Promise.all([page.waitForNavigation(), providerForm().locator("button[type=submit]").click()]);
  const legacy = (await api("GET", "/v1/providers")).body.find((p) => p.name === "legacy");
  check(legacy && legacy.request_token_url === "https://api.legacy.test/oauth/request_token"
    && legacy.token_url === "https://api.legacy.test/oauth/access_token", `legacy is OAuth 1.0a: ${JSON.stringify(legacy)}`);
  check((await page.locator("tr[data-provider-def=legacy] .badge.oauth1").count()) === 1, "marked OAuth 1.0a");
  check((await page.locator('form.machine-form select[name=provider] option[value="legacy"]').count()) === 0,
    "an OAuth 1.0a provider has no client-credentials grant: not offered for machine accounts");
  await shot(page, "provider-oauth1");
  await Promise.all([page.waitForNavigation(), page.locator("tr[data-provider-def=legacy] button:has-text('Delete')").click()]);
  check(!(await api("GET", "/v1/providers")).body.some((p) => p.name === "legacy"), "legacy is deleted");

  // 9. Tenants (white-label): bad settings refused, every reason named; saved;
  // edited (the form holds them; saving replaces them all).
  const tenantForm = () => page.locator("form.tenant-form");
  const fillTenant = async (colour, returnUrl) => {
    await tenantForm().locator("input[name=tenant]").fill("acme-corp");
    await tenantForm().locator("input[name=display_name]").fill("Acme <b>Corp</b>");
    await tenantForm().locator("input[name=accent_color]").fill(colour);
    await tenantForm().locator("input[name=support_url]").fill("https://help.acme.example/");
    await tenantForm().locator("input[name=return_url]").fill(returnUrl);
    await tenantForm().locator("input[name=use_default_apps]").check();
  };
  await fillTenant("red", "http://app.acme.example/");
  await shot(page, "tenant-form");
  await Promise.all([page.waitForNavigation(), tenantForm().locator("button[type=submit]").click()]);
  const tenantRefusal = (await page.locator(".message").innerText()).trim();
  check(tenantRefusal.includes("must be #rgb or #rrggbb") && tenantRefusal.includes("return_url must be https://"),
    `both bad settings are named: ${tenantRefusal}`);
  await shot(page, "refused-tenant-settings");
  check((await api("GET", "/v1/tenants")).body.length === 0, "no tenant saved from refused settings");
  await page.goto(CONSOLE_URL);
  await fillTenant("#0A7", "https://app.acme.example/");
  await Promise.all([page.waitForNavigation(), tenantForm().locator("button[type=submit]").click()]);
  let corp = (await api("GET", "/v1/tenants/acme-corp")).body;
  check(corp.accent_color === "#0a7" && corp.use_default_apps === true && corp.display_name === "Acme <b>Corp</b>"
    && corp.support_url === "https://help.acme.example/", `acme-corp saved: ${JSON.stringify(corp)}`);
  const corpRow = page.locator("tr[data-tenant-settings=acme-corp]");
  check((await corpRow.locator(".display-name").innerText()) === "Acme <b>Corp</b>", "the name with markup shows as text");
  check((await corpRow.locator("b").count()) === 0, "no element from the name");
  await shot(page, "tenant-saved");
  await Promise.all([page.waitForNavigation(), corpRow.locator("a:has-text('Edit')").click()]);
  check((await tenantForm().locator("input[name=accent_color]").inputValue()) === "#0a7", "the editor holds the settings");
  check(await tenantForm().locator("input[name=use_default_apps]").isChecked(), "and the checkbox");
  await tenantForm().locator("input[name=support_url]").fill("");
  await tenantForm().locator("input[name=logo_url]").fill("https://cdn.acme.example/logo.png");
  await shot(page, "tenant-edit");
  await Promise.all([page.waitForNavigation(), tenantForm().locator("button[type=submit]").click()]);
  corp = (await api("GET", "/v1/tenants/acme-corp")).body;
  check(corp.support_url == null && corp.logo_url === "https://cdn.acme.example/logo.png" && corp.accent_color === "#0a7",
    `acme-corp edited: ${JSON.stringify(corp)}`);

  // 10. Connect for another tenant: it is listed; its connection is its own
  // (through the default tenant's app, which it may use); then disconnected.
  const tenantConnect = page.locator("form.connect-form");
  check((await tenantConnect.locator("select[name=tenant] option[value=acme-corp]").count()) === 1, "the tenant is listed");
  await tenantConnect.locator("select[name=tenant]").selectOption("acme-corp");
  await tenantConnect.locator("select[name=provider]").selectOption("acme");
  await tenantConnect.locator("select[name=owner]").selectOption("tenant");
  await tenantConnect.locator("input[name=owner_name]").fill("");
  await tenantConnect.locator("input[name=name]").fill("corp");
  await connectThrough(() => tenantConnect.locator("button[type=submit]").click());
  const corpConnection = await connectionNamed("corp");
  check(corpConnection && corpConnection.tenant === "acme-corp" && corpConnection.scope === "tenant",
    `connected for acme-corp: ${JSON.stringify(corpConnection)}`);
  const corpConnectionRow = page.locator(`tr[data-connection="${corpConnection.id}"]`);
  check((await corpConnectionRow.innerText()).includes("tenant acme-corp"), "the accounts table names the tenant");
  await shot(page, "connected-tenant");
  await Promise.all([page.waitForNavigation(), corpConnectionRow.locator("button:has-text('Disconnect')").click()]);
  check(!(await connectionNamed("corp")), "the tenant's connection is disconnected");
  await page.goto(CONSOLE_URL);

  // 11. Machine accounts in one call: a wrong secret and a missing token URL
  // are refused and store nothing; added; its row; deleted.
  const acmeDef = (await api("GET", "/v1/providers")).body.find((p) => p.name === "acme");
  const machineForm = () => page.locator("form.machine-form");
  const fillMachine = async (secret, tokenUrl) => {
    await machineForm().locator("input[name=name]").fill("ci-bot");
    await machineForm().locator("select[name=provider]").selectOption("");
    await machineForm().locator("input[name=client_id]").fill("airlock-test-client");
    await machineForm().locator("input[name=client_secret]").fill(secret);
    await machineForm().locator("input[name=token_url]").fill(tokenUrl);
    await machineForm().locator("input[name=expose_as_env]").fill("CI_BOT_TOKEN");
    await machineForm().locator("input[name=hosts]").fill("api.acme.test");
    await machineForm().locator("textarea[name=scopes]").fill("read");
  };
  await fillMachine("cs_WRONG_machine_secret", acmeDef.token_url);
  await refused("machine-account-wrong-secret", () => machineForm().locator("button[type=submit]").click(), "refused the client credentials of app");
  await fillMachine("cs_REALCLIENTSECRET_0123456789", "");
  await refused("machine-account-no-token-url", () => machineForm().locator("button[type=submit]").click(), "needs token_url");
  check(!(await connectionNamed("ci-bot")), "no machine account from refused input");
  await fillMachine("cs_REALCLIENTSECRET_0123456789", acmeDef.token_url);
  await shot(page, "machine-account-form");
  await Promise.all([page.waitForNavigation(), machineForm().locator("button[type=submit]").click()]);
  const bot = await connectionNamed("ci-bot");
  check(bot && bot.kind === "client_credentials" && bot.status === "connected" && bot.scopes.join(" ") === "read",
    `the machine account: ${JSON.stringify(bot)}`);
  const botRow = page.locator("tr[data-machine-account=ci-bot]");
  const botText = await botRow.innerText();
  check(botText.includes("CI_BOT_TOKEN") && botText.includes("api.acme.test") && botText.includes("connected"), `its row: ${botText}`);
  await shot(page, "machine-account-added");
  await Promise.all([page.waitForNavigation(), botRow.locator("button:has-text('Delete')").click()]);
  check(!(await connectionNamed("ci-bot")), "the machine account is deleted");
  await page.goto(CONSOLE_URL);
  check((await page.locator("tr[data-machine-account=ci-bot]").count()) === 0, "and gone from the list");

  // 12. A vault static secret: added, then bound to the sandbox below.
  const secretForm = page.locator("form.secret-form");
  await secretForm.locator("input[name=name]").fill("VAULT_KEY");
  await secretForm.locator("input[name=value]").fill("sk_vault_REALVALUE_0123456789");
  await secretForm.locator("input[name=hosts]").fill("api.vault.test");
  await Promise.all([page.waitForNavigation(), secretForm.locator("button[type=submit]").click()]);
  check((await api("GET", "/v1/secrets")).body.some((s) => s.name === "VAULT_KEY"), "the vault secret is stored");

  // 7. Sandboxes: create with the pinned connection and the vault secret;
  // the secret cannot be deleted under it; then delete both.
  const sandboxForm = page.locator("form.sandbox-form");
  await sandboxForm.locator("input[name=workspace]").fill("ws1");
  await sandboxForm.locator('input[name=pin][value="acme:work"]').check();
  await sandboxForm.locator('input[name=secret][value="VAULT_KEY"]').check();
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
  const vaultKeyRow = () => page.locator('tr[data-secret="VAULT_KEY"]');
  await refused("secret-in-use", () => vaultKeyRow().locator("button:has-text('Delete')").click(), "still bound to 1 sandbox");
  check((await api("GET", "/v1/secrets")).body.some((s) => s.name === "VAULT_KEY"), "the secret in use is kept");
  await Promise.all([page.waitForNavigation(), page.locator(`tr[data-sandbox="${sandboxId}"] button:has-text('Delete')`).click()]);
  check(!(await api("GET", "/v1/sandboxes")).body.some((s) => s.id === sandboxId), "the sandbox is deleted");
  await Promise.all([page.waitForNavigation(), vaultKeyRow().locator("button:has-text('Delete')").click()]);
  check(!(await api("GET", "/v1/secrets")).body.some((s) => s.name === "VAULT_KEY"), "the vault secret is deleted");
  check((await vaultKeyRow().count()) === 0, "and gone from the list");
  await shot(page, "secret-deleted");
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
