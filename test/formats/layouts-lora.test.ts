// LoRA layouts (sd-formats.md §5.1–§5.5): kohya ↔ PEFT, name resolution against real module
// paths, A1111 layer names, kohya metadata.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as T from '../../src/torch/index.ts';
import {
  SD1_CLIP_KEYS_CONFIG, SD1_UNET_KEYS_CONFIG, a1111LayerName, addnetHashes, buildKohyaIndex, clipTextKeyShapes, familyFromLoraMetadata,
  kohyaMetadata, kohyaName, loraFromKohya, loraFromPeft, loraToKohya, loraToPeft, modulePathsFromKeys, pyFloat, pyJson,
  summarizeLoraKeys, unetKeyShapes, unetLayoutFromKeys, type LoraFile, type StateDict,
} from '../../src/formats/layouts/index.ts';
import { assertSameStateDict, assertSameTensor, disposeAll, loadFixture, parseShape, readTsv } from './layouts-helpers.ts';

const SD1_UNET = unetKeyShapes(SD1_UNET_KEYS_CONFIG);
const SD1_TE = clipTextKeyShapes(SD1_CLIP_KEYS_CONFIG);
const SD1_PATHS = { unet: modulePathsFromKeys(SD1_UNET.keys()), textEncoder: modulePathsFromKeys(SD1_TE.keys()) };

function disposeLora(l: LoraFile): void {
  for (const m of l.modules.values()) {
    m.down.dispose();
    m.up.dispose();
    m.mid?.dispose();
  }
}

describe('kohya names (§5.1, appendix sd1_lora_modules.tsv)', () => {
  test('every SD1 module: kohya name, PEFT path, A1111 layer name and shapes', () => {
    const rows = readTsv('sd1_lora_modules.tsv');
    assert.equal(rows.length, 354);
    const index = buildKohyaIndex(SD1_PATHS);
    const layout = unetLayoutFromKeys(SD1_PATHS.unet);
    const counts = new Map<string, number>();
    for (const [targeted, kohya, a1111, peft, shape, down, up] of rows) {
      counts.set(targeted, (counts.get(targeted) ?? 0) + 1);
      assert.equal(kohyaName(peft), kohya);
      assert.equal(index.get(kohya), peft, kohya);
      assert.equal(a1111LayerName(peft, 'sd1', layout), a1111, peft);
      const path = peft.replace(/^(unet|text_encoder)\./, '');
      const w = (peft.startsWith('unet.') ? SD1_UNET : SD1_TE).get(`${path}.weight`);
      assert.deepEqual(w, parseShape(shape), peft);
      // lora_down keeps the kernel, lora_up is 1x1 (§5.1 shapes table).
      assert.deepEqual(parseShape(down.replace('r', '4')), [4, ...w!.slice(1)]);
      assert.deepEqual(parseShape(up.replace('r', '4')), [w![0], 4, ...(w!.length === 4 ? [1, 1] : [])]);
    }
    assert.equal(counts.get('default'), 192);
    assert.equal(counts.get('default(te)'), 72);
  });

  test('LDM-style UNet names (SDXL kohya, A1111-era files) resolve to the same modules', () => {
    const index = buildKohyaIndex(SD1_PATHS);
    assert.equal(index.get('lora_unet_input_blocks_1_1_proj_in'), 'unet.down_blocks.0.attentions.0.proj_in');
    assert.equal(index.get('lora_unet_output_blocks_5_2_conv'), 'unet.up_blocks.1.upsamplers.0.conv');
    assert.equal(index.get('lora_unet_middle_block_0_in_layers_2'), 'unet.mid_block.resnets.0.conv1');
    assert.equal(index.get('lora_te1_text_model_encoder_layers_3_mlp_fc2'), 'text_encoder.text_model.encoder.layers.3.mlp.fc2');
  });

  test('SD2 A1111 text layer names use OpenCLIP paths', () => {
    const layout = unetLayoutFromKeys(SD1_PATHS.unet);
    assert.equal(a1111LayerName('text_encoder.text_model.encoder.layers.4.self_attn.out_proj', 'sd2', layout), 'model_transformer_resblocks_4_attn_out_proj');
    assert.equal(a1111LayerName('text_encoder.text_model.encoder.layers.4.mlp.fc1', 'sd2', layout), 'model_transformer_resblocks_4_mlp_c_fc');
  });
});

describe('kohya ↔ PEFT on training/lora_init.safetensors', () => {
  test('resolves all 48 modules against the tiny UNet; round trip is exact', () => {
    const { sd, metadata } = loadFixture('training', 'lora_init.safetensors');
    const unet = loadFixture('unet', 'sd1', 'diffusion_pytorch_model.safetensors').sd;
    const paths = { unet: modulePathsFromKeys(unet.keys()) };
    const { lora, unloaded } = loraFromKohya(sd, paths, metadata);
    try {
      assert.deepEqual(unloaded, []);
      assert.equal(lora.modules.size, 48);
      for (const m of lora.modules.values()) assert.deepEqual([m.alpha, m.down.shape[0]], [4, 4]);
      const m = lora.modules.get('unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0')!;
      assertSameTensor(m.up, sd.get('lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_up.weight')!, 'up');

      const peft = loraToPeft(lora);
      const cfg = JSON.parse(peft.metadata.lora_adapter_metadata) as Record<string, unknown>;
      assert.deepEqual([cfg['unet.r'], cfg['unet.lora_alpha'], cfg['unet.alpha_pattern']], [4, 4, {}]);
      assert.ok(peft.tensors.has('unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.lora_A.weight'));
      const again = loraFromPeft(peft.tensors, peft.metadata, paths);
      assert.deepEqual(again.unloaded, []);
      const kohya = loraToKohya(again.lora);
      try {
        assertSameStateDict(kohya.tensors, sd, 'kohya → PEFT → kohya');
        assert.equal(kohya.metadata.ss_network_alpha, '4.0');
      } finally {
        disposeAll(peft.tensors, kohya.tensors);
        disposeLora(again.lora);
      }
    } finally {
      disposeAll(sd, unet);
      disposeLora(lora);
    }
  });

  test('keys that match no module are returned with a reason, not dropped', () => {
    const { sd } = loadFixture('training', 'lora_init.safetensors');
    const extra: StateDict = new Map(sd);
    extra.set('lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight', T.zeros([4, 16]));
    extra.set('lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight', T.zeros([16, 4]));
    extra.set('lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight', T.zeros([4, 16]));
    extra.set('lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight', T.zeros([16, 4]));
    extra.set('lora_unet_conv_in.hada_w1_a', T.zeros([4, 4]));
    extra.set('bundle_emb.mystyle.string_to_param.*', T.zeros([2, 768]));
    const { lora, unloaded } = loraFromKohya(extra, { unet: SD1_PATHS.unet });
    try {
      assert.equal(lora.modules.size, 48);
      const by = new Map(unloaded.map((u) => [u.key, u.reason]));
      assert.equal(unloaded.length, 6);
      assert.match(by.get('lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight')!, /no UNet module .* \(lora key not loaded\)/);
      assert.match(by.get('lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight')!, /no text encoder module/);
      assert.match(by.get('lora_unet_conv_in.hada_w1_a')!, /LyCORIS/);
      assert.match(by.get('bundle_emb.mystyle.string_to_param.*')!, /embedding/);
    } finally {
      for (const k of ['lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight', 'lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight',
        'lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight', 'lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight',
        'lora_unet_conv_in.hada_w1_a', 'bundle_emb.mystyle.string_to_param.*']) extra.get(k)!.dispose();
      disposeAll(sd);
      disposeLora(lora);
    }
  });
});

describe('PEFT alpha handling (§5.3, §5.4)', () => {
  const q = 'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q';
  const k = 'unet.mid_block.attentions.0.proj_in';
  const te = 'text_encoder.text_model.encoder.layers.0.self_attn.q_proj';
  const make = (): LoraFile => ({
    modules: new Map([
      [q, { down: T.randn([8, 320]), up: T.randn([320, 8]), alpha: 1 }],
      [k, { down: T.randn([4, 1280, 1, 1]), up: T.randn([1280, 4, 1, 1]), alpha: 1 }],
      [te, { down: T.randn([8, 768]), up: T.randn([768, 8]), alpha: 8 }],
    ]),
    metadata: {},
  });

  test('per-module alpha and rank survive kohya → PEFT → kohya through the adapter config', () => {
    const lora = make();
    const peft = loraToPeft(lora);
    const cfg = JSON.parse(peft.metadata.lora_adapter_metadata) as Record<string, unknown>;
    assert.deepEqual(cfg['unet.rank_pattern'], { 'mid_block.attentions.0.proj_in': 4 });
    const back = loraFromPeft(peft.tensors, peft.metadata, SD1_PATHS);
    try {
      assert.deepEqual(back.unloaded, []);
      for (const [p, m] of lora.modules) assert.equal(back.lora.modules.get(p)!.alpha, m.alpha, p);
      // Without the config, PEFT means alpha = r (scale 1, the diffusers scripts' choice).
      const bare = loraFromPeft(peft.tensors);
      assert.equal(bare.lora.modules.get(q)!.alpha, 8);
      disposeLora(bare.lora);
    } finally {
      disposeAll(peft.tensors);
      disposeLora(back.lora);
      disposeLora(lora);
    }
  });

  test('bakeAlpha scales lora_B by alpha/r and sets alpha = r', () => {
    const lora = make();
    const peft = loraToPeft(lora, { bakeAlpha: true });
    const back = loraFromPeft(peft.tensors, peft.metadata);
    try {
      const m = back.lora.modules.get(q)!;
      assert.equal(m.alpha, 8);
      const want = lora.modules.get(q)!.up.mul(1 / 8);
      assert.ok(m.up.sub(want).abs().max().item() < 1e-7); // fp32 product, same op on both sides
      want.dispose();
      assert.equal(back.lora.modules.get(te)!.alpha, 8);
    } finally {
      disposeAll(peft.tensors);
      disposeLora(back.lora);
      disposeLora(lora);
    }
  });

  test('older diffusers spellings are read (§5.3)', () => {
    const sd: StateDict = new Map([
      ['unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight', T.zeros([4, 320])],
      ['unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight', T.zeros([320, 4])],
      ['text_encoder.text_model.encoder.layers.0.self_attn.to_k_lora.down.weight', T.zeros([4, 768])],
      ['text_encoder.text_model.encoder.layers.0.self_attn.to_k_lora.up.weight', T.zeros([768, 4])],
      ['text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_linear_layer.down.weight', T.zeros([4, 768])],
      ['text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_linear_layer.up.weight', T.zeros([3072, 4])],
    ]);
    const { lora, unloaded } = loraFromPeft(sd, {}, SD1_PATHS);
    assert.deepEqual(unloaded, []);
    assert.deepEqual([...lora.modules.keys()].sort(), [
      'text_encoder.text_model.encoder.layers.0.self_attn.k_proj',
      'text_encoder.text_model.encoder.layers.1.mlp.fc1',
      'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0',
    ]);
    disposeAll(sd);
    disposeLora(lora);
  });

  test('LoCon modules are summarised; lora_mid has no PEFT form', () => {
    const s = summarizeLoraKeys(new Map([
      ['lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight', [8, 320, 3, 3]],
      ['lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight', [320, 8, 1, 1]],
      ['lora_unet_down_blocks_0_resnets_0_conv1.alpha', []],
      ['lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight', [4, 1024]],
      ['lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight', [1024, 4]],
    ]));
    assert.deepEqual([s?.format, s?.locon, s?.modules, s?.ranks, s?.family], ['kohya', true, 2, [4, 8], 'sd2']);
    const lora: LoraFile = { modules: new Map([[`unet.down_blocks.0.resnets.0.conv1`, { down: T.zeros([4, 320, 3, 3]), up: T.zeros([320, 4, 1, 1]), alpha: 1, mid: T.zeros([4, 4, 3, 3]) }]]), metadata: {} };
    assert.throws(() => loraToPeft(lora), /lora_mid/);
    disposeLora(lora);
  });
});

describe('kohya metadata (§5.5)', () => {
  test('Python-style value strings', () => {
    const cases: [number, string][] = [[4, '4.0'], [1e-4, '0.0001'], [1e-5, '1e-05'], [5e-6, '5e-06'], [0.5, '0.5'], [1e16, '1e+16'], [123.456, '123.456'], [-2, '-2.0']];
    for (const [x, s] of cases) assert.equal(pyFloat(x), s, String(x));
    assert.equal(pyJson({ 'img/10_cat': { n_repeats: 10, img_count: 3 } }), '{"img/10_cat": {"n_repeats": 10, "img_count": 3}}');
  });

  test('a LoRA record for SD1 and SD2-v; an embedding record', () => {
    const md = kohyaMetadata({
      family: 'sd1', outputName: 'cat', network: { dim: 4, alpha: 4, args: { conv_dim: '8' } }, learningRate: 1e-4,
      resolution: [512, 512], gradientCheckpointing: false, clipSkip: null, tagFrequency: { img: { cat: 2 } }, startedAt: 1700000000.5,
    });
    assert.equal(md.ss_network_alpha, '4.0');
    assert.equal(md.ss_network_dim, '4');
    assert.equal(md.ss_network_module, 'networks.lora');
    assert.equal(md.ss_network_args, '{"conv_dim": "8"}');
    assert.equal(md.ss_v2, 'False');
    assert.equal(md.ss_base_model_version, 'sd_v1');
    assert.equal(md.ss_learning_rate, '0.0001');
    assert.equal(md.ss_resolution, '(512, 512)');
    assert.equal(md.ss_gradient_checkpointing, 'False');
    assert.equal(md.ss_clip_skip, 'None');
    assert.equal(md.ss_training_started_at, '1700000000.5');
    assert.equal(md.ss_tag_frequency, '{"img": {"cat": 2}}');
    assert.equal(md['modelspec.architecture'], 'stable-diffusion-v1/lora');
    assert.equal(md['modelspec.implementation'], 'diffusers');
    assert.equal(md['modelspec.resolution'], '512x512');
    assert.equal(md['modelspec.prediction_type'], 'epsilon');
    assert.equal(md['modelspec.title'], 'cat');
    assert.equal(familyFromLoraMetadata(md), 'sd1');

    const v = kohyaMetadata({ family: 'sd2-v', outputName: 'x' });
    assert.deepEqual([v.ss_v2, v.ss_base_model_version, v['modelspec.architecture'], v['modelspec.prediction_type'], v['modelspec.resolution']],
      ['True', 'sd_v2_v', 'stable-diffusion-v2-768-v/lora', 'v', '768x768']);
    assert.equal(familyFromLoraMetadata(v), 'sd2-v');
    const ti = kohyaMetadata({ family: 'sd2', kind: 'textual-inversion', outputName: 'emb' });
    assert.equal(ti['modelspec.architecture'], 'stable-diffusion-v2-512/textual-inversion');
    assert.equal(ti['modelspec.implementation'], 'https://github.com/Stability-AI/generative-models');
    assert.equal(ti.ss_network_module, undefined);
    assert.equal(familyFromLoraMetadata({}), 'unknown');
    assert.equal(familyFromLoraMetadata({ ss_base_model_version: 'sdxl_base_v1-0' }), 'sdxl');
  });

  test('addnet hashes cover the bytes after the header', () => {
    const header = Buffer.from('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    const body = Buffer.from([1, 2, 3, 4]);
    const h = addnetHashes(Buffer.concat([len, header, body]));
    assert.equal(h.sshs_model_hash, createHash('sha256').update(body).digest('hex'));
    assert.equal(h.sshs_legacy_hash, createHash('sha256').update(Buffer.alloc(0)).digest('hex').slice(0, 8));
  });
});
