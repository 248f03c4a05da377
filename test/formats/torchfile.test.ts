// torch.load / torch.save equivalents (sd-formats.md §2, §6.1, §7.1). The reference files in
// test/data/pt were written by real PyTorch 1.13 (make.py); these tests only read them, so no
// Python is needed. Hostile archives are built here, byte by byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32, deflateRawSync } from 'node:zlib';
import * as T from '../../src/torch/index.ts';
import {
  PyFloat,
  TorchDict,
  TorchFileError,
  TorchTensorRef,
  TorchTuple,
  UnsafePickleError,
  ZipFormatError,
  loadTorchFile,
  loadTorchStateDict,
  saveTorchFile,
  type TorchValue,
} from '../../src/formats/torchfile.ts';
import { ZipReader, ZipWriter } from '../../src/formats/zip.ts';
import { pickle } from '../../src/formats/pickle.ts';
import { REPO, tempDir } from '../helpers.ts';

const PT = join(REPO, 'test', 'data', 'pt');
const ref = (v: TorchValue | undefined): TorchTensorRef => {
  assert.ok(v instanceof TorchTensorRef, 'expected a tensor');
  return v;
};
/** Loads a tensor's values and disposes it. */
const values = (r: TorchTensorRef): number[] => {
  const t = r.load();
  try {
    assert.deepEqual(t.shape, [...r.shape]);
    return t.toArray();
  } finally {
    t.dispose();
  }
};
const dict = (v: TorchValue | undefined): TorchDict => {
  assert.ok(v instanceof TorchDict, 'expected a dict');
  return v;
};

// ---- files written by PyTorch -----------------------------------------------------------------

test('state_dict.pt: dtypes, views sharing a storage, 0-d and empty tensors', () => {
  const live = T.memoryStats().live;
  const sd = dict(loadTorchFile(join(PT, 'state_dict.pt')));
  assert.ok(sd.ordered, 'an OrderedDict');
  assert.deepEqual([...sd.keys()], ['linear.weight', 'linear.weight_t', 'linear.row1', 'half', 'bf16', 'ids', 'scalar', 'empty', 'f64']);
  const w = ref(sd.get('linear.weight'));
  const wt = ref(sd.get('linear.weight_t'));
  const row = ref(sd.get('linear.row1'));
  assert.equal(w.storageKey, wt.storageKey, 'the transpose shares the weight storage');
  assert.equal(w.storageKey, row.storageKey);
  assert.deepEqual([wt.shape, wt.stride, row.storageOffset], [[4, 3], [1, 4], 4]);
  assert.deepEqual(values(w), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  assert.deepEqual(values(wt), [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11], 'strided view read with its strides');
  assert.deepEqual(values(row), [4, 5, 6, 7], 'storage offset honoured');
  assert.equal(ref(sd.get('half')).dtype, 'float16');
  assert.deepEqual(values(ref(sd.get('half'))), [0.5, -1.25, 3]);
  assert.deepEqual(values(ref(sd.get('bf16'))), [1.5, -2]);
  const ids = ref(sd.get('ids')).load();
  assert.equal(ids.dtype, 'int64');
  assert.deepEqual([...(ids.toTypedArray() as BigInt64Array)], [1n, -2n, 3n, 2n ** 40n]);
  ids.dispose();
  const scalar = ref(sd.get('scalar'));
  assert.deepEqual([scalar.shape, values(scalar)], [[], [2.5]]);
  const empty = ref(sd.get('empty'));
  assert.deepEqual([empty.shape, values(empty)], [[0, 3], []]);
  assert.deepEqual(values(ref(sd.get('f64'))), [1 / 3]);
  assert.equal(T.memoryStats().live, live, 'every loaded tensor was disposed');
});

test('embedding.pt: the A1111 textual-inversion layout of §6.1', () => {
  const e = dict(loadTorchFile(join(PT, 'embedding.pt')));
  assert.deepEqual([...e.keys()], ['string_to_token', 'string_to_param', 'name', 'step', 'sd_checkpoint', 'sd_checkpoint_name']);
  assert.equal(dict(e.get('string_to_token')).get('*'), 265);
  const vec = ref(dict(e.get('string_to_param')).get('*'));
  assert.deepEqual([vec.dtype, vec.shape, vec.requiresGrad], ['float32', [2, 8], true]);
  const v = values(vec);
  // linspace(-1, 1, 16) in float32; tolerance: one float32 ulp near 1.
  v.forEach((x, i) => assert.ok(Math.abs(x - (-1 + (2 * i) / 15)) < 1e-6, `vector ${i}`));
  assert.deepEqual([e.get('name'), e.get('step'), e.get('sd_checkpoint'), e.get('sd_checkpoint_name')], ['my-style', 500, 'e1441589a6', 'v1-5-pruned-emaonly']);
});

test('hypernetwork.pt: int keys → (k, v) state-dict tuples and the options of §7.1', () => {
  const h = dict(loadTorchFile(join(PT, 'hypernetwork.pt')));
  for (const size of [320, 640, 768, 1024, 1280]) {
    const pair = h.get(size);
    assert.ok(pair instanceof TorchTuple && pair.length === 2, `${size} holds a (k, v) tuple`);
    const d = Math.floor(size / 320);
    for (const sd of pair.items.map(dict)) {
      assert.ok(sd.ordered, 'module state_dict() is an OrderedDict (its _metadata BUILD was accepted)');
      assert.deepEqual([...sd.keys()], ['linear.0.weight', 'linear.0.bias', 'linear.2.weight', 'linear.2.bias']);
      const w0 = ref(sd.get('linear.0.weight'));
      assert.deepEqual(w0.shape, [2 * d, d]);
      // make.py: parameter i = d + 0.5 i + 0.01 arange; float32 tolerance.
      values(w0).forEach((x, j) => assert.ok(Math.abs(x - (d + 0.01 * j)) < 1e-5));
      assert.ok(Math.abs(values(ref(sd.get('linear.2.bias')))[0] - (d + 1.5)) < 1e-6);
    }
  }
  assert.deepEqual(h.get('layer_structure'), [1, 2, 1]);
  assert.deepEqual(h.get('dropout_structure'), [0, 0, 0]);
  assert.deepEqual(
    ['step', 'name', 'activation_func', 'is_layer_norm', 'weight_initialization', 'sd_checkpoint', 'activate_output', 'use_dropout', 'last_layer_dropout', 'optional_info'].map((k) => h.get(k)),
    [1000, 'tiny-hn', 'relu', false, 'Normal', null, false, false, false, null],
  );
});

test('model.ckpt: loadTorchStateDict finds state_dict inside a Lightning checkpoint', () => {
  const root = dict(loadTorchFile(join(PT, 'model.ckpt')));
  assert.equal(root.get('global_step'), 10);
  assert.equal(root.get('pytorch-lightning_version'), '1.4.2');
  const sd = loadTorchStateDict(join(PT, 'model.ckpt'));
  assert.deepEqual([...sd.keys()], ['model.diffusion_model.out.0.weight', 'model.diffusion_model.out.0.bias']);
  const [w, b] = [...sd.values()];
  assert.deepEqual([w.dtype, w.toArray()], ['float32', [1, 1, 1, 1]]);
  assert.deepEqual([b.dtype, b.toArray()], ['float16', [0, 0, 0, 0]]);
  for (const t of sd.values()) t.dispose();
  // Without a state_dict key the top-level dict is the state dict.
  const top = loadTorchStateDict(join(PT, 'state_dict.pt'));
  assert.equal(top.size, 9);
  for (const t of top.values()) t.dispose();
});

test('legacy.pt (torch < 1.6 format, §2.5) is read with the same allow-list', () => {
  const sd = dict(loadTorchFile(join(PT, 'legacy.pt')));
  assert.deepEqual(values(ref(sd.get('w'))), [1, 2, 3]);
  assert.deepEqual(values(ref(sd.get('n'))), [7]);
});

// ---- writing -----------------------------------------------------------------------------------

/** The zip entries and their data offsets. */
function layout(path: string): { name: string; dataOffset: number; method: number }[] {
  const z = new ZipReader(path);
  try {
    return z.entries.map((e) => ({ name: e.name, dataOffset: e.dataOffset, method: e.method }));
  } finally {
    z.close();
  }
}
/** GLOBAL names in a pickle (protocol 2 GLOBAL opcodes: 'c' module \n name \n). */
function globalsIn(path: string): Set<string> {
  const z = new ZipReader(path);
  const pkl = z.read(z.entries[0]).toString('latin1');
  z.close();
  return new Set([...pkl.matchAll(/c([\w.]+)\n(\w+)\n/g)].map((m) => `${m[1]}.${m[2]}`));
}

test('saveTorchFile writes the A1111-safe layout and round-trips through the reader', () => {
  const { dir, cleanup } = tempDir();
  try {
    T.tidy(() => {
      const w = T.arange(0, 12, 1, { dtype: 'float32' }).reshape(3, 4);
      const value = {
        string_to_token: { '*': 265 },
        string_to_param: { '*': w },
        name: 'my-emb',
        step: 7,
        sd_checkpoint: null,
        ratios: [new PyFloat(1), 2.5, -3],
        big: 2n ** 70n,
        pair: new TorchTuple([w, w.transpose(0, 1)]),
        od: new TorchDict([['h', T.tensor([0.5, -2], { dtype: 'float16' })], ['b', T.tensor([1.5], { dtype: 'bfloat16' })]], true),
        ints: new Map([[768, T.tensor(new BigInt64Array([5n, -6n]))], [320, T.tensor(9, { dtype: 'int32' })]]),
        misc: [T.tensor([1.25], { dtype: 'float64' }), T.tensor([200], { dtype: 'uint8' }), T.zeros([0, 4])],
      };
      const path = join(dir, 'my-emb.pt');
      saveTorchFile(path, value);

      const names = layout(path);
      assert.deepEqual(names.map((e) => e.name), ['my-emb/data.pkl', ...Array.from({ length: 9 }, (_, i) => `my-emb/data/${i}`), 'my-emb/version']);
      for (const e of names) {
        assert.equal(e.method, 0, 'stored, never compressed');
        assert.equal(e.dataOffset % 64, 0, `${e.name} data is 64-byte aligned`);
        assert.match(e.name, /^[^/]+\/(data\/\d+|version|data\.pkl)$/, 'matches A1111 safe.py allowed names');
      }
      const a1111 = new Set(['collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch.FloatStorage', 'torch.HalfStorage', 'torch.IntStorage', 'torch.LongStorage', 'torch.DoubleStorage', 'torch.ByteStorage', 'torch.BFloat16Storage']);
      for (const g of globalsIn(path)) assert.ok(a1111.has(g), `${g} is on A1111's allow-list`);

      const back = dict(loadTorchFile(path));
      assert.equal(dict(back.get('string_to_token')).get('*'), 265);
      const p = ref(dict(back.get('string_to_param')).get('*'));
      assert.deepEqual(values(p), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      assert.deepEqual([back.get('name'), back.get('step'), back.get('sd_checkpoint'), back.get('big')], ['my-emb', 7, null, 2n ** 70n]);
      assert.deepEqual(back.get('ratios'), [1, 2.5, -3]);
      const pair = back.get('pair') as TorchTuple;
      assert.equal(ref(pair.items[0]).storageKey, p.storageKey, 'the same Tensor object is stored once');
      assert.deepEqual(values(ref(pair.items[1])), [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11], 'a transposed view is written contiguous');
      const od = dict(back.get('od'));
      assert.ok(od.ordered);
      assert.deepEqual([ref(od.get('h')).dtype, values(ref(od.get('h')))], ['float16', [0.5, -2]]);
      assert.deepEqual([ref(od.get('b')).dtype, values(ref(od.get('b')))], ['bfloat16', [1.5]]);
      const ints = dict(back.get('ints'));
      assert.deepEqual([...ints.keys()], [768, 320]);
      assert.deepEqual(values(ref(ints.get(768))), [5, -6]);
      assert.deepEqual([ref(ints.get(320)).shape, values(ref(ints.get(320)))], [[], [9]]);
      const misc = back.get('misc') as TorchValue[];
      assert.deepEqual(misc.map((m) => values(ref(m))), [[1.25], [200], []]);
      assert.deepEqual(ref(misc[2]).shape, [0, 4]);
    });
    assert.deepEqual(readdirSync(dir), ['my-emb.pt'], 'no temporary file left behind');
  } finally {
    cleanup();
  }
});

test('re-saving a loaded file copies its tensors lazily and keeps every value', () => {
  const { dir, cleanup } = tempDir();
  try {
    const src = loadTorchFile(join(PT, 'hypernetwork.pt'));
    const out = join(dir, 'copy.pt');
    saveTorchFile(out, src);
    const a = dict(src);
    const b = dict(loadTorchFile(out));
    assert.deepEqual([...b.keys()], [...a.keys()]);
    const ka = dict((a.get(640) as TorchTuple).items[1]);
    const kb = dict((b.get(640) as TorchTuple).items[1]);
    for (const k of ka.keys()) assert.deepEqual(values(ref(kb.get(k))), values(ref(ka.get(k))), String(k));
    assert.equal(b.get('activation_func'), 'relu');
  } finally {
    cleanup();
  }
});

test('dtypes A1111 refuses need a1111Compatible: false; saves are atomic', () => {
  const { dir, cleanup } = tempDir();
  try {
    T.tidy(() => {
      const path = join(dir, 'flags.pt');
      const flags = T.tensor([1, 0, 1], { dtype: 'bool' });
      assert.throws(() => saveTorchFile(path, { flags }), /a bool tensor would make the file unloadable by A1111 \(its safe loader refuses BoolStorage\)/);
      assert.ok(!existsSync(path));
      saveTorchFile(path, { flags, i8: T.tensor([-3], { dtype: 'int8' }), i16: T.tensor([-300], { dtype: 'int16' }) }, { a1111Compatible: false });
      const back = dict(loadTorchFile(path));
      assert.deepEqual(['flags', 'i8', 'i16'].map((k) => [ref(back.get(k)).dtype, values(ref(back.get(k)))]), [['bool', [1, 0, 1]], ['int8', [-3]], ['int16', [-300]]]);
      // A failed save leaves the previous file untouched and no temporary behind.
      const before = readFileSync(path);
      assert.throws(() => saveTorchFile(path, { f: (() => 1) as never }), /cannot save value\.f: a function is not plain data/);
      assert.throws(() => saveTorchFile(path, { t: { nested: new Date() as never } }), /cannot save value\.t\.nested: a Date is not a tensor or plain data/);
      assert.deepEqual(readFileSync(path), before);
      assert.deepEqual(readdirSync(dir), ['flags.pt']);
    });
  } finally {
    cleanup();
  }
});

test('ZIP64 records (forced on a small file) are written and read back', () => {
  const { dir, cleanup } = tempDir();
  try {
    const path = join(dir, 'z64.pt');
    const fd = openSync(path, 'w');
    const z = new ZipWriter(fd, { forceZip64: true });
    const fake = {};
    z.add('z64/data.pkl', pickle({ a: fake }, { tensor: (v) => (v === fake ? { key: '0', storageType: 'FloatStorage', numel: 3, shape: [3] } : null) }));
    const data = Buffer.alloc(12);
    [1.5, 2.5, -3].forEach((x, i) => data.writeFloatLE(x, i * 4));
    z.add('z64/data/0', data);
    z.add('z64/version', Buffer.from('3\n'));
    z.finish();
    closeSync(fd);
    assert.ok(readFileSync(path).includes(Buffer.from([0x50, 0x4b, 0x06, 0x06])), 'has a ZIP64 end record');
    assert.deepEqual(values(ref(dict(loadTorchFile(path)).get('a'))), [1.5, 2.5, -3]);
  } finally {
    cleanup();
  }
});

// ---- hostile and broken archives ---------------------------------------------------------------

interface RawEntry {
  name: string;
  data: Buffer;
  deflate?: boolean;
}
/** A plain zip written by hand (no alignment), so tests can make archives our writer never would. */
function rawZip(entries: RawEntry[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let off = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name);
    const body = e.deflate ? deflateRawSync(e.data) : e.data;
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt16LE(e.deflate ? 8 : 0, 8);
    lh.writeUInt32LE(crc32(e.data), 14);
    lh.writeUInt32LE(body.length, 18);
    lh.writeUInt32LE(e.data.length, 22);
    lh.writeUInt16LE(name.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt16LE(e.deflate ? 8 : 0, 10);
    ch.writeUInt32LE(crc32(e.data), 16);
    ch.writeUInt32LE(body.length, 20);
    ch.writeUInt32LE(e.data.length, 24);
    ch.writeUInt16LE(name.length, 28);
    ch.writeUInt32LE(off, 42);
    locals.push(lh, name, body);
    centrals.push(ch, name);
    off += 30 + name.length + body.length;
  }
  const cd = Buffer.concat(centrals);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8);
  eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(off, 16);
  return Buffer.concat([...locals, cd, eocd]);
}

/** A valid archive: {'w': f32[3] = [1, 2, 3]} in archive/. */
function validEntries(prefix = 'archive'): RawEntry[] {
  const fake = {};
  const pkl = pickle({ w: fake }, { tensor: (v) => (v === fake ? { key: '0', storageType: 'FloatStorage', numel: 3, shape: [3] } : null) });
  const data = Buffer.alloc(12);
  [1, 2, 3].forEach((x, i) => data.writeFloatLE(x, i * 4));
  return [
    { name: `${prefix}/data.pkl`, data: pkl },
    { name: `${prefix}/data/0`, data },
    { name: `${prefix}/version`, data: Buffer.from('3\n') },
  ];
}

test('deflated entries and torch 2.x records (byteorder, .format_version) load', () => {
  const { dir, cleanup } = tempDir();
  try {
    const path = join(dir, 'deflated.pt');
    writeFileSync(path, rawZip(validEntries().map((e) => ({ ...e, deflate: true }))));
    assert.deepEqual(values(ref(dict(loadTorchFile(path)).get('w'))), [1, 2, 3]);
    const modern = join(dir, 'modern.pt');
    const extra = ['byteorder:little', '.format_version:1', '.storage_alignment:64', '.data/serialization_id:123'].map((s) => {
      const [name, data] = s.split(':');
      return { name: `my model/${name}`, data: Buffer.from(data) };
    });
    writeFileSync(modern, rawZip([...validEntries('my model'), ...extra]));
    assert.deepEqual(values(ref(dict(loadTorchFile(modern)).get('w'))), [1, 2, 3], 'the prefix comes from the first entry');
  } finally {
    cleanup();
  }
});

test('hostile and broken archives fail with a sentence naming the file', () => {
  const { dir, cleanup } = tempDir();
  try {
    let n = 0;
    const expectError = (bytes: Buffer, re: RegExp, cls: new (...a: never[]) => Error = Error): void => {
      const path = join(dir, `case${n++}.pt`);
      writeFileSync(path, bytes);
      assert.throws(() => loadTorchFile(path), (e: unknown) => {
        assert.ok(e instanceof cls, `${String(e)} is a ${cls.name}`);
        assert.ok((e as Error).message.startsWith(path + ': '), `names the file: ${(e as Error).message}`);
        assert.match((e as Error).message, re);
        return true;
      });
    };
    const valid = rawZip(validEntries());
    expectError(rawZip([...validEntries(), { name: 'archive/../../etc/passwd', data: Buffer.from('x') }]), /refusing the entry name "archive\/..\/..\/etc\/passwd": it contains a "." or ".." path component/, ZipFormatError);
    expectError(rawZip([{ name: '/etc/cron.d/x', data: Buffer.from('x') }, ...validEntries()]), /it is an absolute path/, ZipFormatError);
    expectError(rawZip([...validEntries(), { name: 'archive\\data\\1', data: Buffer.from('x') }]), /it contains a backslash/, ZipFormatError);
    expectError(rawZip([...validEntries(), { name: 'archive/data/0', data: Buffer.alloc(12) }]), /the entry archive\/data\/0 appears twice; refusing an ambiguous archive/, ZipFormatError);

    // Central directory entry 1 (archive/data/0) claims 2 GB: past the file.
    const cdOff = valid.readUInt32LE(valid.length - 6);
    const second = valid.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]), cdOff + 1);
    const huge = Buffer.from(valid);
    huge.writeUInt32LE(0x7fffffff, second + 20);
    huge.writeUInt32LE(0x7fffffff, second + 24);
    expectError(huge, /entry archive\/data\/0 declares 2147483647 bytes, which run past the data area/, ZipFormatError);
    // ... or just enough to run into the next entry.
    const overlap = Buffer.from(valid);
    overlap.writeUInt32LE(40, second + 20);
    overlap.writeUInt32LE(40, second + 24);
    expectError(overlap, /entries archive\/data\/0 and archive\/version overlap/, ZipFormatError);
    // Truncations: no end record; a directory cut short.
    expectError(valid.subarray(0, valid.length - 30), /no zip end-of-central-directory record found; the file is truncated or not a zip archive/, ZipFormatError);
    const shortCd = Buffer.from(valid);
    shortCd.writeUInt32LE(shortCd.readUInt32LE(shortCd.length - 10) + 200, shortCd.length - 10);
    expectError(shortCd, /the central directory \(\d+ bytes at \d+\) runs past its end record/, ZipFormatError);
    const manyEntries = Buffer.from(valid);
    manyEntries.writeUInt16LE(500, manyEntries.length - 12);
    expectError(manyEntries, /claims 500 entries but is only \d+ bytes/, ZipFormatError);
    // A flipped byte in data.pkl.
    const corrupt = Buffer.from(valid);
    corrupt[50] ^= 0xff;
    expectError(corrupt, /entry archive\/data.pkl fails its CRC check/, ZipFormatError);

    // Structure is fine but the content is not a loadable checkpoint.
    const [pkl, data0, version] = validEntries();
    expectError(rawZip([pkl, version]), /refers to storage "0", which is missing from the archive/, TorchFileError);
    expectError(rawZip([pkl, { ...data0, data: data0.data.subarray(0, 8) }, version]), /storage 0 should hold 3 float32 elements but its entry is only 8 bytes/, TorchFileError);
    expectError(rawZip([pkl, data0, { name: 'archive/byteorder', data: Buffer.from('big') }]), /big-endian machine; only little-endian files are supported/, TorchFileError);
    expectError(rawZip([{ name: 'model/constants.pkl', data: Buffer.from('x') }, { name: 'model/code/m.py', data: Buffer.from('x') }]), /TorchScript archive/, TorchFileError);
    expectError(rawZip([{ name: 'archive/other', data: Buffer.from('x') }]), /has no archive\/data.pkl/, TorchFileError);
    expectError(Buffer.from('hello, this is not a checkpoint at all'), /not a PyTorch checkpoint/, TorchFileError);
    const st = Buffer.alloc(40, 0x20);
    st.writeBigUInt64LE(20n, 0);
    st.write('{"a":{}}', 8);
    expectError(st, /this is a \.safetensors file/, TorchFileError);
    // A hostile pickle inside a well-formed archive.
    const evil = Buffer.from([0x80, 2, 0x63, ...Buffer.from('posix\nsystem\n'), 0x58, 2, 0, 0, 0, 0x6c, 0x73, 0x85, 0x52, 0x2e]);
    expectError(rawZip([{ name: 'embedding/data.pkl', data: evil }]), /refusing to load: it references posix\.system, which would run code/, UnsafePickleError);
    // Legacy files: bad magic, and a truncated tail.
    expectError(Buffer.from([0x80, 2, 0x4b, 1, 0x2e]), /pickle without PyTorch's magic number/, TorchFileError);
    const legacy = readFileSync(join(PT, 'legacy.pt'));
    expectError(legacy.subarray(0, legacy.length - 4), /legacy storage data is truncated/, TorchFileError);
  } finally {
    cleanup();
  }
});

test('fuzz: 1500 mutations of embedding.pt each load or throw an Error, never crash or hang', () => {
  const { dir, cleanup } = tempDir();
  const live = T.memoryStats().live;
  try {
    const seed = readFileSync(join(PT, 'embedding.pt'));
    // To reach the pickle VM through the zip layer, half the mutations land in data.pkl and
    // get a fixed-up CRC (torch leaves the local-header CRC 0; the central one is checked).
    const z = new ZipReader(join(PT, 'embedding.pt'));
    const pkl = z.entries[0];
    z.close();
    const cdCrcAt = seed.indexOf(Buffer.concat([Buffer.from([0x50, 0x4b, 0x01, 0x02])])) + 16;
    let rng = 12345;
    const rand = (n: number): number => {
      rng = (Math.imul(rng, 1103515245) + 12345) >>> 0;
      return (rng >>> 8) % n;
    };
    const t0 = performance.now();
    const outcome = { loaded: 0, refused: 0, tensors: 0 };
    const walk = (v: TorchValue): void => {
      if (v instanceof TorchTensorRef) {
        try {
          v.load().dispose();
          outcome.tensors++;
        } catch (e) {
          assert.ok(e instanceof Error);
        }
      } else if (v instanceof TorchDict) for (const x of v.values()) walk(x);
      else if (Array.isArray(v)) v.forEach(walk);
      else if (v instanceof TorchTuple) v.items.forEach(walk);
    };
    for (let i = 0; i < 1500; i++) {
      const b = Buffer.from(seed);
      if (i % 2 === 0) {
        for (let k = 0; k <= rand(3); k++) b[pkl.dataOffset + rand(pkl.size)] = rand(256);
        b.writeUInt32LE(crc32(b.subarray(pkl.dataOffset, pkl.dataOffset + pkl.size)), cdCrcAt);
      } else if (i % 4 === 1) {
        for (let k = 0; k <= rand(4); k++) b[rand(b.length)] = rand(256);
      } else {
        // Rewrite a 32-bit field somewhere (sizes, offsets, counts) with an extreme value.
        b.writeUInt32LE([0, 0xffffffff, 0x7fffffff, rand(4096), b.length][rand(5)], rand(b.length - 4));
      }
      const path = join(dir, `m${i}.pt`);
      writeFileSync(path, b);
      try {
        walk(loadTorchFile(path));
        outcome.loaded++;
      } catch (e) {
        assert.ok(e instanceof Error, `threw a non-Error: ${String(e)}`);
        assert.ok(!/^(TypeError|RangeError|ReferenceError)/.test(String(e)) || e instanceof ZipFormatError, `an internal error escaped: ${(e as Error).stack}`);
        outcome.refused++;
      }
    }
    const ms = performance.now() - t0;
    assert.equal(outcome.loaded + outcome.refused, 1500);
    assert.ok(outcome.refused > 300 && outcome.loaded > 100, JSON.stringify(outcome));
    assert.ok(ms < 5000, `fuzzing took ${ms.toFixed(0)} ms`);
    assert.equal(T.memoryStats().live, live, 'no tensor leaked');
  } finally {
    cleanup();
  }
});
