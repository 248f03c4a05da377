// The CLIP text encoder against transformers/diffusers on the tiny fixture (fixtures/clip_text,
// README §2): atol 1e-4; clip skip as A1111 counts it (diffusers' clip_skip=k is A1111's k+1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as T from '../../src/torch/index.ts';
import { SafetensorsFile } from '../../src/formats/safetensors.ts';
import { CLIPTextModel } from '../../src/models/clip.ts';
import { clipConfigFromTransformers } from '../../src/models/config.ts';
import { DEVICE, assertClose, fixture } from '../helpers.ts';

const ATOL = 1e-4;

function load(): CLIPTextModel {
  const cfg = clipConfigFromTransformers(JSON.parse(readFileSync(fixture('clip_text', 'config.json'), 'utf8')));
  const file = SafetensorsFile.open(fixture('clip_text', 'model.safetensors'));
  const vb = T.nn.VarBuilder.from(file, { device: DEVICE });
  const m = new CLIPTextModel(vb, cfg);
  vb.finish({ what: 'clip_text' });
  file.close();
  return m;
}

test('CLIP: hidden states, last hidden state and pooled output match transformers', () => {
  const clip = load();
  const io = SafetensorsFile.open(fixture('clip_text', 'io.safetensors'));
  T.noGrad(() => T.tidy(() => {
    const ids = io.get('input_ids').to(DEVICE);
    const out = clip.forward(ids, { keepHidden: true });
    const check = (got: T.Tensor, key: string) => {
      const e = assertClose(got.toArray(), io.get(key).toArray(), ATOL, key);
      console.log(`# clip ${key}: max abs error ${e.toExponential(2)}`);
    };
    check(out.lastHidden, 'last_hidden_state');
    for (let k = 0; k <= 3; k++) check(out.hidden[k], `hidden_states.${k}`);
    check(out.pooled, 'pooler_output');
  }));
  io.close();
  clip.dispose();
});

test('CLIP: clip skip equals diffusers encode_prompt (A1111 2 = diffusers 1)', () => {
  const clip = load();
  const io = SafetensorsFile.open(fixture('clip_text', 'io.safetensors'));
  T.noGrad(() => T.tidy(() => {
    const ids = io.get('input_ids').to(DEVICE);
    assertClose(clip.forward(ids).lastHidden.toArray(), io.get('sd_encode_prompt.clip_skip_none.prompt_embeds').toArray(), ATOL, 'skip none');
    assertClose(clip.forward(ids, { clipSkip: 2 }).lastHidden.toArray(), io.get('sd_encode_prompt.clip_skip_1.prompt_embeds').toArray(), ATOL, 'A1111 skip 2');
    assertClose(clip.forward(ids, { clipSkip: 3 }).lastHidden.toArray(), io.get('sd_encode_prompt.clip_skip_2.prompt_embeds').toArray(), ATOL, 'A1111 skip 3');
    assert.throws(() => clip.forward(ids, { clipSkip: 9 }), /clip skip 9 is more than the encoder's 3 layers/);
  }));
  io.close();
  clip.dispose();
});

test('CLIP: the key set is transformers\' own', () => {
  const clip = load();
  const file = SafetensorsFile.open(fixture('clip_text', 'model.safetensors'));
  assert.deepEqual([...clip.stateDict().keys()].sort(), [...file.keys()].sort());
  file.close();
  clip.dispose();
});
