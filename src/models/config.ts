// Typed, readonly model configs: presets for the real models (each names the config it
// reproduces) and parsers for diffusers' config.json files. Spec: sd-formats.md §3.

export type DownBlockKind = 'CrossAttnDownBlock2D' | 'DownBlock2D';
export type UpBlockKind = 'CrossAttnUpBlock2D' | 'UpBlock2D';

export interface UNetConfig {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly blockOutChannels: readonly number[];
  readonly layersPerBlock: number;
  readonly downBlocks: readonly DownBlockKind[];
  readonly upBlocks: readonly UpBlockKind[];
  readonly crossAttentionDim: number;
  /** Heads per level (diffusers' `attention_head_dim`, which is the number of heads; §3.2). */
  readonly heads: readonly number[];
  readonly normGroups: number;
  readonly normEps: number;
  /** SD2/SDXL: proj_in/proj_out are Linear instead of 1×1 conv. */
  readonly useLinearProjection: boolean;
  /** SD2.1: attention scores in fp32 (no effect in fp32 runs). */
  readonly upcastAttention: boolean;
  readonly flipSinToCos: boolean;
  readonly freqShift: number;
  readonly transformerLayersPerBlock: number;
  readonly sampleSize: number;
}

export interface VAEConfig {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly latentChannels: number;
  readonly blockOutChannels: readonly number[];
  readonly layersPerBlock: number;
  readonly normGroups: number;
  readonly scalingFactor: number;
  readonly sampleSize: number;
}

export type ClipActivation = 'quick_gelu' | 'gelu';

export interface ClipTextConfig {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly layers: number;
  readonly heads: number;
  readonly maxPositions: number;
  readonly act: ClipActivation;
  readonly layerNormEps: number;
  /** transformers' legacy pooling: eos_token_id 2 means argmax(ids) (§3.1). */
  readonly eosTokenId: number;
}

/** CompVis v1-inference.yaml = diffusers runwayml/stable-diffusion-v1-5 unet/config.json. */
export const SD15_UNET: UNetConfig = {
  inChannels: 4,
  outChannels: 4,
  blockOutChannels: [320, 640, 1280, 1280],
  layersPerBlock: 2,
  downBlocks: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  upBlocks: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  crossAttentionDim: 768,
  heads: [8, 8, 8, 8],
  normGroups: 32,
  normEps: 1e-5,
  useLinearProjection: false,
  upcastAttention: false,
  flipSinToCos: true,
  freqShift: 0,
  transformerLayersPerBlock: 1,
  sampleSize: 64,
};

/** Stability-AI v2-inference(-v).yaml = diffusers stabilityai/stable-diffusion-2-1 unet/config.json. */
export const SD2_UNET: UNetConfig = {
  ...SD15_UNET,
  crossAttentionDim: 1024,
  heads: [5, 10, 20, 20],
  useLinearProjection: true,
  upcastAttention: true,
  sampleSize: 96,
};

/** The SD VAE (ddconfig in v1-inference.yaml; diffusers vae/config.json). */
export const SD_VAE: VAEConfig = {
  inChannels: 3,
  outChannels: 3,
  latentChannels: 4,
  blockOutChannels: [128, 256, 512, 512],
  layersPerBlock: 2,
  normGroups: 32,
  scalingFactor: 0.18215,
  sampleSize: 512,
};

/** OpenAI CLIP ViT-L/14 text tower (transformers openai/clip-vit-large-patch14; §3.1). */
export const SD15_TEXT: ClipTextConfig = {
  vocabSize: 49408,
  hiddenSize: 768,
  intermediateSize: 3072,
  layers: 12,
  heads: 12,
  maxPositions: 77,
  act: 'quick_gelu',
  layerNormEps: 1e-5,
  eosTokenId: 2,
};

/** OpenCLIP ViT-H/14 text tower as diffusers stores SD2's text_encoder: 23 layers, gelu (§3.4). */
export const SD2_TEXT: ClipTextConfig = {
  vocabSize: 49408,
  hiddenSize: 1024,
  intermediateSize: 4096,
  layers: 23,
  heads: 16,
  maxPositions: 77,
  act: 'gelu',
  layerNormEps: 1e-5,
  eosTokenId: 2,
};

type Json = Record<string, unknown>;

function num(j: Json, key: string, fallback?: number): number {
  const v = j[key];
  if (typeof v === 'number') return v;
  if (fallback !== undefined && (v === undefined || v === null)) return fallback;
  throw new Error(`config.json: "${key}" must be a number (got ${JSON.stringify(v)})`);
}

function nums(j: Json, key: string): number[] {
  const v = j[key];
  if (Array.isArray(v) && v.every((x) => typeof x === 'number')) return v as number[];
  throw new Error(`config.json: "${key}" must be a list of numbers (got ${JSON.stringify(v)})`);
}

/** Reads a diffusers UNet2DConditionModel config.json (unsupported features are named). */
export function unetConfigFromDiffusers(j: Json): UNetConfig {
  const blocks = nums(j, 'block_out_channels');
  const down = (j.down_block_types ?? []) as string[];
  const up = (j.up_block_types ?? []) as string[];
  for (const b of [...down, ...up]) {
    if (!['CrossAttnDownBlock2D', 'DownBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'].includes(b)) {
      throw new Error(`config.json: block type ${b} is not supported (SD 1.x/2.x UNets use CrossAttn/Down/Up blocks)`);
    }
  }
  if (j.addition_embed_type) throw new Error(`config.json: addition_embed_type "${String(j.addition_embed_type)}" (SDXL) is not supported yet`);
  if (j.class_embed_type) throw new Error(`config.json: class_embed_type "${String(j.class_embed_type)}" is not supported`);
  if (j.time_embedding_type && j.time_embedding_type !== 'positional') throw new Error('config.json: only positional time embeddings are supported');
  if (j.resnet_time_scale_shift && j.resnet_time_scale_shift !== 'default') throw new Error('config.json: resnet_time_scale_shift must be "default"');
  // diffusers: num_attention_heads = num_attention_heads or attention_head_dim (a historical misnomer).
  const h = (j.num_attention_heads ?? j.attention_head_dim ?? 8) as number | number[];
  const heads = typeof h === 'number' ? blocks.map(() => h) : h;
  if (heads.length !== blocks.length) throw new Error('config.json: attention_head_dim has a different length than block_out_channels');
  const tl = j.transformer_layers_per_block ?? 1;
  if (typeof tl !== 'number') throw new Error('config.json: per-block transformer_layers_per_block (SDXL) is not supported yet');
  return {
    inChannels: num(j, 'in_channels', 4),
    outChannels: num(j, 'out_channels', 4),
    blockOutChannels: blocks,
    layersPerBlock: num(j, 'layers_per_block', 2),
    downBlocks: down as DownBlockKind[],
    upBlocks: up as UpBlockKind[],
    crossAttentionDim: num(j, 'cross_attention_dim', 1280),
    heads,
    normGroups: num(j, 'norm_num_groups', 32),
    normEps: num(j, 'norm_eps', 1e-5),
    useLinearProjection: Boolean(j.use_linear_projection),
    upcastAttention: Boolean(j.upcast_attention),
    flipSinToCos: j.flip_sin_to_cos === undefined ? true : Boolean(j.flip_sin_to_cos),
    freqShift: num(j, 'freq_shift', 0),
    transformerLayersPerBlock: tl,
    sampleSize: num(j, 'sample_size', 64),
  };
}

export function unetConfigToDiffusers(c: UNetConfig): Json {
  return {
    _class_name: 'UNet2DConditionModel',
    _diffusers_version: '0.25.0',
    act_fn: 'silu',
    attention_head_dim: c.heads.every((x) => x === c.heads[0]) ? c.heads[0] : [...c.heads],
    block_out_channels: [...c.blockOutChannels],
    center_input_sample: false,
    cross_attention_dim: c.crossAttentionDim,
    down_block_types: [...c.downBlocks],
    downsample_padding: 1,
    flip_sin_to_cos: c.flipSinToCos,
    freq_shift: c.freqShift,
    in_channels: c.inChannels,
    layers_per_block: c.layersPerBlock,
    mid_block_scale_factor: 1,
    norm_eps: c.normEps,
    norm_num_groups: c.normGroups,
    out_channels: c.outChannels,
    sample_size: c.sampleSize,
    transformer_layers_per_block: c.transformerLayersPerBlock,
    up_block_types: [...c.upBlocks],
    upcast_attention: c.upcastAttention,
    use_linear_projection: c.useLinearProjection,
  };
}

export function vaeConfigFromDiffusers(j: Json): VAEConfig {
  return {
    inChannels: num(j, 'in_channels', 3),
    outChannels: num(j, 'out_channels', 3),
    latentChannels: num(j, 'latent_channels', 4),
    blockOutChannels: nums(j, 'block_out_channels'),
    layersPerBlock: num(j, 'layers_per_block', 1),
    normGroups: num(j, 'norm_num_groups', 32),
    scalingFactor: num(j, 'scaling_factor', 0.18215),
    sampleSize: num(j, 'sample_size', 512),
  };
}

export function vaeConfigToDiffusers(c: VAEConfig): Json {
  return {
    _class_name: 'AutoencoderKL',
    _diffusers_version: '0.25.0',
    act_fn: 'silu',
    block_out_channels: [...c.blockOutChannels],
    down_block_types: c.blockOutChannels.map(() => 'DownEncoderBlock2D'),
    in_channels: c.inChannels,
    latent_channels: c.latentChannels,
    layers_per_block: c.layersPerBlock,
    norm_num_groups: c.normGroups,
    out_channels: c.outChannels,
    sample_size: c.sampleSize,
    scaling_factor: c.scalingFactor,
    up_block_types: c.blockOutChannels.map(() => 'UpDecoderBlock2D'),
  };
}

export function clipConfigFromTransformers(j: Json): ClipTextConfig {
  const act = (j.hidden_act ?? 'quick_gelu') as string;
  if (act !== 'quick_gelu' && act !== 'gelu') throw new Error(`config.json: hidden_act "${act}" is not supported (quick_gelu or gelu)`);
  return {
    vocabSize: num(j, 'vocab_size', 49408),
    hiddenSize: num(j, 'hidden_size', 512),
    intermediateSize: num(j, 'intermediate_size', 2048),
    layers: num(j, 'num_hidden_layers', 12),
    heads: num(j, 'num_attention_heads', 8),
    maxPositions: num(j, 'max_position_embeddings', 77),
    act,
    layerNormEps: num(j, 'layer_norm_eps', 1e-5),
    eosTokenId: num(j, 'eos_token_id', 2),
  };
}

export function clipConfigToTransformers(c: ClipTextConfig): Json {
  return {
    architectures: ['CLIPTextModel'],
    attention_dropout: 0.0,
    bos_token_id: 0,
    eos_token_id: c.eosTokenId,
    hidden_act: c.act,
    hidden_size: c.hiddenSize,
    initializer_factor: 1.0,
    initializer_range: 0.02,
    intermediate_size: c.intermediateSize,
    layer_norm_eps: c.layerNormEps,
    max_position_embeddings: c.maxPositions,
    model_type: 'clip_text_model',
    num_attention_heads: c.heads,
    num_hidden_layers: c.layers,
    pad_token_id: 1,
    projection_dim: c.hiddenSize,
    torch_dtype: 'float32',
    transformers_version: '4.34.0',
    vocab_size: c.vocabSize,
  };
}
