// LDM ↔ diffusers key maps and conversion (sd-formats.md §4), family/kind detection (§4.5) and
// EMA pruning (§4.6). Ground truth: appendix/*.tsv, fixtures/full_sd15_keys and the tiny fixtures.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as T from '../../src/torch/index.ts';
import {
  SD1_CLIP_KEYS_CONFIG, SD1_UNET_KEYS_CONFIG, SD2_CLIP_KEYS_CONFIG, SD2_UNET_KEYS_CONFIG, SD_VAE_KEYS_CONFIG,
  clipTextKeyShapes, detectFamily, detectKind, detectObject, diffusersKeyToLdm, diffusersShapesToLdm, diffusersToLdm,
  emaInfo, emaKeyFor, layoutFromKeys, ldmKeyToDiffusers, ldmShapesToDiffusers, ldmToDiffusers, normalizeDiffusersVaeKey,
  pruneEma, unetKeyShapes, unetLayoutFromKeys, vaeFileToDiffusers, diffusersVaeToFile, vaeKeyShapes, type KeyShapes, type StateDict,
} from '../../src/formats/layouts/index.ts';
import { fixture } from '../helpers.ts';
import {
  assertSameKeyShapes, assertSameStateDict, assertSameTensor, disposeAll, fullDiffusersKeys, fullLdmKeys, loadFixture, parseShape, readTsv,
} from './layouts-helpers.ts';

const SD1_LAYOUT = layoutFromKeys(readTsv('sd1_unet_ldm_diffusers.tsv').map((r) => r[0]));

describe('appendix tables, key by key', () => {
  for (const [file, family, cfg] of [['sd1_unet_ldm_diffusers.tsv', 'sd1', SD1_UNET_KEYS_CONFIG], ['sd2_unet_ldm_diffusers.tsv', 'sd2', SD2_UNET_KEYS_CONFIG]] as const) {
    test(`${file}: every key maps both ways; generated shapes match`, () => {
      const rows = readTsv(file);
      assert.equal(rows.length, 686);
      const layout = layoutFromKeys(rows.map((r) => r[0]));
      assert.equal(layout.unet.layersPerBlock, 2);
      assert.deepEqual([...layout.unet.upLevelsWithAttention].sort(), [1, 2, 3]);
      const diff: KeyShapes = new Map();
      for (const [ldm, d, shape] of rows) {
        assert.deepEqual(ldmKeyToDiffusers(ldm, layout), { component: 'unet', keys: [d], op: 'same' }, ldm);
        assert.equal(diffusersKeyToLdm('unet', d, family, layout), ldm, d);
        diff.set(d, parseShape(shape));
      }
      assertSameKeyShapes(unetKeyShapes(cfg), diff, 'generated UNet keys');
    });
  }

  test('sd_vae_ldm_diffusers.tsv: keys both ways, [C,C,1,1] ↔ [C,C] for the attention weights only', () => {
    const rows = readTsv('sd_vae_ldm_diffusers.tsv');
    assert.equal(rows.length, 248);
    const ldm: KeyShapes = new Map(rows.map((r) => [r[0], parseShape(r[2])]));
    const want: KeyShapes = new Map(rows.map((r) => [r[1], parseShape(r[3])]));
    const layout = layoutFromKeys(ldm.keys());
    assert.equal(layout.vae.levels, 4);
    for (const [l, d] of rows) {
      const m = ldmKeyToDiffusers(l, layout);
      assert.equal(m?.keys[0], d, l);
      assert.equal(diffusersKeyToLdm('vae', d, 'sd1', layout), l, d);
    }
    const conv = ldmShapesToDiffusers(ldm);
    assertSameKeyShapes(conv.vae, want, 'converted VAE shapes');
    assertSameKeyShapes(vaeKeyShapes(SD_VAE_KEYS_CONFIG), want, 'generated VAE keys');
    assertSameKeyShapes(diffusersShapesToLdm({ vae: want }, 'sd1'), ldm, 'VAE back to LDM');
    // Legacy diffusers attention names are read as the modern ones (§4.3).
    assert.equal(normalizeDiffusersVaeKey('decoder.mid_block.attentions.0.query.weight'), 'decoder.mid_block.attentions.0.to_q.weight');
    assert.equal(normalizeDiffusersVaeKey('encoder.mid_block.attentions.0.proj_attn.bias'), 'encoder.mid_block.attentions.0.to_out.0.bias');
    assert.equal(diffusersKeyToLdm('vae', 'encoder.mid_block.attentions.0.key.weight', 'sd1', layout), 'first_stage_model.encoder.mid.attn_1.k.weight');
  });

  test('sd1_text_encoder_ldm_diffusers.tsv: prefix change; position_ids ignored on read', () => {
    const rows = readTsv('sd1_text_encoder_ldm_diffusers.tsv');
    assert.equal(rows.length, 197);
    const want: KeyShapes = new Map();
    for (const [l, d, shape] of rows) {
      const m = ldmKeyToDiffusers(l, SD1_LAYOUT);
      if (d.endsWith('position_ids')) {
        assert.equal(m, null);
        continue;
      }
      assert.deepEqual(m, { component: 'textEncoder', keys: [d], op: 'same' });
      assert.equal(diffusersKeyToLdm('textEncoder', d, 'sd1', SD1_LAYOUT), l);
      want.set(d, parseShape(shape));
    }
    assertSameKeyShapes(clipTextKeyShapes(SD1_CLIP_KEYS_CONFIG), want, 'generated CLIP-L keys');
    // Older transformers files lack `text_model.`; transformers ≥ 5.6 state dicts lack it on the diffusers side (§4.1, §4.4).
    assert.deepEqual(ldmKeyToDiffusers('cond_stage_model.transformer.encoder.layers.0.mlp.fc1.bias', SD1_LAYOUT)?.keys, ['text_model.encoder.layers.0.mlp.fc1.bias']);
    assert.equal(diffusersKeyToLdm('textEncoder', 'final_layer_norm.weight', 'sd1', SD1_LAYOUT), 'cond_stage_model.transformer.text_model.final_layer_norm.weight');
  });

  test('sd2_text_encoder_ldm_diffusers.tsv: OpenCLIP names, packed in_proj split, last block dropped', () => {
    const rows = readTsv('sd2_text_encoder_ldm_diffusers.tsv');
    const want = clipTextKeyShapes(SD2_CLIP_KEYS_CONFIG);
    const got = new Set<string>();
    let dropped = 0;
    for (const [l, d, shape] of rows) {
      const m = ldmKeyToDiffusers(l, SD1_LAYOUT);
      if (d.startsWith('(none')) {
        assert.equal(m, null, l);
        dropped++;
        continue;
      }
      assert.ok(m !== null, l);
      if (d.includes('{q,k,v}')) {
        assert.equal(m.op, 'splitQkv');
        const s = parseShape(shape);
        for (const [i, k] of m.keys.entries()) {
          assert.equal(k, d.replace(/\{q,k,v\}/, 'qkv'[i]).replace(/ \(.*$/, ''));
          assert.deepEqual(want.get(k), [s[0] / 3, ...s.slice(1)], k);
          assert.equal(diffusersKeyToLdm('textEncoder', k, 'sd2', SD1_LAYOUT), l);
        }
      } else {
        assert.deepEqual(m.keys, [d]);
        assert.deepEqual(want.get(d), parseShape(shape), d);
        assert.equal(diffusersKeyToLdm('textEncoder', d, 'sd2', SD1_LAYOUT), l);
      }
      for (const k of m.keys) got.add(k);
    }
    assert.equal(dropped, 12 + 2); // resblocks.23.* and text_projection, logit_scale
    assert.deepEqual([...got].sort(), [...want.keys()].sort());
  });
});

describe('full SD1.5 / SD2 key listings (fixtures/full_sd15_keys)', () => {
  for (const [ldmName, diffName, family] of [['sd15_ldm', 'sd15_diffusers', 'sd1'], ['sd2_ldm', 'sd2_diffusers', 'sd2']] as const) {
    test(`${ldmName} ↔ ${diffName}: every key and shape, both ways`, () => {
      const ldm = fullLdmKeys(ldmName);
      const diff = fullDiffusersKeys(diffName);
      const conv = ldmShapesToDiffusers(ldm);
      assert.deepEqual(conv.ignored, []);
      assert.equal(conv.family.family, family);
      assertSameKeyShapes(conv.unet, diff.unet, 'unet');
      assertSameKeyShapes(conv.vae, diff.vae, 'vae');
      assertSameKeyShapes(conv.textEncoder, diff.textEncoder, 'text encoder');
      const back = diffusersShapesToLdm(diff, family, { positionIds: false, sd2TextExtras: 'omit' });
      assertSameKeyShapes(back, ldm, 'back to LDM');
    });
  }

  test('SD2 export supplies block 23, text_projection and logit_scale the way kohya does (§4.4)', () => {
    const out = diffusersShapesToLdm(fullDiffusersKeys('sd2_diffusers'), 'sd2');
    const ldm = fullLdmKeys('sd2_ldm');
    const extra = [...out.keys()].filter((k) => !ldm.has(k));
    assert.equal(extra.length, 12 + 2);
    assert.deepEqual(out.get('cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight'), [3072, 1024]);
    assert.deepEqual(out.get('cond_stage_model.model.text_projection'), [1024, 1024]);
    assert.deepEqual(out.get('cond_stage_model.model.logit_scale'), []);
  });
});

/**
 * Random tensors under every key of a full listing: tiny where only the key matters, real full
 * shapes where conversion changes the shape (VAE attention weights; SD2's packed in_proj of the
 * first and last kept block; the other 21 blocks take the same path, and their full shapes are
 * checked key by key above: full-size tensors for all 23 would cost ~1 GB of traffic per test).
 */
function randomCheckpoint(keys: KeyShapes): StateDict {
  const sd: StateDict = new Map();
  for (const [k, s] of keys) {
    const full = /mid\.attn_1\.(q|k|v|proj_out)\.weight$/.test(k) || /resblocks\.(0|22)\.attn\.in_proj_(weight|bias)$/.test(k);
    sd.set(k, T.randn(full ? s : s.length === 0 ? [] : [3]));
  }
  return sd;
}

describe('tensor round trip LDM → diffusers → LDM on the full SD1.5 and SD2 key sets', () => {
  test('SD1.5 with position_ids, DDPM buffers and EMA copies: exact keys, shapes and values', () => {
    const keys = fullLdmKeys('sd15_ldm');
    const src = randomCheckpoint(keys);
    src.set('cond_stage_model.transformer.text_model.embeddings.position_ids', T.arange(0, 77, 1, { dtype: 'int64' }).reshape(1, 77));
    src.set('alphas_cumprod', T.rand([1000]));
    src.set('model_ema.decay', T.tensor(0.9999));
    src.set(emaKeyFor('model.diffusion_model.out.2.weight'), T.randn([3]));
    const conv = ldmToDiffusers(src);
    try {
      assert.equal(conv.family.family, 'sd1');
      assert.deepEqual(conv.ignored.sort(), ['alphas_cumprod', 'cond_stage_model.transformer.text_model.embeddings.position_ids', 'model_ema.decay', 'model_ema.diffusion_modelout2weight']);
      assert.equal(conv.unet.size + conv.vae.size + conv.textEncoder.size, 1130);
      // The VAE attention weights lose their trailing 1x1 and keep their values (§4.3).
      const q = conv.vae.get('decoder.mid_block.attentions.0.to_q.weight')!;
      assert.deepEqual(q.shape, [512, 512]);
      assertSameTensor(q.reshape(512, 512, 1, 1), src.get('first_stage_model.decoder.mid.attn_1.q.weight')!, 'q');
      assert.deepEqual(conv.vae.get('decoder.mid_block.attentions.0.to_q.bias')!.shape, [3]);
      const back = diffusersToLdm(conv, 'sd1', { extras: conv.extras });
      try {
        assertSameStateDict(back, src, 'SD1.5 round trip');
      } finally {
        disposeAll(back);
      }
    } finally {
      disposeAll(src, conv.unet, conv.vae, conv.textEncoder, conv.extras);
    }
  });

  test('SD2 with the unused block 23 and text_projection: exact; q/k/v are the in_proj row blocks', () => {
    const keys = fullLdmKeys('sd2_ldm');
    for (const [k, s] of [...keys]) {
      if (k.includes('resblocks.22.')) keys.set(k.replace('.22.', '.23.'), s);
    }
    keys.set('cond_stage_model.model.text_projection', [1024, 1024]);
    keys.set('cond_stage_model.model.logit_scale', []);
    const src = randomCheckpoint(keys);
    const conv = ldmToDiffusers(src);
    try {
      assert.equal(conv.family.family, 'sd2');
      assert.equal(conv.family.prediction, 'unknown');
      assert.equal(conv.ignored.length, 14);
      assert.equal(conv.textEncoder.size, 372);
      const packed = src.get('cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight')!;
      ['q', 'k', 'v'].forEach((x, i) => {
        const part = conv.textEncoder.get(`text_model.encoder.layers.22.self_attn.${x}_proj.weight`)!;
        assert.deepEqual(part.shape, [1024, 1024]);
        assertSameTensor(part.contiguous(), packed.narrow(0, 1024 * i, 1024).contiguous(), `${x}_proj`);
      });
      const back = diffusersToLdm(conv, 'sd2', { extras: conv.extras });
      try {
        assertSameStateDict(back, src, 'SD2 round trip');
      } finally {
        disposeAll(back);
      }
    } finally {
      disposeAll(src, conv.unet, conv.vae, conv.textEncoder, conv.extras);
    }
  });

  test('SDXL checkpoints are refused with a sentence', () => {
    const sd: StateDict = new Map([['conditioner.embedders.1.model.ln_final.weight', T.zeros([4])]]);
    assert.throws(() => ldmToDiffusers(sd), /SDXL.*SD1 and SD2/);
    disposeAll(sd);
  });
});

describe('tiny fixtures, bit-exact both ways', () => {
  test('unet/sd1: ldm_unet ↔ diffusion_pytorch_model', () => {
    const ldm = loadFixture('unet', 'sd1', 'ldm_unet.safetensors').sd;
    const diff = loadFixture('unet', 'sd1', 'diffusion_pytorch_model.safetensors').sd;
    const conv = ldmToDiffusers(ldm);
    const back = diffusersToLdm({ unet: diff }, 'sd1');
    try {
      assert.deepEqual(conv.layout.unet.layersPerBlock, 2);
      assert.deepEqual([...conv.layout.unet.upLevelsWithAttention], [1]);
      assert.deepEqual(conv.ignored, []);
      assertSameStateDict(conv.unet, diff, 'ldm → diffusers');
      assertSameStateDict(back, ldm, 'diffusers → ldm');
    } finally {
      disposeAll(ldm, diff, back, conv.unet);
    }
  });

  test('unet/sd2: diffusers → LDM names equal meta.json diffusers_to_ldm_key_map, and back', () => {
    const meta = JSON.parse(readFileSync(fixture('unet', 'meta.json'), 'utf8')) as { sd2: { diffusers_to_ldm_key_map: Record<string, string> } };
    const diff = loadFixture('unet', 'sd2', 'diffusion_pytorch_model.safetensors').sd;
    const ldm = diffusersToLdm({ unet: diff }, 'sd2');
    const again = ldmToDiffusers(ldm);
    try {
      const map = meta.sd2.diffusers_to_ldm_key_map;
      assert.equal(Object.keys(map).length, diff.size);
      for (const [d, l] of Object.entries(map)) assertSameTensor(ldm.get(l)!, diff.get(d)!, d);
      assertSameStateDict(again.unet, diff, 'SD2 round trip');
      assert.equal(again.family.family, 'sd2');
      assert.equal(again.family.standard, false);
    } finally {
      disposeAll(diff, ldm, again.unet);
    }
  });

  for (const variant of ['two_level', 'four_level']) {
    test(`vae/${variant}: ldm_vae ↔ diffusers`, () => {
      const ldm = loadFixture('vae', variant, 'ldm_vae.safetensors').sd;
      const diff = loadFixture('vae', variant, 'diffusion_pytorch_model.safetensors').sd;
      const conv = ldmToDiffusers(ldm);
      const back = diffusersToLdm({ vae: diff }, 'sd1');
      try {
        assert.equal(conv.layout.vae.levels, variant === 'two_level' ? 2 : 4);
        assert.equal(ldm.get('first_stage_model.encoder.mid.attn_1.q.weight')!.ndim, 4);
        assert.equal(ldm.get('first_stage_model.encoder.mid.attn_1.q.bias')!.ndim, 1);
        assertSameStateDict(conv.vae, diff, 'ldm → diffusers');
        assertSameStateDict(back, ldm, 'diffusers → ldm');
      } finally {
        disposeAll(ldm, diff, back, conv.vae);
      }
    });
  }

  test('standalone VAE files: bare LDM names (A1111 .vae.pt) and diffusers names', () => {
    const ldm = loadFixture('vae', 'four_level', 'ldm_vae.safetensors').sd;
    const diff = loadFixture('vae', 'four_level', 'diffusion_pytorch_model.safetensors').sd;
    const bare: StateDict = new Map([...ldm].map(([k, t]) => [k.replace('first_stage_model.', ''), t]));
    const a = vaeFileToDiffusers(bare);
    const b = vaeFileToDiffusers(diff);
    const file = diffusersVaeToFile(diff);
    try {
      assertSameStateDict(a, diff, 'bare LDM → diffusers');
      assertSameStateDict(b, diff, 'diffusers → diffusers');
      assertSameStateDict(file, bare, 'diffusers → bare LDM');
      assert.equal(detectKind(bare).details.layout, 'ldm-bare');
      assert.throws(() => vaeFileToDiffusers(new Map([['model.diffusion_model.out.0.bias', diff.get('quant_conv.bias')!]])), /not VAE weights/);
    } finally {
      disposeAll(ldm, diff, a, b, file);
    }
  });

  test('clip_text: diffusers → SD1 LDM adds position_ids int64 [1,77]; back is exact', () => {
    const te = loadFixture('clip_text', 'model.safetensors').sd;
    const ldm = diffusersToLdm({ textEncoder: te }, 'sd1');
    const again = ldmToDiffusers(ldm);
    try {
      assert.equal(ldm.size, te.size + 1);
      const ids = ldm.get('cond_stage_model.transformer.text_model.embeddings.position_ids')!;
      assert.equal(ids.dtype, 'int64');
      assert.deepEqual(ids.toArray(), [...Array(77).keys()]);
      assertSameStateDict(again.textEncoder, te, 'round trip');
      assert.deepEqual(again.ignored, ['cond_stage_model.transformer.text_model.embeddings.position_ids']);
    } finally {
      disposeAll(te, ldm, again.textEncoder, again.extras);
    }
  });
});

describe('family and kind detection (§4.5)', () => {
  const fixtureKeys = (...p: string[]): { keys: KeyShapes; sd: StateDict; metadata: Record<string, string> } => {
    const { sd, metadata } = loadFixture(...p);
    return { keys: new Map([...sd].map(([k, t]) => [k, t.shape])), sd, metadata };
  };

  test('each tiny fixture', () => {
    const cases: [string[], string, string, string][] = [
      [['unet', 'sd1', 'ldm_unet.safetensors'], 'unet', 'sd1', 'ldm'],
      [['unet', 'sd1', 'diffusion_pytorch_model.safetensors'], 'unet', 'sd1', 'diffusers'],
      [['unet', 'sd2', 'diffusion_pytorch_model.safetensors'], 'unet', 'sd2', 'diffusers'],
      [['vae', 'two_level', 'ldm_vae.safetensors'], 'vae', 'unknown', 'ldm'],
      [['vae', 'four_level', 'diffusion_pytorch_model.safetensors'], 'vae', 'unknown', 'diffusers'],
      [['clip_text', 'model.safetensors'], 'text-encoder', 'sd1', 'diffusers'],
      [['training', 'lora_init.safetensors'], 'lora-kohya', 'sd1', 'kohya'],
    ];
    for (const [path, kind, family, layout] of cases) {
      const { sd, metadata } = fixtureKeys(...path);
      try {
        const d = detectKind(sd, { metadata });
        assert.equal(d.kind, kind, path.join('/'));
        assert.equal(d.family.family, family, `${path.join('/')}: ${d.family.reason}`);
        assert.equal(d.details.layout, layout, path.join('/'));
        assert.ok(d.messages.length > 0);
      } finally {
        disposeAll(sd);
      }
    }
  });

  test('tiny SD2 UNet: prediction type cannot be told from keys, and it says so', () => {
    const { keys, sd } = fixtureKeys('unet', 'sd2', 'diffusion_pytorch_model.safetensors');
    const d = detectKind(keys);
    assert.equal(d.family.prediction, 'unknown');
    assert.ok(d.messages.some((m) => /v or epsilon/.test(m)), d.messages.join('\n'));
    assert.equal(detectFamily(new Map([...keys, ['v_pred', [0]]])).family, 'sd2-v');
    assert.equal(detectFamily(keys, { metadata: { 'modelspec.prediction_type': 'epsilon' } }).prediction, 'epsilon');
    disposeAll(sd);
  });

  test('full SD1.5 / SD2 checkpoints; partial ones name what is missing', () => {
    const sd15 = fullLdmKeys('sd15_ldm');
    const d = detectKind(sd15);
    assert.equal(d.kind, 'checkpoint');
    assert.equal(d.family.family, 'sd1');
    assert.equal(d.family.prediction, 'epsilon');
    for (const c of ['unet', 'vae', 'textEncoder'] as const) {
      assert.deepEqual(d.details.components?.[c]?.missing, []);
      assert.deepEqual(d.details.components?.[c]?.shapeMismatches, []);
    }
    assert.equal(d.messages[0], 'This looks like an SD1 checkpoint.');

    const unetOnly: KeyShapes = new Map([...sd15].filter(([k]) => k.startsWith('model.diffusion_model.') && !k.startsWith('model.diffusion_model.out.2')));
    const u = detectKind(unetOnly);
    assert.equal(u.kind, 'unet');
    assert.equal(u.messages[0], 'This looks like an SD1 UNet; missing model.diffusion_model.out.2.weight, model.diffusion_model.out.2.bias.');

    const noVae: KeyShapes = new Map([...sd15].filter(([k]) => !k.startsWith('first_stage_model.')));
    assert.ok(detectKind(noVae).messages.some((m) => m.includes('no VAE weights')));

    const sd2 = detectKind(fullLdmKeys('sd2_ldm'));
    assert.equal(sd2.family.family, 'sd2');
    assert.equal(sd2.family.prediction, 'unknown');
    assert.deepEqual(sd2.details.components?.textEncoder?.missing, []);
    const sd2v = detectKind(fullLdmKeys('sd2_ldm'), { metadata: { 'modelspec.prediction_type': 'v' } });
    assert.equal(sd2v.family.family, 'sd2-v');
    assert.equal(detectKind(fullLdmKeys('sd2_ldm'), { globalStep: 875000 }).family.prediction, 'epsilon');

    const inpaint = new Map(sd15);
    inpaint.set('model.diffusion_model.input_blocks.0.0.weight', [320, 9, 3, 3]);
    assert.equal(detectFamily(inpaint).variant, 'inpaint');
  });

  test('SD2 v-prediction from tensor values (ComfyUI heuristic)', () => {
    const key = 'model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias';
    const keys: KeyShapes = new Map([['model.diffusion_model.input_blocks.1.1.proj_in.weight', [320, 320]], [key, [4]]]);
    const wide: StateDict = new Map([[key, T.tensor([0.2, -0.2, 0.2, -0.2])]]);
    const narrow: StateDict = new Map([[key, T.tensor([0.01, -0.01, 0.01, -0.01])]]);
    assert.equal(detectFamily(keys, { tensors: wide }).family, 'sd2-v');
    assert.equal(detectFamily(keys, { tensors: narrow }).prediction, 'epsilon');
    disposeAll(wide, narrow);
  });

  test('synthetic SDXL key sets are recognised and refused clearly', () => {
    const ckpt: KeyShapes = new Map([
      ['conditioner.embedders.1.model.ln_final.weight', [1280]],
      ['model.diffusion_model.label_emb.0.0.weight', [1280, 2816]],
      ['model.diffusion_model.input_blocks.0.0.weight', [320, 4, 3, 3]],
    ]);
    const d = detectKind(ckpt);
    assert.equal(d.family.family, 'sdxl');
    assert.equal(d.family.supported, false);
    assert.match(d.messages[0], /SDXL.*not supported yet/);
    const unet: KeyShapes = new Map([['conv_in.weight', [320, 4, 3, 3]], ['down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight', [640, 2048]], ['add_embedding.linear_1.weight', [1280, 2816]]]);
    assert.equal(detectKind(unet).family.family, 'sdxl');
    assert.equal(detectKind(unet).kind, 'unet');
  });

  test('adapters and unknown files', () => {
    assert.equal(detectKind(new Map([['unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight', [4, 320]], ['unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight', [320, 4]]])).kind, 'lora-peft');
    const ti = detectKind(new Map([['emb_params', [2, 768]]]));
    assert.deepEqual([ti.kind, ti.family.family, ti.details.layout], ['embedding', 'sd1', 'kohya']);
    assert.equal(detectKind(new Map([['clip_l', [2, 768]], ['clip_g', [2, 1280]]])).family.family, 'sdxl');
    assert.equal(detectKind(new Map([['<cat-toy>', [1, 1024]]])).family.family, 'sd2');
    const junk = detectKind(new Map([['foo.bar', [3]], ['baz', [2, 2]]]));
    assert.equal(junk.kind, 'unknown');
    assert.match(junk.family.reason, /foo\.bar/);
    const hn = detectObject(new Map<string | number, unknown>([[768, [new Map(), new Map()]], ['layer_structure', [1, 2, 1]]]));
    assert.deepEqual([hn.kind, hn.family.family], ['hypernetwork', 'sd1']);
    const a1111 = detectObject({ string_to_token: { '*': 265 }, string_to_param: { '*': { shape: [3, 1024], load: () => T.zeros([3, 1024]) } }, name: 'x', step: 0 });
    assert.deepEqual([a1111.kind, a1111.family.family, a1111.details.embedding?.vectors], ['embedding', 'sd2', 3]);
  });
});

describe('EMA (§4.6)', () => {
  test('emaKeyFor and pruneEma both ways', () => {
    assert.equal(emaKeyFor('model.diffusion_model.input_blocks.0.0.weight'), 'model_ema.diffusion_modelinput_blocks00weight');
    const a = 'model.diffusion_model.out.2.weight', b = 'model.diffusion_model.out.2.bias';
    const sd: StateDict = new Map([
      [a, T.zeros([2])], [b, T.zeros([2])], ['first_stage_model.quant_conv.bias', T.zeros([8])], ['betas', T.zeros([1000])],
      [emaKeyFor(a), T.ones([2])], ['model_ema.decay', T.tensor(0.9999)], ['model_ema.num_updates', T.tensor(7, { dtype: 'int32' })],
    ]);
    const info = emaInfo(sd.keys());
    assert.deepEqual(info, { count: 1, matched: 1, likelyFullEma: false });
    const ema = pruneEma(sd, 'ema');
    assert.equal(ema.replaced, 1);
    assert.deepEqual(ema.missingEma, [b]);
    assert.deepEqual([...ema.sd.keys()], [a, b, 'first_stage_model.quant_conv.bias']);
    assert.deepEqual(ema.sd.get(a)!.toArray(), [1, 1]);
    const plain = pruneEma(sd, 'non-ema', { keepBuffers: true });
    assert.deepEqual([...plain.sd.keys()], [a, b, 'first_stage_model.quant_conv.bias', 'betas']);
    assert.deepEqual(plain.sd.get(a)!.toArray(), [0, 0]);
    assert.throws(() => pruneEma(new Map([[a, sd.get(a)!]]), 'ema'), /no EMA weights/);
    disposeAll(sd, ema.sd, plain.sd);
  });

  test('unetLayoutFromKeys reads layers_per_block from either naming', () => {
    assert.equal(unetLayoutFromKeys(['model.diffusion_model.input_blocks.4.0.op.weight', 'model.diffusion_model.input_blocks.1.0.in_layers.0.weight']).layersPerBlock, 3);
    assert.equal(unetLayoutFromKeys(['down_blocks.0.resnets.0.conv1.weight']).layersPerBlock, 1);
  });
});
