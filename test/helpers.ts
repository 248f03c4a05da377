// Shared test helpers: where the reference fixtures are, numeric comparisons, captioned training folders.
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import assert from 'node:assert/strict';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
/** ../shared beside the checkout (tests may read it; the product may not). */
export const SHARED = process.env.SDTUNE_SHARED ?? join(REPO, '..', 'shared');
export const FIXTURES = join(SHARED, 'fixtures');
export const SPECS = join(SHARED, 'specs');

export function fixture(...parts: string[]): string {
  const p = join(FIXTURES, ...parts);
  assert.ok(existsSync(p), `fixture missing: ${p}`);
  return p;
}

/** A fresh temporary folder, removed by the returned cleanup. */
export function tempDir(prefix = 'sdtune-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** max |a - b| over two equal-length numeric arrays. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'length mismatch');
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, atol: number, what = 'values'): number {
  const d = maxAbsDiff(a, b);
  assert.ok(d <= atol, `${what}: max abs error ${d} exceeds ${atol}`);
  return d;
}

/** The device the suite runs its device-aware tests on: SDTUNE_TEST_DEVICE=cuda on a GPU machine. */
export const DEVICE: string = process.env.SDTUNE_TEST_DEVICE ?? 'cpu';

/** A training folder: name.png with name.txt (its caption) beside it, for each entry. Returns the folder. */
export function writeCaptionedFolder(dir: string, entries: readonly { name: string; caption: string; png: Uint8Array }[]): string {
  mkdirSync(dir, { recursive: true });
  for (const e of entries) {
    writeFileSync(join(dir, `${e.name}.png`), e.png);
    writeFileSync(join(dir, `${e.name}.txt`), e.caption);
  }
  return dir;
}
