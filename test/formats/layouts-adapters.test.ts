// Textual-inversion layouts (sd-formats.md §6.1) and the A1111 hypernetwork dict (§7.1, §7.2),
// on synthetic trees and on the real torch.save'd files in test/data/pt.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as T from '../../src/torch/index.ts';
import { loadTorchFile, saveTorchFile } from '../../src/formats/torchfile.ts';
import {
  defaultDropoutStructure, detectObject, disposeEmbedding, disposeHypernetwork, embeddingFamily, embeddingFromObject,
  embeddingFromStateDict, embeddingToA1111, embeddingToDiffusers, embeddingToKohya, hypernetworkFromObject,
  hypernetworkLayers, hypernetworkModuleKeys, hypernetworkToObject, validateHypernetwork, vectorCount, type StateDict,
} from '../../src/formats/layouts/index.ts';
import { REPO, tempDir } from '../helpers.ts';
import { assertSameTensor, disposeAll } from './layouts-helpers.ts';

const PT = join(REPO, 'test', 'data', 'pt');

describe('textual inversion layouts (§6.1)', () => {
  test('A1111 .pt tree: file stem is the trigger; back to the same dict', () => {
    const vec = T.randn([3, 768]);
    const tree = { string_to_token: { '*': 265 }, string_to_param: { '*': vec }, name: 'stored', step: 120, sd_checkpoint: 'abcdef0123', sd_checkpoint_name: 'v1-5' };
    const e = embeddingFromObject(tree, { fileStem: 'my-style' });
    try {
      assert.deepEqual([e.name, e.layout, e.step, vectorCount(e), embeddingFamily(e)], ['my-style', 'a1111', 120, 3, 'sd1']);
      assert.deepEqual(e.checkpoint, { hash: 'abcdef0123', name: 'v1-5' });
      assertSameTensor(e.vectors.te!, vec, 'vectors');
      const out = embeddingToA1111(e);
      assert.deepEqual({ ...out, string_to_param: null }, { ...tree, name: 'my-style', string_to_param: null });
      assertSameTensor(out.string_to_param['*'], vec, 'written vectors');
      out.string_to_param['*'].dispose();
      assert.equal(embeddingFromObject(tree).name, 'stored');
    } finally {
      disposeEmbedding(e);
      vec.dispose();
    }
  });

  test('legacy .pt: token as a 0-d tensor, vectors in a ParameterDict; 1-D vector = one row', () => {
    const vec = T.randn([1024]);
    const tok = T.tensor(265, { dtype: 'int64' });
    // A ParameterDict as a pickle reader hands it over: an object whose state holds _parameters.
    const tree = { string_to_token: { '*': tok }, string_to_param: { cls: 'ParameterDict', state: new Map([['_parameters', new Map([['*', vec]])]]) } };
    const e = embeddingFromObject(tree, { fileStem: 'old' });
    assert.deepEqual([e.layout, e.vectors.te?.shape, embeddingFamily(e)], ['a1111-legacy', [1, 1024], 'sd2']);
    disposeEmbedding(e);
    disposeAll(new Map([['v', vec], ['t', tok]]));
  });

  test('kohya, SDXL and diffusers safetensors layouts, both ways', () => {
    const a = T.randn([2, 768]), l = T.randn([2, 768]), g = T.randn([2, 1280]);
    const kohya = embeddingFromStateDict(new Map([['emb_params', a]]), { fileStem: 'k' });
    const sdxl = embeddingFromStateDict(new Map([['clip_l', l], ['clip_g', g]]), { fileStem: 'x' });
    const diff = embeddingFromStateDict(new Map([['<cat-toy>', a]]));
    const outs: StateDict[] = [];
    try {
      assert.deepEqual([kohya.layout, kohya.name], ['kohya', 'k']);
      assert.deepEqual([sdxl.layout, embeddingFamily(sdxl)], ['sdxl', 'sdxl']);
      assert.deepEqual([diff.layout, diff.name, diff.token], ['diffusers', 'cat-toy', '<cat-toy>']);
      outs.push(embeddingToKohya(kohya), embeddingToKohya(sdxl), embeddingToDiffusers(diff), embeddingToDiffusers(kohya));
      assert.deepEqual(outs.map((o) => [...o.keys()]), [['emb_params'], ['clip_l', 'clip_g'], ['<cat-toy>'], ['<k>']]);
      assertSameTensor(outs[1].get('clip_g')!, g, 'clip_g');
      assert.throws(() => embeddingToA1111(sdxl), /SDXL/);
      assert.throws(() => embeddingFromStateDict(new Map([['a', a], ['b', a]])), /not a textual-inversion embedding/);
    } finally {
      for (const e of [kohya, sdxl, diff]) disposeEmbedding(e);
      disposeAll(...outs, new Map([['a', a], ['l', l], ['g', g]]));
    }
  });

  test('real A1111 embedding.pt: read, write with torchfile, read back', () => {
    const tree = loadTorchFile(join(PT, 'embedding.pt'));
    assert.equal(detectObject(tree).kind, 'embedding');
    const e = embeddingFromObject(tree);
    const tmp = tempDir();
    try {
      assert.deepEqual([e.name, e.step, e.checkpoint, e.vectors.te?.shape], ['my-style', 500, { hash: 'e1441589a6', name: 'v1-5-pruned-emaonly' }, [2, 8]]);
      const want = T.linspace(-1, 1, 16).reshape(2, 8);
      assertSameTensor(e.vectors.te!.contiguous(), want, 'linspace vectors');
      const out = embeddingToA1111(e);
      saveTorchFile(join(tmp.dir, 'my-style.pt'), out);
      const again = embeddingFromObject(loadTorchFile(join(tmp.dir, 'my-style.pt')), { fileStem: 'my-style' });
      assert.deepEqual([again.layout, again.step, again.checkpoint], ['a1111', 500, e.checkpoint]);
      assertSameTensor(again.vectors.te!.contiguous(), want, 'written and re-read');
      disposeEmbedding(again);
      out.string_to_param['*'].dispose();
      want.dispose();
    } finally {
      disposeEmbedding(e);
      tmp.cleanup();
    }
  });
});

describe('hypernetworks (§7.1, §7.2)', () => {
  const base = { layerStructure: [1, 2, 1], activation: 'relu', addLayerNorm: true, dropoutStructure: [0, 0, 0], activateOutput: false };

  test('module layout counts parameter-less layers (the §7.2 table)', () => {
    assert.deepEqual([...hypernetworkModuleKeys(768, { ...base, activation: 'linear', addLayerNorm: false })], [
      ['linear.0.weight', [1536, 768]], ['linear.0.bias', [1536]], ['linear.1.weight', [768, 1536]], ['linear.1.bias', [768]],
    ]);
    assert.deepEqual([...hypernetworkModuleKeys(768, { ...base, addLayerNorm: false }).keys()], ['linear.0.weight', 'linear.0.bias', 'linear.2.weight', 'linear.2.bias']);
    assert.deepEqual(hypernetworkLayers(768, base).map((l) => `${l.index}:${l.kind}`), ['0:linear', '1:activation', '2:layernorm', '3:linear', '4:layernorm']);
    assert.deepEqual(hypernetworkModuleKeys(768, base).get('linear.4.weight'), [768]);
    assert.deepEqual(defaultDropoutStructure([1, 2, 2, 1], true, true), [0, 0.3, 0.3, 0]);
    assert.deepEqual(defaultDropoutStructure([1, 2, 1], false, false), [0, 0, 0]);
    assert.deepEqual(hypernetworkLayers(8, { ...base, addLayerNorm: false, dropoutStructure: [0, 0.3, 0.3, 0], layerStructure: [1, 2, 2, 1] }).map((l) => l.kind),
      ['linear', 'activation', 'dropout', 'linear', 'activation', 'dropout', 'linear']);
  });

  test('synthetic dict → typed → dict, with int width keys and A1111 defaults', () => {
    const mod = (dim: number): Map<string, T.Tensor> => new Map([...hypernetworkModuleKeys(dim, base)].map(([k, s]) => [k, T.randn(s)]));
    const src = new Map<string | number, unknown>([
      [768, [mod(768), mod(768)]], [320, [mod(320), mod(320)]],
      ['step', 10], ['name', 'hn'], ['layer_structure', [1, 2, 1]], ['activation_func', 'relu'], ['is_layer_norm', true], ['activate_output', false],
    ]);
    const h = hypernetworkFromObject(src);
    try {
      assert.deepEqual([h.name, h.step, h.weightInit, h.useDropout, h.dropoutStructure, h.lastLayerDropout, [...h.modules.keys()]],
        ['hn', 10, 'Normal', false, [0, 0, 0], false, [768, 320]]);
      assert.deepEqual(validateHypernetwork(h), []);
      const out = hypernetworkToObject(h);
      assert.deepEqual([...out.keys()].slice(0, 3), [768, 320, 'step']);
      assert.equal(out.get('is_layer_norm'), true);
      assert.equal(out.get('last_layer_dropout'), false);
      const again = hypernetworkFromObject(out);
      for (const [dim, [k, v]] of h.modules) {
        const [k2, v2] = again.modules.get(dim)!;
        for (const [key, t] of k) assertSameTensor(k2.get(key)!, t, `${dim} k ${key}`);
        for (const [key, t] of v) assertSameTensor(v2.get(key)!, t, `${dim} v ${key}`);
      }
      disposeHypernetwork(again);
      for (const [key, pair] of out) if (typeof key === 'number') for (const sd of pair as StateDict[]) disposeAll(sd);
      // A wrong shape is reported, not silently loaded.
      h.modules.get(320)![0].set('linear.0.weight', T.zeros([3, 3]));
      assert.match(validateHypernetwork(h).join('\n'), /320 k: linear.0.weight is \[3, 3\], expected \[640, 320\]/);
    } finally {
      disposeHypernetwork(h);
      for (const [key, pair] of src) if (typeof key === 'number') for (const sd of pair as StateDict[]) disposeAll(sd);
    }
  });

  test('very old linear1/linear2 names map to linear.0/linear.1', () => {
    const sd = new Map([['linear1.weight', T.zeros([4, 2])], ['linear1.bias', T.zeros([4])], ['linear2.weight', T.zeros([2, 4])], ['linear2.bias', T.zeros([2])]]);
    const h = hypernetworkFromObject({ 2: [sd, sd] });
    assert.deepEqual([...h.modules.get(2)![0].keys()], ['linear.0.weight', 'linear.0.bias', 'linear.1.weight', 'linear.1.bias']);
    assert.deepEqual([h.layerStructure, h.activation, h.activateOutput], [[1, 2, 1], null, true]);
    assert.deepEqual(validateHypernetwork(h), []);
    disposeHypernetwork(h);
    disposeAll(sd);
  });

  test('real hypernetwork.pt: read, write with torchfile, read back', () => {
    const tree = loadTorchFile(join(PT, 'hypernetwork.pt'));
    assert.deepEqual([detectObject(tree).kind, detectObject(tree).family.family], ['hypernetwork', 'sd2']);
    const h = hypernetworkFromObject(tree);
    const tmp = tempDir();
    try {
      assert.deepEqual([h.name, h.step, h.activation, h.activateOutput, h.layerStructure, [...h.modules.keys()]],
        ['tiny-hn', 1000, 'relu', false, [1, 2, 1], [320, 640, 768, 1024, 1280]]);
      // The file stores tiny stand-in widths d = size/320 under the real keys (test/data/pt/make.py).
      for (const [size, [k]] of h.modules) {
        const d = size / 320;
        assert.deepEqual([...k].map(([key, t]) => [key, t.shape]), [...hypernetworkModuleKeys(d, h)]);
      }
      const w = h.modules.get(640)![1].get('linear.2.bias')!;
      assert.deepEqual(w.toArray(), [2 + 3 * 0.5, 2 + 3 * 0.5 + 0.01].map((x) => Math.fround(x)));
      saveTorchFile(join(tmp.dir, 'hn.pt'), hypernetworkToObject(h));
      const again = hypernetworkFromObject(loadTorchFile(join(tmp.dir, 'hn.pt')));
      assert.deepEqual([...again.modules.keys()], [320, 640, 768, 1024, 1280]);
      assertSameTensor(again.modules.get(640)![1].get('linear.2.bias')!, w, 'round trip');
      assert.deepEqual([again.dropoutStructure, again.lastLayerDropout, again.optionalInfo], [[0, 0, 0], false, null]);
      disposeHypernetwork(again);
    } finally {
      disposeHypernetwork(h);
      tmp.cleanup();
    }
  });
});
