// End to end in a real browser (Debian's chromium, driven by playwright-core, headless): a user
// uploads toy-world pictures with their captions, trains a LoRA on the toy model from the Train
// tab, watches it in Jobs, generates with it and sees the image. Screenshots of each stage go to
// out/e2e/ (the test's artifacts).
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { REPO, tempDir } from '../helpers.ts';
import { conceptPictures, studio } from '../server/helpers.ts';

const CHROMIUM = process.env.SDTUNE_CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = join(REPO, 'out', 'e2e');
const tmp = tempDir('sdtune-e2e-');
let s: Awaited<ReturnType<typeof studio>>;
let browser: Browser;

before(async () => {
  s = await studio(join(tmp.dir, 'data'));
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  mkdirSync(SHOTS, { recursive: true });
});
after(async () => {
  await browser?.close();
  await s?.close();
  tmp.cleanup();
});

const id = (p: Page, testid: string) => p.getByTestId(testid);

test('upload, train a LoRA, watch it, generate with it (laptop screen)', { timeout: 300_000 }, async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  try {
    await journey(page, errors);
  } catch (e) {
    await page.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true });
    throw e;
  } finally {
    await page.close();
  }
});

async function journey(page: Page, errors: string[]): Promise<void> {
  await page.goto(s.url);

  // Datasets: create one, upload 6 pictures and their captions.
  await id(page, 'nav-datasets').click();
  await id(page, 'dataset-name').fill('outline');
  await id(page, 'dataset-create').click();
  await id(page, 'dataset-row').filter({ hasText: 'outline' }).first().click();
  const pics = conceptPictures(join(tmp.dir, 'pics'));
  const files = join(tmp.dir, 'upload');
  mkdirSync(files);
  for (const p of pics) {
    writeFileSync(join(files, p.file), p.png);
    writeFileSync(join(files, p.file.replace(/\.png$/, '.txt')), p.caption);
  }
  await id(page, 'dataset-upload').setInputFiles(pics.map((p) => join(files, p.file)));
  await assert.doesNotReject(id(page, 'dataset-image').nth(5).waitFor({ timeout: 30_000 }));
  await id(page, 'dataset-upload').setInputFiles(pics.map((p) => join(files, p.file.replace(/\.png$/, '.txt'))));
  // (Browser-side expressions are strings: the test code is typed for Node, not the DOM.)
  await page.waitForFunction(`[...document.querySelectorAll('[data-testid="caption-input"]')].filter((t) => t.value.length > 0).length === 6`, null, { timeout: 30_000 });
  await page.screenshot({ path: join(SHOTS, '1-dataset.png'), fullPage: true });
  const ds = await s.call<{ images: number; captioned: number }>('GET', '/api/datasets/outline');
  assert.deepEqual([ds.json.images, ds.json.captioned], [6, 6]);

  // Train: a LoRA, short.
  await id(page, 'nav-train').click();
  await id(page, 'train-technique-lora').check();
  await assert.doesNotReject(page.getByTestId('train-explain').filter({ hasText: /plug-in/i }).waitFor({ timeout: 5000 }));
  await id(page, 'train-dataset').selectOption('outline');
  await id(page, 'train-name').fill('outline-style');
  await id(page, 'train-steps').fill('30');
  await id(page, 'train-lr').fill('0.005');
  await id(page, 'train-rank').fill('4');
  await id(page, 'train-batch').fill('2');
  await id(page, 'train-save-memory').check(); // gradient checkpointing, recorded in the LoRA's metadata
  await id(page, 'train-validate-every').fill('10');
  await id(page, 'train-checkpoint-every').fill('10');
  // The sample check reaches the dry run from the form (the run itself goes without: it costs pictures).
  assert.equal(await id(page, 'train-sample-check').inputValue(), '0');
  await id(page, 'train-sample-check').fill('4');
  await id(page, 'train-preflight').click();
  await page.getByTestId('preflight-result').filter({ hasText: /sample check: .* 4 pictures are drawn at each of 3 validations/ }).waitFor({ timeout: 60_000 });
  await id(page, 'train-sample-check').fill('0');
  await id(page, 'train-preflight').click();
  await page.getByTestId('preflight-result').filter({ hasText: /30/ }).filter({ hasNotText: /sample check/ }).waitFor({ timeout: 60_000 });
  await page.screenshot({ path: join(SHOTS, '2-train.png'), fullPage: true });
  await id(page, 'train-start').click();

  // Jobs: the run appears, progresses and finishes; the meter chart is drawn.
  const row = page.locator('[data-testid="job-row"][data-status="done"]').filter({ hasText: 'outline-style · LoRA' }).filter({ hasNotText: 'Check' });
  await row.first().waitFor({ timeout: 120_000 });
  await row.first().click();
  await id(page, 'meter-chart').waitFor();
  await id(page, 'job-recommendation').waitFor();
  const lora = await s.call<{ inspect: { metadata: Record<string, string> } }>('GET', '/api/adapters/lora/outline-style');
  assert.equal(lora.json.inspect.metadata.ss_gradient_checkpointing, 'True', '"Save memory" reached the run');
  await page.screenshot({ path: join(SHOTS, '3-job.png'), fullPage: true });

  // Generate with the LoRA and see the picture.
  await id(page, 'nav-generate').click();
  await id(page, 'gen-prompt').fill('a large red heart in the center, on a blue background');
  await page.getByTestId('token-count').filter({ hasText: /^\d+\/75$/ }).waitFor({ timeout: 10_000 });
  await page.reload();
  await id(page, 'nav-generate').click();
  await id(page, 'gen-prompt').fill('a large red heart in the center, on a blue background');
  await id(page, 'gen-lora-select').selectOption('outline-style');
  await id(page, 'gen-lora-add').click();
  await id(page, 'gen-steps').fill('8');
  await id(page, 'gen-seed').fill('3');
  await id(page, 'gen-submit').click();
  const img = id(page, 'gallery-image').first();
  await img.waitFor({ timeout: 60_000 });
  await page.waitForFunction(`(() => { const i = document.querySelector('[data-testid="gallery-image"]'); return !!i && i.complete && i.naturalWidth > 0; })()`, null, { timeout: 30_000 });
  await img.click();
  await page.getByTestId('png-info').filter({ hasText: /LoRA: "outline-style: 1"/ }).waitFor({ timeout: 10_000 });
  await page.screenshot({ path: join(SHOTS, '4-generate.png'), fullPage: true });
  const outs = await s.call<{ parameters: string }[]>('GET', '/api/outputs');
  assert.match(outs.json[0].parameters, /^a large red heart in the center, on a blue background\nSteps: 8, .*Seed: 3, Size: 32x32, .*LoRA: "outline-style: 1"/s);

  // A longer generation shows where it is heading while it samples (a preview every 5 steps), then the picture.
  await id(page, 'gen-steps').fill('150');
  await id(page, 'gen-submit').click();
  await page.getByTestId('gen-preview').filter({ hasText: /at step \d+ of 150/ }).waitFor({ timeout: 60_000 });
  await page.waitForFunction(`(() => { const i = document.querySelector('[data-testid="gen-preview"] img'); return !!i && i.complete && i.naturalWidth === 32; })()`, null, { timeout: 30_000 });
  await page.getByTestId('gen-progress').filter({ hasText: /^Done: 1 picture/ }).waitFor({ timeout: 60_000 });
  assert.equal(await id(page, 'gen-preview').isHidden(), true, 'the preview goes when the picture comes');

  // Keep training the LoRA from the Library: the Train tab opens on it (the dry run says from what).
  await id(page, 'nav-library').click();
  await page.locator('[data-testid="library-row"][data-name="outline-style"]').getByTestId('library-continue').click();
  await page.waitForFunction(`document.querySelector('[data-testid="train-continue"]')?.value === 'outline-style'`, null, { timeout: 10_000 });
  assert.equal(await id(page, 'train-name').inputValue(), 'outline-style-more');
  assert.equal(await id(page, 'train-technique-lora').isChecked(), true);
  await id(page, 'train-technique-dreambooth').check();
  assert.equal(await id(page, 'train-continue').isHidden(), true, 'DreamBooth continues from a model, not a file');
  await id(page, 'train-technique-lora').check();
  await id(page, 'train-continue').selectOption('outline-style');
  await id(page, 'train-preflight').click();
  await page.getByTestId('preflight-result').filter({ hasText: /continuing the LoRA outline-style\.safetensors: \d+ modules at rank 4/ }).waitFor({ timeout: 60_000 });
  assert.deepEqual(errors, []);
}

test('the UI fits a phone screen', { timeout: 60_000 }, async () => {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await page.goto(s.url);
  for (const tab of ['generate', 'train', 'jobs', 'library', 'datasets']) {
    await id(page, `nav-${tab}`).click();
    const overflow = await page.evaluate<number>(`document.documentElement.scrollWidth - window.innerWidth`);
    assert.ok(overflow <= 1, `${tab}: the page is ${overflow}px wider than the phone`);
  }
  await id(page, 'nav-generate').click();
  await page.screenshot({ path: join(SHOTS, '5-phone.png'), fullPage: true });
  await page.close();
});
