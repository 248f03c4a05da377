// Helpers shared by the layout tests: fixture tables, key listings and tensor comparison.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import * as T from '../../src/torch/index.ts';
import { SafetensorsFile } from '../../src/formats/safetensors.ts';
import type { KeyShapes, StateDict } from '../../src/formats/layouts/index.ts';
import { FIXTURES, SPECS } from '../helpers.ts';

/** Rows of an appendix table, header dropped. */
export function readTsv(name: string): string[][] {
  const lines = readFileSync(join(SPECS, 'appendix', name), 'utf8').split('\n').filter((l) => l.length > 0);
  return lines.slice(1).map((l) => l.split('\t'));
}

/** "[1280, 320]" → [1280, 320]; "[]" → []. */
export function parseShape(s: string): number[] {
  const inner = s.trim().replace(/^\[|\]$/g, '').trim();
  return inner === '' ? [] : inner.split(',').map((x) => Number(x.trim()));
}

interface KeyListing {
  keys: Record<string, { shape: number[] }> | Record<string, Record<string, { shape: number[] }>>;
}

/** full_sd15_keys/<name>.json as KeyShapes (ldm files) or per component (diffusers files). */
export function fullLdmKeys(name: 'sd15_ldm' | 'sd2_ldm'): KeyShapes {
  const j = JSON.parse(readFileSync(join(FIXTURES, 'full_sd15_keys', `${name}.json`), 'utf8')) as KeyListing;
  return new Map(Object.entries(j.keys as Record<string, { shape: number[] }>).map(([k, v]) => [k, v.shape]));
}

export function fullDiffusersKeys(name: 'sd15_diffusers' | 'sd2_diffusers'): { unet: KeyShapes; vae: KeyShapes; textEncoder: KeyShapes } {
  const j = JSON.parse(readFileSync(join(FIXTURES, 'full_sd15_keys', `${name}.json`), 'utf8')) as KeyListing;
  const k = j.keys as Record<string, Record<string, { shape: number[] }>>;
  const m = (o: Record<string, { shape: number[] }>): KeyShapes => new Map(Object.entries(o).map(([a, v]) => [a, v.shape]));
  return { unet: m(k.unet), vae: m(k.vae), textEncoder: m(k.text_encoder) };
}

/** Every tensor of a safetensors fixture, loaded, plus its metadata. */
export function loadFixture(...parts: string[]): { sd: StateDict; metadata: Record<string, string> } {
  const f = SafetensorsFile.open(join(FIXTURES, ...parts));
  try {
    const sd: StateDict = new Map();
    for (const k of f.keys()) sd.set(k, f.get(k));
    return { sd, metadata: { ...f.metadata } };
  } finally {
    f.close();
  }
}

export function disposeAll(...maps: (Map<string, T.Tensor> | undefined)[]): void {
  for (const m of maps) for (const t of m?.values() ?? []) t.dispose();
}

/** Bit-exact: same dtype, shape and bytes. */
export function assertSameTensor(a: T.Tensor, b: T.Tensor, what: string): void {
  assert.deepEqual(a.shape, b.shape, `${what}: shape`);
  assert.equal(a.dtype, b.dtype, `${what}: dtype`);
  assert.ok(a.toBuffer().equals(b.toBuffer()), `${what}: values differ`);
}

/** Same key set, and every tensor bit-exact. */
export function assertSameStateDict(a: StateDict, b: StateDict, what: string): void {
  const ka = [...a.keys()].sort(), kb = [...b.keys()].sort();
  const onlyA = ka.filter((k) => !b.has(k)), onlyB = kb.filter((k) => !a.has(k));
  assert.deepEqual([onlyA.slice(0, 5), onlyB.slice(0, 5)], [[], []], `${what}: key sets differ (${onlyA.length} only left, ${onlyB.length} only right)`);
  for (const [k, t] of a) assertSameTensor(t, b.get(k)!, `${what}: ${k}`);
}

/** Same keys and shapes. */
export function assertSameKeyShapes(a: KeyShapes, b: KeyShapes, what: string): void {
  const onlyA = [...a.keys()].filter((k) => !b.has(k)), onlyB = [...b.keys()].filter((k) => !a.has(k));
  assert.deepEqual([onlyA.slice(0, 5), onlyB.slice(0, 5)], [[], []], `${what}: key sets differ (${onlyA.length} only left, ${onlyB.length} only right)`);
  for (const [k, s] of a) assert.deepEqual(s, b.get(k), `${what}: shape of ${k}`);
}
