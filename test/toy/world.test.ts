// The toy world: same seed → same bytes, captions round-trip through the parser, every attribute
// is drawn, pixels honour the attributes, the concepts change what they should, and a written
// folder reads back pixel for pixel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { decodePng, type RgbImage } from '../../src/formats/png.ts';
import {
  BACKGROUNDS, COLOURS, PATTERNS, POSITIONS, SHAPES, SIZES, WORLD_COMBINATIONS, WorldError,
  applyStyle, caption, conceptTrainingSet, datasetOf, isCompleteScene, parseCaption,
  renderScene, renderSubject, sampleScene, writeWorldFolder, type SceneAttrs,
} from '../../src/toy/world.ts';
import { FILEWORDS, classPromptsFor } from '../../src/training/class-images.ts';
import { tempDir } from '../helpers.ts';

const hashOf = (images: Iterable<RgbImage>) => {
  const h = createHash('sha256');
  for (const im of images) h.update(im.data);
  return h.digest('hex');
};
const pixel = (im: RgbImage, x: number, y: number) => Array.from(im.data.subarray((y * im.width + x) * 3, (y * im.width + x) * 3 + 3));
const meanAbsDiff = (a: RgbImage, b: RgbImage) => {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += Math.abs(a.data[i] - b.data[i]);
  return s / a.data.length;
};
/** Fraction of pixels where some channel differs by more than `t` levels. */
const changedFraction = (a: RgbImage, b: RgbImage, t = 40) => {
  let n = 0;
  for (let p = 0; p < a.width * a.height; p++) if ([0, 1, 2].some((c) => Math.abs(a.data[p * 3 + c] - b.data[p * 3 + c]) > t)) n++;
  return n / (a.width * a.height);
};
const scene = (o: Partial<SceneAttrs>): SceneAttrs => ({ shape: 'square', colour: 'red', size: 'large', position: 'center', background: 'black', pattern: 'plain', ...o });

test('the world has 2400 scenes', () => {
  assert.equal(WORLD_COMBINATIONS, 5 * 6 * 2 * 5 * 4 * 2);
});

test('same seed gives byte-identical images; another seed gives others', () => {
  const a = hashOf(Array.from(datasetOf(20, 7), (it) => it.image));
  const b = hashOf(Array.from(datasetOf(20, 7), (it) => it.image));
  const c = hashOf(Array.from(datasetOf(20, 8), (it) => it.image));
  assert.equal(a, b);
  assert.notEqual(a, c);
  // Random access: scene 13 does not depend on the scenes before it.
  assert.deepEqual(sampleScene(7, 13), [...datasetOf(14, 7)][13].attrs);
  // Jitter varies a scene without changing what it is; no seed is the canonical picture.
  const s = scene({ shape: 'star', size: 'small' });
  assert.notEqual(hashOf([renderScene(s, { seed: 1 })]), hashOf([renderScene(s, { seed: 2 })]));
  assert.equal(hashOf([renderScene(s)]), hashOf([renderScene(s)]));
});

test('caption → parseCaption round-trips over 500 scenes', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 500; i++) {
    const a = sampleScene(11, i);
    const text = caption(a);
    seen.add(text);
    const back = parseCaption(text);
    assert.deepEqual(back, a, text);
    assert.ok(isCompleteScene(back));
    if (a.shape === 'heart') assert.deepEqual(parseCaption(caption(a, { subject: true })), { ...a, subject: true });
  }
  assert.ok(seen.size > 400, `500 samples of 2400 scenes gave only ${seen.size} distinct captions`);
  assert.equal(caption(scene({ shape: 'star', colour: 'red', size: 'small', position: 'top', background: 'cyan', pattern: 'striped' })), 'a small red star at the top, on a striped cyan background');
  assert.equal(caption(scene({ background: 'orange' })), 'a large red square in the center, on an orange background');
});

test('parseCaption reads partial prompts and refuses what the world lacks', () => {
  assert.deepEqual(parseCaption('a red heart on a gray background'), { shape: 'heart', colour: 'red', background: 'gray', pattern: 'plain' });
  assert.deepEqual(parseCaption('sks heart on a grey background'), { subject: true, shape: 'heart', background: 'gray', pattern: 'plain' });
  assert.deepEqual(parseCaption('A Heart'), { shape: 'heart' });
  assert.throws(() => parseCaption('a sks heart on a green background'), (e: Error) => e instanceof WorldError && /green is not a background/.test(e.message));
  assert.throws(() => parseCaption('a red circle and a red square'), /names two shapes/);
  assert.throws(() => parseCaption('a sks star'), /the subject "sks" is a heart/);
});

test('every attribute value appears, roughly uniformly, in 500 samples', () => {
  const scenes = Array.from({ length: 500 }, (_, i) => sampleScene(3, i));
  const check = <K extends keyof SceneAttrs>(key: K, values: readonly SceneAttrs[K][]) => {
    const expected = 500 / values.length;
    for (const v of values) {
      const n = scenes.filter((s) => s[key] === v).length;
      // Binomial sd is ≤ √(500·¼) ≈ 11: ±35% of the mean is > 2.5 sd for every attribute.
      assert.ok(Math.abs(n - expected) < 0.35 * expected, `${key}=${v}: ${n} of 500, expected about ${expected}`);
    }
  };
  check('shape', SHAPES);
  check('colour', COLOURS);
  check('size', SIZES);
  check('position', POSITIONS);
  check('background', BACKGROUNDS);
  check('pattern', PATTERNS);
});

test('a large red square in the center on black: red middle, black corners', () => {
  for (const seed of [undefined, 1, 2, 3]) {
    const im = renderScene(scene({}), { seed });
    const [r, g, b] = pixel(im, 16, 16);
    assert.ok(r > 180 && g < 70 && b < 70, `centre ${[r, g, b]} (seed ${seed}) is not red`);
    for (const [x, y] of [[0, 0], [31, 0], [0, 31], [31, 31]]) assert.ok(pixel(im, x, y).every((v) => v < 30), `corner ${x},${y} ${pixel(im, x, y)} is not black`);
  }
  // Anti-aliasing (4×4 samples a pixel): a circle's rim is pixels between red and black.
  const circle = renderScene(scene({ shape: 'circle' }));
  let rim = 0;
  for (let p = 0; p < 32 * 32; p++) if (circle.data[p * 3] > 40 && circle.data[p * 3] < 180) rim++;
  assert.ok(rim > 20, `only ${rim} intermediate pixels on the rim of a large circle`);
});

test('small shapes sit where their position says: colour-mass centroid in the right third', () => {
  for (const shape of SHAPES) {
    for (const position of POSITIONS) {
      for (const seed of [5, 6]) {
        const im = renderScene(scene({ shape, position, size: 'small', colour: 'white' }), { seed });
        let m = 0, mx = 0, my = 0;
        for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) {
          const w = Math.max(0, im.data[(y * 32 + x) * 3 + 1] - 40); // white on black (12): green above the background measures coverage
          m += w;
          mx += w * (x + 0.5);
          my += w * (y + 0.5);
        }
        const cx = mx / m / 32, cy = my / m / 32;
        const third = (v: number) => (v < 1 / 3 ? 0 : v < 2 / 3 ? 1 : 2);
        const want = { center: [1, 1], left: [0, 1], right: [2, 1], top: [1, 0], bottom: [1, 2] }[position];
        assert.deepEqual([third(cx), third(cy)], want, `${shape} ${position} seed ${seed}: centroid ${cx.toFixed(3)}, ${cy.toFixed(3)}`);
      }
    }
  }
});

test('backgrounds and stripes: plain is one colour, striped has two tones', () => {
  const tones = (im: RgbImage) => {
    // Background only: the top row, above every centred large shape.
    const s = new Set<string>();
    for (let x = 0; x < 32; x++) s.add(pixel(im, x, 0).map((v) => Math.round(v / 32)).join());
    return s.size;
  };
  assert.equal(tones(renderScene(scene({ background: 'cyan' }))), 1);
  assert.ok(tones(renderScene(scene({ background: 'cyan', pattern: 'striped' }))) >= 2);
  const [r, g, b] = pixel(renderScene(scene({ background: 'orange' })), 0, 0);
  assert.ok(r > 200 && g > 100 && g < 180 && b < 70, `orange corner is ${[r, g, b]}`);
});

test('64×64 is the same picture as 32×32, sharper', () => {
  const s = scene({ shape: 'heart', colour: 'blue', size: 'small', position: 'right', background: 'gray', pattern: 'striped' });
  const big = renderScene(s, { size: 64, seed: 4 });
  const small = renderScene(s, { size: 32, seed: 4 });
  assert.equal(big.data.length, 64 * 64 * 3);
  // 2×2 average of the 64 image vs the 32 image: 8×8 vs 4×4 samples per 32-pixel, so only edge
  // pixels differ, by a few levels (1.0 on average here).
  const pooled = new Uint8Array(32 * 32 * 3);
  for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) for (let c = 0; c < 3; c++) {
    const at = (dx: number, dy: number) => big.data[((2 * y + dy) * 64 + 2 * x + dx) * 3 + c];
    pooled[(y * 32 + x) * 3 + c] = Math.round((at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1)) / 4);
  }
  assert.ok(meanAbsDiff({ ...small, data: pooled }, small) < 1.5, 'pooled 64 differs from 32');
});

test('the sks heart is not a plain heart of the same colour', () => {
  for (const colour of COLOURS) for (const size of SIZES) {
    const attrs = { colour, size, position: 'center', background: 'gray', pattern: 'plain' } as const;
    const sks = renderSubject(attrs, { seed: 9 });
    const plain = renderScene({ ...attrs, shape: 'heart' }, { seed: 9 });
    // Dots change about 9% of the image for a large heart (a third of it), 3% for a small one.
    const f = changedFraction(sks, plain);
    assert.ok(f > (size === 'large' ? 0.06 : 0.02), `${colour} ${size}: only ${(f * 100).toFixed(1)}% of pixels differ`);
    // Outside the heart nothing changes.
    assert.deepEqual(pixel(sks, 0, 0), pixel(plain, 0, 0));
  }
  assert.throws(() => renderScene(scene({ shape: 'star' }), { subject: true }), /the subject is a heart/);
});

test('the outline style changes every scene and empties the inside', () => {
  for (let i = 0; i < 60; i++) {
    const a = sampleScene(21, i);
    const styled = applyStyle(a, 'outline', { seed: i });
    const plain = renderScene(a, { seed: i });
    const f = changedFraction(styled, plain);
    // Over 2000 scenes the least changed are 1.3% (small) and 3.0% (large) of the pixels.
    assert.ok(f > (a.size === 'small' ? 0.008 : 0.02), `${caption(a)}: only ${(f * 100).toFixed(2)}% of pixels changed`);
  }
  const im = applyStyle(scene({ shape: 'circle' }), 'outline');
  assert.ok(pixel(im, 16, 16).every((v) => v < 30), 'the middle of an outlined circle is background');
  assert.ok(pixel(im, 16, 8)[0] > 150, 'its top edge is drawn in red');
});

test('concept sets: subject captions carry the token, style captions are plain scenes', () => {
  const subj = conceptTrainingSet('subject', 8, 1);
  assert.equal(subj.length, 8);
  for (const it of subj) {
    assert.match(it.caption, /^a large sks heart\b/);
    // The subject's own colour is left to its token, as DreamBooth captions one object.
    const { colour, ...named } = it.attrs;
    assert.equal(colour, 'red');
    assert.deepEqual(parseCaption(it.caption), { ...named, subject: true });
    assert.ok(it.subject && it.style === null && it.image.width === 32);
  }
  assert.ok(new Set(subj.map((it) => it.caption)).size >= 6, 'subject set repeats its captions');
  // DreamBooth's [filewords] class prompts: the captions without the token, each once.
  const prompts = classPromptsFor(FILEWORDS, subj.map((it) => it.caption), 'sks');
  assert.deepEqual(prompts, [...new Set(subj.map((it) => it.caption.replace('sks ', '')))]);
  assert.ok(prompts.every((p) => parseCaption(p).subject === undefined && parseCaption(p).shape === 'heart' && parseCaption(p).colour === undefined));
  // A set of hearts in any colour names each one's colour.
  const anyColour = conceptTrainingSet('subject', 12, 1, { colour: 'any' });
  for (const it of anyColour) assert.deepEqual(parseCaption(it.caption), { ...it.attrs, subject: true });
  assert.ok(new Set(anyColour.map((it) => it.attrs.colour)).size >= 3);

  const style = conceptTrainingSet('style', 10, 1, { size: 64 });
  assert.ok(style.every((it) => it.style === 'outline' && it.image.width === 64 && !/sks/.test(it.caption)));
  assert.ok(style.every((it) => changedFraction(it.image, renderScene(it.attrs, { size: 64 })) > 0.005));
  assert.ok(new Set(style.map((it) => it.attrs.shape)).size >= 3);
});

test('writeWorldFolder writes name.png + name.txt that read back equal', () => {
  const { dir, cleanup } = tempDir();
  try {
    const items = [...datasetOf(5, 2), ...conceptTrainingSet('subject', 2, 2)];
    const paths = writeWorldFolder(join(dir, 'train'), items);
    assert.equal(paths.length, 7);
    assert.deepEqual(readdirSync(join(dir, 'train')).sort(), items.flatMap((it) => [`${it.name}.png`, `${it.name}.txt`]).sort());
    for (const it of items) {
      const back = decodePng(readFileSync(join(dir, 'train', `${it.name}.png`)));
      assert.deepEqual([back.width, back.height, back.channels], [32, 32, 3]);
      assert.deepEqual(back.data, it.image.data, it.name);
      assert.equal(readFileSync(join(dir, 'train', `${it.name}.txt`), 'utf8'), it.caption + '\n');
    }
    assert.throws(() => writeWorldFolder(join(dir, 'dup'), [items[0], items[0]]), /two items are named "world-00000"/);
  } finally {
    cleanup();
  }
});
