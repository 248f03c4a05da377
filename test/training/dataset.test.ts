// The training dataset on real files: PNGs from our encoder, JPEGs from sharp (one EXIF-rotated,
// one CMYK), RGBA, grey, 16-bit, damaged files, a 20000×20000 header bomb, kohya folders with
// class images; buckets, captions, templates, deterministic shuffles and the step count.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { encodePng } from '../../src/formats/png.ts';
import * as T from '../../src/torch/index.ts';
import {
  Dataset,
  DatasetError,
  Rng,
  TEMPLATE_NAMES,
  buildCaption,
  captionFromFileName,
  decodeCaption,
  fillTemplate,
  loadTemplate,
  makeBuckets,
  processTags,
  selectBucket,
  type DatasetOptions,
} from '../../src/training/dataset.ts';
import { tempDir } from '../helpers.ts';

// ---- fixtures written by the test ----

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])) >>> 0);
  return Buffer.concat([head, data, crc]);
}
/** A raw PNG: any bit depth and colour type our encoder does not write; rows use filter 0. */
function rawPng(w: number, h: number, depth: number, color: number, rows: Buffer): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = depth;
  ihdr[9] = color;
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([sig, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
}
function solid(w: number, h: number, rgb: [number, number, number]): Buffer {
  const d = new Uint8Array(w * h * 3);
  for (let i = 0; i < w * h; i++) d.set(rgb, i * 3);
  return encodePng({ width: w, height: h, channels: 3, data: d });
}
async function jpeg(w: number, h: number, rgb: [number, number, number]): Promise<Buffer> {
  return sharp({ create: { width: w, height: h, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } }).jpeg({ quality: 95 }).toBuffer();
}

let root = '';
let cleanup = (): void => {};
const MIXED = (): string => join(root, 'mixed');
const KOHYA = (): string => join(root, 'kohya');

before(async () => {
  ({ dir: root, cleanup } = tempDir('sdtune-dataset-'));
  const m = join(root, 'mixed');
  mkdirSync(m);
  writeFileSync(join(m, 'red.png'), solid(48, 48, [255, 0, 0]));
  writeFileSync(join(m, 'red.txt'), '  a red square,   flat colour \n');
  writeFileSync(join(m, '0042-blue car.jpg'), await jpeg(48, 48, [0, 0, 255]));
  // EXIF orientation 6: stored 40×20 (left red, right blue), shown rotated 90° clockwise as 20×40.
  const rot = Buffer.alloc(40 * 20 * 3);
  for (let y = 0; y < 20; y++) for (let x = 0; x < 40; x++) rot[(y * 40 + x) * 3 + (x < 20 ? 0 : 2)] = 255;
  writeFileSync(join(m, 'rotated.jpg'), await sharp(rot, { raw: { width: 40, height: 20, channels: 3 } }).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer());
  // RGBA: left half opaque green, right half fully transparent black.
  const logo = new Uint8Array(32 * 32 * 4);
  for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) logo.set(x < 16 ? [0, 255, 0, 255] : [0, 0, 0, 0], (y * 32 + x) * 4);
  writeFileSync(join(m, 'logo.png'), encodePng({ width: 32, height: 32, channels: 4, data: logo }));
  // 8-bit grey (colour type 0): a value of 64 everywhere.
  writeFileSync(join(m, 'grey.png'), rawPng(32, 32, 8, 0, Buffer.concat(Array.from({ length: 32 }, () => Buffer.from([0, ...new Array(32).fill(64)])))));
  // 16-bit RGB: (0xFFFF, 0x8000, 0x0000) everywhere → 8-bit (255, 128, 0).
  const row16 = Buffer.alloc(1 + 32 * 6);
  for (let x = 0; x < 32; x++) {
    row16.writeUInt16BE(0xffff, 1 + x * 6);
    row16.writeUInt16BE(0x8000, 3 + x * 6);
  }
  writeFileSync(join(m, 'deep.png'), rawPng(32, 32, 16, 2, Buffer.concat(Array.from({ length: 32 }, () => row16))));
  writeFileSync(join(m, 'cmyk.jpg'), await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 255, g: 0, b: 0 } } }).toColourspace('cmyk').jpeg().toBuffer());
  writeFileSync(join(m, 'broken.jpg'), Buffer.from('this is a text file renamed to .jpg'));
  writeFileSync(join(m, 'cut.png'), solid(64, 64, [9, 9, 9]).subarray(0, 70));
  writeFileSync(join(m, 'scan.bmp'), Buffer.from('BM not really'));
  writeFileSync(join(m, '._red.png'), Buffer.from('macOS resource fork'));
  writeFileSync(join(m, 'blank.png'), solid(32, 32, [200, 200, 200]));
  writeFileSync(join(m, 'blank.txt'), ' \n\t\n');
  // Decomposed "é" (e + U+0301), a zero-width space and a BOM: read as NFC "café, latte".
  writeFileSync(join(m, 'cup.png'), solid(32, 32, [120, 80, 40]));
  writeFileSync(join(m, 'cup.txt'), '\ufeffcafe\u0301,\u200b latte');
  // The header claims 20000×20000 (400 MP, 1.6 GB as RGBA); the file is a few dozen bytes.
  writeFileSync(join(m, 'huge.png'), rawPng(20000, 20000, 8, 2, Buffer.alloc(16)));

  const k = join(root, 'kohya');
  mkdirSync(join(k, '10_sks dog'), { recursive: true });
  for (const i of [1, 2, 3]) writeFileSync(join(k, '10_sks dog', `dog${i}.png`), solid(48, 32, [i * 40, 100, 50]));
  writeFileSync(join(k, '10_sks dog', 'dog1.txt'), 'on the beach, sunny');
  writeFileSync(join(k, '10_sks dog', 'dog2.txt'), 'sks dog, in the snow');
  mkdirSync(join(k, 'notes'));
  writeFileSync(join(k, 'notes', 'stray.png'), solid(16, 16, [0, 0, 0]));
  mkdirSync(join(k, 'reg', '1_dog'), { recursive: true });
  for (const i of [1, 2, 3, 4, 5]) writeFileSync(join(k, 'reg', '1_dog', `c${i}.png`), solid(48, 32, [10, 10, i * 40]));

  // Three aspect ratios, two images each, plus masks from a file beside one and a mask folder.
  const b = join(root, 'buckets');
  mkdirSync(join(b, 'masks'), { recursive: true });
  for (const [n, w, h] of [['sq', 64, 64], ['wide', 96, 64], ['tall', 64, 96]] as const) {
    writeFileSync(join(b, `${n}1.png`), solid(w, h, [10, 20, 30]));
    writeFileSync(join(b, `${n}2.png`), solid(w * 2, h * 2, [30, 20, 10]));
  }
  const half = new Uint8Array(64 * 64 * 3);
  for (let i = 0; i < 64 * 64; i++) if (i % 64 < 32) half.fill(255, i * 3, i * 3 + 3);
  writeFileSync(join(b, 'sq1.mask.png'), encodePng({ width: 64, height: 64, channels: 3, data: half }));
  writeFileSync(join(b, 'masks', 'wide1.png'), solid(48, 32, [255, 255, 255]));
});

after(() => cleanup());

const base = (o: Partial<DatasetOptions>): DatasetOptions => ({ dir: MIXED(), resolution: 64, buckets: { step: 8 }, batchSize: 2, seed: 1234, ...o });

// ---- tests ----

test('a folder of mixed images: per-file messages for the unusable ones, the rest loads', async () => {
  const rss0 = process.memoryUsage().rss;
  const ds = await Dataset.open(base({ alpha: 'mask' }));
  const rssGrowth = process.memoryUsage().rss - rss0;
  const byName = new Map(ds.samples.map((s) => [s.name, s]));
  assert.deepEqual([...byName.keys()].sort(), ['0042-blue car.jpg', 'blank.png', 'cmyk.jpg', 'cup.png', 'deep.png', 'grey.png', 'logo.png', 'red.png', 'rotated.jpg']);
  const msg = Object.fromEntries(ds.skipped.map((s) => [s.file.split('/').pop(), s.message]));
  assert.deepEqual(Object.keys(msg).sort(), ['broken.jpg', 'cut.png', 'huge.png', 'scan.bmp'], '._red.png is ignored silently');
  assert.equal(msg['broken.jpg'], 'broken.jpg: cannot read this image (it is not an image, or in a format that cannot be read); it is skipped');
  assert.match(msg['cut.png'], /^cut\.png: cannot read this image \(its image data is damaged or cut short(: .+)?\); it is skipped$/);
  assert.match(msg['scan.bmp'], /^scan\.bmp: BMP images cannot be read here .*save it as PNG or JPEG; it is skipped$/);
  assert.match(msg['huge.png'], /^huge\.png: the image is 20000×20000 \(400 megapixels\), over the 268-megapixel limit; downscale it/);
  // Refused from the header: decoding would need 1.2 GB (RGB) before any check could run.
  assert.ok(rssGrowth < 300e6, `scanning grew the process by ${(rssGrowth / 1e6).toFixed(0)} MB`);
  // Captions: trimmed .txt, A1111 file-name rule, empty .txt falls back with a warning, NFC.
  assert.equal(byName.get('red.png')!.caption, 'a red square, flat colour');
  assert.equal(byName.get('0042-blue car.jpg')!.caption, 'blue car');
  assert.equal(byName.get('0042-blue car.jpg')!.captionSource, 'filename');
  assert.equal(byName.get('blank.png')!.caption, 'blank');
  assert.ok(ds.warnings.some((w) => w === 'blank.txt is empty; blank.png trains on the file name "blank" instead'), ds.warnings.join('\n'));
  assert.equal(byName.get('cup.png')!.caption, 'caf\u00e9, latte');
  // EXIF orientation is applied: the sample is 20×40, red on top.
  const rot = byName.get('rotated.jpg')!;
  assert.deepEqual([rot.width, rot.height], [20, 40]);
  assert.equal(byName.get('logo.png')!.hasAlpha, true);
});

test('decoded pixels: orientation, alpha on white + mask, grey→RGB, 16-bit→8-bit, CMYK→sRGB', async () => {
  const ds = await Dataset.open(base({ alpha: 'mask', buckets: { step: 8, enabled: false } }));
  const plan = ds.epochPlan(0).flatMap((b) => b.items);
  const item = (name: string) => plan.find((i) => i.sample.name === name)!;
  const live0 = T.memoryStats().live;
  const load = async (name: string) => {
    const { pixels, mask } = await ds.loadItem(item(name));
    const out = { shape: pixels.shape, px: pixels.toArray(), mask: mask ? mask.toArray() : null };
    pixels.dispose();
    mask?.dispose();
    return out;
  };
  const at = (px: number[], c: number, y: number, x: number): number => px[c * 64 * 64 + y * 64 + x];
  // Rotated: 20×40 covers 64×64 as 64×128, centre crop; top of the crop still red, bottom blue.
  const r = await load('rotated.jpg');
  assert.deepEqual(r.shape, [3, 64, 64]);
  assert.ok(at(r.px, 0, 2, 32) > 0.9 && at(r.px, 2, 2, 32) < -0.9, 'top is red');
  assert.ok(at(r.px, 2, 61, 32) > 0.9 && at(r.px, 0, 61, 32) < -0.9, 'bottom is blue');
  assert.equal(r.mask, null, 'no alpha, no mask file: no mask');
  // RGBA: transparent half composited on white, and the alpha becomes the mask. Tolerance: the
  // lanczos resize 32→64 rings by a few levels only near the edge at x = 32.
  const l = await load('logo.png');
  assert.ok(Math.abs(at(l.px, 1, 10, 5) - 1) < 0.02 && Math.abs(at(l.px, 0, 10, 5) + 1) < 0.02, 'left: green');
  for (let c = 0; c < 3; c++) assert.ok(Math.abs(at(l.px, c, 10, 60) - 1) < 0.02, 'right: white');
  assert.ok(l.mask && Math.abs(l.mask[10 * 64 + 5] - 1) < 0.02 && Math.abs(l.mask[10 * 64 + 60]) < 0.02);
  // Grey 64 → (64, 64, 64): 64/127.5 − 1.
  const g = await load('grey.png');
  for (let c = 0; c < 3; c++) assert.ok(Math.abs(at(g.px, c, 30, 30) - (64 / 127.5 - 1)) < 1e-6);
  // 16-bit (0xFFFF, 0x8000, 0) → 8-bit (255, 128, 0).
  const d = await load('deep.png');
  assert.deepEqual([0, 1, 2].map((c) => Math.round((at(d.px, c, 30, 30) + 1) * 127.5)), [255, 128, 0]);
  // CMYK red → sRGB: clearly red (the CMYK round trip does not return 255/0/0 exactly).
  const k = await load('cmyk.jpg');
  const [kr, kg, kb] = [0, 1, 2].map((c) => (at(k.px, c, 30, 30) + 1) * 127.5);
  assert.ok(kr > 200 && kg < 60 && kb < 60, `cmyk decoded to ${kr}, ${kg}, ${kb}`);
  assert.equal(T.memoryStats().live, live0, 'every tensor disposed');
});

test('kohya `10_sks dog` folders: repeats, folder words as prefix or caption, class images balanced', async () => {
  const ds = await Dataset.open(base({ dir: KOHYA(), classDir: join(KOHYA(), 'reg'), batchSize: 4 }));
  const inst = ds.samples.filter((s) => !s.isClass);
  const cls = ds.samples.filter((s) => s.isClass);
  assert.deepEqual(inst.map((s) => [s.name, s.repeats, s.caption]), [
    ['10_sks dog/dog1.png', 10, 'sks dog, on the beach, sunny'],
    ['10_sks dog/dog2.png', 10, 'sks dog, in the snow'],
    ['10_sks dog/dog3.png', 10, 'sks dog'],
  ]);
  // 30 instance samples; 5 class images, 1 repeat each, are raised round-robin to 30 (kohya).
  assert.deepEqual(cls.map((s) => [s.name, s.repeats, s.caption]), [1, 2, 3, 4, 5].map((i) => [`1_dog/c${i}.png`, 6, 'dog']));
  assert.ok(ds.warnings.some((w) => w.startsWith('folder "notes" is ignored: name it like "10_notes"')), ds.warnings.join('\n'));
  assert.ok(!ds.warnings.some((w) => w.includes('"reg"')), 'the class folder inside dir is not scanned as instance images');
  // Steps: (3 × 10 + 30 class) / 4 = 15 per epoch; without class images ceil(30 / 4) = 8.
  const dry = ds.dryRun(10);
  assert.equal(dry.stepsPerEpoch, 15);
  assert.equal(dry.totalSteps, 150);
  assert.equal(dry.instanceSamplesPerEpoch, 30);
  assert.equal(dry.classSamplesPerEpoch, 30);
  assert.match(dry.text, /TOTAL: 150 steps \(15 per epoch × 10 epochs\)/);
  assert.match(dry.stepsExplained, /^3 × 10 = 30 instance samples \+ 30 class samples .* = 60, in batches of 4: 15 steps per epoch × 10 epochs = 150 steps in total$/);
  const plan = ds.epochPlan(0);
  assert.equal(plan.length, 15);
  assert.equal(plan.flatMap((b) => b.items).filter((i) => i.sample.isClass).length, 30);
  const alone = await Dataset.open(base({ dir: KOHYA(), batchSize: 4 }));
  assert.equal(alone.stepsPerEpoch, 8);
  // kohya metadata for the saved LoRA.
  const md = ds.kohyaMetadata();
  assert.deepEqual(JSON.parse(md.ss_dataset_dirs), { '10_sks dog': { n_repeats: 10, img_count: 3 } });
  assert.deepEqual(JSON.parse(md.ss_reg_dataset_dirs), { '1_dog': { n_repeats: 1, img_count: 5 } });
  assert.deepEqual(JSON.parse(md.ss_tag_frequency)['10_sks dog'], { 'sks dog': 3, 'on the beach': 1, sunny: 1, 'in the snow': 1 });
  assert.equal(md.ss_num_train_images, '30');
  assert.equal(md.ss_num_batches_per_epoch, '15');
});

test('buckets: kohya resolutions and the choice for three aspect ratios', async () => {
  // SD at 512, step 64: the square, 3:2 → 640×384 (ar 1.67 beats 576×448 at 1.29), 2:3 → 384×640.
  const sd = { resolution: 512 };
  const all = makeBuckets(sd);
  assert.ok(all.every((b) => b.width * b.height <= 512 * 512 && b.width % 64 === 0 && b.height % 64 === 0 && b.width >= 256 && b.height <= 1024));
  assert.deepEqual(selectBucket(1024, 1024, sd, all), { bucket: { width: 512, height: 512 }, resized: { width: 512, height: 512 }, arError: 0 });
  assert.deepEqual(selectBucket(1536, 1024, sd, all).bucket, { width: 640, height: 384 });
  assert.deepEqual(selectBucket(1536, 1024, sd, all).resized, { width: 640, height: 427 });
  assert.deepEqual(selectBucket(1024, 1536, sd, all).bucket, { width: 384, height: 640 });
  // No upscale: a 200×150 image keeps its size; its bucket rounds down to 192×128.
  assert.deepEqual(selectBucket(200, 150, { ...sd, noUpscale: true }), { bucket: { width: 192, height: 128 }, resized: { width: 200, height: 150 }, arError: 192 / 128 - 200 / 150 });
  // A tiny model (64, step 8): the same shapes, in batches of one bucket each, with masks.
  const ds = await Dataset.open(base({ dir: join(root, 'buckets'), maskDir: join(root, 'buckets', 'masks') }));
  assert.deepEqual(Object.fromEntries(ds.samples.map((s) => [s.name, `${s.bucket.width}x${s.bucket.height}`])), {
    'sq1.png': '64x64', 'sq2.png': '64x64', 'tall1.png': '48x80', 'tall2.png': '48x80', 'wide1.png': '80x48', 'wide2.png': '80x48',
  });
  assert.deepEqual(ds.dryRun().buckets.map((b) => [b.width, b.height, b.images, b.batchesPerEpoch]), [[48, 80, 2, 1], [64, 64, 2, 1], [80, 48, 2, 1]]);
  assert.equal(ds.samples.find((s) => s.name === 'wide1.png')!.maskFile, join(root, 'buckets', 'masks', 'wide1.png'));
  // Batches never mix buckets, so batch 4 gives 3 steps, not ceil(6 / 4) = 2; the summary says why.
  const by4 = await Dataset.open(base({ dir: join(root, 'buckets'), batchSize: 4 }));
  assert.equal(by4.stepsPerEpoch, 3);
  assert.match(by4.dryRun().stepsExplained, /3 steps per epoch \(ceil\(6 \/ 4\) = 2, plus 1 for partly filled batches: each bucket fills its own batches\)$/);
  const live0 = T.memoryStats().live;
  let n = 0;
  for await (const batch of ds.epoch(0)) {
    using _b = batch;
    n++;
    assert.deepEqual(batch.pixels.shape, [2, 3, batch.bucket.height, batch.bucket.width]);
    assert.ok(new Set(batch.items.map((i) => i.sample.name.replace(/\d/, ''))).size === 1, 'one shape per batch');
    if (batch.bucket.width === 64) {
      // sq1 has a half-white mask file; sq2 has none, so its mask is all ones.
      assert.ok(batch.masks);
      const m = batch.masks.toTypedArray() as Float32Array;
      const i1 = batch.items.findIndex((i) => i.sample.name === 'sq1.png');
      assert.ok(m[i1 * 4096 + 10 * 64 + 5] > 0.98 && m[i1 * 4096 + 10 * 64 + 60] < 0.02);
      assert.ok(m.subarray((1 - i1) * 4096, (2 - i1) * 4096).every((v) => v === 1));
    }
  }
  assert.equal(n, 3);
  assert.equal(T.memoryStats().live, live0, 'batch tensors disposed by `using`');
});

test('caption shuffle with keep tokens and tag dropout: deterministic per seed, different across seeds', () => {
  const cap = 'sks, red hat, blue coat, smiling, outdoors, looking left, daylight, portrait';
  const o = { shuffle: true, keepTokens: 1 };
  const a = processTags(cap, o, Rng.derive(7, 'item', 0, 3, 0));
  assert.equal(a, processTags(cap, o, Rng.derive(7, 'item', 0, 3, 0)));
  assert.notEqual(a, processTags(cap, o, Rng.derive(8, 'item', 0, 3, 0)));
  assert.ok(a.startsWith('sks, '));
  assert.deepEqual(a.split(', ').sort(), cap.split(', ').sort());
  // Tag dropout 0.5 over 400 draws of 7 droppable tags: 1400 ± 3σ (σ = √(2800·0.25) ≈ 26.5).
  let kept = 0;
  for (let i = 0; i < 400; i++) {
    const t = processTags(cap, { keepTokens: 1, tagDropout: 0.5 }, Rng.derive(1, i)).split(', ');
    assert.equal(t[0], 'sks');
    kept += t.length - 1;
  }
  assert.ok(Math.abs(kept - 1400) < 80, `kept ${kept}`);
  assert.equal(buildCaption(cap, { captionDropout: 1 }, Rng.derive(1)), '');
  assert.equal(buildCaption(cap, { captionDropoutEveryNEpochs: 2 }, Rng.derive(1), 1), '', 'epoch index 1 is kohya epoch 2');
  assert.equal(buildCaption(cap, { captionDropoutEveryNEpochs: 2 }, Rng.derive(1), 0), cap);
  // The RNG state resumes a stream exactly.
  const r = Rng.derive(5);
  r.next();
  const copy = Rng.fromState(r.getState());
  assert.deepEqual([r.next(), r.next()], [copy.next(), copy.next()]);
});

test('epoch plans: same seed same plan, resume replays exactly, new seed or epoch reshuffles', async () => {
  const opts = base({ dir: KOHYA(), batchSize: 3, randomCrop: true, caption: { shuffle: true, keepTokens: 1 } });
  const a = await Dataset.open(opts);
  const b = await Dataset.open(opts);
  const c = await Dataset.open({ ...opts, seed: 99 });
  const view = (p: ReturnType<Dataset['epochPlan']>) => p.map((x) => x.items.map((i) => `${i.sample.name}#${i.repeat}:${i.caption}@${i.crop.left},${i.crop.top}`));
  assert.deepEqual(view(a.epochPlan(3)), view(b.epochPlan(3)));
  assert.notDeepEqual(view(a.epochPlan(3)), view(c.epochPlan(3)));
  assert.notDeepEqual(view(a.epochPlan(3)), view(a.epochPlan(4)));
  // Not only the batch order: which samples share a batch changes too (the in-bucket shuffle).
  const groups = (p: ReturnType<Dataset['epochPlan']>) => p.map((x) => x.items.map((i) => `${i.sample.name}#${i.repeat}`).sort().join('|')).sort();
  assert.notDeepEqual(groups(a.epochPlan(3)), groups(a.epochPlan(4)));
  // 48×32 in the 80×48 bucket is covered as 80×53, so random crops move vertically (top 0..5).
  const crops = new Set(a.epochPlan(0).flatMap((x) => x.items.map((i) => i.crop.top)));
  assert.ok(crops.size > 1, 'random crops vary');
  assert.ok(a.epochPlan(0).every((x) => x.items.every((i) => i.caption.startsWith('sks dog'))), 'keep token stays first');
  assert.ok(a.captionsVary);
  // Resume at batch 4 of epoch 3: the same batches as batches 4.. of the full plan.
  const full = a.epochPlan(3);
  const resumed: string[][] = [];
  for await (const batch of b.epoch(3, { startBatch: 4 })) {
    resumed.push(batch.items.map((i) => `${i.sample.name}#${i.repeat}:${i.caption}`));
    batch.dispose();
  }
  assert.deepEqual(resumed, full.slice(4).map((x) => x.items.map((i) => `${i.sample.name}#${i.repeat}:${i.caption}`)));
});

test('templates fill [name] and [filewords]', async () => {
  for (const n of TEMPLATE_NAMES) assert.ok(loadTemplate(n).length >= 1, n);
  assert.ok(loadTemplate('subject_filewords').every((l) => l.includes('[name]') && l.includes('[filewords]')));
  assert.ok(loadTemplate('hypernetwork').every((l) => l.includes('[filewords]') && !l.includes('[name]')));
  assert.deepEqual(loadTemplate('filewords'), ['[filewords]'], 'the captions as written');
  assert.equal(fillTemplate('a picture of [name], [filewords]', 'zed', 'red hat, smiling'), 'a picture of zed, red hat, smiling');
  assert.equal(fillTemplate('a picture of [name], [filewords]', 'zed', ''), 'a picture of zed');
  assert.throws(() => loadTemplate('portrait'), (e: Error) => e instanceof DatasetError && /no template "portrait": use one of none, filewords, style, /.test(e.message));
  const template = loadTemplate('style_filewords');
  await assert.rejects(Dataset.open(base({ caption: { template } })), /uses \[name\], but no name was given/);
  const ds = await Dataset.open(base({ caption: { template, name: 'zed' } }));
  const items = ds.epochPlan(0).flatMap((b) => b.items);
  const red = items.find((i) => i.sample.name === 'red.png')!;
  assert.ok(template.some((l) => fillTemplate(l, 'zed', 'a red square, flat colour') === red.caption), red.caption);
  assert.ok(red.caption.includes('zed'));
});

test('caption files: encodings and odd characters', () => {
  assert.deepEqual(decodeCaption(Buffer.from('\ufeffa cat,\r\nsleeping\r\n', 'utf8')), { text: 'a cat, sleeping', note: null });
  assert.equal(decodeCaption(Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('caf\u00e9', 'utf16le')])).text, 'café');
  const cp1252 = decodeCaption(Buffer.from([0x63, 0x61, 0x66, 0xe9])); // "café" saved by Notepad as ANSI
  assert.equal(cp1252.text, 'café');
  assert.match(cp1252.note!, /not UTF-8/);
  assert.equal(captionFromFileName('/x/00012-3456-a red car.png'), 'a red car');
  assert.equal(captionFromFileName('/x/00012-3456.png'), '');
});

test('cache keys follow the file, its bucket and its crop', async () => {
  const opts = base({ dir: join(root, 'buckets') });
  const a = await Dataset.open(opts);
  const s = a.samples.find((x) => x.name === 'wide1.png')!;
  const k = a.cacheKey(s);
  assert.match(k, /^[0-9a-f]{64}$/);
  assert.equal((await Dataset.open(opts)).cacheKey((await Dataset.open(opts)).samples.find((x) => x.name === 'wide1.png')!), k);
  assert.notEqual(a.cacheKey(s, { left: 1, top: 0 }), k);
  assert.equal(a.epochPlan(0).flatMap((b) => b.items).find((i) => i.sample.name === 'wide1.png')!.cacheKey, k, 'centre crop');
  utimesSync(s.file, new Date(), new Date(Date.now() + 5000));
  const b = await Dataset.open(opts);
  assert.notEqual(b.cacheKey(b.samples.find((x) => x.name === 'wide1.png')!), k, 'a touched file gets a new key');
});

test('a file damaged after the scan is reported and left out; the epoch goes on', async () => {
  const dir = join(root, 'late');
  mkdirSync(dir);
  writeFileSync(join(dir, 'a.png'), solid(64, 64, [1, 2, 3]));
  writeFileSync(join(dir, 'b.png'), solid(64, 64, [4, 5, 6]));
  const ds = await Dataset.open(base({ dir, repeats: 2 }));
  writeFileSync(join(dir, 'b.png'), Buffer.from('overwritten'));
  const messages: string[] = [];
  const sizes: number[] = [];
  for await (const batch of ds.epoch(0, { onMessage: (m) => messages.push(m) })) {
    assert.ok(batch.items.every((i) => i.sample.name === 'a.png'));
    sizes.push(batch.pixels.shape[0]);
    batch.dispose();
  }
  assert.equal(sizes.reduce((a, b) => a + b, 0), 2, 'both repeats of a.png trained');
  assert.deepEqual(messages, ['b.png: cannot read this image (it is not an image, or in a format that cannot be read); it is skipped', 'b.png: cannot read this image (it is not an image, or in a format that cannot be read); it is skipped']);
  assert.equal(ds.loadErrors.length, 2);
});

test('an empty or missing folder says so', async () => {
  const empty = join(root, 'empty');
  mkdirSync(empty);
  const ds = await Dataset.open(base({ dir: empty }));
  assert.match(ds.dryRun().text, /No usable images/);
  assert.throws(() => ds.epochPlan(0), /there are no usable images in/);
  await assert.rejects(Dataset.open(base({ dir: join(root, 'nope') })), /the image folder .*nope does not exist/);
});
