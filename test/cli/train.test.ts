// `sdtune train` through the real CLI process on the tiny model: the dry run's numbers, a LoRA
// and an embedding trained from a folder with bad files in it, Ctrl-C then --resume.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { decodePng, encodePng } from '../../src/formats/png.ts';
import { SafetensorsFile } from '../../src/formats/safetensors.ts';
import { REPO, tempDir } from '../helpers.ts';
import { writeTinyCheckpoint } from '../sampling/tiny-sd.ts';

let tmp: ReturnType<typeof tempDir>;
let ckpt: string;
let data: string;

/** A 64×64 picture: a coloured square on a ground. */
function picture(fg: [number, number, number], bg: [number, number, number]): Buffer {
  const d = new Uint8Array(64 * 64 * 3);
  for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) d.set(x >= 16 && x < 48 && y >= 16 && y < 48 ? fg : bg, (y * 64 + x) * 3);
  return encodePng({ width: 64, height: 64, channels: 3, data: d });
}

/** A PNG whose header claims 20000×20000 (the file itself is tiny). */
function hugeHeader(): Buffer {
  const png = Buffer.from(picture([0, 0, 0], [9, 9, 9]));
  png.writeUInt32BE(20000, 16);
  png.writeUInt32BE(20000, 20);
  return png;
}

before(() => {
  tmp = tempDir();
  ckpt = writeTinyCheckpoint(tmp.dir);
  data = join(tmp.dir, 'data', '5_sks square');
  mkdirSync(data, { recursive: true });
  writeFileSync(join(data, 'red.png'), picture([220, 30, 30], [20, 20, 80]));
  writeFileSync(join(data, 'red.txt'), 'a red square, blue ground');
  writeFileSync(join(data, 'green.png'), picture([30, 200, 30], [80, 20, 20]));
  writeFileSync(join(data, 'green.txt'), '');
  writeFileSync(join(data, 'broken.png'), Buffer.from('this is not an image'));
  writeFileSync(join(data, 'huge.png'), hugeHeader());
});
after(() => tmp.cleanup());

function sdtune(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(REPO, 'src/cli/main.ts'), ...args], { cwd: REPO, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const common = () => ['--model', ckpt, '--data', join(tmp.dir, 'data'), '--resolution', '64', '--bucket-step', '8', '--quiet'];

test('the dry run prints images, skipped files, repeats and the step count, and trains nothing', () => {
  const out = join(tmp.dir, 'dry.safetensors');
  const r = sdtune('train', 'lora', ...common(), '--out', out, '--dry-run', '--epochs', '3', '--batch-size', '2', '--rank', '2');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /broken\.png: cannot read this image/);
  assert.match(r.stdout, /huge\.png/);
  assert.match(r.stdout, /TOTAL: 15 steps/, '2 images × 5 repeats / batch 2 = 5 per epoch, × 3 epochs');
  assert.match(r.stdout, /lora: [\d,]+ trainable parameters; the result goes to/);
  assert.equal(existsSync(out), false);
});

test('train lora and embedding from the folder: bad files named, products written with metadata', () => {
  const lora = join(tmp.dir, 'style.safetensors');
  const r = sdtune('train', 'lora', ...common(), '--out', lora, '--steps', '6', '--rank', '2', '--alpha', '1', '--lr', '1e-3', '--save-dtype', 'fp16');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /skipped: .*broken\.png: cannot read this image/);
  assert.match(r.stderr, /skipped: .*huge\.png/);
  assert.match(r.stdout, /trained 6 steps, final loss \d\.\d{4}\. wrote .*style\.safetensors/);
  const f = SafetensorsFile.open(lora);
  assert.equal(f.metadata.ss_network_dim, '2');
  assert.equal(f.metadata.ss_network_alpha, '1.0');
  assert.deepEqual(new Set(f.entries().map((e) => e.dtype)), new Set(['F16']));
  f.close();
  const log = readFileSync(join(tmp.dir, 'style.safetensors.work', 'log.jsonl'), 'utf8').trim().split('\n');
  assert.equal(log.length, 6);
  const emb = join(tmp.dir, 'sksheart.pt');
  const e = sdtune('train', 'embedding', ...common(), '--out', emb, '--token', 'sksheart', '--steps', '3', '--vectors', '2');
  assert.equal(e.code, 0, e.stderr);
  assert.match(e.stderr, /warning: .*green\.txt.*empty/i);
  assert.ok(existsSync(emb));
  // The generator takes both: the embedding by file, the LoRA by flag and by prompt tag.
  const png = join(tmp.dir, 'g.png');
  const g = sdtune('generate', '--model', ckpt, '--prompt', 'a sksheart <lora:style:0.7>', '--embedding', emb, '--lora-dir', tmp.dir, '--steps', '2', '--quiet', '--out', png);
  assert.equal(g.code, 0, g.stderr);
  const g2 = sdtune('generate', '--model', ckpt, '--prompt', 'a sksheart', '--lora', `${lora}:0.7`, '--steps', '1', '--quiet', '--out', png);
  assert.equal(g2.code, 0, g2.stderr);
  const u = sdtune('generate', '--model', ckpt, '--prompt', 'x', '--lora-check', '--out', png);
  assert.equal(u.code, 2, 'an unknown flag is a usage error');
  assert.match(u.stderr, /--lora-check.*sdtune generate --help/);
  const missing = sdtune('generate', '--model', ckpt, '--prompt', 'a <lora:nothere:1>', '--lora-dir', tmp.dir, '--out', png);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /names <lora:nothere> but .* has no nothere file/);
  const bad = sdtune('train', 'lora', ...common(), '--out', lora, '--rnak', '4');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--rnak/);
});

test('Ctrl-C saves a checkpoint and exits; --resume finishes the run', async () => {
  const out = join(tmp.dir, 'hn.pt');
  const args = ['--import', 'tsx', join(REPO, 'src/cli/main.ts'), 'train', 'hypernetwork', ...common().filter((a) => a !== '--quiet'), '--out', out, '--steps', '400', '--checkpoint-every', '1000', '--lr', '1e-4'];
  const child = spawn(process.execPath, args, { cwd: REPO });
  let stderr = '';
  let stdout = '';
  child.stdout.on('data', (d) => (stdout += d));
  await new Promise<void>((resolve) => {
    child.stderr.on('data', (d) => {
      stderr += d;
      if (/training \[/.test(stderr) && !child.killed) {
        child.kill('SIGINT');
        resolve();
      }
    });
    child.on('exit', () => resolve());
  });
  const code = await new Promise<number | null>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.on('exit', (c) => resolve(c))));
  assert.equal(code, 0, stderr);
  assert.match(stdout, /stopped at step \d+; checkpoint .*step-\d+\.safetensors; run again with --resume to continue/);
  assert.ok(existsSync(out), 'the product so far is saved too');
  const r = sdtune('train', 'hypernetwork', ...common(), '--out', out, '--steps', '400', '--checkpoint-every', '1000', '--lr', '1e-4', '--resume');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /trained 400 steps/);
});

test('train dreambooth: class images are generated by the base model once, cached, and trained with', () => {
  const out = join(tmp.dir, 'sks.safetensors');
  const args = ['train', 'dreambooth', ...common(), '--out', out, '--token', 'sks', '--class-prompt', 'a square', '--num-class-images', '2', '--steps', '2', '--lr', '1e-5', '--sample-every', '2', '--sample-prompts', 'a sks square'];
  const dry = sdtune(...args, '--dry-run');
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /2 class images of "a square" will be generated by the base model into .*class-images first/);
  const r = sdtune(...args);
  assert.equal(r.code, 0, r.stderr);
  const classDir = join(tmp.dir, 'sks.safetensors.work', 'class-images');
  assert.deepEqual(readdirSync(classDir).sort(), ['class-0000.png', 'class-0000.txt', 'class-0001.png', 'class-0001.txt']);
  assert.equal(readFileSync(join(classDir, 'class-0000.txt'), 'utf8'), 'a square\n');
  assert.match(decodePng(readFileSync(join(classDir, 'class-0000.png'))).text.parameters, /^a square\nSteps: 20/);
  assert.ok(existsSync(out));
  assert.deepEqual(readdirSync(join(tmp.dir, 'sks.safetensors.work', 'samples')), ['step-000002-0.png']);
  const dry2 = sdtune(...args, '--dry-run');
  assert.doesNotMatch(dry2.stdout, /will be generated/, 'cached: nothing to generate the second time');
  assert.match(dry2.stdout, /class/i);
});

test('train dreambooth --class-prompt "[filewords]": one class prompt per instance caption, without the token', () => {
  const out = join(tmp.dir, 'fw.safetensors');
  const args = ['train', 'dreambooth', ...common(), '--out', out, '--token', 'sks', '--class-prompt', 'a photo, [filewords]', '--num-class-images', '3', '--steps', '1', '--lr', '1e-5'];
  const dry = sdtune(...args, '--dry-run');
  assert.equal(dry.code, 0, dry.stderr);
  // green.txt is empty: that picture's caption is its folder's words, "sks square"; red.txt's
  // caption lacks the token, so the folder's words go before it.
  assert.match(dry.stdout, /3 class images of the instance captions without "sks" \(2 prompts, e\.g\. "a photo, square(, a red square, blue ground)?"\) will be generated/);
  const r = sdtune(...args);
  assert.equal(r.code, 0, r.stderr);
  const classDir = join(tmp.dir, 'fw.safetensors.work', 'class-images');
  const captions = [0, 1, 2].map((i) => readFileSync(join(classDir, `class-000${i}.txt`), 'utf8'));
  assert.deepEqual(new Set(captions), new Set(['a photo, square, a red square, blue ground\n', 'a photo, square\n']));
  assert.equal(captions[0], captions[2], 'the prompts are cycled');
  assert.match(decodePng(readFileSync(join(classDir, 'class-0001.png'))).text.parameters, new RegExp(`^${captions[1].trim()}\n`));
});
