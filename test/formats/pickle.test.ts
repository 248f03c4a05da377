// The restricted unpickler and the pickler (sd-formats.md §2.2–§2.4). Hostile pickles are written
// by hand here, opcode by opcode, so no Python is needed; each must be refused with a sentence
// naming what was refused, and the process must carry on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  PICKLE_LIMITS,
  PickleFormatError,
  PyFloat,
  TorchDict,
  TorchObject,
  TorchSet,
  TorchStorage,
  TorchTensorRef,
  TorchTuple,
  UnsafePickleError,
  pickle,
  unpickle,
  type PickledTensor,
  type TorchValue,
} from '../../src/formats/pickle.ts';

const FILE = 'embedding.pt';

// ---- a tiny assembler for hand-written pickles ----------------------------------------------
const u32 = (n: number): number[] => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
const utf = (s: string): number[] => [...Buffer.from(s, 'utf-8')];
const P = {
  proto: (v = 2) => [0x80, v],
  stop: [0x2e],
  mark: [0x28],
  global: (m: string, n: string) => [0x63, ...utf(`${m}\n${n}\n`)],
  stackGlobal: [0x93],
  str: (s: string) => [0x58, ...u32(Buffer.byteLength(s)), ...utf(s)],
  shortStr: (s: string) => [0x8c, Buffer.byteLength(s), ...utf(s)],
  int1: (n: number) => [0x4b, n],
  tuple: [0x74],
  tuple1: [0x85],
  tuple2: [0x86],
  emptyTuple: [0x29],
  emptyList: [0x5d],
  emptyDict: [0x7d],
  reduce: [0x52],
  build: [0x62],
  newobj: [0x81],
  setitems: [0x75],
  append: [0x61],
  binput: (i: number) => [0x71, i],
  binget: (i: number) => [0x68, i],
  binpersid: [0x51],
  none: [0x4e],
  newfalse: [0x89],
};
const pk = (...parts: (number[] | number)[]): Buffer => Buffer.from(parts.flat());
const run = (b: Uint8Array, opts: Partial<Parameters<typeof unpickle>[1]> = {}): TorchValue => unpickle(b, { file: FILE, ...opts }).value;

/** Calls `module.name(arg)` the way an exploit does: GLOBAL, args tuple, REDUCE. */
const callGlobal = (m: string, n: string): Buffer => pk(P.proto(), P.global(m, n), P.str('echo pwned'), P.tuple1, P.reduce, P.stop);

function refuses(b: Uint8Array, re: RegExp): Error {
  let caught: unknown;
  try {
    run(b);
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof Error, 'expected an error');
  assert.match(caught.message, re);
  return caught;
}

// ---- plain data ----------------------------------------------------------------------------

test('pickle → unpickle round-trips plain data of every supported kind', () => {
  const value = new TorchDict<unknown>(
    [
      ['s', 'héllo ✓'],
      ['ints', [0, 1, 255, 256, 65535, 65536, -1, -256, 2 ** 31 - 1, -(2 ** 31), 2 ** 40, -(2 ** 40), Number.MAX_SAFE_INTEGER]],
      ['big', [2n ** 70n, -(2n ** 70n), 2n ** 63n]],
      ['floats', [1.5, -0.25, 1e300, Number.POSITIVE_INFINITY, new PyFloat(2)]],
      ['flags', [true, false, null]],
      ['bytes', Buffer.from([0, 1, 128, 255])],
      ['tuple', new TorchTuple([1, new TorchTuple([]), new TorchTuple(['a', 'b', 'c', 'd'])])],
      [768, new Map([['inner', { a: 1 }]])],
      ['long', Array.from({ length: 2500 }, (_, i) => i)],
    ],
    true,
  );
  const bytes = pickle(value, { tensor: () => null });
  assert.deepEqual([...bytes.subarray(0, 2)], [0x80, 2], 'protocol 2 header');
  const back = run(bytes);
  assert.ok(back instanceof TorchDict && back.ordered);
  assert.deepEqual([...back.keys()], ['s', 'ints', 'big', 'floats', 'flags', 'bytes', 'tuple', 768, 'long']);
  assert.equal(back.get('s'), 'héllo ✓');
  assert.deepEqual(back.get('ints'), [0, 1, 255, 256, 65535, 65536, -1, -256, 2 ** 31 - 1, -(2 ** 31), 2 ** 40, -(2 ** 40), Number.MAX_SAFE_INTEGER]);
  assert.deepEqual(back.get('big'), [2n ** 70n, -(2n ** 70n), 2n ** 63n]);
  assert.deepEqual(back.get('floats'), [1.5, -0.25, 1e300, Number.POSITIVE_INFINITY, 2]);
  assert.deepEqual(back.get('flags'), [true, false, null]);
  assert.deepEqual([...(back.get('bytes') as Uint8Array)], [0, 1, 128, 255]);
  const t = back.get('tuple') as TorchTuple;
  assert.ok(t instanceof TorchTuple && t.items[1] instanceof TorchTuple);
  assert.deepEqual((t.items[2] as TorchTuple).items, ['a', 'b', 'c', 'd']);
  const inner = back.get(768) as TorchDict;
  assert.ok(inner instanceof TorchDict && !inner.ordered);
  assert.equal((inner.get('inner') as TorchDict).get('a'), 1);
  assert.equal((back.get('long') as number[])[2499], 2499);
});

test('PyFloat and integral numbers pickle as float and int respectively', () => {
  const bytes = pickle([new PyFloat(2), 2], { tensor: () => null });
  assert.ok(bytes.includes(Buffer.from([0x47, 0x40, 0, 0, 0, 0, 0, 0, 0])), 'BINFLOAT 2.0 (big-endian)');
  assert.ok(bytes.includes(Buffer.from([0x4b, 2])), 'BININT1 2');
});

test('tensors pickle as _rebuild_tensor_v2 over a storage persistent id, as torch.save writes', () => {
  const fake = { isTensor: true };
  const info: PickledTensor = { key: '0', storageType: 'FloatStorage', numel: 6, shape: [2, 3] };
  const bytes = pickle({ w: fake, again: fake }, { tensor: (v) => (v === fake ? info : null) });
  const text = bytes.toString('latin1');
  assert.ok(text.includes('torch._utils\n_rebuild_tensor_v2\n'));
  assert.ok(text.includes('torch\nFloatStorage\n'));
  const back = run(bytes) as TorchDict;
  const w = back.get('w') as TorchTensorRef;
  assert.ok(w instanceof TorchTensorRef);
  assert.deepEqual([w.dtype, w.shape, w.stride, w.storageOffset, w.storageKey, w.requiresGrad], ['float32', [2, 3], [3, 1], 0, '0', false]);
  const again = back.get('again') as TorchTensorRef;
  assert.equal(again.storage, w.storage, 'one storage object per key');
});

test('protocol 4 opcodes: FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, EMPTY_SET/ADDITEMS, BINUNICODE8', () => {
  const body = pk(
    P.emptyDict, [0x94], // MEMOIZE → memo 0
    P.mark,
    P.shortStr('od'), P.shortStr('collections'), P.shortStr('OrderedDict'), P.stackGlobal, P.emptyTuple, P.reduce,
    P.shortStr('set'), [0x8f], P.mark, P.int1(1), P.int1(2), [0x90],
    P.shortStr('u8'), [0x8d, 3, 0, 0, 0, 0, 0, 0, 0], utf('abc'),
    P.shortStr('bytes'), [0x43, 2, 9, 8],
    P.setitems,
    P.stop,
  );
  const fixed = Buffer.from(body);
  const frame = Buffer.alloc(9);
  frame[0] = 0x95;
  frame.writeBigUInt64LE(BigInt(fixed.length), 1);
  const v = run(Buffer.concat([Buffer.from(P.proto(4)), frame, fixed])) as TorchDict;
  assert.ok((v.get('od') as TorchDict).ordered);
  assert.deepEqual((v.get('set') as TorchSet).items, [1, 2]);
  assert.equal(v.get('u8'), 'abc');
  assert.deepEqual([...(v.get('bytes') as Uint8Array)], [9, 8]);
});

test('an old textual-inversion ParameterDict object is kept as data with its BUILD state (§2.2)', () => {
  const b = pk(
    P.proto(),
    P.global('torch.nn.modules.container', 'ParameterDict'), P.emptyTuple, P.newobj,
    P.emptyDict, P.mark,
    P.str('training'), [0x88],
    P.str('_parameters'), P.global('collections', 'OrderedDict'), P.emptyTuple, P.reduce,
    P.str('_non_persistent_buffers_set'), P.global('__builtin__', 'set'), P.emptyList, P.tuple1, P.reduce,
    P.setitems,
    P.build,
    P.stop,
  );
  const o = run(b);
  assert.ok(o instanceof TorchObject);
  assert.equal(o.cls.qualifiedName, 'torch.nn.modules.container.ParameterDict');
  const state = o.state as TorchDict;
  assert.ok(state.get('_parameters') instanceof TorchDict);
  assert.ok(state.get('_non_persistent_buffers_set') instanceof TorchSet);
});

test('_codecs.encode and torch.Size rebuild data, not code', () => {
  const b = pk(
    P.proto(), P.mark,
    P.global('_codecs', 'encode'), P.str('\u00ff\u0001'), P.str('latin1'), P.tuple2, P.reduce,
    P.global('torch', 'Size'), P.int1(2), P.int1(3), P.tuple2, P.tuple1, P.reduce,
    [0x6c], // LIST
    P.stop,
  );
  const [bytes, size] = run(b) as TorchValue[];
  assert.deepEqual([...(bytes as Uint8Array)], [255, 1]);
  assert.deepEqual((size as TorchTuple).items, [2, 3]);
});

// ---- hostile pickles -------------------------------------------------------------------------

const REFUSAL = /^embedding\.pt: refusing to load: .* Only tensors and plain data are allowed \(convert the file with a trusted tool, or use \.safetensors\)\.$/;

test('globals that run code are refused by name, before anything is called', () => {
  const cases: [string, string][] = [
    ['os', 'system'],
    ['builtins', 'eval'],
    ['builtins', 'exec'],
    ['builtins', 'getattr'],
    ['subprocess', 'Popen'],
    ['posix', 'system'],
    ['nt', 'system'],
    ['__builtin__', 'eval'],
    ['__builtin__', 'open'],
    ['torch', 'load'],
    ['collections', 'OrderedDict.__init__'],
    ['torch._utils', '_rebuild_tensor_v2.__globals__'],
    ['numpy', 'load'],
  ];
  for (const [m, n] of cases) {
    const e = refuses(callGlobal(m, n), new RegExp(`it references ${`${m}.${n}`.replace(/\./g, '\\.')}, which would run code`));
    assert.match(e.message, REFUSAL);
    assert.ok(e instanceof UnsafePickleError);
    assert.equal(e.what, `${m}.${n}`);
  }
  // The exact sentence of the brief.
  assert.equal(
    refuses(callGlobal('os', 'system'), /os\.system/).message,
    'embedding.pt: refusing to load: it references os.system, which would run code. Only tensors and plain data are allowed (convert the file with a trusted tool, or use .safetensors).',
  );
});

test('the allow-list matches exact (module, name) pairs', () => {
  // 'torch' + '_utils._rebuild_tensor_v2' spells an allowed function but is not how torch names it.
  refuses(pk(P.proto(), P.global('torch', '_utils._rebuild_tensor_v2'), P.stop), /torch\._utils\._rebuild_tensor_v2, which would run code/);
});

test('REDUCE and NEWOBJ on anything but an allowed constructor are refused', () => {
  // A string pretending to be a callable (a __reduce__ trick needs a real callable).
  refuses(pk(P.proto(), P.str('os.system'), P.str('id'), P.tuple1, P.reduce, P.stop), /it applies REDUCE to a str, which is not an allowed constructor/);
  // An allowed global that is data, not a function.
  refuses(pk(P.proto(), P.global('torch', 'FloatStorage'), P.emptyTuple, P.reduce, P.stop), /it calls torch\.FloatStorage, which is not allowed as a function/);
  refuses(pk(P.proto(), P.global('torch', 'float32'), P.emptyTuple, P.newobj, P.stop), /it instantiates torch\.float32, which is not an allowed class/);
  refuses(pk(P.proto(), P.emptyList, P.emptyTuple, P.newobj, P.stop), /it instantiates a list/);
});

test('BUILD on a non-allowed object is refused', () => {
  refuses(pk(P.proto(), P.emptyList, P.emptyDict, P.build, P.stop), /it applies BUILD to a list, which is not an allowed object/);
  refuses(pk(P.proto(), P.global('collections', 'OrderedDict'), P.emptyDict, P.build, P.stop), /BUILD to a collections\.OrderedDict/);
});

test('STACK_GLOBAL smuggling: names from the memo or the stack get the same allow-list', () => {
  // 'os' stored in the memo, fetched back, paired with 'system'.
  refuses(pk(P.proto(4), P.shortStr('os'), P.binput(0), [0x30], P.binget(0), P.shortStr('system'), P.stackGlobal, P.stop), /it references os\.system/);
  // A module name built by calling something: the call itself is refused first.
  refuses(
    pk(P.proto(4), P.shortStr('builtins'), P.shortStr('getattr'), P.stackGlobal, P.str('o'), P.str('s'), P.tuple2, P.reduce, P.shortStr('system'), P.stackGlobal, P.stop),
    /it references builtins\.getattr/,
  );
  // Non-string operands.
  refuses(pk(P.proto(4), P.emptyTuple, P.shortStr('system'), P.stackGlobal, P.stop), /STACK_GLOBAL on a tuple and a str instead of two names/);
  // A name with a newline cannot sneak past the exact match either.
  refuses(pk(P.proto(4), P.shortStr('collections\nos'), P.shortStr('system'), P.stackGlobal, P.stop), /collections\\x0aos\.system/);
});

test('INST, OBJ, PERSID, EXT and out-of-band buffer opcodes are refused', () => {
  refuses(pk(P.proto(), P.mark, [0x69], utf('os\nsystem\n'), P.stop), /it uses the pickle opcode INST, which constructs an arbitrary class/);
  refuses(pk(P.proto(), P.mark, P.global('collections', 'OrderedDict'), [0x6f], P.stop), /pickle opcode OBJ/);
  refuses(pk(P.proto(), [0x50], utf('0\n'), P.stop), /pickle opcode PERSID/);
  refuses(pk(P.proto(), [0x82, 1], P.stop), /pickle opcode EXT1, which loads a global from the extension registry/);
  refuses(pk(P.proto(), [0x83, 1, 0], P.stop), /EXT2/);
  refuses(pk(P.proto(), [0x84, 1, 0, 0, 0], P.stop), /EXT4/);
  refuses(pk(P.proto(5), [0x97], P.stop), /NEXT_BUFFER/);
});

test('persistent ids other than storage tuples are refused', () => {
  refuses(pk(P.proto(), P.str('module'), P.str('x'), P.tuple2, P.binpersid, P.stop), /it uses a persistent id of kind 'module'; only tensor storages are allowed/);
  refuses(pk(P.proto(), P.str('storage'), P.binpersid, P.stop), /persistent id of kind str/);
  // A storage id whose "type" is not a storage type.
  refuses(
    pk(P.proto(), P.mark, P.str('storage'), P.global('collections', 'OrderedDict'), P.str('0'), P.str('cpu'), P.int1(1), P.tuple, P.binpersid, P.stop),
    /storage id does not name a storage type/,
  );
});

test('resource limits: deep MARK nesting, huge lengths, bad memo indices, truncation fail fast', () => {
  const t0 = performance.now();
  refuses(Buffer.concat([Buffer.from(P.proto()), Buffer.alloc(100_000, 0x28)]), new RegExp(`nests deeper than ${PICKLE_LIMITS.maxMarkDepth} levels`));
  refuses(pk(P.proto(), [0x58, 0xf0, 0xff, 0xff, 0xff], utf('abc'), P.stop), /declares a string of 4294967280 bytes but only 4 remain/);
  refuses(pk(P.proto(), [0x8d, 0, 0, 0, 0, 0, 0, 0, 0x10], P.stop), /declares a string of 1152921504606846976 bytes/);
  refuses(pk(P.proto(), [0x8b, 0xff, 0xff, 0xff, 0x7f], P.stop), /an integer of 2147483647 bytes is absurd/);
  refuses(pk(P.proto(), P.binget(5), P.stop), /reads memo slot 5, which was never stored \(memo index out of range\)/);
  refuses(pk(P.proto(), [0x6a, 0xff, 0xff, 0xff, 0xff], P.stop), /memo slot 4294967295/);
  refuses(pk(P.proto(), P.emptyDict, P.mark, P.str('a')), /ends before its STOP opcode \(the file is truncated\)/);
  refuses(pk(P.proto(), P.stop), /pops from an empty stack/);
  refuses(pk(P.proto(), P.setitems, P.stop), /closes a MARK it never opened/);
  refuses(pk(P.proto(), [0xff]), /unsupported pickle opcode 0xff/);
  refuses(pk(P.proto(9), P.none, P.stop), /protocol 9/);
  // Lists nested without MARKs: the finished tree is checked too.
  const deep = Buffer.concat([Buffer.from(P.proto()), Buffer.alloc(5000, 0x5d), Buffer.alloc(4999, 0x61), Buffer.from(P.stop)]);
  refuses(deep, new RegExp(`nests deeper than ${PICKLE_LIMITS.maxDepth} levels`));
  // A list that contains itself.
  refuses(pk(P.proto(), P.emptyList, P.binput(0), P.binget(0), P.append, P.stop), /contains a reference cycle/);
  // An exponential DAG (each level references the previous twice) is checked in linear time.
  const dag = [P.proto(), P.none, P.binput(0)];
  for (let i = 0; i < 200; i++) dag.push(P.binget(0), P.binget(0), P.tuple2, P.binput(0), [0x30]);
  dag.push(P.binget(0), P.stop);
  assert.ok(run(pk(...dag)) instanceof TorchTuple);
  // Unhashable keys.
  refuses(pk(P.proto(), P.emptyDict, P.emptyList, P.none, [0x73], P.stop), /unhashable/);
  assert.ok(performance.now() - t0 < 2000, 'hostile pickles must fail fast');
  for (const e of [new PickleFormatError('f', 'x'), new UnsafePickleError('f', 'x', 'y')]) assert.ok(e instanceof Error);
});

test('a tensor view outside its storage is refused when the pickle is read', () => {
  const mk = (offset: number, size: number[], stride: number[]): Buffer =>
    pk(
      P.proto(),
      P.global('torch._utils', '_rebuild_tensor_v2'),
      P.mark,
      P.mark, P.str('storage'), P.global('torch', 'FloatStorage'), P.str('0'), P.str('cpu'), P.int1(6), P.tuple, P.binpersid,
      P.int1(offset),
      P.mark, size.map((s) => P.int1(s)).flat(), P.tuple,
      P.mark, stride.map((s) => P.int1(s)).flat(), P.tuple,
      P.newfalse, P.global('collections', 'OrderedDict'), P.emptyTuple, P.reduce,
      P.tuple, P.reduce, P.stop,
    );
  const ok = run(mk(0, [2, 3], [3, 1])) as TorchTensorRef;
  assert.deepEqual(ok.shape, [2, 3]);
  assert.ok(ok.storage instanceof TorchStorage);
  refuses(mk(1, [2, 3], [3, 1]), /reaches element 6 of storage 0, which has 6/);
  refuses(mk(0, [3, 3], [3, 1]), /reaches element 8/);
  refuses(mk(0, [2, 3], [3]), /size and stride of different lengths/);
  assert.deepEqual((run(mk(9, [0, 3], [3, 1])) as TorchTensorRef).shape, [0, 3], 'an empty view touches nothing');
});

test('fuzz: 1500 mutations of a real pickle each parse or throw an Error, fast', () => {
  const fake = {};
  const seed = pickle(
    new TorchDict<unknown>([['w', fake], ['meta', { step: 500, name: 'x', l: [1.5, 2, new TorchTuple([1, 2])] }], [320, new TorchTuple([fake, fake])]], true),
    { tensor: (v) => (v === fake ? { key: '0', storageType: 'HalfStorage', numel: 4, shape: [2, 2] } : null) },
  );
  let rng = 0x9e3779b9;
  const rand = (n: number): number => {
    rng ^= rng << 13;
    rng ^= rng >>> 17;
    rng ^= rng << 5;
    return (rng >>> 0) % n;
  };
  const t0 = performance.now();
  let parsed = 0;
  let refused = 0;
  for (let i = 0; i < 1500; i++) {
    const b = Buffer.from(seed);
    const kind = rand(4);
    let m: Buffer = b;
    if (kind === 0) for (let k = 0; k <= rand(4); k++) b[rand(b.length)] = rand(256);
    else if (kind === 1) m = b.subarray(0, rand(b.length));
    else if (kind === 2) {
      const at = rand(b.length);
      m = Buffer.concat([b.subarray(0, at), Buffer.from([rand(256), rand(256)]), b.subarray(at)]);
    } else {
      const at = rand(b.length);
      m = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + rand(8))]);
    }
    try {
      run(m);
      parsed++;
    } catch (e) {
      assert.ok(e instanceof PickleFormatError || e instanceof UnsafePickleError, `unexpected ${String(e)}`);
      refused++;
    }
  }
  const ms = performance.now() - t0;
  assert.equal(parsed + refused, 1500);
  assert.ok(refused > 500, `most mutations should be refused (${refused})`);
  assert.ok(ms < 5000, `fuzzing took ${ms.toFixed(0)} ms`);
});

test('after all of the above the process still parses valid pickles', () => {
  assert.deepEqual(run(pk(P.proto(), P.mark, P.int1(1), P.int1(2), [0x6c], P.stop)), [1, 2]);
});
