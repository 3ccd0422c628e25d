// Screenshots for scripts/tracker_screenshots.py (which passes the jobs as JSON in argv[2]):
// Debian's chromium driven by playwright-core (no browser download). Each job waits for the
// run's own content (images loaded), not for a spinner to go away.
const { chromium } = require('playwright-core');

const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--allow-file-access-from-files'];

async function imagesLoaded(page, min, timeout = 60000) {
  // every <img> on the page decoded, and at least `min` of them
  await page.waitForFunction((n) => {
    const imgs = Array.from(document.images).filter((i) => i.offsetWidth > 0);
    return imgs.length >= n && imgs.every((i) => i.complete && i.naturalWidth > 0);
  }, min, { timeout });
}

async function tensorboard(page, job) {
  // Time Series dashboard filtered to one validation image's feature map and box CAMs and one
  // layer's activation statistics (histogram, mean, std, dead share), settings panel closed.
  await page.goto(job.url + '?darkMode=false#timeseries', { waitUntil: 'networkidle' });
  const filter = page.locator('input[placeholder*="Filter tags"]').first();
  await filter.fill(job.tagFilter);
  await filter.press('Escape');
  await page.mouse.click(5, job.height ? job.height - 5 : 995);
  await page.waitForTimeout(1500);
  if (await page.locator('text=Horizontal Axis').isVisible()) {
    await page.locator('[aria-label="Toggle settings side pane"]').click();
  }
  await imagesLoaded(page, job.minImages || 2);
  await page.waitForTimeout(2000);
}

async function mlflow(page, job) {
  // The run page of MLflow's UI, the assistant pane closed. With `search`: the Overview's
  // metrics table filtered; else job.url is an artifact (an image the hooks logged), which
  // the "Artifacts" tab previews.
  await page.goto(job.url, { waitUntil: 'networkidle' });
  if (job.search) {
    const search = page.locator('input[placeholder="Search metrics"]').first();
    await search.waitFor({ timeout: 60000 });
    await search.fill(job.search);
    await search.scrollIntoViewIfNeeded();
    await page.mouse.wheel(0, 400);
  } else {  // the preview: an image served by the server (not the UI's own data: pictures)
    await page.waitForFunction(() => Array.from(document.images).some(
      (i) => !i.src.startsWith('data:') && i.complete && i.naturalWidth > 100),
    null, { timeout: 60000 });
  }
  const close = page.locator('button[aria-label="Close"]');
  if (await close.count() && await close.first().isVisible()) await close.first().click();
  await page.waitForTimeout(3000);
}

async function dvclive(page, job) {
  // DVCLive's report: one element per logged file (a table, a Vega chart or an image), each
  // with an id made from the file's name. Only those matching job.keep stay, side by side,
  // its pictures scaled down to fit.
  await page.goto(job.url, { waitUntil: 'load' });
  const kept = await page.evaluate((pattern) => {
    const re = new RegExp(pattern);
    const ids = [];
    for (const el of Array.from(document.body.children)) {
      if (el.tagName === 'SCRIPT') continue;
      if (re.test(el.id || '')) ids.push(el.id); else el.style.display = 'none';
    }
    document.body.style.cssText = 'display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start';
    const style = document.createElement('style');  // the pictures at most 520 px wide
    style.textContent = 'img{max-width:520px;height:auto}';
    document.head.appendChild(style);
    return ids;
  }, job.keep);
  console.log(`dvclive report: kept ${kept.join(', ')}`);
  await page.waitForFunction((n) => Array.from(document.querySelectorAll('.vega-embed')).filter(
    (e) => e.offsetWidth > 0 && e.querySelector('svg, canvas')).length >= n,
  job.minPlots || 1, { timeout: 60000 });
  await imagesLoaded(page, job.minImages || 0);
  await page.waitForTimeout(1000);
}

async function plain(page, job) {
  await page.goto(job.url, { waitUntil: 'load' });
  await imagesLoaded(page, job.minImages || 0);
  await page.waitForTimeout(1000);
}

(async () => {
  const jobs = JSON.parse(process.argv[2]);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: FLAGS });
  try {
    for (const job of jobs) {
      const page = await browser.newPage({ viewport: { width: job.width || 1400,
        height: job.height || 1000 } });
      const run = { tensorboard, mlflow, dvclive, page: plain }[job.kind];
      try {
        await run(page, job);
      } catch (err) {  // keep what the page showed, to see why
        await page.screenshot({ path: job.png.replace(/\.png$/, '.failed.png') });
        throw err;
      }
      await page.screenshot({ path: job.png, fullPage: !!job.fullPage });
      console.log(`wrote ${job.png}`);
      await page.close();
    }
  } finally {
    await browser.close();
  }
})().catch((err) => { console.error(err); process.exit(1); });
