// Drives airlock's console in Debian's chromium (never a downloaded browser).
// PHASE=connect:   sign in, connect "acme" through the OAuth popup, see Connected.
// PHASE=reconnect: see Reconnect needed, reconnect, see Connected, disconnect.
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const { CONSOLE_URL, ADMIN_TOKEN, PHASE, SCREENSHOTS, RESOLVER_RULES } = process.env;
const shot = async (page, name) => page.screenshot({ path: `${SCREENSHOTS}/${PHASE}-${name}.png`, fullPage: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    `--host-resolver-rules=${RESOLVER_RULES}`, "--ignore-certificate-errors",
  ],
});
const fail = async (page, message) => {
  await shot(page, "failure");
  console.error(message);
  await browser.close();
  process.exit(1);
};
const context = await browser.newContext();
const page = await context.newPage();
try {
  await page.goto(CONSOLE_URL);
  await page.fill("input[name=token]", ADMIN_TOKEN);
  await page.click("button[type=submit]");
  await page.waitForSelector("text=Sign out");
  const row = page.locator("tr[data-provider=acme]").first();
  const status = async () => (await row.locator(".status").innerText()).trim();

  const connectVia = async (label) => {
    const [popup] = await Promise.all([page.waitForEvent("popup"), row.locator(`a:has-text("${label}")`).click()]);
    // It may have closed already: its close event is not replayed.
    if (!popup.isClosed()) await popup.waitForEvent("close", { timeout: 30000 });
    await page.waitForFunction(() => {
      const cell = document.querySelector("tr[data-provider=acme] .status");
      return cell && cell.textContent.trim() === "Connected";
    }, null, { timeout: 15000 });
  };

  if (PHASE === "connect") {
    if ((await status()) !== "Not connected") await fail(page, `expected Not connected, saw ${await status()}`);
    await shot(page, "signed-in");
    await connectVia("Connect");
    await shot(page, "connected");
    console.log("connected");
  } else {
    if ((await status()) !== "Reconnect needed") await fail(page, `expected Reconnect needed, saw ${await status()}`);
    await shot(page, "reconnect-needed");
    await connectVia("Reconnect");
    await shot(page, "reconnected");
    await row.locator("button:has-text('Disconnect')").click();
    await page.waitForLoadState("load");
    const after = (await page.locator("tr[data-provider=acme] .status").first().innerText()).trim();
    if (after !== "Not connected") await fail(page, `expected Not connected after disconnect, saw ${after}`);
    await shot(page, "disconnected");
    console.log("reconnected-and-disconnected");
  }
  await browser.close();
} catch (error) {
  await shot(page, "failure").catch(() => {});
  console.error(String(error && error.stack || error));
  console.error((await page.content().catch(() => "")).slice(0, 2000));
  await browser.close();
  process.exit(1);
}
