// The keys and shapes a model of a given config has, in diffusers naming (sd-formats.md §3).
//
// Detection uses them to say exactly which keys a partial checkpoint lacks ("this looks like an
// SD1 UNet; missing …"), and the LoRA code to know the real module paths to resolve kohya names
// against (§5.4). The tests hold the generated sets to appendix/*.tsv key by key and shape by shape.
import type { KeyShapes } from './types.ts';

/** diffusers UNet2DConditionModel, the parts that decide key names and shapes. */
export interface UNetKeyConfig {
  inChannels: number;
  outChannels: number;
  blockOutChannels: readonly number[];
  layersPerBlock: number;
  /** Per down level: has cross-attention (CrossAttnDownBlock2D). Up levels mirror it. */
  downAttention: readonly boolean[];
  crossAttentionDim: number;
  /** SD2/SDXL: Linear proj_in/proj_out; SD1: 1x1 conv (§3.4). */
  useLinearProjection: boolean;
  /** BasicTransformerBlocks per transformer (1 for SD1/SD2). */
  transformerDepth: number;
}

/** CompVis v1-inference.yaml as diffusers stores it (§3.2). */
export const SD1_UNET_KEYS_CONFIG: UNetKeyConfig = {
  inChannels: 4, outChannels: 4, blockOutChannels: [320, 640, 1280, 1280], layersPerBlock: 2,
  downAttention: [true, true, true, false], crossAttentionDim: 768, useLinearProjection: false, transformerDepth: 1,
};
/** Stability v2-inference(-v).yaml (§3.4). */
export const SD2_UNET_KEYS_CONFIG: UNetKeyConfig = { ...SD1_UNET_KEYS_CONFIG, crossAttentionDim: 1024, useLinearProjection: true };

export interface VaeKeyConfig {
  inChannels: number;
  outChannels: number;
  blockOutChannels: readonly number[];
  layersPerBlock: number;
  latentChannels: number;
}
/** The SD VAE ddconfig (§3.3). */
export const SD_VAE_KEYS_CONFIG: VaeKeyConfig = { inChannels: 3, outChannels: 3, blockOutChannels: [128, 256, 512, 512], layersPerBlock: 2, latentChannels: 4 };

export interface ClipTextKeyConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  maxPositions: number;
}
/** OpenAI CLIP ViT-L/14 text tower (§3.1). */
export const SD1_CLIP_KEYS_CONFIG: ClipTextKeyConfig = { vocabSize: 49408, hiddenSize: 768, intermediateSize: 3072, numLayers: 12, maxPositions: 77 };
/** OpenCLIP ViT-H/14 as SD2's diffusers text_encoder: 23 of 24 layers (§3.4). */
export const SD2_CLIP_KEYS_CONFIG: ClipTextKeyConfig = { vocabSize: 49408, hiddenSize: 1024, intermediateSize: 4096, numLayers: 23, maxPositions: 77 };

type Add = (k: string, s: number[]) => void;

function linear(add: Add, p: string, out: number, inp: number, bias = true): void {
  add(`${p}.weight`, [out, inp]);
  if (bias) add(`${p}.bias`, [out]);
}
function conv(add: Add, p: string, out: number, inp: number, k: number): void {
  add(`${p}.weight`, [out, inp, k, k]);
  add(`${p}.bias`, [out]);
}
function norm(add: Add, p: string, c: number): void {
  add(`${p}.weight`, [c]);
  add(`${p}.bias`, [c]);
}

function resnet(add: Add, p: string, cin: number, cout: number, temb: number | null): void {
  norm(add, `${p}.norm1`, cin);
  conv(add, `${p}.conv1`, cout, cin, 3);
  if (temb !== null) linear(add, `${p}.time_emb_proj`, cout, temb);
  norm(add, `${p}.norm2`, cout);
  conv(add, `${p}.conv2`, cout, cout, 3);
  if (cin !== cout) conv(add, `${p}.conv_shortcut`, cout, cin, 1);
}

function transformer(add: Add, p: string, c: number, cfg: UNetKeyConfig): void {
  norm(add, `${p}.norm`, c);
  const proj = (q: string): void => (cfg.useLinearProjection ? linear(add, q, c, c) : conv(add, q, c, c, 1));
  proj(`${p}.proj_in`);
  for (let d = 0; d < cfg.transformerDepth; d++) {
    const b = `${p}.transformer_blocks.${d}`;
    for (const [a, ctx] of [['attn1', c], ['attn2', cfg.crossAttentionDim]] as const) {
      linear(add, `${b}.${a}.to_q`, c, c, false);
      linear(add, `${b}.${a}.to_k`, c, ctx, false);
      linear(add, `${b}.${a}.to_v`, c, ctx, false);
      linear(add, `${b}.${a}.to_out.0`, c, c);
    }
    // GEGLU: proj to 2·4C, then 4C back to C (§3.2).
    linear(add, `${b}.ff.net.0.proj`, 8 * c, c);
    linear(add, `${b}.ff.net.2`, c, 4 * c);
    for (const n of ['norm1', 'norm2', 'norm3']) norm(add, `${b}.${n}`, c);
  }
  proj(`${p}.proj_out`);
}

/** Every key of a diffusers UNet2DConditionModel with `cfg`, with its shape. */
export function unetKeyShapes(cfg: UNetKeyConfig): KeyShapes {
  const ks: KeyShapes = new Map();
  const add: Add = (k, s) => ks.set(k, s);
  const ch = cfg.blockOutChannels;
  const n = ch.length;
  const temb = 4 * ch[0];
  conv(add, 'conv_in', ch[0], cfg.inChannels, 3);
  linear(add, 'time_embedding.linear_1', temb, ch[0]);
  linear(add, 'time_embedding.linear_2', temb, temb);
  let prev = ch[0];
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < cfg.layersPerBlock; j++) {
      resnet(add, `down_blocks.${i}.resnets.${j}`, j === 0 ? prev : ch[i], ch[i], temb);
      if (cfg.downAttention[i]) transformer(add, `down_blocks.${i}.attentions.${j}`, ch[i], cfg);
    }
    if (i < n - 1) conv(add, `down_blocks.${i}.downsamplers.0.conv`, ch[i], ch[i], 3);
    prev = ch[i];
  }
  const top = ch[n - 1];
  resnet(add, 'mid_block.resnets.0', top, top, temb);
  transformer(add, 'mid_block.attentions.0', top, cfg);
  resnet(add, 'mid_block.resnets.1', top, top, temb);
  // Up level i mirrors down level n-1-i; resnet j takes the skip of the matching down output
  // (diffusers get_up_block: res_skip = input channels for the last resnet of the level).
  const rev = [...ch].reverse();
  const upAttn = [...cfg.downAttention].reverse();
  let prevOut = rev[0];
  for (let i = 0; i < n; i++) {
    const out = rev[i];
    const input = rev[Math.min(i + 1, n - 1)];
    for (let j = 0; j <= cfg.layersPerBlock; j++) {
      const skip = j === cfg.layersPerBlock ? input : out;
      const rin = j === 0 ? prevOut : out;
      resnet(add, `up_blocks.${i}.resnets.${j}`, rin + skip, out, temb);
      if (upAttn[i]) transformer(add, `up_blocks.${i}.attentions.${j}`, out, cfg);
    }
    if (i < n - 1) conv(add, `up_blocks.${i}.upsamplers.0.conv`, out, out, 3);
    prevOut = out;
  }
  norm(add, 'conv_norm_out', ch[0]);
  conv(add, 'conv_out', cfg.outChannels, ch[0], 3);
  return ks;
}

/** Every key of a diffusers AutoencoderKL with `cfg` (modern `to_q` attention names). */
export function vaeKeyShapes(cfg: VaeKeyConfig): KeyShapes {
  const ks: KeyShapes = new Map();
  const add: Add = (k, s) => ks.set(k, s);
  const ch = cfg.blockOutChannels;
  const n = ch.length;
  const top = ch[n - 1];
  const mid = (p: string): void => {
    resnet(add, `${p}.mid_block.resnets.0`, top, top, null);
    norm(add, `${p}.mid_block.attentions.0.group_norm`, top);
    for (const q of ['to_q', 'to_k', 'to_v', 'to_out.0']) linear(add, `${p}.mid_block.attentions.0.${q}`, top, top);
    resnet(add, `${p}.mid_block.resnets.1`, top, top, null);
  };
  conv(add, 'encoder.conv_in', ch[0], cfg.inChannels, 3);
  let prev = ch[0];
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < cfg.layersPerBlock; j++) resnet(add, `encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? prev : ch[i], ch[i], null);
    if (i < n - 1) conv(add, `encoder.down_blocks.${i}.downsamplers.0.conv`, ch[i], ch[i], 3);
    prev = ch[i];
  }
  mid('encoder');
  norm(add, 'encoder.conv_norm_out', top);
  conv(add, 'encoder.conv_out', 2 * cfg.latentChannels, top, 3); // double_z: mean and logvar
  conv(add, 'quant_conv', 2 * cfg.latentChannels, 2 * cfg.latentChannels, 1);
  conv(add, 'post_quant_conv', cfg.latentChannels, cfg.latentChannels, 1);
  conv(add, 'decoder.conv_in', top, cfg.latentChannels, 3);
  mid('decoder');
  const rev = [...ch].reverse();
  prev = rev[0];
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= cfg.layersPerBlock; j++) resnet(add, `decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? prev : rev[i], rev[i], null);
    if (i < n - 1) conv(add, `decoder.up_blocks.${i}.upsamplers.0.conv`, rev[i], rev[i], 3);
    prev = rev[i];
  }
  norm(add, 'decoder.conv_norm_out', ch[0]);
  conv(add, 'decoder.conv_out', cfg.outChannels, ch[0], 3);
  return ks;
}

/** Every key of an HF CLIPTextModel (`text_model.*`, no position_ids buffer), with its shape. */
export function clipTextKeyShapes(cfg: ClipTextKeyConfig): KeyShapes {
  const ks: KeyShapes = new Map();
  const add: Add = (k, s) => ks.set(k, s);
  const h = cfg.hiddenSize;
  add('text_model.embeddings.token_embedding.weight', [cfg.vocabSize, h]);
  add('text_model.embeddings.position_embedding.weight', [cfg.maxPositions, h]);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `text_model.encoder.layers.${l}`;
    for (const q of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) linear(add, `${p}.self_attn.${q}`, h, h);
    norm(add, `${p}.layer_norm1`, h);
    linear(add, `${p}.mlp.fc1`, cfg.intermediateSize, h);
    linear(add, `${p}.mlp.fc2`, h, cfg.intermediateSize);
    norm(add, `${p}.layer_norm2`, h);
  }
  norm(add, 'text_model.final_layer_norm', h);
  return ks;
}

/** Module paths (keys without `.weight`/`.bias`) of a key set: what LoRA names resolve against (§5.4). */
export function modulePathsFromKeys(keys: Iterable<string>): string[] {
  const out = new Set<string>();
  for (const k of keys) {
    const m = /^(.+)\.weight$/.exec(k);
    if (m) out.add(m[1]);
  }
  return [...out];
}
