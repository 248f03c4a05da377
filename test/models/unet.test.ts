// The UNet against diffusers' outputs on the tiny fixture models (fixtures/unet, README §3):
// atol 1e-4 per the fixture README's observed tolerances. Max errors are printed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as T from '../../src/torch/index.ts';
import { SafetensorsFile } from '../../src/formats/safetensors.ts';
import { UNet2DConditionModel } from '../../src/models/unet.ts';
import { unetConfigFromDiffusers } from '../../src/models/config.ts';
import { DEVICE, assertClose, fixture } from '../helpers.ts';

const ATOL = 1e-4;

function load(variant: 'sd1' | 'sd2'): UNet2DConditionModel {
  const cfg = unetConfigFromDiffusers(JSON.parse(readFileSync(fixture('unet', variant, 'config.json'), 'utf8')));
  const file = SafetensorsFile.open(fixture('unet', variant, 'diffusion_pytorch_model.safetensors'));
  const vb = T.nn.VarBuilder.from(file, { device: DEVICE });
  const unet = new UNet2DConditionModel(vb, cfg);
  vb.finish({ what: `unet/${variant}` });
  file.close();
  return unet;
}

for (const variant of ['sd1', 'sd2'] as const) {
  test(`UNet ${variant} matches diffusers for int, float and scalar timesteps`, () => {
    const unet = load(variant);
    const ins = SafetensorsFile.open(fixture('unet', 'inputs.safetensors'));
    const outs = SafetensorsFile.open(fixture('unet', variant, 'outputs.safetensors'));
    T.noGrad(() => T.tidy(() => {
      const sample = ins.get('sample').to(DEVICE);
      const ctx = ins.get('encoder_hidden_states').to(DEVICE);
      for (const kind of ['int', 'float', 'scalar']) {
        const t = ins.get(`timestep_${kind}`).to(DEVICE);
        const out = unet.forward(sample, t, ctx);
        const ref = outs.get(`out.timestep_${kind}`);
        assert.deepEqual(out.shape, ref.shape);
        const err = assertClose(out.toArray(), ref.toArray(), ATOL, `${variant} out.timestep_${kind}`);
        console.log(`# unet ${variant} timestep_${kind}: max abs error ${err.toExponential(2)}`);
      }
    }));
    ins.close();
    outs.close();
    unet.dispose();
  });
}

test('UNet sd1 parameter count and key set equal the diffusers file', () => {
  const unet = load('sd1');
  assert.equal(unet.numParameters(), 283284);
  const file = SafetensorsFile.open(fixture('unet', 'sd1', 'diffusion_pytorch_model.safetensors'));
  assert.deepEqual([...unet.stateDict().keys()].sort(), [...file.keys()].sort());
  file.close();
  unet.dispose();
});
