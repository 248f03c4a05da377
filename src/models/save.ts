// Writing a whole Stable Diffusion model (DreamBooth's product, `sdtune merge`): an LDM
// single-file checkpoint (§4.1, the layout A1111, Forge and ComfyUI load) or a diffusers
// pipeline folder (§4.7). Both carry the configs, so non-standard models (the tiny ones, custom
// widths) load again exactly; both are written atomically.
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../torch/index.ts';
import { saveSafetensors } from '../formats/safetensors.ts';
import { diffusersToLdm } from '../formats/layouts/index.ts';
import { clipTokenizerFiles } from '../text/vocab-files.ts';
import { clipConfigToTransformers, unetConfigToDiffusers, vaeConfigToDiffusers } from './config.ts';
import { CONFIG_METADATA_KEY, SD_SCHEDULER_CONFIG, type SingleFileConfig, type StableDiffusion } from './load.ts';

export type SaveDtype = 'fp32' | 'fp16' | 'bf16';
const DTYPES: Record<SaveDtype, T.DType> = { fp32: 'float32', fp16: 'float16', bf16: 'bfloat16' };

export interface SaveModelOptions {
  dtype?: SaveDtype;
  /** Extra `__metadata__` entries (single files only). */
  metadata?: Record<string, string>;
}

function cast(sd: Map<string, T.Tensor>, dtype: SaveDtype | undefined): Map<string, T.Tensor> {
  const want = dtype ? DTYPES[dtype] : null;
  const out = new Map<string, T.Tensor>();
  // Only floating tensors change dtype; ids and counters (int64) stay as they are.
  for (const [k, t] of sd) out.set(k, want && T.isFloating(t.dtype) && t.dtype !== want ? t.to(want) : t.alias());
  return out;
}

function disposeAll(m: Map<string, T.Tensor>): void {
  for (const t of m.values()) t.dispose();
}

function configs(model: StableDiffusion): SingleFileConfig {
  return {
    unet: unetConfigToDiffusers(model.unet.cfg),
    vae: vaeConfigToDiffusers(model.vae.cfg),
    text_encoder: clipConfigToTransformers(model.textEncoder.cfg),
    scheduler: model.schedulerConfig,
    prediction: model.prediction,
  };
}

/** The model as one LDM-layout .safetensors file, its configs under `sdtune.config`. */
export function saveSingleFile(model: StableDiffusion, path: string, o: SaveModelOptions = {}): number {
  const ldm = diffusersToLdm({ unet: model.unet.stateDict(), vae: model.vae.stateDict(), textEncoder: model.textEncoder.stateDict() }, model.family);
  const out = cast(ldm, o.dtype);
  try {
    saveSafetensors(path, out, { format: 'pt', ...(o.metadata ?? {}), [CONFIG_METADATA_KEY]: JSON.stringify(configs(model)) });
    return out.size;
  } finally {
    disposeAll(out);
    // diffusersToLdm returns new handles (views or reshapes) of the model's tensors.
    disposeAll(ldm);
  }
}

export interface PipelineParts {
  unet: Map<string, T.Tensor>;
  vae: Map<string, T.Tensor>;
  textEncoder: Map<string, T.Tensor>;
  /** diffusers/transformers config.json contents. */
  configs: { unet: unknown; vae: unknown; text_encoder: unknown; scheduler: Record<string, unknown> };
  family: 'sd1' | 'sd2';
  prediction: 'epsilon' | 'v_prediction';
}

/**
 * A diffusers pipeline folder (§4.7): unet/, vae/, text_encoder/ (config + safetensors),
 * tokenizer/ (from the shipped vocabulary), scheduler/, model_index.json. Built beside the
 * target and renamed into place, so a failure leaves nothing behind.
 */
export function writePipelineFolder(dir: string, p: PipelineParts, o: { dtype?: SaveDtype; onTensor?: () => void } = {}): void {
  if (existsSync(dir)) throw new Error(`${dir} already exists: choose a new folder name (nothing was written)`);
  const tmp = `${dir}.partial-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const part = (sub: string, file: string, sd: Map<string, T.Tensor>, config: unknown) => {
      mkdirSync(join(tmp, sub));
      writeFileSync(join(tmp, sub, 'config.json'), JSON.stringify(config, null, 2) + '\n');
      const out = cast(sd, o.dtype);
      try {
        saveSafetensors(join(tmp, sub, file), out, { format: 'pt' });
        for (let i = 0; i < out.size; i++) o.onTensor?.();
      } finally {
        disposeAll(out);
      }
    };
    part('unet', 'diffusion_pytorch_model.safetensors', p.unet, p.configs.unet);
    part('vae', 'diffusion_pytorch_model.safetensors', p.vae, p.configs.vae);
    part('text_encoder', 'model.safetensors', p.textEncoder, p.configs.text_encoder);
    mkdirSync(join(tmp, 'tokenizer'));
    const tok = clipTokenizerFiles();
    writeFileSync(join(tmp, 'tokenizer', 'vocab.json'), tok.vocabJson);
    writeFileSync(join(tmp, 'tokenizer', 'merges.txt'), tok.mergesTxt);
    writeFileSync(join(tmp, 'tokenizer', 'tokenizer_config.json'), JSON.stringify({
      model_max_length: 77, pad_token: p.family === 'sd2' ? '!' : '<|endoftext|>', bos_token: '<|startoftext|>', eos_token: '<|endoftext|>', unk_token: '<|endoftext|>', do_lower_case: true, tokenizer_class: 'CLIPTokenizer',
    }, null, 2) + '\n');
    mkdirSync(join(tmp, 'scheduler'));
    writeFileSync(join(tmp, 'scheduler', 'scheduler_config.json'), JSON.stringify({ ...SD_SCHEDULER_CONFIG, ...p.configs.scheduler, prediction_type: p.prediction }, null, 2) + '\n');
    writeFileSync(join(tmp, 'model_index.json'), JSON.stringify({
      _class_name: 'StableDiffusionPipeline',
      _diffusers_version: '0.25.0',
      feature_extractor: [null, null],
      requires_safety_checker: false,
      safety_checker: [null, null],
      scheduler: ['diffusers', 'PNDMScheduler'],
      text_encoder: ['transformers', 'CLIPTextModel'],
      tokenizer: ['transformers', 'CLIPTokenizer'],
      unet: ['diffusers', 'UNet2DConditionModel'],
      vae: ['diffusers', 'AutoencoderKL'],
    }, null, 2) + '\n');
    renameSync(tmp, dir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** The model as a diffusers pipeline folder. */
export function saveDiffusersFolder(model: StableDiffusion, dir: string, o: SaveModelOptions = {}): void {
  const c = configs(model);
  writePipelineFolder(dir, {
    unet: model.unet.stateDict(),
    vae: model.vae.stateDict(),
    textEncoder: model.textEncoder.stateDict(),
    configs: { unet: c.unet, vae: c.vae, text_encoder: c.text_encoder, scheduler: model.schedulerConfig },
    family: model.family,
    prediction: model.prediction,
  }, { dtype: o.dtype });
}
