// PNG: decoding matches PIL on every colour type; encoding round-trips with A1111's text chunk;
// damaged and oversized files fail with the file's name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { decodePng, encodePng, writePng, PngError } from '../../src/formats/png.ts';
import { REPO, tempDir } from '../helpers.ts';

const DIR = join(REPO, 'test', 'data', 'png');
const expected = JSON.parse(readFileSync(join(DIR, 'expected.json'), 'utf8')) as Record<string, { mode: string; rgba: number[]; text: Record<string, string> }>;

test('decodes every file PIL wrote to the same pixels and text', () => {
  for (const [f, e] of Object.entries(expected)) {
    if (f === 'grey16.png') continue; // PIL clips 16-bit 'I' to 255 when converting; checked below
    const img = decodePng(readFileSync(join(DIR, f)), f);
    assert.equal(img.width, 7);
    assert.equal(img.height, 5);
    const rgba: number[] = [];
    for (let i = 0; i < img.width * img.height; i++) {
      for (let c = 0; c < 3; c++) rgba.push(img.data[i * img.channels + c]);
      rgba.push(img.channels === 4 ? img.data[i * 4 + 3] : 255);
    }
    assert.deepEqual(rgba, e.rgba, f);
    assert.deepEqual(img.text, e.text, `${f} text`);
  }
});

test('16-bit grey keeps the high byte', () => {
  const img = decodePng(readFileSync(join(DIR, 'grey16.png')));
  for (let y = 0; y < 5; y++) for (let x = 0; x < 7; x++) assert.equal(img.data[(y * 7 + x) * 3], (x * 9000 + y * 300) >> 8);
});

test('encode → decode round trip with Latin-1 and Unicode text chunks', () => {
  const data = new Uint8Array(5 * 4 * 4).map((_, i) => (i * 37) % 256);
  const text = { parameters: 'a cat\nNegative prompt: dog\nSteps: 20, Seed: 1', title: 'café ✓ 猫' };
  const buf = encodePng({ width: 5, height: 4, channels: 4, data }, text);
  const back = decodePng(buf);
  assert.deepEqual(Array.from(back.data), Array.from(data));
  assert.deepEqual(back.text, text);
  const { dir, cleanup } = tempDir();
  try {
    const p = join(dir, 'out.png');
    writePng(p, { width: 5, height: 4, channels: 4, data }, text);
    assert.deepEqual(decodePng(readFileSync(p)).text, text);
    assert.deepEqual(readdirSync(dir), ['out.png'], 'no temp files left');
    assert.throws(() => writePng(join(dir, 'missing', 'x.png'), { width: 1, height: 1, channels: 3, data: new Uint8Array(3) }), /cannot write .*missing\/x\.png/);
    assert.equal(existsSync(join(dir, 'missing')), false);
  } finally {
    cleanup();
  }
});

test('damaged, truncated, oversized and non-PNG files give clear errors', () => {
  const good = readFileSync(join(DIR, 'rgb.png'));
  assert.throws(() => decodePng(Buffer.from('GIF89a...'), 'x.gif'), /x\.gif: not a PNG file/);
  assert.throws(() => decodePng(good.subarray(0, good.length - 20), 'cut.png'), /cut\.png: .*(truncated|past the end)/);
  const bad = Buffer.from(good);
  bad[40] ^= 0xff;
  assert.throws(() => decodePng(bad, 'crc.png'), /crc\.png: .*corrupt \(CRC mismatch\)|damaged/);
  // A 20000×20000 header is refused before any pixel is inflated.
  const huge = encodePng({ width: 1, height: 1, channels: 3, data: new Uint8Array(3) });
  const ihdr = Buffer.from(huge);
  ihdr.writeUInt32BE(20000, 16);
  ihdr.writeUInt32BE(20000, 20);
  // fix the CRC of IHDR so only the size is the problem
  const { crc } = recrc(ihdr.subarray(12, 29));
  ihdr.writeUInt32BE(crc, 29);
  assert.throws(() => decodePng(ihdr, 'big.png'), /big\.png: the image is 20000×20000, over the 268-megapixel limit/);
  assert.ok(PngError);
});

function recrc(typeAndData: Buffer): { crc: number } {
  let c = 0xffffffff;
  for (const b of typeAndData) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  }
  return { crc: (c ^ 0xffffffff) >>> 0 };
}
