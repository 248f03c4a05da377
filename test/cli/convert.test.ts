// inspect and convert end to end: a tiny full LDM checkpoint (made from the fixture UNet, VAE and
// text encoder) → diffusers folder → single file again, every tensor compared; the folder loads
// as a model; bad input exits non-zero with the reason on stderr.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import * as T from '../../src/torch/index.ts';
import { SafetensorsFile, saveSafetensors } from '../../src/formats/safetensors.ts';
import { convert } from '../../src/models/convert.ts';
import { inspectPath } from '../../src/formats/inspect.ts';
import { loadStableDiffusion } from '../../src/models/load.ts';
import { REPO, fixture, tempDir } from '../helpers.ts';

function tinyLdmCheckpoint(path: string): Map<string, T.Tensor> {
  const all = new Map<string, T.Tensor>();
  const add = (file: string, prefix: string) => {
    const f = SafetensorsFile.open(file);
    for (const k of f.keys()) all.set(prefix + k, f.get(k));
    f.close();
  };
  add(fixture('unet', 'sd1', 'ldm_unet.safetensors'), '');
  add(fixture('vae', 'four_level', 'ldm_vae.safetensors'), '');
  add(fixture('clip_text', 'model.safetensors'), 'cond_stage_model.transformer.');
  saveSafetensors(path, all);
  return all;
}

test('LDM checkpoint → diffusers folder → LDM: every key, shape and value survives', () => {
  const { dir, cleanup } = tempDir();
  try {
    const ckpt = join(dir, 'tiny.safetensors');
    const orig = tinyLdmCheckpoint(ckpt);
    const r = inspectPath(ckpt);
    assert.equal(r.kind, 'checkpoint');
    assert.equal(r.family, 'sd1');
    assert.equal(r.tensors, orig.size);
    const folder = join(dir, 'tiny-diffusers');
    const c1 = convert(ckpt, folder);
    assert.equal(c1.target, 'diffusers');
    assert.deepEqual(readdirSync(folder).sort(), ['model_index.json', 'scheduler', 'text_encoder', 'tokenizer', 'unet', 'vae']);
    assert.deepEqual(readdirSync(dir).sort(), ['tiny-diffusers', 'tiny.safetensors'], 'no partial folders left');
    assert.equal(inspectPath(folder).format, 'diffusers-folder');
    const back = join(dir, 'back.safetensors');
    convert(folder, back, { to: 'ldm' });
    const f = SafetensorsFile.open(back);
    // The SD1 export adds position_ids (as real checkpoints have); everything else is the original.
    const keys = f.keys().filter((k) => !k.endsWith('position_ids'));
    assert.deepEqual(keys.sort(), [...orig.keys()].sort());
    T.tidy(() => {
      for (const k of keys) assert.equal(f.get(k).eq(orig.get(k)!).all().item(), 1, k);
    });
    f.close();
    // fp16 conversion halves the float tensors and keeps ints.
    const half = join(dir, 'half.safetensors');
    convert(ckpt, half, { dtype: 'fp16' });
    const h = SafetensorsFile.open(half);
    assert.deepEqual(new Set(h.entries().map((e) => e.dtype)), new Set(['F16']));
    h.close();
    for (const t of orig.values()) t.dispose();
  } finally {
    cleanup();
  }
});

test('the converted folder and the single file load as the same model', () => {
  const { dir, cleanup } = tempDir();
  try {
    const ckpt = join(dir, 'tiny.safetensors');
    for (const t of tinyLdmCheckpoint(ckpt).values()) t.dispose();
    const folder = join(dir, 'tiny-diffusers');
    convert(ckpt, folder);
    const a = loadStableDiffusion(ckpt);
    const b = loadStableDiffusion(folder);
    assert.equal(a.family, 'sd1');
    assert.equal(a.hash.length, 10);
    assert.deepEqual(a.unet.cfg.blockOutChannels, b.unet.cfg.blockOutChannels);
    T.noGrad(() => T.tidy(() => {
      const x = T.randn([1, 4, 8, 8], { generator: new T.Generator(1) });
      const ctx = T.randn([1, 77, 32], { generator: new T.Generator(2) });
      assert.equal(a.unet.forward(x, 10, ctx).eq(b.unet.forward(x, 10, ctx)).all().item(), 1);
      const ids = T.tensor([[49406, 320, 1125, 49407]], { dtype: 'int64' });
      assert.equal(a.textEncoder.forward(ids).lastHidden.eq(b.textEncoder.forward(ids).lastHidden).all().item(), 1);
    }));
    a.dispose();
    b.dispose();
  } finally {
    cleanup();
  }
});

function cli(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(REPO, 'bin', 'sdtune.mjs'), ...args], { encoding: 'utf8', env: { ...process.env, SDTUNE_QUIET: '1' } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

test('the CLI: inspect --json, and clear non-zero exits for bad files', () => {
  const { dir, cleanup } = tempDir();
  try {
    const ok = cli('inspect', fixture('training', 'lora_init.safetensors'), '--json');
    assert.equal(ok.code, 0, ok.stderr);
    const j = JSON.parse(ok.stdout);
    for (const k of ['format', 'kind', 'family', 'tensors', 'parameters', 'metadata']) assert.ok(k in j, k);
    assert.equal(j.kind, 'lora-kohya');
    const junk = join(dir, 'junk.safetensors');
    writeFileSync(junk, 'hello, this is not a model');
    const bad = cli('inspect', junk);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /junk\.safetensors: .*(not a safetensors file|truncated)/);
    const missing = cli('convert', join(dir, 'nope.ckpt'), join(dir, 'out.safetensors'));
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nope\.ckpt: no such file/);
    assert.equal(existsSync(join(dir, 'out.safetensors')), false);
    assert.equal(cli('convert', 'only-one-arg').code, 2);
  } finally {
    cleanup();
  }
});
