// The toy model's from-scratch training, shortened: both stages run, the product is an LDM
// single file that loads like any checkpoint and generates 32×32 images; a second run resumes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pretrainToy, TOY_UNET } from '../../src/toy/pretrain.ts';
import { loadStableDiffusion } from '../../src/models/load.ts';
import { generate } from '../../src/sampling/pipeline.ts';
import { SafetensorsFile } from '../../src/formats/safetensors.ts';
import { tempDir } from '../helpers.ts';

test('pretraining the toy model: VAE, then text encoder + UNet; the checkpoint loads and generates', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const out = join(dir, 'toy.safetensors');
    const work = join(dir, 'work');
    const r = await pretrainToy({ scenes: 32, vaeSteps: 3, steps: 3, batch: 8, workDir: work, out });
    assert.equal(r.status, 'done');
    assert.ok(Number.isFinite(r.vaeLoss) && Number.isFinite(r.loss));
    assert.ok(existsSync(join(work, 'vae.safetensors')), 'stage 1 is kept for resuming');
    const f = SafetensorsFile.open(out);
    assert.deepEqual(new Set(f.entries().map((e) => e.dtype)), new Set(['F16', 'I64']));
    f.close();
    const m = loadStableDiffusion(out);
    try {
      assert.deepEqual(m.unet.cfg.blockOutChannels, TOY_UNET.blockOutChannels);
      assert.ok(m.vae.cfg.scalingFactor > 0 && m.vae.cfg.scalingFactor !== 1, `scaling factor from the latents' spread (${m.vae.cfg.scalingFactor})`);
      const [img] = generate(m, { prompt: 'a large red circle in the center, on a black background', steps: 2, seed: 1 });
      assert.deepEqual([img.image.width, img.image.height], [32, 32]);
    } finally {
      m.dispose();
    }
    // Longer: resumes from the checkpoint and the kept VAE.
    const r2 = await pretrainToy({ scenes: 32, vaeSteps: 3, steps: 4, batch: 8, workDir: work, out });
    assert.equal(r2.status, 'done');
    assert.ok(Number.isNaN(r2.vaeLoss), 'the VAE was not trained again');
  } finally {
    cleanup();
  }
});
