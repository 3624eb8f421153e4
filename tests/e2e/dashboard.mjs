// Drives ideaflow's dashboard in headless Chromium (Debian's /usr/bin/chromium)
// with playwright-core. tests/dashboard.rs runs it against a live `ideaflow run`.
//
//   node dashboard.mjs live  URL SCREENSHOT  while the pipeline is still running:
//       live data appears, then changes as epochs commit; a search answers;
//       saves a screenshot.
//   node dashboard.mjs final URL [SCREENSHOT] after the input ends: prints the
//       top ideas per category, the A/B results and the number of weight
//       changes the page shows, as JSON, for comparison with the API.
//
// Exits non-zero with a message when a check fails.
import { chromium } from 'playwright-core';

const [mode, url, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.IDEAFLOW_CHROMIUM || '/usr/bin/chromium',
  // Without the background-networking flags Chromium keeps dialing Google's
  // hosts, which this machine's closed network refuses.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const fail = async (message) => {
  console.error(`dashboard check failed: ${message}`);
  await browser.close();
  process.exit(1);
};
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  const text = (sel) => page.evaluate((s) => document.querySelector(s).innerText, sel);
  const count = (sel) => page.evaluate((s) => document.querySelectorAll(s).length, sel);

  if (mode === 'live') {
    await page.waitForFunction(() => document.getElementById('status').textContent === 'live',
      null, { timeout: 30000 }).catch(() => fail('the SSE stream did not connect'));
    await page.waitForFunction(() => document.querySelectorAll('#signals li').length > 0
        && document.querySelectorAll('#top tr.idea').length > 0
        && document.querySelectorAll('#heatmap td.cell').length > 0,
      null, { timeout: 120000 }).catch(() => fail('no live signals, top ideas or heatmap appeared'));
    const before = { epoch: await text('#epoch'), signals: await text('#signals'), top: await text('#top') };
    await page.waitForFunction((b) => document.getElementById('epoch').textContent !== b.epoch
        && document.getElementById('signals').innerText !== b.signals
        && document.getElementById('top').innerText !== b.top,
      before, { timeout: 120000 }).catch(() => fail('the page did not change as epochs committed'));
    // The factor colours have a legend; the header names the views' epoch;
    // the two charts are drawn.
    if (await count('#legend span') !== 5) await fail('the factor legend is not there');
    await page.waitForFunction(() => document.getElementById('epoch').textContent.startsWith('views through')
        && document.querySelectorAll('#volume polyline.series').length > 0
        && document.querySelectorAll('#scores rect.bin').length > 0,
      null, { timeout: 30000 }).catch(() => fail('no epoch in the header, or the charts are missing'));
    // A search the API refuses: its message is shown, earlier results gone.
    const search = async (q) => { await page.fill('#q', q); await page.click('#searchform button'); };
    await search('cat wearing a tiny hat');
    await page.waitForFunction(() => document.querySelectorAll('#results tr.hit').length > 0,
      null, { timeout: 30000 }).catch(() => fail('the search box gave no results'));
    for (const [q, says] of [['   ', 'must not be blank'], ['x'.repeat(2001), 'longer than']]) {
      await search(q);
      await page.waitForFunction((w) => document.getElementById('searchmsg').textContent.includes(w)
          && document.querySelectorAll('#results tr').length === 0,
        says, { timeout: 30000 }).catch(() => fail(`a refused search (${says}) did not show the API's message`));
    }
    await search('cat wearing a tiny hat');
    await page.waitForFunction(() => document.querySelectorAll('#results tr.hit').length > 0,
      null, { timeout: 30000 }).catch(() => fail('the search box gave no results'));
    await page.screenshot({ path: screenshot, fullPage: true });
    if (errors.length) await fail(`script errors on the page: ${errors.join('; ')}`);
    console.log(JSON.stringify({
      signals: await count('#signals li'),
      top_rows: await count('#top tr.idea'),
      results: await count('#results tr.hit'),
      first_result: (await text('#results tr.hit')).split('\t'),
    }));
  } else if (mode === 'final') {
    await page.waitForFunction(() => document.querySelectorAll('#top tr.idea').length > 0,
      null, { timeout: 30000 }).catch(() => fail('no top ideas on the page'));
    const top = await page.evaluate(() => Object.fromEntries(
      [...document.querySelectorAll('#top h3')].map((h) => [h.textContent,
        [...h.nextElementSibling.querySelectorAll('tr.idea')].map((tr) => ({
          score: Number(tr.cells[0].textContent), title: tr.cells[2].textContent,
        }))])));
    await page.waitForFunction(() => document.querySelectorAll('#ab tr.ab').length > 0
        && document.querySelectorAll('#weights tr.weights').length > 0,
      null, { timeout: 30000 }).catch(async () => fail(`no A/B results or weights on the page (status: ${await text('#status')}, ab rows: ${await count('#ab tr')})`));
    const ab = await page.evaluate(() => [...document.querySelectorAll('#ab tr.ab')]
      .map((tr) => ({ title: tr.cells[0].textContent, winner: tr.cells[5].textContent })));
    const weights = await count('#weights tr.weights');
    // Every table has a heading row; the heatmap's day columns stay readable.
    const bare = await page.evaluate(() => [...document.querySelectorAll('table')]
      .filter((t) => t.rows.length && !t.querySelector('th')).map((t) => t.id || t.parentElement.id));
    if (bare.length) await fail(`tables without headings: ${bare.join(', ')}`);
    const narrow = await page.evaluate(() => [...document.querySelectorAll('#heatmap th.cell')]
      .filter((th) => th.getBoundingClientRect().width < 20).length);
    if (narrow) await fail(`${narrow} heatmap columns are squeezed under 20 px`);
    const epoch = await text('#epoch');
    if (!epoch.startsWith('views through')) await fail(`the header shows no epoch: "${epoch}"`);
    if (/\b1 (signals|ideas|changes|impressions)\b/.test(await text('main'))) await fail('"1 signals": plurals are wrong');
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    if (errors.length) await fail(`script errors on the page: ${errors.join('; ')}`);
    console.log(JSON.stringify({ top, ab, weights, epoch }));
  } else {
    await fail(`unknown mode ${mode}: use live or final`);
  }
} finally {
  await browser.close();
}
