// `sdtune generate` end to end through the real CLI process: PNGs with A1111 parameters, batches,
// img2img, embeddings by file, live previews, and bad input as one clear line on stderr with a non-zero exit.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, watch } from 'node:fs';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import * as T from '../../src/torch/index.ts';
import { decodePng } from '../../src/formats/png.ts';
import { saveSafetensors } from '../../src/formats/safetensors.ts';
import { REPO, tempDir } from '../helpers.ts';
import { writeTinyCheckpoint } from '../sampling/tiny-sd.ts';

let tmp: ReturnType<typeof tempDir>;
let ckpt: string;
before(() => {
  tmp = tempDir();
  ckpt = writeTinyCheckpoint(tmp.dir);
});
after(() => tmp.cleanup());

function sdtune(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(REPO, 'src/cli/main.ts'), ...args], { cwd: REPO, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('generate writes PNGs whose parameters chunk A1111 reads; a batch writes numbered files', () => {
  const out = join(tmp.dir, 'cat.png');
  const r = sdtune('generate', '--model', ckpt, '--prompt', 'a (red:1.2) cat', '--negative', 'blurry', '--seed', '77', '--steps', '3', '--sampler', 'dpmpp_2m', '--karras', '--cfg', '5', '--width', '64', '--height', '48', '--batch', '2', '--out', out);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /wrote .*cat-1\.png, .*cat-2\.png \(seed 77/);
  assert.match(r.stderr, /sampling \[#+\] 3\/3/);
  const a = decodePng(readFileSync(join(tmp.dir, 'cat-1.png')));
  const b = decodePng(readFileSync(join(tmp.dir, 'cat-2.png')));
  assert.deepEqual([a.width, a.height], [64, 48]);
  assert.match(a.text.parameters, /^a \(red:1\.2\) cat\nNegative prompt: blurry\nSteps: 3, Sampler: DPM\+\+ 2M Karras, CFG scale: 5, Seed: 77, Size: 64x48, Model hash: [0-9a-f]{10}, Model: tiny-sd, Version: sdtune/);
  assert.notDeepEqual(a.data, b.data);
  // img2img from the first image, same size.
  const out2 = join(tmp.dir, 'again.png');
  const r2 = sdtune('generate', '--model', ckpt, '--prompt', 'a cat', '--init', join(tmp.dir, 'cat-1.png'), '--strength', '0.5', '--steps', '4', '--seed', '1', '--quiet', '--out', out2);
  assert.equal(r2.code, 0, r2.stderr);
  const c = decodePng(readFileSync(out2));
  assert.deepEqual([c.width, c.height], [64, 48]);
  assert.match(c.text.parameters, /Steps: 4, .*Denoising strength: 0\.5/);
  assert.deepEqual(readdirSync(tmp.dir).filter((f) => f.endsWith('.tmp')), [], 'no temp files left');
});

test('embeddings load by file and their stem is a prompt word; a wrong-width one is refused', () => {
  const good = join(tmp.dir, 'sksword.safetensors');
  const bad = join(tmp.dir, 'sd15thing.safetensors');
  T.tidy(() => {
    saveSafetensors(good, new Map([['emb_params', T.randn([2, 32], { generator: new T.Generator(3) }).mul(5)]]));
    saveSafetensors(bad, new Map([['emb_params', T.zeros([1, 768])]]));
  });
  const run = (prompt: string, file: string, ...extra: string[]) =>
    sdtune('generate', '--model', ckpt, '--prompt', prompt, '--seed', '5', '--steps', '2', '--width', '64', '--height', '64', '--quiet', '--out', join(tmp.dir, file), ...extra);
  assert.equal(run('a sksword', 'with.png', '--embedding', good).code, 0);
  assert.equal(run('a sksword', 'without.png').code, 0);
  const w = decodePng(readFileSync(join(tmp.dir, 'with.png')));
  const wo = decodePng(readFileSync(join(tmp.dir, 'without.png')));
  assert.notDeepEqual(w.data, wo.data, 'the embedding changes the image');
  const r = run('a sd15thing', 'x.png', '--embedding', bad);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /sd15thing\.safetensors: its vectors have 768 values but tiny-sd's text encoder uses 32 \(it was trained for SD 1\.x\)/);
});

test('bad input: one clear line and a non-zero exit, nothing written', () => {
  const out = join(tmp.dir, 'never.png');
  const cases: [string[], RegExp, number][] = [
    [['--model', join(tmp.dir, 'nope.safetensors'), '--prompt', 'x', '--out', out], /nope\.safetensors: no such file or folder/, 1],
    [['--model', ckpt, '--prompt', 'x', '--width', '65', '--out', out], /width 65 is not a multiple of 8 .*use 64 or 72/, 1],
    [['--model', ckpt, '--prompt', 'x', '--steps', 'many', '--out', out], /--steps takes a whole number, got "many"/, 2],
    [['--model', ckpt, '--prompt', 'x', '--sampler', 'plms', '--out', out], /--sampler must be one of ddim, euler, euler_a, dpmpp_2m/, 2],
    [['--model', ckpt, '--prompt', 'x', '--out', join(tmp.dir, 'x.jpg')], /use a \.png name/, 2],
    [['--model', ckpt, '--prompt', 'x', '--init', ckpt, '--out', out], /tiny-sd\.safetensors: not a PNG file/, 1],
    [['--model', ckpt, '--prompt', '<lora:style:0.8> x', '--out', out], /the prompt names <lora:style> but no --lora-dir was given/, 2],
  ];
  for (const [args, re, code] of cases) {
    const r = sdtune('generate', ...args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  }
  assert.equal(existsSync(out), false);
});

test('--preview-every N writes OUT.preview.png while sampling (whole files only), and removes it at the end', async () => {
  const dir = join(tmp.dir, 'pv');
  mkdirSync(dir);
  const seen: { width: number; height: number }[] = [];
  const watcher = watch(dir, (_ev, name) => {
    if (name !== 'pv.preview.png') return;
    try {
      const png = decodePng(readFileSync(join(dir, name)));
      seen.push({ width: png.width, height: png.height });
    } catch (e) {
      // Gone again (renamed over or removed) is fine; a half-written file is not.
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  });
  const code = await new Promise<number | null>((res) => {
    const p = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'src/cli/main.ts'), 'generate', '--model', ckpt, '--prompt', 'a cat', '--steps', '40', '--batch', '2', '--width', '64', '--height', '64', '--preview-every', '2', '--quiet', '--out', join(dir, 'pv.png')], { cwd: REPO, stdio: 'ignore' });
    p.on('exit', res);
  });
  watcher.close();
  assert.equal(code, 0);
  assert.ok(seen.length >= 1, 'a preview was seen');
  assert.deepEqual(seen[0], { width: 128, height: 64 }, 'the batch side by side');
  assert.deepEqual(readdirSync(dir).sort(), ['pv-1.png', 'pv-2.png'], 'the preview is gone, the pictures are there');
  const bad = sdtune('generate', '--model', ckpt, '--prompt', 'a cat', '--preview-every', '0', '--out', join(dir, 'x.png'));
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--preview-every takes a number of steps, 1 or more \(got 0\)/);
});
