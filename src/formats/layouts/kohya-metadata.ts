// kohya / ModelSpec metadata for LoRA and embedding files (sd-formats.md §5.5).
//
// safetensors metadata values are strings. kohya writes them with Python's str(), and A1111 and
// other tools read some back (ss_output_name, ss_tag_frequency, ss_sd_model_name…), so values are
// formatted the way Python prints them: True/False, None, 4.0, 1e-05, (512, 512), and JSON with
// Python's ", " / ": " separators.
import { createHash } from 'node:crypto';
import type { Family } from './types.ts';

export type TrainedFamily = Exclude<Family, 'unknown'>;

export interface HashedFile {
  name: string;
  /** Legacy 8-hex "model hash" (sha256 of bytes 0x100000..0x10FFFF). */
  legacyHash?: string;
  /** sha256 of the whole file. */
  sha256?: string;
}

/** What a training run knows about itself; every field but family/outputName is optional. */
export interface KohyaTrainingInfo {
  family: TrainedFamily;
  kind?: 'lora' | 'textual-inversion';
  outputName: string;
  title?: string;
  sessionId?: number;
  /** Unix seconds or a Date. */
  startedAt?: number | Date;
  finishedAt?: number | Date;
  baseModel?: HashedFile;
  vae?: HashedFile;
  network?: { module?: string; dim: number; alpha: number; dropout?: number | null; args?: Record<string, string> };
  learningRate?: number;
  unetLr?: number | null;
  textEncoderLr?: number | null;
  optimizer?: string;
  lrScheduler?: string;
  lrWarmupSteps?: number;
  maxTrainSteps?: number;
  numTrainImages?: number;
  numRegImages?: number;
  numBatchesPerEpoch?: number;
  numEpochs?: number;
  epoch?: number;
  steps?: number;
  batchSize?: number;
  totalBatchSize?: number;
  gradientCheckpointing?: boolean;
  gradientAccumulationSteps?: number;
  mixedPrecision?: string;
  fullFp16?: boolean;
  seed?: number;
  maxGradNorm?: number;
  /** [width, height]. */
  resolution?: [number, number];
  clipSkip?: number | null;
  maxTokenLength?: number | null;
  cacheLatents?: boolean;
  noiseOffset?: number | null;
  minSnrGamma?: number | null;
  priorLossWeight?: number;
  zeroTerminalSnr?: boolean;
  captionDropoutRate?: number;
  captionTagDropoutRate?: number;
  enableBucket?: boolean;
  minBucketReso?: number;
  maxBucketReso?: number;
  bucketNoUpscale?: boolean;
  flipAug?: boolean;
  colorAug?: boolean;
  randomCrop?: boolean;
  shuffleCaption?: boolean;
  keepTokens?: number;
  datasetDirs?: Record<string, { n_repeats: number; img_count: number }>;
  regDatasetDirs?: Record<string, { n_repeats: number; img_count: number }>;
  tagFrequency?: Record<string, Record<string, number>>;
  trainingComment?: string;
  author?: string;
  description?: string;
  date?: Date;
  triggerPhrase?: string;
  tags?: string[];
}

// ---- Python str() of values ------------------------------------------------------------------

/** Python repr/str of a float: 4.0, 0.0001, 1e-05, 1.5e+16 (JS switches notation elsewhere). */
export function pyFloat(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const [mant, e] = x.toExponential().split('e');
  const exp = Number(e);
  if (exp >= -4 && exp < 16) {
    // Python's repr uses fixed notation for decimal exponents -4 .. 15; so does JS's String here.
    return Number.isInteger(x) ? `${x.toFixed(0)}.0` : String(x);
  }
  const sign = exp < 0 ? '-' : '+';
  const digits = String(Math.abs(exp)).padStart(2, '0');
  return `${mant}e${sign}${digits}`;
}

/** Python json.dumps with default separators (", " and ": "). */
export function pyJson(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return `[${v.map(pyJson).join(', ')}]`;
  if (typeof v === 'object') {
    return `{${Object.entries(v as Record<string, unknown>).map(([k, x]) => `${JSON.stringify(k)}: ${pyJson(x)}`).join(', ')}}`;
  }
  if (typeof v === 'number' && !Number.isInteger(v)) return pyFloat(v);
  return JSON.stringify(v);
}

function pyBool(b: boolean): string {
  return b ? 'True' : 'False';
}

function seconds(t: number | Date): number {
  return t instanceof Date ? t.getTime() / 1000 : t;
}

// ---- family strings --------------------------------------------------------------------------

/** kohya model_util.get_model_version_str_for_sd1_sd2 (and the SDXL string). */
export function baseModelVersion(f: TrainedFamily): string {
  return f === 'sd1' ? 'sd_v1' : f === 'sd2' ? 'sd_v2' : f === 'sd2-v' ? 'sd_v2_v' : 'sdxl_base_v1-0';
}

/** ModelSpec architecture (kohya sai_model_spec.determine_architecture). */
export function modelspecArchitecture(f: TrainedFamily, kind: 'lora' | 'textual-inversion' | 'checkpoint'): string {
  const base = f === 'sd1' ? 'stable-diffusion-v1' : f === 'sd2' ? 'stable-diffusion-v2-512' : f === 'sd2-v' ? 'stable-diffusion-v2-768-v' : 'stable-diffusion-xl-v1-base';
  return kind === 'checkpoint' ? base : `${base}/${kind}`;
}

const GENERATIVE_MODELS = 'https://github.com/Stability-AI/generative-models';

function defaultResolution(f: TrainedFamily): number {
  return f === 'sd2-v' ? 768 : f === 'sdxl' ? 1024 : 512;
}

// ---- the record ------------------------------------------------------------------------------

/**
 * The `__metadata__` record for a LoRA or embedding we train: kohya's `ss_*` fields (always the
 * SS_METADATA_MINIMUM_KEYS for a LoRA) and the ModelSpec 1.0.1 keys. Undefined fields are left out.
 */
export function kohyaMetadata(info: KohyaTrainingInfo): Record<string, string> {
  const kind = info.kind ?? 'lora';
  const md: Record<string, string> = {};
  const put = (k: string, v: unknown, asFloat = false): void => {
    if (v === undefined) return;
    if (v === null) md[k] = 'None';
    else if (typeof v === 'boolean') md[k] = pyBool(v);
    else if (typeof v === 'number') md[k] = asFloat || !Number.isInteger(v) ? pyFloat(v) : String(v);
    else if (typeof v === 'string') md[k] = v;
    else md[k] = pyJson(v);
  };
  const v2 = info.family === 'sd2' || info.family === 'sd2-v';
  put('ss_session_id', info.sessionId);
  if (info.startedAt !== undefined) put('ss_training_started_at', seconds(info.startedAt), true);
  if (info.finishedAt !== undefined) put('ss_training_finished_at', seconds(info.finishedAt), true);
  put('ss_output_name', info.outputName);
  put('ss_sd_model_name', info.baseModel?.name);
  put('ss_sd_model_hash', info.baseModel?.legacyHash);
  put('ss_new_sd_model_hash', info.baseModel?.sha256);
  put('ss_vae_name', info.vae?.name);
  put('ss_vae_hash', info.vae?.legacyHash);
  put('ss_new_vae_hash', info.vae?.sha256);
  put('ss_v2', v2);
  put('ss_base_model_version', baseModelVersion(info.family));
  if (kind === 'lora') {
    const n = info.network ?? { dim: 4, alpha: 1 };
    put('ss_network_module', n.module ?? 'networks.lora');
    put('ss_network_dim', n.dim);
    put('ss_network_alpha', n.alpha, true);
    put('ss_network_dropout', n.dropout);
    put('ss_network_args', n.args ?? {});
  }
  put('ss_learning_rate', info.learningRate, true);
  put('ss_unet_lr', info.unetLr, true);
  put('ss_text_encoder_lr', info.textEncoderLr, true);
  put('ss_optimizer', info.optimizer);
  put('ss_lr_scheduler', info.lrScheduler);
  put('ss_lr_warmup_steps', info.lrWarmupSteps);
  put('ss_max_train_steps', info.maxTrainSteps);
  put('ss_num_train_images', info.numTrainImages);
  put('ss_num_reg_images', info.numRegImages);
  put('ss_num_batches_per_epoch', info.numBatchesPerEpoch);
  put('ss_num_epochs', info.numEpochs);
  put('ss_epoch', info.epoch);
  put('ss_steps', info.steps);
  put('ss_batch_size_per_device', info.batchSize);
  put('ss_total_batch_size', info.totalBatchSize);
  put('ss_gradient_checkpointing', info.gradientCheckpointing);
  put('ss_gradient_accumulation_steps', info.gradientAccumulationSteps);
  put('ss_mixed_precision', info.mixedPrecision);
  put('ss_full_fp16', info.fullFp16);
  put('ss_seed', info.seed);
  put('ss_max_grad_norm', info.maxGradNorm, true);
  if (info.resolution) md.ss_resolution = `(${info.resolution[0]}, ${info.resolution[1]})`;
  put('ss_clip_skip', info.clipSkip);
  put('ss_max_token_length', info.maxTokenLength);
  put('ss_cache_latents', info.cacheLatents);
  put('ss_noise_offset', info.noiseOffset, true);
  put('ss_min_snr_gamma', info.minSnrGamma, true);
  put('ss_prior_loss_weight', info.priorLossWeight, true);
  put('ss_zero_terminal_snr', info.zeroTerminalSnr);
  put('ss_caption_dropout_rate', info.captionDropoutRate, true);
  put('ss_caption_tag_dropout_rate', info.captionTagDropoutRate, true);
  put('ss_enable_bucket', info.enableBucket);
  put('ss_min_bucket_reso', info.minBucketReso);
  put('ss_max_bucket_reso', info.maxBucketReso);
  put('ss_bucket_no_upscale', info.bucketNoUpscale);
  put('ss_flip_aug', info.flipAug);
  put('ss_color_aug', info.colorAug);
  put('ss_random_crop', info.randomCrop);
  put('ss_shuffle_caption', info.shuffleCaption);
  put('ss_keep_tokens', info.keepTokens);
  put('ss_dataset_dirs', info.datasetDirs);
  put('ss_reg_dataset_dirs', info.regDatasetDirs);
  put('ss_tag_frequency', info.tagFrequency);
  put('ss_training_comment', info.trainingComment);

  // ModelSpec (kohya sai_model_spec.py): required keys first.
  const res = info.resolution ?? [defaultResolution(info.family), defaultResolution(info.family)];
  md['modelspec.sai_model_spec'] = '1.0.1';
  md['modelspec.architecture'] = modelspecArchitecture(info.family, kind);
  md['modelspec.implementation'] = kind === 'lora' && info.family !== 'sdxl' ? 'diffusers' : GENERATIVE_MODELS;
  md['modelspec.title'] = info.title ?? info.outputName;
  md['modelspec.resolution'] = `${res[0]}x${res[1]}`;
  md['modelspec.prediction_type'] = info.family === 'sd2-v' ? 'v' : 'epsilon';
  const date = info.date ?? (info.finishedAt !== undefined ? new Date(seconds(info.finishedAt) * 1000) : undefined);
  if (date) md['modelspec.date'] = date.toISOString().replace(/\.\d+Z$/, '');
  if (info.description !== undefined) md['modelspec.description'] = info.description;
  if (info.author !== undefined) md['modelspec.author'] = info.author;
  if (info.triggerPhrase !== undefined) md['modelspec.trigger_phrase'] = info.triggerPhrase;
  if (info.tags !== undefined) md['modelspec.tags'] = info.tags.join(', ');
  return md;
}

/**
 * kohya's file hashes (train_util.precalculate_safetensors_hashes), over the bytes of a
 * safetensors file as kohya hashes it (tensors plus only the `ss_*` metadata):
 * `sshs_model_hash` = sha256 of everything after the header (A1111's LoRA hash), and
 * `sshs_legacy_hash` = first 8 hex of sha256(bytes[0x100000 .. 0x10FFFF]).
 */
export function addnetHashes(file: Uint8Array): { sshs_model_hash: string; sshs_legacy_hash: string } {
  if (file.byteLength < 8) throw new Error('not a safetensors file: shorter than its 8-byte header length');
  const n = Number(new DataView(file.buffer, file.byteOffset, 8).getBigUint64(0, true));
  const body = file.subarray(8 + n);
  return {
    sshs_model_hash: createHash('sha256').update(body).digest('hex'),
    sshs_legacy_hash: createHash('sha256').update(file.subarray(0x100000, 0x110000)).digest('hex').slice(0, 8),
  };
}
