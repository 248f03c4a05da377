// safetensors (sd-formats.md §1): reference fixtures, every dtype, byte-exact writing, a hostile
// corpus with its messages, a fuzz run, and atomic saves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as T from '../../src/torch/index.ts';
import {
  MAX_HEADER_SIZE,
  SAFETENSORS_DTYPES,
  SafetensorsError,
  SafetensorsFile,
  parseSafetensors,
  readSafetensorsHeader,
  saveSafetensors,
  saveSafetensorsRaw,
  serializeSafetensors,
  serializeSafetensorsRaw,
  torchDtype,
  type RawTensor,
} from '../../src/formats/safetensors.ts';
import { REPO, fixture, tempDir } from '../helpers.ts';

const live = () => T.memoryStats().live;

/** A file's header and data section read with plain JSON.parse: an independent path to compare against. */
function rawRead(path: string): { json: string; header: Record<string, any>; data: Buffer } {
  const b = readFileSync(path);
  const n = Number(b.readBigUInt64LE(0));
  const json = b.subarray(8, 8 + n).toString('utf8');
  return { json, header: JSON.parse(json), data: b.subarray(8 + n) };
}

/** Deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function randomBytes(n: number, r: () => number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

/** A file from a header (string or object) and a data section, with an optional lying length. */
function build(header: string | object, data: Buffer | number = 0, declared?: bigint): Buffer {
  const h = Buffer.isBuffer(header) ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(declared ?? BigInt(h.length));
  return Buffer.concat([len, h, typeof data === 'number' ? Buffer.alloc(data) : data]);
}

// ---- reference fixtures -------------------------------------------------------------------------

test('reads the SD1 UNet fixture: keys, shapes, dtypes, metadata, values, parameter count', () => {
  const before = live();
  const p = fixture('unet', 'sd1', 'diffusion_pytorch_model.safetensors');
  const ref = rawRead(p);
  using f = SafetensorsFile.open(p);
  assert.equal(f.keys().length, 304);
  assert.deepEqual(f.metadata, { format: 'pt' });
  assert.equal(f.parameterCount(), 283284); // unet/meta.json sd1.n_params
  assert.deepEqual(f.shape('conv_in.weight'), [16, 4, 3, 3]);
  assert.equal(f.dtype('conv_in.weight'), 'F32');
  // Same entries as a plain JSON.parse of the header, and the same bytes as the file at those offsets.
  for (const e of f.entries()) {
    assert.deepEqual([...e.dataOffsets], ref.header[e.key].data_offsets);
    assert.deepEqual([...e.shape], ref.header[e.key].shape);
  }
  for (const key of ['conv_in.bias', 'conv_in.weight', 'mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight']) {
    const [b, e] = ref.header[key].data_offsets;
    const want = Array.from(new Float32Array(ref.data.buffer.slice(ref.data.byteOffset + b, ref.data.byteOffset + e)));
    const t = f.get(key);
    assert.equal(t.dtype, 'float32');
    assert.deepEqual(t.shape, ref.header[key].shape);
    assert.deepEqual(t.toArray(), want); // exact: the same bytes
    t.dispose();
  }
  // The header alone, without a mapping, gives the same entries.
  assert.deepEqual(readSafetensorsHeader(p).entries, f.entries());
  // It is a TensorSource: a VarBuilder takes its tensors from it.
  const vb = T.nn.VarBuilder.from(f);
  const w = vb.get('conv_in.bias', [16], (s, o) => T.zeros(s, o));
  assert.equal(w.shape[0], 16);
  w.dispose();
  assert.equal(live(), before);
});

test('reads the LoRA fixture metadata, the 0-d alpha, and int64 / float64 fixtures', () => {
  const before = live();
  using lora = SafetensorsFile.open(fixture('training', 'lora_init.safetensors'));
  assert.deepEqual(lora.metadata, { ss_network_dim: '4', ss_network_alpha: '4.0', note: 'fixture init: lora_up is NON-zero on purpose' });
  assert.equal(lora.keys().length, 48 * 3);
  const alpha = lora.get('lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.alpha');
  assert.deepEqual(alpha.shape, []);
  assert.equal(alpha.item(), 4.0);
  alpha.dispose();
  assert.deepEqual(lora.shape('lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_up.weight'), [16, 4]);

  using inputs = SafetensorsFile.open(fixture('unet', 'inputs.safetensors'));
  assert.deepEqual(inputs.metadata, {});
  const ti = inputs.get('timestep_int');
  assert.equal(ti.dtype, 'int64');
  assert.deepEqual(ti.toArray(), [951, 21]);
  const ts = inputs.get('timestep_scalar');
  assert.deepEqual([ts.shape, ts.toArray()], [[], [500]]);
  assert.deepEqual(inputs.shape('sample'), [2, 4, 16, 16]);

  // The in-memory reader agrees with the mapped one.
  const mem = parseSafetensors(readFileSync(fixture('unet', 'inputs.safetensors')), 'inputs');
  const ehs1 = inputs.get('encoder_hidden_states');
  const ehs2 = mem.get('encoder_hidden_states');
  assert.ok(ehs1.toBuffer().equals(ehs2.toBuffer()));
  assert.ok(inputs.getBytes('sample').equals(mem.getBytes('sample')));

  using sched = SafetensorsFile.open(fixture('schedulers', 'schedulers.safetensors'));
  const ac = sched.get('alphas_cumprod_float64_own');
  assert.equal(ac.dtype, 'float64');
  assert.equal(ac.shape[0], 1000);
  const v = ac.toArray();
  assert.ok(v[0] > 0.99 && v[0] < 1 && v[999] > 0 && v[999] < 0.01, 'alphas_cumprod decreases from ~1 to ~0');
  for (const t of [ti, ts, ehs1, ehs2, ac]) t.dispose();
  assert.equal(live(), before);
});

test('missing keys, closed files and engine-less dtypes give errors that name the file and key', () => {
  const f = SafetensorsFile.open(fixture('unet', 'inputs.safetensors'));
  assert.throws(() => f.get('nope'), /inputs\.safetensors: has no tensor "nope" \(it holds 5 tensors, e\.g\. "timestep_int"/);
  const t = f.get('sample');
  f.close();
  assert.throws(() => f.get('sample'), /inputs\.safetensors: was closed; open it again to read "sample"/);
  assert.equal(t.shape.length, 4, 'a tensor made before close() stays valid');
  assert.ok(Number.isFinite(t.sum().item()));
  t.dispose();
});

// ---- writing ----------------------------------------------------------------------------------------

const ENGINE_DTYPES: T.DType[] = ['float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool'];

test('round trip of every engine dtype (0-d, empty and non-contiguous included): bytes equal', () => {
  const before = live();
  const { dir, cleanup } = tempDir();
  try {
    const r = rng(1);
    const want = new Map<string, Buffer>();
    const tensors = new Map<string, T.Tensor>();
    for (const d of ENGINE_DTYPES) {
      for (const [suffix, shape] of [['m', [3, 5]], ['s', []], ['e', [0, 4]]] as const) {
        const n = shape.reduce((a: number, b: number) => a * b, 1) * T.DTYPE_BYTES[d];
        const bytes = randomBytes(n, r);
        if (d === 'bool') for (let i = 0; i < n; i++) bytes[i] &= 1;
        tensors.set(`${d}.${suffix}`, T.fromBuffer(bytes, d, shape));
        want.set(`${d}.${suffix}`, bytes);
      }
    }
    const nc = T.tidy(() => T.arange(6, undefined, 1, { dtype: 'float32' }).reshape(2, 3).T);
    assert.equal(nc.isContiguous, false);
    tensors.set('noncontiguous', nc);
    const p = join(dir, 'all.safetensors');
    saveSafetensors(p, tensors, { note: 'round trip' });
    for (const src of [SafetensorsFile.open(p), parseSafetensors(serializeSafetensors(tensors.entries(), { note: 'round trip' }))]) {
      assert.deepEqual(src.metadata, { note: 'round trip', format: 'pt' });
      for (const [k, bytes] of want) {
        const d = k.split('.')[0] as T.DType;
        const e = src.entries().find((x) => x.key === k)!;
        assert.equal(torchDtype(e.dtype), d);
        assert.ok(src.getBytes(k).equals(bytes), `${k} bytes`);
        const t = src.get(k);
        assert.equal(t.dtype, d);
        assert.deepEqual(t.shape, tensors.get(k)!.shape);
        assert.ok(t.toBuffer().equals(bytes), `${k} tensor bytes`);
        t.dispose();
      }
      const back = src.get('noncontiguous');
      assert.deepEqual([back.shape, back.toArray()], [[3, 2], [0, 3, 1, 4, 2, 5]]);
      back.dispose();
      src.close();
    }
    for (const t of tensors.values()) t.dispose();
  } finally {
    cleanup();
  }
  assert.equal(live(), before);
});

test('round trip of dtypes the engine lacks, through the raw writer; get() refuses them clearly', () => {
  const { dir, cleanup } = tempDir();
  try {
    const r = rng(2);
    const bits: Record<string, number> = { U16: 16, U32: 32, U64: 64, F8_E5M2: 8, F8_E4M3: 8, F8_E8M0: 8, F8_E4M3FNUZ: 8, F8_E5M2FNUZ: 8, C64: 64, F4: 4, F6_E2M3: 6, F6_E3M2: 6 };
    const raw: RawTensor[] = Object.entries(bits).map(([dtype, b]) => ({ key: `w.${dtype}`, dtype, shape: [2, 4], data: randomBytes((8 * b) / 8, r) }));
    assert.deepEqual(new Set([...Object.keys(bits), ...ENGINE_DTYPES.map((d) => SAFETENSORS_DTYPES.find((s) => torchDtype(s) === d)!)]), new Set(SAFETENSORS_DTYPES), 'every §1.3 dtype is covered');
    const p = join(dir, 'raw.safetensors');
    saveSafetensorsRaw(p, raw, { format: 'pt' });
    using f = SafetensorsFile.open(p);
    for (const t of raw) {
      assert.equal(f.dtype(t.key), t.dtype);
      assert.ok(f.getBytes(t.key).equals(t.data), t.key);
    }
    assert.throws(() => f.get('w.F8_E4M3'), /raw\.safetensors: tensor "w\.F8_E4M3" has dtype F8_E4M3, which the tensor engine cannot hold: read its raw bytes with getBytes\(\)/);
    assert.throws(() => f.get('w.U16'), /tensor "w\.U16" has dtype U16/);
    assert.ok(parseSafetensors(serializeSafetensorsRaw(raw)).getBytes('w.F4').equals(raw.find((x) => x.dtype === 'F4')!.data));
    // The raw writer checks sizes before writing anything.
    assert.throws(() => saveSafetensorsRaw(join(dir, 'bad.safetensors'), [{ key: 'x', dtype: 'F32', shape: [3], data: Buffer.alloc(8) }]), /needs 12 bytes but 8 were given/);
    assert.throws(() => serializeSafetensorsRaw([{ key: 'x', dtype: 'F4', shape: [3], data: Buffer.alloc(1) }]), /F4 \[3\] needs 1\.5 bytes/);
    assert.equal(existsSync(join(dir, 'bad.safetensors')), false);
  } finally {
    cleanup();
  }
});

test('writer layout follows §1.4: {" first, space padding to 8, __metadata__ first with format, reference order, aligned offsets', () => {
  const t = (d: T.DType, n: number) => T.zeros([n], { dtype: d });
  // Names chosen so that name order and the reference's dtype order disagree.
  const ts: [string, T.Tensor][] = [['a_u8', t('uint8', 3)], ['b_f64', t('float64', 1)], ['c_i64', t('int64', 1)], ['d_f16', t('float16', 3)], ['e_bf16', t('bfloat16', 1)], ['f_f32', t('float32', 1)], ['g_bool', t('bool', 1)], ['h_i32', t('int32', 1)]];
  const buf = serializeSafetensors(ts, { ss_dim: '4' });
  const n = Number(buf.readBigUInt64LE(0));
  const json = buf.subarray(8, 8 + n).toString('utf8');
  assert.equal(n % 8, 0);
  assert.ok(json.startsWith('{"__metadata__":{"ss_dim":"4","format":"pt"},"c_i64":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},'), json);
  assert.match(json, /\} {0,7}$/, 'padded with spaces only');
  const f = parseSafetensors(buf);
  // The reference's `enum Dtype` order, descending: I64 > F64 > F32 > I32 > BF16 > F16 > U8 > BOOL.
  assert.deepEqual(f.keys(), ['c_i64', 'b_f64', 'f_f32', 'h_i32', 'e_bf16', 'd_f16', 'a_u8', 'g_bool']);
  const size: Record<string, number> = { I64: 8, F64: 8, F32: 4, I32: 4, BF16: 2, F16: 2, U8: 1, BOOL: 1 };
  for (const e of f.entries()) assert.equal((f.header.dataStart + e.dataOffsets[0]) % size[e.dtype], 0, `${e.key} aligned`);
  // Byte-identical to the reference's own unit-test vector (safetensors tensor.rs test_serialization).
  const x = T.tensor([0, 1, 2, 3, 4, 5], { shape: [1, 2, 3] });
  const refBytes = [64, 0, 0, 0, 0, 0, 0, 0, ...Buffer.from('{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}'), 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64];
  assert.deepEqual([...serializeSafetensors([['attn.0', x]], null)], refBytes);
  // test_empty: no tensors and no metadata is `{}` padded to 8.
  assert.deepEqual([...serializeSafetensors([], null)], [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
  // Refusals, before anything is written.
  assert.throws(() => serializeSafetensors([['a', x], ['a', x]]), /the tensor name "a" is given twice/);
  assert.throws(() => serializeSafetensors([['__metadata__', x]]), /cannot be named "__metadata__"/);
  assert.throws(() => serializeSafetensors([['a', x]], { n: 4 as unknown as string }), /metadata "n" is a number, but safetensors metadata values must be strings: pass String\(value\)/);
  assert.throws(() => serializeSafetensors([['bad\ud800', x]]), /unpaired UTF-16 surrogate/);
  const gone = T.zeros([1]);
  gone.dispose();
  assert.throws(() => serializeSafetensors([['g', gone]]), /tensor "g" was disposed before it was saved/);
  // A "__proto__" metadata key is an ordinary entry both ways.
  const odd = JSON.parse('{"__proto__":"x"}') as Record<string, string>;
  assert.equal(parseSafetensors(serializeSafetensors([], odd)).metadata['__proto__'], 'x');
  for (const [, y] of ts) y.dispose();
  x.dispose();
});

test('re-saving fixtures reproduces the reference bytes (and the documented ordering difference)', () => {
  const before = live();
  const resave = (f: SafetensorsFile, metadata: Record<string, string> | null) => {
    // Hand the tensors over in reverse, so the writer's own ordering is what is tested.
    const tensors = f.keys().reverse().map((k) => [k, f.get(k)] as [string, T.Tensor]);
    try {
      return serializeSafetensors(tensors, metadata);
    } finally {
      for (const [, t] of tensors) t.dispose();
    }
  };
  // Files with {"format":"pt"} (save_pretrained) and without metadata: identical bytes.
  for (const [p, meta] of [
    [fixture('unet', 'sd1', 'diffusion_pytorch_model.safetensors'), { format: 'pt' }],
    [fixture('vae', 'two_level', 'diffusion_pytorch_model.safetensors'), { format: 'pt' }],
    [fixture('unet', 'inputs.safetensors'), null],
  ] as const) {
    using f = SafetensorsFile.open(p);
    assert.ok(resave(f, meta).equals(readFileSync(p)), p);
  }
  // kohya-style metadata without "format": §1.4 rule 2 appends "format":"pt"; all else is identical.
  const lp = fixture('training', 'lora_init.safetensors');
  using lora = SafetensorsFile.open(lp);
  const ref = rawRead(lp);
  const out = resave(lora, { ...lora.metadata });
  const mine = parseSafetensors(out);
  const oldPrefix = '{"__metadata__":' + JSON.stringify(ref.header.__metadata__);
  assert.ok(ref.json.startsWith(oldPrefix));
  const wantJson = '{"__metadata__":' + JSON.stringify({ ...ref.header.__metadata__, format: 'pt' }) + ref.json.trimEnd().slice(oldPrefix.length);
  assert.equal(out.subarray(8, 8 + mine.header.headerLength).toString('utf8').trimEnd(), wantJson);
  assert.ok(out.subarray(mine.header.dataStart).equals(ref.data));
  // schedulers.safetensors mixes I64 and F64. The fixtures' pure-Python stand-in sorts by element
  // size then name (README "Environment shims"); the reference's `prepare` sorts by `enum Dtype`
  // (I64 ranks above F64), then name. We follow the reference: every I64 tensor comes first.
  const sp = fixture('schedulers', 'schedulers.safetensors');
  using sched = SafetensorsFile.open(sp);
  const ours = parseSafetensors(resave(sched, null));
  const kinds = (f: SafetensorsFile) => f.entries().filter((e) => e.byteLength > 0 && (e.dtype === 'I64' || e.dtype === 'F64')).map((e) => e.dtype);
  const ourKinds = kinds(ours);
  assert.equal(ourKinds.lastIndexOf('I64') < ourKinds.indexOf('F64'), true, 'I64 group before F64');
  const theirKinds = kinds(sched);
  assert.ok(theirKinds.lastIndexOf('I64') > theirKinds.indexOf('F64'), 'the stand-in interleaves them by name');
  assert.deepEqual(new Set(ours.keys()), new Set(sched.keys()));
  for (const k of sched.keys()) assert.ok(ours.getBytes(k).equals(sched.getBytes(k)), k);
  assert.equal(live(), before);
});

// ---- hostile input ----------------------------------------------------------------------------------

const GOOD = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
const entry = (dtype: string, shape: unknown, offs: unknown) => ({ dtype, shape, data_offsets: offs });

const HOSTILE: [string, Buffer, RegExp][] = [
  ['empty file', Buffer.alloc(0), /the file is empty \(0 bytes\)/],
  ['7-byte file', Buffer.alloc(7), /the file is only 7 bytes, shorter than the 8-byte header length/],
  ['header length past EOF', build('{}', 0, 9_000_000_000_000_000n), /header length 9000000000000000 is larger than the file \(10 bytes\): the file is truncated or not a safetensors file/],
  ['u64 max header length', build('{}', 0, 2n ** 64n - 1n), /header length 18446744073709551615 is larger than the file/],
  ['a zip checkpoint', Buffer.concat([Buffer.from('PK\x03\x04\x14\x00\x00\x00', 'latin1'), Buffer.alloc(40)]), /looks like a PyTorch \.ckpt\/\.pt\/\.bin \(zip\) checkpoint/],
  ['a web page', Buffer.from('<!DOCTYPE html><html>…</html>'), /is a web page/],
  ['non-UTF-8 header', build(Buffer.concat([Buffer.from('{"a'), Buffer.from([0xff, 0xfe]), Buffer.from('":1}')])), /the header is not valid UTF-8 text/],
  ['header not JSON', build('{"a":', 0), /the header is not valid JSON: unexpected end of the header/],
  ['header not an object', build('[1,2,3]'), /the header does not start with "\{"/],
  ['leading space', build(' {}'), /does not start with "\{"/],
  ['UTF-8 BOM', build('\ufeff{}'), /does not start with "\{"/],
  ['trailing garbage', build('{}x'), /unexpected character "x" at offset 2 after the JSON object/],
  ['unknown dtype', build({ a: entry('Q8', [2], [0, 2]) }, 2), /tensor "a": unknown dtype "Q8" \(known: BOOL, F4/],
  ['prototype dtype', build({ a: entry('constructor', [2], [0, 2]) }, 2), /unknown dtype "constructor"/],
  ['negative shape', build({ a: entry('F32', [-2], [0, 8]) }, 8), /tensor "a": "shape" \[-2\] holds the number -2, but dimensions must be non-negative integers/],
  ['float shape', build('{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', 8), /"shape" \[2\.0\] holds the number 2\.0/],
  ['string shape', build({ a: entry('F32', '2', [0, 8]) }, 8), /"shape" is the string "2", not an array/],
  ['missing shape', build({ a: { dtype: 'F32', data_offsets: [0, 8] } }, 8), /"shape" is missing/],
  ['huge dimension', build('{"a":{"dtype":"F32","shape":[100000000000000000000],"data_offsets":[0,8]}}', 8), /holds the number 100000000000000000000/],
  ['shape and offsets disagree', build({ a: entry('F32', [2 ** 30, 2 ** 30], [0, 8]) }, 8), /F32 \[1073741824, 1073741824\] needs 4611686018427387904 bytes but "data_offsets" \[0, 8\] span 8/],
  ['overflowing shape', build({ a: entry('F32', [2 ** 52, 2 ** 52, 0], [0, 0]) }), /the element count of shape \[4503599627370496, 4503599627370496, 0\] overflows 64 bits/],
  ['missing dtype', build({ a: { shape: [2], data_offsets: [0, 8] } }, 8), /"dtype" is missing/],
  ['entry not an object', build({ a: 5 }), /tensor "a": its entry is the number 5, not an object/],
  ['metadata with a number', build({ __metadata__: { n: 4 }, ...GOOD }, 8), /"__metadata__" value "n" is the number 4, not a string/],
  ['metadata with an object', build({ __metadata__: { n: { x: '1' } }, ...GOOD }, 8), /"__metadata__" value "n" is an object, not a string/],
  ['metadata not an object', build({ __metadata__: 'pt', ...GOOD }, 8), /"__metadata__" is the string "pt", but it must be an object of strings/],
  ['offsets do not match dtype×shape', build({ a: entry('F32', [2], [0, 12]) }, 12), /tensor "a": F32 \[2\] needs 8 bytes but "data_offsets" \[0, 12\] span 12/],
  ['offsets reversed', build({ a: entry('F32', [0], [8, 0]) }, 8), /"data_offsets" \[8, 0\] end before they begin/],
  ['offsets with three numbers', build({ a: entry('F32', [2], [0, 8, 9]) }, 8), /"data_offsets" must be \[begin, end\] with integers from 0 to 2\^48, not \[0, 8, 9\]/],
  ['offsets past 2^48', build({ a: entry('U8', [2 ** 49], [0, 2 ** 49]) }, 8), /integers from 0 to 2\^48/],
  ['overlapping offsets', build({ a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [4, 12]) }, 12), /tensors "a" \[0, 8\] and "b" \[4, 12\] overlap/],
  ['same offsets twice', build({ a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [0, 8]) }, 8), /overlap/],
  ['hole between tensors', build({ a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [12, 20]) }, 20), /a hole of 4 bytes between tensors "a" \(ends at 8\) and "b" \(starts at 12\)/],
  ['first tensor not at 0', build({ a: entry('F32', [2], [4, 12]) }, 12), /the first tensor, "a", starts at data byte 4 instead of 0/],
  ['offsets past the end', build({ a: entry('F32', [2], [0, 8]), b: entry('F32', [1000], [8, 4008]) }, 8), /tensor "b" ends at byte 4008 of the data but the file holds only 8 data bytes: the file is truncated/],
  ['truncated data', build(GOOD, 5), /tensor "a" ends at byte 8 of the data but the file holds only 5 data bytes: the file is truncated/],
  ['bytes after the last tensor', build(GOOD, 16), /the file has 8 bytes after the last tensor/],
  ['duplicate tensor name', build('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8), /the key "a" appears twice/],
  ['deep nesting', build('{"__metadata__":' + '['.repeat(100_000)), /nested more than 32 levels deep/],
  ['lone surrogate escape', build('{"\\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8), /unpaired surrogate \\ud800/],
  ['control character in a name', build('{"a\nb":1}'), /unescaped control character/],
];

test('hostile corpus: each file gets its own message naming the file, from memory and from disk', () => {
  const { dir, cleanup } = tempDir();
  try {
    for (const [name, bytes, re] of HOSTILE) {
      const label = name.replace(/[^a-z0-9]+/gi, '_') + '.safetensors';
      const p = join(dir, label);
      writeFileSync(p, bytes);
      for (const read of [() => parseSafetensors(bytes, label), () => SafetensorsFile.open(p), () => readSafetensorsHeader(p)]) {
        assert.throws(read, (e: unknown) => {
          assert.ok(e instanceof SafetensorsError, `${name}: ${String(e)}`);
          assert.match(e.message, re, name);
          assert.ok(e.file.endsWith(label) && e.message.startsWith(`${e.file}: `), `${name}: names the file`);
          return true;
        });
      }
    }
  } finally {
    cleanup();
  }
});

test('valid edge cases: unpadded header, misaligned data, empty tensors, no tensors, null metadata', () => {
  const before = live();
  const cases: [Buffer, (f: SafetensorsFile) => void][] = [
    // Older writers did not pad (§1.1): N = 61 leaves the F32 data misaligned; it must still load.
    [build('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', Buffer.from(new Float32Array([1.5, -2]).buffer)), (f) => {
      const t = f.get('a');
      assert.deepEqual(t.toArray(), [1.5, -2]);
      t.dispose();
    }],
    [build({ __metadata__: null, z: entry('F16', [0, 3], [0, 0]), y: entry('I64', [0], [0, 0]), a: entry('U8', [1], [0, 1]) }, 1), (f) => {
      assert.deepEqual(f.metadata, {});
      const t = f.get('z');
      assert.deepEqual(t.shape, [0, 3]);
      t.dispose();
      assert.equal(f.getBytes('a').length, 1);
    }],
    [build('{}      '), (f) => assert.deepEqual(f.keys(), [])],
  ];
  for (const [bytes, check] of cases) check(parseSafetensors(bytes));
  assert.equal(live(), before);
});

test('a 200 MB declared header is refused at once, without allocating it', () => {
  const { dir, cleanup } = tempDir();
  try {
    const p = join(dir, 'huge_header.safetensors');
    const fd = openSync(p, 'w');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(200_000_000n);
    writeSync(fd, len);
    ftruncateSync(fd, 200_000_100); // sparse: takes no disk space
    closeSync(fd);
    const mem0 = process.memoryUsage().arrayBuffers;
    const t0 = performance.now();
    assert.throws(() => SafetensorsFile.open(p), new RegExp(`huge_header\\.safetensors: header length 200000000 bytes is over the format's limit of ${MAX_HEADER_SIZE} bytes`));
    assert.throws(() => readSafetensorsHeader(p), /over the format's limit/);
    assert.ok(performance.now() - t0 < 1500, 'refused quickly');
    assert.ok(process.memoryUsage().arrayBuffers - mem0 < 50e6, 'the header was not allocated');
  } finally {
    cleanup();
  }
});

test('fuzz: 2000 mutations of a valid file either load consistently or throw an Error', () => {
  const before = live();
  const r = rng(12345);
  const raw: RawTensor[] = [
    { key: 'w', dtype: 'F32', shape: [2, 3], data: randomBytes(24, r) },
    { key: 'ids', dtype: 'I64', shape: [2], data: randomBytes(16, r) },
    { key: 'h', dtype: 'F16', shape: [3], data: randomBytes(6, r) },
    { key: 'b', dtype: 'BF16', shape: [], data: randomBytes(2, r) },
    { key: 'm', dtype: 'BOOL', shape: [4], data: Buffer.from([0, 1, 1, 0]) },
    { key: 'u', dtype: 'U16', shape: [2], data: randomBytes(4, r) },
    { key: 'e', dtype: 'F32', shape: [0], data: Buffer.alloc(0) },
  ];
  const base = serializeSafetensorsRaw(raw, { ss_note: 'fuzz', n: '3' });
  const headerEnd = 8 + Number(base.readBigUInt64LE(0));
  const JSONISH = Buffer.from('{}[]",:0123456789-.eE \\u');
  const mutate = (): Buffer => {
    let b = Buffer.from(base);
    const k = Math.floor(r() * 9); // 7 and 8: the data section only, which must still load
    const at = (lim: number) => Math.floor(r() * lim);
    if (k === 0) for (let i = 0, m = 1 + at(4); i < m; i++) b[at(b.length)] ^= 1 + at(255);
    else if (k === 1) for (let i = 0, m = 1 + at(3); i < m; i++) b[8 + at(headerEnd - 8)] = JSONISH[at(JSONISH.length)];
    else if (k === 2) b = b.subarray(0, at(b.length));
    else if (k === 3) {
      const p = at(b.length);
      b = Buffer.concat([b.subarray(0, p), randomBytes(1 + at(8), r), b.subarray(p)]);
    } else if (k === 4) {
      const p = at(b.length);
      b = Buffer.concat([b.subarray(0, p), b.subarray(p + 1 + at(16))]);
    } else if (k === 5) b.writeBigUInt64LE(r() < 0.5 ? BigInt(headerEnd - 8 + at(17) - 8) : BigInt(at(2 ** 31)) * BigInt(at(2 ** 31)), 0);
    else if (k === 6) b = Buffer.concat([b, randomBytes(1 + at(16), r)]);
    else for (let i = 0, m = 1 + at(8); i < m; i++) b[headerEnd + at(b.length - headerEnd)] = at(256);
    return b;
  };
  const check = (f: SafetensorsFile, size: number): void => {
    let pos = 0;
    for (const e of f.entries()) {
      assert.equal(e.dataOffsets[0], pos, 'entries tile the data');
      pos = e.dataOffsets[1];
      const bytes = f.getBytes(e.key);
      assert.equal(bytes.length, e.byteLength);
      if (torchDtype(e.dtype) !== null) {
        const t = f.get(e.key);
        assert.deepEqual(t.shape, [...e.shape]);
        assert.ok(t.toBuffer().equals(bytes));
        t.dispose();
      }
    }
    assert.equal(f.header.dataStart + pos, size);
  };
  const t0 = performance.now();
  let ok = 0;
  let failed = 0;
  for (let i = 0; i < 2000; i++) {
    const b = mutate();
    let f: SafetensorsFile;
    try {
      f = parseSafetensors(b, 'fuzz');
    } catch (e) {
      assert.ok(e instanceof SafetensorsError, `iteration ${i}: ${String(e)}`);
      failed++;
      continue;
    }
    check(f, b.length);
    ok++;
  }
  // A slice of them through the file and mapping path too.
  const { dir, cleanup } = tempDir();
  try {
    for (let i = 0; i < 150; i++) {
      const b = mutate();
      const p = join(dir, `f${i}.safetensors`);
      writeFileSync(p, b);
      try {
        const f = SafetensorsFile.open(p);
        check(f, b.length);
        f.close();
      } catch (e) {
        assert.ok(e instanceof SafetensorsError, `file ${i}: ${String(e)}`);
      }
    }
  } finally {
    cleanup();
  }
  assert.ok(ok > 300 && failed > 1000, `both outcomes occur (ok ${ok}, failed ${failed})`);
  assert.ok(performance.now() - t0 < 5000, 'fast');
  assert.equal(live(), before);
});

// ---- atomic saves -------------------------------------------------------------------------------------

const others = (dir: string, keep: string[]) => readdirSync(dir).filter((n) => !keep.includes(n));

test('atomic save: missing folder fails cleanly; a failed write leaves the old file and no temp files', () => {
  const { dir, cleanup } = tempDir();
  const x = T.ones([4]);
  try {
    const missing = join(dir, 'nope', 'model.safetensors');
    assert.throws(() => saveSafetensors(missing, [['x', x]]), /model\.safetensors: cannot save: the folder .*nope does not exist; create it first/);
    assert.equal(existsSync(join(dir, 'nope')), false);

    const p = join(dir, 'model.safetensors');
    saveSafetensors(p, [['x', x]]);
    const old = readFileSync(p);
    // A tensor whose bytes cannot be produced mid-file (as a full disk fails mid-file).
    const failing = Object.create(x, {
      toBuffer: { value: () => { throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }); } },
    }) as T.Tensor;
    assert.throws(() => saveSafetensors(p, [['a', x], ['b', failing]]), /model\.safetensors: cannot save: the disk is full; free some space and save again \(any existing file was left as it was\)/);
    assert.ok(readFileSync(p).equals(old), 'old file intact');
    assert.deepEqual(others(dir, ['model.safetensors']), [], 'no temp file left');
    // Saving over a folder fails cleanly too.
    assert.throws(() => saveSafetensors(dir, [['x', x]]), SafetensorsError);
    assert.deepEqual(others(dir, ['model.safetensors']), []);
    // A successful save replaces the file.
    const y = T.full([2], 7);
    saveSafetensors(p, [['y', y]], { v: '2' });
    using f = SafetensorsFile.open(p);
    assert.deepEqual([f.keys(), f.metadata], [['y'], { v: '2', format: 'pt' }]);
    y.dispose();
  } finally {
    x.dispose();
    cleanup();
  }
});

test('atomic save: a real write error from the OS (file size limit) leaves the old file and no temp files', () => {
  const { dir, cleanup } = tempDir();
  try {
    const p = join(dir, 'big.safetensors');
    writeFileSync(p, 'old contents');
    const script = join(dir, 'child.ts');
    const mod = pathToFileURL(join(REPO, 'src', 'formats', 'safetensors.ts')).href;
    writeFileSync(script, `import { saveSafetensorsRaw } from ${JSON.stringify(mod)};
try {
  saveSafetensorsRaw(${JSON.stringify(p)}, [{ key: 'w', dtype: 'U8', shape: [1 << 20], data: Buffer.alloc(1 << 20, 7) }]);
  console.log('SAVED');
} catch (e) { console.log('ERROR ' + (e as Error).message); }\n`);
    // ulimit -f 64: writes past 64 KiB fail with EFBIG (Node ignores SIGXFSZ), like a full disk.
    const res = spawnSync('bash', ['-c', `ulimit -f 64 && exec "${process.execPath}" --import tsx "${script}"`], { cwd: REPO, encoding: 'utf8', timeout: 30_000 });
    assert.match(res.stdout, /ERROR .*big\.safetensors: cannot save: the file is larger than this filesystem or process allows \(any existing file was left as it was\)/, res.stdout + res.stderr);
    assert.equal(readFileSync(p, 'utf8'), 'old contents');
    assert.deepEqual(others(dir, ['big.safetensors', 'child.ts']), []);
  } finally {
    cleanup();
  }
});
