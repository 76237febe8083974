// Consent on demand in Debian's chromium (never a downloaded browser): the
// operator's console lists the held request; the user opens the sandbox's
// connect link and approves at the fake provider.
// Env: CONSOLE_URL, ADMIN_TOKEN, CONNECT_URL, SCREENSHOTS, RESOLVER_RULES.
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const { CONSOLE_URL, ADMIN_TOKEN, CONNECT_URL, SCREENSHOTS, RESOLVER_RULES } = process.env;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    `--host-resolver-rules=${RESOLVER_RULES}`, "--ignore-certificate-errors",
  ],
});
const page = await (await browser.newContext()).newPage();
const shot = (name) => page.screenshot({ path: `${SCREENSHOTS}/consent-${name}.png`, fullPage: true });
try {
  // The operator sees the request waiting.
  await page.goto(CONSOLE_URL);
  await page.fill("input[name=token]", ADMIN_TOKEN);
  await page.click("button[type=submit]");
  await page.waitForSelector("text=Waiting for consent");
  const waiting = await page.locator("section:has(h2:text('Waiting for consent')) tbody tr").first().innerText();
  await shot("console-waiting");
  console.log(`waiting: ${waiting.replace(/\s+/g, " ")}`);
  // The user opens the link the agent showed, and approves.
  await page.goto(CONNECT_URL);
  await page.waitForLoadState("load");
  const text = await page.locator("body").innerText();
  await shot("callback");
  console.log(`callback: ${text.replace(/\s+/g, " ").slice(0, 200)}`);
} catch (e) {
  await shot("failure");
  console.error(String(e));
  await browser.close();
  process.exit(1);
}
await browser.close();
