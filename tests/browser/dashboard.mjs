// The dashboard in a real browser: Debian's chromium, headless, driven by
// playwright-core. Run by tests/e2e/dashboard.rs against a running
// `dc-host serve` with the API enabled. Every wait is on a DOM state, bounded.
//
// Environment: DC_URL (http://127.0.0.1:PORT), DC_APP (group/parent/name),
// DC_OPERATOR / DC_VIEWER (user names), DC_PASSWORD, DC_SCREENSHOT (PNG path
// of the apps page once the run is done), DC_RUN_SCREENSHOT (PNG of the run
// page), CHROMIUM (the browser executable).
// Prints one JSON line with what it saw; exits 1 with a message on failure.

import { chromium } from "playwright-core";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env("DC_URL");
const app = env("DC_APP");
const password = env("DC_PASSWORD");
const WAIT = 60_000;
const seen = {};
const problems = [];

function watch(page, who) {
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`${who} console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${who} page error: ${e.message}`));
}

async function signIn(page, user) {
  await page.goto(`${base}/`);
  await page.locator("#login-user").fill(user);
  await page.locator("#login-password").fill(password);
  await page.locator("#login-submit").click();
  await page.locator("#who").filter({ hasText: user }).waitFor({ timeout: WAIT });
}

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: "dark" });
  const page = await context.newPage();
  watch(page, "operator");

  // a wrong password is refused on the page
  await page.goto(`${base}/`);
  await page.locator("#login-user").fill(env("DC_OPERATOR"));
  await page.locator("#login-password").fill("not-the-password");
  await page.locator("#login-submit").click();
  await page.locator("#login-error").filter({ hasText: "Sign-in failed" }).waitFor({ timeout: WAIT });
  seen.wrong_password_refused = true;
  // the console error of that refused token request is expected
  problems.length = 0;

  await signIn(page, env("DC_OPERATOR"));
  seen.role = (await page.locator("#who").textContent()).trim();
  const row = page.locator(`tr[data-app="${app}"]`);
  await row.waitFor({ timeout: WAIT });
  seen.app_listed = true;
  seen.state_before = await row.getAttribute("data-state");

  await row.locator('button[data-command="START"]').click();
  await page.locator("#toast").filter({ hasText: "START queued" }).waitFor({ timeout: WAIT });
  // the table refreshes by itself: running (or already done), then 100 % and success
  await page
    .locator(`tr[data-app="${app}"][data-state="success"] [role="progressbar"][aria-valuenow="100"]`)
    .waitFor({ timeout: WAIT });
  seen.progress = await row.locator('[role="progressbar"]').getAttribute("aria-valuenow");
  seen.state_after = await row.getAttribute("data-state");
  await page.screenshot({ path: env("DC_SCREENSHOT") });

  // the app's page: run-history charts (uPlot canvases) and the run
  await row.locator("td:first-child a").click();
  await page.locator(".chart canvas").first().waitFor({ timeout: WAIT });
  seen.charts = await page.locator(".chart canvas").count();
  await page.locator("table.runs tbody tr td a.mono").first().click();

  // the run's page streams its log over SSE until the run's end
  await page.locator('#stream-state[data-ended="true"]').waitFor({ timeout: WAIT });
  await page.locator("#logs .rec").first().waitFor({ timeout: WAIT });
  seen.log_records = await page.locator("#logs .rec").count();
  seen.run_progress = await page.locator('#run [role="progressbar"]').getAttribute("aria-valuenow");
  seen.run_url = new URL(page.url()).pathname;
  await page.screenshot({ path: env("DC_RUN_SCREENSHOT") });

  // a viewer sees the app and no command buttons
  const viewer = await (await browser.newContext()).newPage();
  watch(viewer, "viewer");
  await signIn(viewer, env("DC_VIEWER"));
  await viewer.locator(`tr[data-app="${app}"]`).waitFor({ timeout: WAIT });
  seen.viewer_buttons = await viewer.locator("button[data-command]").count();

  if (problems.length) throw new Error(`the browser reported errors:\n${problems.join("\n")}`);
  console.log(JSON.stringify(seen));
} catch (e) {
  console.error(`dashboard test failed: ${e.message}\nseen so far: ${JSON.stringify(seen)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
