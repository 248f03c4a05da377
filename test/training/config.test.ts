// The training settings schema: file (TOML, JSON) and flags merged with per-technique defaults,
// every mistake named.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readConfigFile, resolveTrainConfig, trainHelp } from '../../src/training/config.ts';
import { tempDir } from '../helpers.ts';

test('a TOML file and flags merge (flags win), each technique gets its own defaults', () => {
  const { dir, cleanup } = tempDir();
  try {
    const toml = join(dir, 'run.toml');
    writeFileSync(toml, 'model = "base.safetensors"\ndata = "imgs"\nout = "style.safetensors"\nrank = 16\nlr = 2e-4\nlayer_structure = [1, 2, 1]\n');
    assert.throws(() => resolveTrainConfig('lora', { file: readConfigFile(toml), fileName: toml }), /run\.toml: layerStructure is a hypernetwork setting; lora does not use it/);
    writeFileSync(toml, 'model = "base.safetensors"\ndata = "imgs"\nout = "style.safetensors"\nrank = 16\nlr = 2e-4\nsample_prompts = ["a star", "a heart"]\n');
    const c = resolveTrainConfig('lora', { file: readConfigFile(toml), fileName: toml, flags: { 'conv-rank': '4', lr: '5e-4' } });
    assert.equal(c.rank, 16);
    assert.equal(c.convRank, 4);
    assert.equal(c.lr, 5e-4, 'the flag wins');
    assert.equal(c.alpha, 8);
    assert.equal(c.trainTextEncoder, true);
    assert.equal(c.saveDtype, 'fp16');
    assert.deepEqual(c.samplePrompts, ['a star', 'a heart']);
    const json = join(dir, 'ti.json');
    writeFileSync(json, JSON.stringify({ technique: 'embedding', model: 'm', data: 'd', out: 'o.pt', token: 'sksheart', vectors: 4 }));
    const e = resolveTrainConfig('embedding', { file: readConfigFile(json), fileName: json });
    assert.deepEqual([e.lr, e.vectors, e.template, e.initText], [5e-3, 4, 'subject_filewords', '*']);
    const h = resolveTrainConfig('hypernetwork', { flags: { model: 'm', data: 'd', out: 'h.pt', 'layer-structure': '1,1.5,1', activation: 'relu' } });
    assert.deepEqual(h.layerStructure, [1, 1.5, 1]);
    assert.equal(h.lr, 1e-5);
  } finally {
    cleanup();
  }
});

test('mistakes are named: unknown keys, types, ranges, missing settings, broken files', () => {
  const base = { model: 'm', data: 'd', out: 'o' };
  assert.throws(() => resolveTrainConfig('lora', { flags: { ...base, rnak: '4' } }), /unknown setting --rnak/);
  assert.throws(() => resolveTrainConfig('lora', { flags: { ...base, rank: 'four' } }), /--rank must be a number \(got "four"\)/);
  assert.throws(() => resolveTrainConfig('lora', { flags: { ...base, rank: '2.5' } }), /--rank must be a whole number/);
  assert.throws(() => resolveTrainConfig('lora', { flags: { ...base, rank: '0' } }), /--rank must be at least 1/);
  assert.throws(() => resolveTrainConfig('lora', { flags: { ...base, 'lora-format': 'lycoris' } }), /must be one of kohya, peft/);
  assert.throws(() => resolveTrainConfig('lora', { flags: { model: 'm', out: 'o' } }), /train lora needs --data/);
  assert.throws(() => resolveTrainConfig('dreambooth', { flags: base }), /needs --token, the rare word/);
  assert.throws(() => resolveTrainConfig('dreambooth', { flags: { ...base, token: 'sks', 'num-class-images': '50' } }), /--num-class-images needs --class-prompt/);
  assert.throws(() => resolveTrainConfig('hypernetwork', { flags: { ...base, 'layer-structure': '2,1' } }), /must start and end with 1/);
  assert.throws(() => resolveTrainConfig('finetune', { flags: base }), /unknown technique "finetune": choose dreambooth, lora, embedding, hypernetwork/);
  const { dir, cleanup } = tempDir();
  try {
    writeFileSync(join(dir, 'bad.toml'), 'rank = = 3');
    assert.throws(() => readConfigFile(join(dir, 'bad.toml')), /bad\.toml: not valid TOML/);
    assert.throws(() => readConfigFile(join(dir, 'none.json')), /none\.json: cannot read the config file/);
  } finally {
    cleanup();
  }
  assert.match(trainHelp('lora'), /--rank INTEGER\s+LoRA rank \(network_dim\) \[8\]/);
  assert.doesNotMatch(trainHelp('lora'), /--vectors/);
});
