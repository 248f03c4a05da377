// A tiny but complete Stable Diffusion for pipeline tests: the fixture UNet (sd1, cross-attention
// 32) and VAE (four_level, factor 8), and a seeded random CLIP text encoder of width 32 with the
// real 49408-token vocabulary, saved as one LDM single-file checkpoint that carries its configs.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../../src/torch/index.ts';
import { SafetensorsFile, saveSafetensors } from '../../src/formats/safetensors.ts';
import { CLIPTextModel } from '../../src/models/clip.ts';
import { clipConfigFromTransformers } from '../../src/models/config.ts';
import { CONFIG_METADATA_KEY } from '../../src/models/load.ts';
import { fixture } from '../helpers.ts';

const json = (...p: string[]) => JSON.parse(readFileSync(fixture(...p), 'utf8')) as Record<string, unknown>;

/** transformers CLIPTextConfig of the tiny text encoder (the fixture's, widened to the UNet's 32). */
export const TINY_TEXT_CONFIG: Record<string, unknown> = { ...json('clip_text', 'config.json'), hidden_size: 32, intermediate_size: 48, projection_dim: 32 };

/** Writes the tiny model to dir/tiny-sd.safetensors and returns its path. Same seed, same bytes. */
export function writeTinyCheckpoint(dir: string, seed = 1234): string {
  const all = new Map<string, T.Tensor>();
  const add = (file: string, prefix: string) => {
    const f = SafetensorsFile.open(file);
    for (const k of f.keys()) all.set(prefix + k, f.get(k));
    f.close();
  };
  add(fixture('unet', 'sd1', 'ldm_unet.safetensors'), '');
  add(fixture('vae', 'four_level', 'ldm_vae.safetensors'), '');
  T.manualSeed(seed);
  const clip = new CLIPTextModel(T.nn.VarBuilder.init(), clipConfigFromTransformers(TINY_TEXT_CONFIG));
  for (const [k, t] of clip.stateDict()) all.set('cond_stage_model.transformer.' + k, t);
  const path = join(dir, 'tiny-sd.safetensors');
  const configs = {
    unet: json('unet', 'sd1', 'config.json'),
    vae: json('vae', 'four_level', 'config.json'),
    text_encoder: TINY_TEXT_CONFIG,
  };
  saveSafetensors(path, all, { [CONFIG_METADATA_KEY]: JSON.stringify(configs) });
  for (const [k, t] of all) if (!k.startsWith('cond_stage_model.')) t.dispose();
  clip.dispose();
  return path;
}

/**
 * A tiny SD2-style v-prediction model as a diffusers folder: the fixture sd2 UNet (linear
 * projections, per-block heads), the four_level VAE, a random gelu text encoder of width 32, and
 * a scheduler_config.json that names only what differs from the defaults (v_prediction).
 */
export function writeTinySd2Folder(dir: string, seed = 4321): string {
  const root = join(dir, 'tiny-sd2');
  const put = (sub: string, file: string, text: string) => {
    mkdirSync(join(root, sub), { recursive: true });
    writeFileSync(join(root, sub, file), text);
  };
  put('', 'model_index.json', JSON.stringify({ _class_name: 'StableDiffusionPipeline', _diffusers_version: '0.25.0' }));
  put('unet', 'config.json', readFileSync(fixture('unet', 'sd2', 'config.json'), 'utf8'));
  copyFileSync(fixture('unet', 'sd2', 'diffusion_pytorch_model.safetensors'), join(root, 'unet', 'diffusion_pytorch_model.safetensors'));
  put('vae', 'config.json', readFileSync(fixture('vae', 'four_level', 'config.json'), 'utf8'));
  copyFileSync(fixture('vae', 'four_level', 'diffusion_pytorch_model.safetensors'), join(root, 'vae', 'diffusion_pytorch_model.safetensors'));
  const textCfg = { ...TINY_TEXT_CONFIG, hidden_act: 'gelu', bos_token_id: 49406, eos_token_id: 49407, pad_token_id: 0 };
  put('text_encoder', 'config.json', JSON.stringify(textCfg));
  T.manualSeed(seed);
  const clip = new CLIPTextModel(T.nn.VarBuilder.init(), clipConfigFromTransformers(textCfg));
  saveSafetensors(join(root, 'text_encoder', 'model.safetensors'), clip.stateDict(), { format: 'pt' });
  clip.dispose();
  put('scheduler', 'scheduler_config.json', JSON.stringify({ _class_name: 'DDIMScheduler', beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, steps_offset: 1, clip_sample: false, set_alpha_to_one: false, prediction_type: 'v_prediction' }));
  return root;
}
