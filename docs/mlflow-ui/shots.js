// Screenshots of the MLflow UI for docs/mlflow-ui.md: what a new user sees, the assistant panel closed.
// npm install playwright-core; mlflow server --port 5056 --backend-store-uri sqlite:///PROJECT/mlflow.db &
// node shots.js http://127.0.0.1:5056 '["PARENT_RUN_ID_1", "PARENT_RUN_ID_2"]' OUT_FOLDER   (Chromium: /usr/bin/chromium)
const { chromium } = require('playwright-core');
const base = process.argv[2], ids = JSON.parse(process.argv[3]), out = process.argv[4];
(async () => {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1440, height: 820 } });
  const settle = () => page.waitForTimeout(6000);
  const closeAssistant = async () => {
    const close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]');
    await page.keyboard.press('Escape'); const got = page.getByRole('button', { name: 'Got it' }); if (await got.count()) await got.first().click({ force: true }); if (await close.count()) await close.first().click({ force: true, timeout: 5000 });
    await page.waitForTimeout(800);
  };
  // 1. A new user's first view: the experiment, no link.
  await page.goto(`${base}/#/experiments/1`); await settle(); await closeAssistant();
  await page.screenshot({ path: `${out}/0-default.png` });
  // 2. The printed link: the training view with the headline columns; the newest execution expanded.
  await page.goto(`${base}/#/experiments/1/runs?viewStateShareKey=fitnas-headline&workflowType=machine_learning`); await settle();
  await closeAssistant();
  const banner = page.locator('[data-component-id="mlflow.experiment_page.shared_view.dismiss"]');
  if (await banner.count()) await banner.first().click();
  const expanders = page.locator('[data-component-id="codegen_mlflow_app_src_experiment-tracking_components_experiment-page_components_runs_cells_runnamecellrenderer.tsx_46"]');
  await expanders.last().click(); await page.waitForTimeout(2500);
  await page.screenshot({ path: `${out}/1-runs.png` });
  // 3. Two `dvc exp run`s side by side, parameters that differ only.
  await page.goto(`${base}/#/compare-runs?runs=${encodeURIComponent(JSON.stringify(ids))}&experiments=${encodeURIComponent('["1"]')}&workflowType=machine_learning`); await settle();
  const diffOnly = page.getByText('Show diff only');
  for (let k = 0; k < await diffOnly.count(); k++) await diffOnly.nth(k).click();
  await page.waitForTimeout(1500);
  await page.screenshot({ path: `${out}/2b-compare-metrics.png` });
  // The container scrolled to the last toggle; back to the top, in a taller window, for the run details and params.
  await page.setViewportSize({ width: 1440, height: 1500 });
  await page.evaluate(() => document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; }));
  await page.waitForTimeout(1500);
  await page.screenshot({ path: `${out}/2-compare.png` });
  await page.setViewportSize({ width: 1440, height: 820 });
  // 4. The registered model's versions.
  await page.goto(`${base}/#/models/fitnas?workflowType=machine_learning`); await settle();
  await page.screenshot({ path: `${out}/3-registry.png` });
  await browser.close();
})();
