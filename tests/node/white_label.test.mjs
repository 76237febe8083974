// The white-label callback page in Debian's chromium (never a downloaded
// browser): follow AUTH_URL through the fake provider to airlock's callback
// and check the tenant's branding is what the browser shows — its name as
// text (not markup), its logo loaded, its accent colour applied — and that
// no script of the tenant's name ran.
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const { AUTH_URL, SCREENSHOTS, RESOLVER_RULES, DISPLAY_NAME, ACCENT_RGB } = process.env;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    `--host-resolver-rules=${RESOLVER_RULES}`, "--ignore-certificate-errors",
  ],
});
const page = await (await browser.newContext()).newPage();
const problems = [];
page.on("dialog", async (d) => {
  problems.push(`a dialog opened: ${d.message()}`);
  await d.dismiss();
});
try {
  await page.goto(AUTH_URL);
  await page.waitForSelector("h1.ok", { timeout: 15000 });
  const heading = (await page.locator("h1").innerText()).trim();
  if (heading !== "Connected") problems.push(`heading ${heading}`);
  const name = await page.locator(".brand-name").textContent();
  if (name !== DISPLAY_NAME) problems.push(`brand name shown as ${JSON.stringify(name)}`);
  const title = await page.title();
  if (!title.endsWith(DISPLAY_NAME)) problems.push(`title ${JSON.stringify(title)}`);
  const logoWidth = await page.locator("img.brand-logo").evaluate((img) => img.complete ? img.naturalWidth : 0);
  if (!(logoWidth > 0)) problems.push("the logo did not load");
  const colour = await page.locator("h1.ok").evaluate((h) => getComputedStyle(h).color);
  if (colour !== ACCENT_RGB) problems.push(`heading colour ${colour}, not ${ACCENT_RGB}`);
  await page.screenshot({ path: `${SCREENSHOTS}/white-label-connected.png`, fullPage: true });
} catch (e) {
  problems.push(String(e));
}
await browser.close();
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log("branded");
