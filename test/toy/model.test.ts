// The committed toy model (src/toy/model): it loads like any checkpoint and follows captions —
// shape, colour, background — for fixed seeds, as the toy world's judge reads its pictures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadStableDiffusion } from '../../src/models/load.ts';
import { generate } from '../../src/sampling/pipeline.ts';
import { decodePng } from '../../src/formats/png.ts';
import { TOY_JUDGE_PATH, TOY_MODEL_PATH } from '../../src/toy/model.ts';
import { loadJudge } from '../../src/toy/judge.ts';
import { parseCaption } from '../../src/toy/world.ts';
import { REPO, tempDir } from '../helpers.ts';

const PROMPTS = [
  'a large red circle in the center, on a black background',
  'a large blue square in the center, on an orange background',
  'a large yellow star in the center, on a gray background',
  'a large green triangle on the left, on a cyan background',
  'a large white heart on the right, on a striped black background',
  'a small purple circle at the top, on a gray background',
];

test('the embedded toy model draws the shapes, colours and backgrounds it is asked for (judge-scored)', () => {
  const m = loadStableDiffusion(TOY_MODEL_PATH);
  const { judge } = loadJudge(TOY_JUDGE_PATH);
  try {
    assert.equal(m.family, 'sd1');
    const right: Record<string, number> = { shape: 0, colour: 0, background: 0, pattern: 0, position: 0 };
    let n = 0;
    for (const prompt of PROMPTS) {
      const want = parseCaption(prompt);
      const images = generate(m, { prompt, seed: 11, batch: 4, steps: 15, sampler: 'dpmpp_2m', cfg: 5 }).map((g) => g.image);
      for (const v of judge.judge(images)) {
        for (const k of Object.keys(right) as (keyof typeof right & keyof typeof want)[]) right[k] += Number(v[k] === want[k]);
        n++;
      }
    }
    const rate = Object.fromEntries(Object.entries(right).map(([k, v]) => [k, v / n]));
    console.log(`# toy model follows captions (${n} pictures): ${JSON.stringify(rate)}`);
    for (const k of ['colour', 'background'] as const) assert.ok(rate[k] >= 0.8, `the toy model should follow ${k}s: ${rate[k]}`);
    assert.ok(rate.shape >= 0.5, `the toy model should follow shapes more often than not: ${rate.shape}`);
  } finally {
    judge.dispose();
    m.dispose();
  }
});

test('sdtune generate without --model uses the embedded toy model', () => {
  const { dir, cleanup } = tempDir();
  try {
    const out = join(dir, 'toy.png');
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(REPO, 'src/cli/main.ts'), 'generate', '--prompt', 'a large red circle in the center, on a black background', '--seed', '3', '--quiet', '--out', out], { cwd: REPO, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const png = decodePng(readFileSync(out));
    assert.deepEqual([png.width, png.height], [32, 32]);
    assert.match(png.text.parameters, /Model: toy-sd/);
  } finally {
    cleanup();
  }
});
