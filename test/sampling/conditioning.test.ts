// Prompt conditioning against the references, on the tiny fixture CLIP (fixtures README §2, §6):
// plain prompts equal diffusers 0.25 encode_prompt (clip skip as A1111 counts it), a textual-
// inversion word equals transformers with the token added, emphasis follows A1111's formula.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as T from '../../src/torch/index.ts';
import { SafetensorsFile } from '../../src/formats/safetensors.ts';
import { CLIPTextModel } from '../../src/models/clip.ts';
import { clipConfigFromTransformers } from '../../src/models/config.ts';
import { ClipTokenizer } from '../../src/text/tokenizer.ts';
import { Conditioning, encodeText, promptChunks, type TextConditioner } from '../../src/sampling/conditioning.ts';
import { assertClose, fixture } from '../helpers.ts';

const ATOL = 1e-4; // fixtures README: CLIP last_hidden_state
let io: SafetensorsFile;
let m: TextConditioner;

before(() => {
  const cfg = clipConfigFromTransformers(JSON.parse(readFileSync(fixture('clip_text', 'config.json'), 'utf8')));
  const file = SafetensorsFile.open(fixture('clip_text', 'model.safetensors'));
  const vb = T.nn.VarBuilder.from(file, {});
  const textEncoder = new CLIPTextModel(vb, cfg);
  vb.finish({ what: 'clip_text' });
  file.close();
  io = SafetensorsFile.open(fixture('clip_text', 'io.safetensors'));
  m = { tokenizer: ClipTokenizer.default(), textEncoder, padding: 'sd1', device: 'cpu' };
});
after(() => {
  m.textEncoder.dispose();
  io.close();
});

const PROMPTS = ['a photo of an astronaut riding a horse on mars', ''];
const NEGATIVES = ['lowres, bad anatomy', ''];

test('plain prompts equal diffusers encode_prompt, for every clip skip', () => {
  T.noGrad(() => T.tidy(() => {
    for (const [skip, a1111] of [['none', 1], ['1', 2], ['2', 3]] as const) {
      const want = io.get(`sd_encode_prompt.clip_skip_${skip}.prompt_embeds`);
      PROMPTS.forEach((p, b) => {
        const e = assertClose(encodeText(m, p, { clipSkip: a1111 }).toArray(), want.select(0, b).toArray(), ATOL, `clip skip ${a1111}, prompt ${b}`);
        console.log(`# encode_prompt clip skip ${a1111}, prompt ${b}: max abs error ${e.toExponential(2)}`);
      });
    }
    // diffusers 0.25 encodes negatives with the last layer whatever clip_skip is (README quirk).
    const neg = io.get('sd_encode_prompt.clip_skip_none.negative_prompt_embeds');
    NEGATIVES.forEach((p, b) => assertClose(encodeText(m, p).toArray(), neg.select(0, b).toArray(), ATOL, `negative ${b}`));
    // The ids are the tokenizer's max_length framing.
    assert.deepEqual(promptChunks(m, PROMPTS[0])[0].tokens, io.get('input_ids').select(0, 0).toArray());
  }));
});

test('a textual-inversion word equals transformers with the token added to the vocabulary', () => {
  const ti = SafetensorsFile.open(fixture('training', 'textual_inversion.safetensors'));
  T.noGrad(() => T.tidy(() => {
    const vectors = ti.get('new_row_init').reshape(1, -1);
    const embeddings = new Map([['<cat-toy>', vectors]]);
    const chunk = promptChunks(m, 'a photo of a <cat-toy>', { embeddings })[0];
    assert.deepEqual(chunk.tokens.slice(0, 7), [49406, 320, 1125, 539, 320, 0, 49407], 'one slot, held by id 0 as A1111 does');
    assert.deepEqual(chunk.embeddings, [{ name: '<cat-toy>', offset: 4, position: 5, vectors: 1 }]);
    const e = assertClose(encodeText(m, 'a photo of a <cat-toy>', { embeddings }).toArray(), ti.get('last_hidden_state').toArray(), ATOL, 'TI last_hidden_state');
    console.log(`# textual inversion: max abs error ${e.toExponential(2)}`);
    // A vector of the wrong width is refused with a sentence.
    assert.throws(() => encodeText(m, 'a <x>', { embeddings: new Map([['<x>', T.zeros([2, 768])]]) }), /vectors of size 768 but this model's text encoder uses 16: it was made for another model family/);
  }));
  ti.close();
});

test('emphasis: z·w rescaled to the original mean (A1111 EmphasisOriginal)', () => {
  T.noGrad(() => T.tidy(() => {
    const chunk = promptChunks(m, 'a (red:1.5) star')[0];
    assert.deepEqual(chunk.multipliers.slice(0, 5), [1, 1, 1.5, 1, 1]);
    const ids = T.tensor([chunk.tokens], { dtype: 'int64' });
    const z = m.textEncoder.forward(ids).lastHidden;
    const w = z.mul(T.tensor(chunk.multipliers).reshape(1, 77, 1));
    const want = w.mul(z.mean().div(w.mean()));
    assertClose(encodeText(m, 'a (red:1.5) star').toArray(), want.toArray(), 1e-6, 'emphasis');
    // BREAK closes a chunk: two chunks of 77.
    assert.deepEqual(encodeText(m, 'a red star BREAK a blue sky').shape, [1, 154, 16]);
  }));
});

test('prompt and negative of different lengths are padded with the empty prompt, as A1111 does', () => {
  T.noGrad(() => T.tidy(() => {
    const long = Array(30).fill('red star,').join(' ');
    const c = Conditioning.build(m, long, 'blurry', 20);
    try {
      assert.deepEqual(c.cond(0, 0).shape, [1, 154, 16]);
      assert.deepEqual(c.uncond(0).shape, [1, 154, 16]);
      const second = c.uncond(0).slice(1, 77, 154);
      assert.equal(second.sub(encodeText(m, '')).abs().max().item(), 0);
    } finally {
      c.dispose();
    }
  }));
});

test('the gradient reaching a textual-inversion vector equals transformers\' (fixture new_row_grad)', () => {
  const ti = SafetensorsFile.open(fixture('training', 'textual_inversion.safetensors'));
  const meta = JSON.parse(readFileSync(fixture('training', 'meta.json'), 'utf8')).textual_inversion;
  const vec = T.keep(ti.get('new_row_init').reshape(1, -1).clone()).requiresGrad_(true);
  const lossValue = T.tidy(() => {
    const z = encodeText(m, meta.prompt, { embeddings: new Map([['<cat-toy>', vec]]) });
    const loss = T.mseLoss(z, ti.get('target'));
    loss.backward();
    return loss.item();
  });
  assert.ok(Math.abs(lossValue - meta.loss) <= 1e-5 * meta.loss, `loss ${lossValue} vs ${meta.loss}`);
  const g = vec.grad!;
  const e = assertClose(g.reshape(-1).toArray(), ti.get('new_row_grad').toArray(), 1e-6, 'TI gradient');
  console.log(`# textual inversion gradient: max abs error ${e.toExponential(2)}`);
  g.dispose();
  vec.dispose();
  ti.close();
});
