// The VAE against diffusers on the two tiny fixture variants (fixtures/vae, README §4): atol 1e-4.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as T from '../../src/torch/index.ts';
import { SafetensorsFile } from '../../src/formats/safetensors.ts';
import { AutoencoderKL } from '../../src/models/vae.ts';
import { vaeConfigFromDiffusers } from '../../src/models/config.ts';
import { DEVICE, assertClose, fixture } from '../helpers.ts';

const ATOL = 1e-4;

for (const variant of ['two_level', 'four_level'] as const) {
  test(`VAE ${variant}: encoder, posterior, sample and decode match diffusers`, () => {
    const cfg = vaeConfigFromDiffusers(JSON.parse(readFileSync(fixture('vae', variant, 'config.json'), 'utf8')));
    const file = SafetensorsFile.open(fixture('vae', variant, 'diffusion_pytorch_model.safetensors'));
    const vb = T.nn.VarBuilder.from(file, { device: DEVICE });
    const vae = new AutoencoderKL(vb, cfg);
    vb.finish({ what: `vae/${variant}` });
    const ins = SafetensorsFile.open(fixture('vae', 'inputs.safetensors'));
    const ref = SafetensorsFile.open(fixture('vae', variant, 'outputs.safetensors'));
    T.noGrad(() => T.tidy(() => {
      const img = ins.get('image').to(DEVICE);
      const p = vae.encode(img);
      const check = (got: T.Tensor, key: string) => {
        const r = ref.get(key);
        assert.deepEqual(got.shape, r.shape, key);
        const e = assertClose(got.toArray(), r.toArray(), ATOL, `${variant} ${key}`);
        console.log(`# vae ${variant} ${key}: max abs error ${e.toExponential(2)}`);
      };
      check(p.mean, 'posterior.mean');
      check(p.logvar, 'posterior.logvar');
      check(p.std, 'posterior.std');
      // latent_dist.sample(generator=Generator().manual_seed(99)) draws randn of the mean's shape.
      check(vae.sample(p, new T.Generator(99)), 'posterior.sample');
      check(vae.decode(p.mean), 'decode_of_mean');
    }));
    for (const f of [file, ins, ref]) f.close();
    vae.dispose();
  });
}
