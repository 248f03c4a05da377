// A restricted unpickler and a small pickler for PyTorch files (sd-formats.md §2.2–§2.4).
//
// Pickle is a program: GLOBAL names any Python callable and REDUCE calls it, which is how a
// malicious checkpoint runs `os.system`. This module never runs Python and never resolves a name
// outside the allow-list of §2.3: every allowed global becomes a plain tag object, and "calling" one
// builds data (an ordered dict, a tensor description, a tuple). Everything else is refused the
// moment it is named, with a sentence that says which global and why.
//
// A hostile file must also fail fast: the VM is a loop over a Buffer (no recursion), MARK nesting
// and memo size are capped, lengths are checked against the bytes that remain, and after STOP the
// result is checked to be acyclic and not absurdly deep, so code walking it may recurse.
//
// Longer than ~800 lines on purpose: the VM, its allow-list and the value tree it builds are one
// security boundary, reviewed together; the pickler at the end writes the same opcode subset.
import type { DType } from '../torch/dtype.ts';
import type { Tensor } from '../torch/tensor.ts';

// ---- the value tree ---------------------------------------------------------------------------

/** dtypes a storage can have; complex ones can be described but not loaded. */
export type TorchDType = DType | 'complex64' | 'complex128';

/** An allow-listed global (§2.3), as a tag. Storage types and dtypes carry their dtype. */
export class TorchGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
    readonly kind: GlobalKind,
    readonly dtype?: TorchDType,
  ) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

export type GlobalKind =
  | 'ordereddict'
  | 'rebuild_tensor_v2'
  | 'rebuild_tensor'
  | 'rebuild_parameter'
  | 'rebuild_parameter_with_state'
  | 'storage_type'
  | 'dtype'
  | 'size'
  | 'set'
  | 'codecs_encode'
  | 'bytearray'
  | 'device'
  | 'object';

export class TorchTuple<V = TorchValue> {
  constructor(readonly items: readonly V[]) {}
  get length(): number {
    return this.items.length;
  }
}

/** dict or collections.OrderedDict (`ordered`); insertion order is kept either way. */
export class TorchDict<V = TorchValue> extends Map<TorchValue, V> {
  constructor(
    entries?: Iterable<readonly [TorchValue, V]>,
    public ordered = false,
  ) {
    super(entries);
  }
}

export class TorchSet {
  constructor(
    readonly items: TorchValue[],
    readonly frozen = false,
  ) {}
}

/** An object of an allow-listed class (ParameterDict, Lightning's ModelCheckpoint): never run. */
export class TorchObject {
  state: TorchValue = null;
  constructor(
    readonly cls: TorchGlobal,
    readonly args: readonly TorchValue[],
  ) {}
}

/** A storage named by a persistent id `('storage', type, key, location, numel)` (§2.2). */
export class TorchStorage {
  constructor(
    readonly key: string,
    readonly dtype: TorchDType,
    readonly numel: number,
    readonly location: string,
  ) {}
}

/** How a caller turns a tensor description into a Tensor (torchfile.ts maps the file). */
export type TensorLoader = (ref: TorchTensorRef) => Tensor;

/** A tensor in a file, not yet read: `load()` makes it (zero copy over the file when possible). */
export class TorchTensorRef {
  constructor(
    readonly storage: TorchStorage,
    /** In elements of the storage's dtype. */
    readonly storageOffset: number,
    readonly shape: readonly number[],
    /** In elements. */
    readonly stride: readonly number[],
    readonly requiresGrad: boolean,
    private readonly loader: TensorLoader | null,
  ) {}
  get dtype(): TorchDType {
    return this.storage.dtype;
  }
  get storageKey(): string {
    return this.storage.key;
  }
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  withRequiresGrad(requiresGrad: boolean): TorchTensorRef {
    return new TorchTensorRef(this.storage, this.storageOffset, this.shape, this.stride, requiresGrad, this.loader);
  }
  load(): Tensor {
    if (this.loader === null) throw new Error('this tensor description has no file to load from');
    return this.loader(this);
  }
}

export type TorchValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | TorchValue[]
  | TorchTuple
  | TorchDict
  | TorchSet
  | TorchObject
  | TorchGlobal
  | TorchStorage
  | TorchTensorRef;

// ---- errors -----------------------------------------------------------------------------------

const ADVICE = 'Only tensors and plain data are allowed (convert the file with a trusted tool, or use .safetensors).';

/** The file asks for something that could run code; nothing was run. */
export class UnsafePickleError extends Error {
  constructor(
    readonly file: string,
    /** What was refused: a global's name or an opcode. */
    readonly what: string,
    detail: string,
  ) {
    super(`${file}: refusing to load: ${detail}. ${ADVICE}`);
    this.name = 'UnsafePickleError';
  }
}

/** The pickle is malformed or exceeds a limit. */
export class PickleFormatError extends Error {
  constructor(
    readonly file: string,
    detail: string,
    readonly offset?: number,
    /** The bytes ran out: a legacy reader holding only part of the file may read more. */
    readonly truncated = false,
  ) {
    super(`${file}: ${detail}${offset === undefined ? '' : ` (pickle byte ${offset})`}; the file is corrupt or not a PyTorch file`);
    this.name = 'PickleFormatError';
  }
}

// ---- the allow-list (§2.3) --------------------------------------------------------------------

const STORAGE_DTYPES: Record<string, TorchDType> = {
  FloatStorage: 'float32',
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  DoubleStorage: 'float64',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ShortStorage: 'int16',
  CharStorage: 'int8',
  ByteStorage: 'uint8',
  BoolStorage: 'bool',
  ComplexFloatStorage: 'complex64',
  ComplexDoubleStorage: 'complex128',
  UntypedStorage: 'uint8',
};
const DTYPE_NAMES: Record<string, TorchDType> = {
  float32: 'float32', float: 'float32', float16: 'float16', half: 'float16', bfloat16: 'bfloat16',
  float64: 'float64', double: 'float64', int64: 'int64', long: 'int64', int32: 'int32', int: 'int32',
  int16: 'int16', short: 'int16', int8: 'int8', uint8: 'uint8', bool: 'bool',
  complex64: 'complex64', cfloat: 'complex64', complex128: 'complex128', cdouble: 'complex128',
};

function buildAllowList(): Map<string, TorchGlobal> {
  const m = new Map<string, TorchGlobal>();
  const add = (module: string, name: string, kind: GlobalKind, dtype?: TorchDType): void => {
    m.set(`${module}\0${name}`, new TorchGlobal(module, name, kind, dtype));
  };
  add('collections', 'OrderedDict', 'ordereddict');
  add('torch._utils', '_rebuild_tensor_v2', 'rebuild_tensor_v2');
  add('torch._utils', '_rebuild_tensor', 'rebuild_tensor');
  add('torch._utils', '_rebuild_parameter', 'rebuild_parameter');
  add('torch._utils', '_rebuild_parameter_with_state', 'rebuild_parameter_with_state');
  // Storage classes are only dtype tags here; files saved from a GPU name torch.cuda.*.
  for (const [name, dt] of Object.entries(STORAGE_DTYPES)) {
    add('torch', name, 'storage_type', dt);
    if (name !== 'UntypedStorage') add('torch.cuda', name, 'storage_type', dt);
  }
  for (const [name, dt] of Object.entries(DTYPE_NAMES)) add('torch', name, 'dtype', dt);
  add('torch', 'Size', 'size');
  add('torch', 'device', 'device');
  add('builtins', 'set', 'set');
  add('builtins', 'bytearray', 'bytearray');
  add('_codecs', 'encode', 'codecs_encode');
  add('torch.nn.modules.container', 'ParameterDict', 'object');
  add('pytorch_lightning.callbacks.model_checkpoint', 'ModelCheckpoint', 'object');
  return m;
}
const ALLOWED = buildAllowList();

/** A name from a hostile file, made safe to print. */
function printable(s: string): string {
  const t = s.length > 120 ? s.slice(0, 120) + '…' : s;
  return t.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** Resolves (module, name) against the allow-list, mapping Python 2 names as torch does. */
export function resolveGlobal(module: string, name: string, file: string): TorchGlobal {
  const mod = module === '__builtin__' ? 'builtins' : module === 'torch.tensor' ? 'torch._tensor' : module;
  const g = ALLOWED.get(`${mod}\0${name}`);
  if (g === undefined) {
    const q = printable(`${module}.${name}`);
    throw new UnsafePickleError(file, q, `it references ${q}, which would run code`);
  }
  return g;
}

// ---- the VM -----------------------------------------------------------------------------------

export interface UnpickleOptions {
  /** Names the file in every error. */
  file: string;
  /** Called once per distinct persistent id; may cache storages by key. */
  storage?: (s: TorchStorage) => TorchStorage;
  /** Attached to every tensor description. */
  loadTensor?: TensorLoader;
  /** Legacy files (§2.5) carry a sixth element, view_metadata, in their persistent ids. */
  legacy?: boolean;
}

/** Limits that keep a hostile pickle from hanging or exhausting memory. */
export const PICKLE_LIMITS = {
  /** Open MARKs at once; torch files nest a handful deep. */
  maxMarkDepth: 1000,
  /** Depth of the finished value tree. */
  maxDepth: 1000,
  /** Bytes of a LONG4 integer. */
  maxLongBytes: 1024,
} as const;

/** Internal stack marker for MARK is a separate stack (metastack), as in CPython. */
type StackItem = TorchValue;

export interface UnpickleResult {
  value: TorchValue;
  /** Offset just past STOP (legacy files hold several pickles back to back). */
  end: number;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Runs the pickle in `data` from `start` to its STOP; refuses anything off the allow-list. */
export function unpickle(data: Uint8Array, opts: UnpickleOptions, start = 0): UnpickleResult {
  const file = opts.file;
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let pos = start;
  let stack: StackItem[] = [];
  const meta: StackItem[][] = [];
  const memo = new Map<number, StackItem>();
  let opPos = start;

  const fail = (detail: string, truncated = false): never => {
    throw new PickleFormatError(file, detail, opPos - start, truncated);
  };
  const refuseOp = (op: string, why: string): never => {
    throw new UnsafePickleError(file, op, `it uses the pickle opcode ${op}, which ${why}`);
  };
  const need = (n: number, what: string): void => {
    if (n < 0 || pos + n > buf.length) fail(`the pickle declares ${what} of ${n} bytes but only ${buf.length - pos} remain`, n >= 0);
  };
  const u8 = (): number => {
    need(1, 'an argument');
    return buf[pos++];
  };
  const take = (n: number, what: string): Buffer => {
    need(n, what);
    const b = buf.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  const u64 = (what: string): number => {
    need(8, what);
    const v = buf.readBigUInt64LE(pos);
    pos += 8;
    if (v > BigInt(buf.length)) fail(`the pickle declares ${what} of ${v} bytes but only ${buf.length - pos} remain`, true);
    return Number(v);
  };
  const line = (): string => {
    const nl = buf.indexOf(0x0a, pos);
    if (nl < 0 || nl - pos > 1000) fail('a GLOBAL name is unterminated or too long');
    const s = buf.toString('latin1', pos, nl);
    pos = nl + 1;
    return s;
  };
  const pop = (): StackItem => {
    if (stack.length === 0) fail('the pickle pops from an empty stack');
    return stack.pop() as StackItem;
  };
  const top = (): StackItem => {
    if (stack.length === 0) fail('the pickle reads an empty stack');
    return stack[stack.length - 1];
  };
  const popN = (n: number): StackItem[] => {
    if (stack.length < n) fail('the pickle pops from an empty stack');
    return stack.splice(stack.length - n, n);
  };
  const push = (v: StackItem): void => {
    stack.push(v);
  };
  const popMark = (): StackItem[] => {
    const items = stack;
    const prev = meta.pop();
    if (prev === undefined) fail('the pickle closes a MARK it never opened');
    stack = prev as StackItem[];
    return items;
  };
  const put = (idx: number): void => {
    if (memo.size >= buf.length) fail('the pickle memo grew past the size of the file');
    memo.set(idx, top());
  };
  const get = (idx: number): void => {
    const v = memo.get(idx);
    if (v === undefined && !memo.has(idx)) fail(`the pickle reads memo slot ${idx}, which was never stored (memo index out of range)`);
    stack.push(v as StackItem);
  };
  const str = (b: Buffer): string => {
    try {
      return utf8.decode(b);
    } catch {
      return fail('a string is not valid UTF-8');
    }
  };
  const checkKey = (k: TorchValue): TorchValue => {
    if (Array.isArray(k) || k instanceof TorchDict || (k instanceof TorchSet && !k.frozen)) {
      fail('a dict key is a list, dict or set (unhashable)');
    }
    return k;
  };
  const setItems = (target: StackItem, items: StackItem[]): void => {
    if (!(target instanceof TorchDict)) return fail(`SETITEM(S) on a ${typeName(target)}, which is not a dict`);
    if (items.length % 2 !== 0) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < items.length; i += 2) target.set(checkKey(items[i]), items[i + 1]);
  };

  const storages = new Map<string, TorchStorage>();
  const persistentLoad = (pid: StackItem): TorchStorage => {
    const t = pid instanceof TorchTuple ? pid.items : null;
    if (t === null || t[0] !== 'storage') {
      const kind = t !== null && typeof t[0] === 'string' ? `'${printable(t[0])}'` : typeName(pid);
      throw new UnsafePickleError(file, 'persistent id', `it uses a persistent id of kind ${kind}; only tensor storages are allowed`);
    }
    const [, type, key, location, numel, view] = t;
    const arity = opts.legacy ? 6 : 5;
    if (t.length !== arity) fail(`a storage id has ${t.length} fields, not ${arity}`);
    if (!(type instanceof TorchGlobal) || type.kind !== 'storage_type' || type.dtype === undefined) return fail('a storage id does not name a storage type');
    if (typeof key !== 'string' || typeof location !== 'string') return fail('a storage id has a non-string key or location');
    if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) return fail('a storage id has an invalid element count');
    if (opts.legacy && view !== null) fail('legacy storage views (view_metadata) are not supported');
    const known = storages.get(key);
    if (known !== undefined) {
      if (known.numel !== numel || known.dtype !== type.dtype) fail(`storage ${printable(key)} is declared twice with different types or sizes`);
      return known;
    }
    const s0 = new TorchStorage(key, type.dtype, numel, location);
    const s = opts.storage ? opts.storage(s0) : s0;
    storages.set(key, s);
    return s;
  };

  const callGlobal = (fn: StackItem, args: readonly StackItem[], how: 'REDUCE' | 'NEWOBJ'): StackItem => {
    if (!(fn instanceof TorchGlobal)) {
      throw new UnsafePickleError(file, how, `it applies ${how} to a ${typeName(fn)}, which is not an allowed constructor`);
    }
    const notCallable = (): never => {
      throw new UnsafePickleError(file, fn.qualifiedName, `it calls ${fn.qualifiedName}, which is not allowed as a function`);
    };
    switch (fn.kind) {
      case 'ordereddict': {
        const d = new TorchDict(undefined, true);
        if (args.length === 1 && Array.isArray(args[0])) {
          for (const p of args[0]) {
            const kv = p instanceof TorchTuple ? p.items : Array.isArray(p) ? p : null;
            if (kv === null || kv.length !== 2) fail('OrderedDict() given something other than pairs');
            d.set(checkKey((kv as TorchValue[])[0]), (kv as TorchValue[])[1]);
          }
        } else if (args.length !== 0) fail('OrderedDict() with unexpected arguments');
        return d;
      }
      case 'rebuild_tensor_v2':
      case 'rebuild_tensor': {
        const min = fn.kind === 'rebuild_tensor' ? 4 : 6;
        if (args.length < min || args.length > min + 1) fail(`${fn.name} called with ${args.length} arguments`);
        const [storage, offset, size, stride] = args;
        const rg = fn.kind === 'rebuild_tensor_v2' ? args[4] : false;
        return makeTensorRef(storage, offset, size, stride, rg === true, opts.loadTensor ?? null, fail);
      }
      case 'rebuild_parameter':
      case 'rebuild_parameter_with_state': {
        const [t, rg] = args;
        if (!(t instanceof TorchTensorRef) || args.length < 3) return fail(`${fn.name} not given a tensor`);
        return t.withRequiresGrad(rg === true);
      }
      case 'size': // torch.Size(seq): a tuple of ints
      case 'set': { // set(seq)
        const a = args.length === 0 ? [] : args[0] instanceof TorchTuple ? args[0].items : args[0];
        if (!Array.isArray(a)) return fail(`${fn.name}() given a non-sequence`);
        if (fn.kind === 'set') return new TorchSet([...a]);
        if (a.some((x) => typeof x !== 'number')) fail('torch.Size() given a non-integer');
        return new TorchTuple([...a]);
      }
      case 'codecs_encode': {
        // Python 3 pickles bytes at protocol 2 as _codecs.encode(latin1_text, 'latin1').
        const [text, enc] = args;
        const codec = enc === 'latin1' || enc === 'latin-1' ? 'latin1' : enc === 'utf-8' || enc === 'utf8' ? 'utf-8' : null;
        if (typeof text !== 'string' || codec === null) return fail('_codecs.encode() given arguments other than (str, "latin1")');
        return Buffer.from(text, codec);
      }
      case 'bytearray':
        if (args.length === 0) return Buffer.alloc(0);
        if (args[0] instanceof Uint8Array) return Buffer.from(args[0]);
        return fail('bytearray() given something other than bytes');
      case 'device': { // torch.device('cuda', 0) → 'cuda:0'
        const [type, index] = args;
        if (typeof type !== 'string' || (index != null && typeof index !== 'number')) return fail('torch.device() given odd arguments');
        return typeof index === 'number' ? `${type}:${index}` : type;
      }
      case 'object':
        return new TorchObject(fn, [...args]);
      default:
        return notCallable();
    }
  };

  for (;;) {
    opPos = pos;
    if (pos >= buf.length) fail('the pickle ends before its STOP opcode (the file is truncated)', true);
    const op = buf[pos++];
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail(`pickle protocol ${buf[pos - 1]} is newer than any PyTorch writes`);
        break;
      case 0x95: u64('a frame'); break; // FRAME: a length hint only
      case 0x2e: { // STOP
        const value = pop();
        checkTree(value, file);
        return { value, end: pos };
      }
      case 0x28: // MARK
        if (meta.length >= PICKLE_LIMITS.maxMarkDepth) fail(`the pickle nests deeper than ${PICKLE_LIMITS.maxMarkDepth} levels`);
        meta.push(stack);
        stack = [];
        break;
      case 0x31: popMark(); break; // POP_MARK
      case 0x30: pop(); break; // POP
      case 0x32: stack.push(top()); break; // DUP
      case 0x29: stack.push(new TorchTuple([])); break; // EMPTY_TUPLE
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x7d: stack.push(new TorchDict()); break; // EMPTY_DICT
      case 0x8f: stack.push(new TorchSet([])); break; // EMPTY_SET
      case 0x85: case 0x86: case 0x87: push(new TorchTuple(popN(op - 0x84))); break; // TUPLE1-3
      // popMark swaps `stack`, so these take the items before pushing.
      case 0x74: push(new TorchTuple(popMark())); break; // TUPLE
      case 0x6c: push(popMark()); break; // LIST
      case 0x91: push(new TorchSet(popMark(), true)); break; // FROZENSET
      case 0x64: { // DICT
        const d = new TorchDict();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x73: { // SETITEM
        const kv = popN(2);
        setItems(top(), kv);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x61: case 0x65: { // APPEND, APPENDS
        const items = op === 0x61 ? popN(1) : popMark();
        const l = top();
        if (!Array.isArray(l)) fail(`APPEND to a ${typeName(l)}, which is not a list`);
        for (const v of items) (l as TorchValue[]).push(v);
        break;
      }
      case 0x90: { // ADDITEMS
        const items = popMark();
        const s = top();
        if (!(s instanceof TorchSet) || s.frozen) return fail(`ADDITEMS to a ${typeName(s)}, which is not a set`);
        s.items.push(...items);
        break;
      }
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4a: stack.push(take(4, 'an int').readInt32LE(0)); break; // BININT
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(take(2, 'an int').readUInt16LE(0)); break; // BININT2
      case 0x8a: stack.push(decodeLong(take(u8(), 'a long'))); break; // LONG1
      case 0x8b: { // LONG4
        const n = take(4, 'a length').readInt32LE(0);
        if (n > PICKLE_LIMITS.maxLongBytes) fail(`an integer of ${n} bytes is absurd`);
        stack.push(decodeLong(take(n, 'a long')));
        break;
      }
      case 0x47: stack.push(take(8, 'a float').readDoubleBE(0)); break; // BINFLOAT (big-endian)
      case 0x58: stack.push(str(take(take(4, 'a length').readUInt32LE(0), 'a string'))); break; // BINUNICODE
      case 0x8c: stack.push(str(take(u8(), 'a string'))); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(str(take(u64('a string'), 'a string'))); break; // BINUNICODE8
      // Python 2 byte strings: torch.load decodes them as text (encoding='utf-8'), latin1 fallback.
      case 0x55: stack.push(py2str(take(u8(), 'a string'))); break; // SHORT_BINSTRING
      case 0x54: stack.push(py2str(take(take(4, 'a length').readInt32LE(0), 'a string'))); break; // BINSTRING
      case 0x43: stack.push(Buffer.from(take(u8(), 'bytes'))); break; // SHORT_BINBYTES
      case 0x42: stack.push(Buffer.from(take(take(4, 'a length').readUInt32LE(0), 'bytes'))); break; // BINBYTES
      case 0x8e: // BINBYTES8
      case 0x96: stack.push(Buffer.from(take(u64('bytes'), 'bytes'))); break; // BYTEARRAY8
      case 0x71: put(u8()); break; // BINPUT
      case 0x72: put(take(4, 'a memo index').readUInt32LE(0)); break; // LONG_BINPUT
      case 0x94: put(memo.size); break; // MEMOIZE
      case 0x68: get(u8()); break; // BINGET
      case 0x6a: get(take(4, 'a memo index').readUInt32LE(0)); break; // LONG_BINGET
      case 0x63: { // GLOBAL
        const module = line();
        stack.push(resolveGlobal(module, line(), file));
        break;
      }
      case 0x93: { // STACK_GLOBAL: the same allow-list, on names taken from the stack
        const [module, name] = popN(2);
        if (typeof module !== 'string' || typeof name !== 'string') {
          throw new UnsafePickleError(file, 'STACK_GLOBAL', `it uses STACK_GLOBAL on a ${typeName(module)} and a ${typeName(name)} instead of two names`);
        }
        stack.push(resolveGlobal(module, name, file));
        break;
      }
      case 0x52: case 0x81: { // REDUCE: fn(*args); NEWOBJ: cls.__new__(cls, *args)
        const [fn, args] = popN(2);
        if (!(args instanceof TorchTuple)) return fail(`${op === 0x52 ? 'REDUCE' : 'NEWOBJ'} without an argument tuple`);
        stack.push(op === 0x52 ? callGlobal(fn, args.items, 'REDUCE') : newObject(fn, args.items));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        const [cls, args, kwargs] = popN(3);
        if (!(args instanceof TorchTuple) || !(kwargs instanceof TorchDict) || kwargs.size !== 0) return fail('NEWOBJ_EX with keyword arguments');
        stack.push(newObject(cls, args.items));
        break;
      }
      case 0x62: { // BUILD: obj.__setstate__(state) — only on objects that are data here
        const state = pop();
        const obj = top();
        if (obj instanceof TorchObject) obj.state = state;
        else if (obj instanceof TorchDict) {
          // OrderedDict state_dict()s carry `_metadata` through BUILD (§7.1): not needed.
        } else {
          throw new UnsafePickleError(file, 'BUILD', `it applies BUILD to a ${typeName(obj)}, which is not an allowed object`);
        }
        break;
      }
      case 0x51: stack.push(persistentLoad(pop())); break; // BINPERSID
      case 0x50: refuseOp('PERSID', 'loads a persistent object by a text id'); break;
      case 0x69: refuseOp('INST', 'constructs an arbitrary class'); break;
      case 0x6f: refuseOp('OBJ', 'constructs an arbitrary class'); break;
      case 0x82: case 0x83: case 0x84: refuseOp('EXT' + (op === 0x82 ? '1' : op === 0x83 ? '2' : '4'), 'loads a global from the extension registry'); break;
      case 0x97: case 0x98: refuseOp(op === 0x97 ? 'NEXT_BUFFER' : 'READONLY_BUFFER', 'needs out-of-band buffers'); break;
      default:
        fail(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')}`);
    }
  }

  function newObject(cls: StackItem, args: readonly StackItem[]): StackItem {
    if (cls instanceof TorchGlobal && (cls.kind === 'object' || cls.kind === 'ordereddict' || cls.kind === 'set')) {
      return cls.kind === 'object' ? new TorchObject(cls, [...args]) : callGlobal(cls, [], 'NEWOBJ');
    }
    const what = cls instanceof TorchGlobal ? cls.qualifiedName : `a ${typeName(cls)}`;
    throw new UnsafePickleError(file, 'NEWOBJ', `it instantiates ${what}, which is not an allowed class`);
  }
}

function py2str(b: Buffer): string {
  try {
    return utf8.decode(b);
  } catch {
    return b.toString('latin1');
  }
}

/** Two's-complement little-endian integer; a number when exact, else a bigint. */
function decodeLong(b: Buffer): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

export function typeName(v: unknown): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return 'list';
  if (v instanceof TorchTuple) return 'tuple';
  if (v instanceof TorchDict) return v.ordered ? 'OrderedDict' : 'dict';
  if (v instanceof TorchSet) return v.frozen ? 'frozenset' : 'set';
  if (v instanceof TorchObject) return `${v.cls.qualifiedName} object`;
  if (v instanceof TorchGlobal) return v.qualifiedName;
  if (v instanceof TorchStorage) return 'storage';
  if (v instanceof TorchTensorRef) return 'tensor';
  if (v instanceof Uint8Array) return 'bytes';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float';
  if (typeof v === 'bigint') return 'int';
  if (typeof v === 'string') return 'str';
  if (typeof v === 'boolean') return 'bool';
  return typeof v;
}

/** Validates `_rebuild_tensor_v2`'s arguments; the view must lie inside its storage (§2.2). */
function makeTensorRef(
  storage: TorchValue,
  offset: TorchValue,
  size: TorchValue,
  stride: TorchValue,
  requiresGrad: boolean,
  loader: TensorLoader | null,
  fail: (d: string) => never,
): TorchTensorRef {
  if (!(storage instanceof TorchStorage)) return fail('a tensor is rebuilt from something other than a storage');
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) return fail('a tensor has an invalid storage offset');
  const ints = (v: TorchValue, what: string): number[] => {
    const items = v instanceof TorchTuple ? v.items : Array.isArray(v) ? v : fail(`a tensor ${what} is not a tuple`);
    if (items.length > 64) fail(`a tensor has ${items.length} dimensions`);
    for (const x of items) if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) fail(`a tensor ${what} holds ${String(x)}`);
    return items as number[];
  };
  const shape = ints(size, 'size');
  const strides = ints(stride, 'stride');
  if (shape.length !== strides.length) fail('a tensor has a size and stride of different lengths');
  let numel = 1;
  let last = offset;
  for (let i = 0; i < shape.length; i++) {
    numel *= shape[i];
    if (shape[i] > 0) last += (shape[i] - 1) * strides[i];
  }
  if (!Number.isSafeInteger(numel) || !Number.isSafeInteger(last)) fail('a tensor size is absurd');
  if (numel > 0 && last >= storage.numel) {
    fail(`a tensor view (offset ${offset}, size [${shape}], stride [${strides}]) reaches element ${last} of storage ${printable(storage.key)}, which has ${storage.numel}`);
  }
  return new TorchTensorRef(storage, offset, shape, strides, requiresGrad, loader);
}

/**
 * Refuses cyclic or absurdly deep results, so consumers may recurse. Iterative, and each node is
 * visited once, so a DAG of shared references costs no more than its size.
 */
function checkTree(root: TorchValue, file: string): void {
  const children = (v: TorchValue): readonly TorchValue[] | null => {
    if (Array.isArray(v)) return v;
    if (v instanceof TorchTuple) return v.items;
    if (v instanceof TorchSet) return v.items;
    if (v instanceof TorchDict) {
      const out: TorchValue[] = [];
      for (const [k, x] of v) out.push(k, x);
      return out;
    }
    if (v instanceof TorchObject) return [...v.args, v.state];
    return null;
  };
  const height = new Map<object, number>();
  const onPath = new Set<object>();
  type Frame = { node: object; kids: readonly TorchValue[]; i: number; h: number };
  const first = children(root);
  if (first === null) return;
  const frames: Frame[] = [{ node: root as object, kids: first, i: 0, h: 0 }];
  onPath.add(root as object);
  while (frames.length > 0) {
    const f = frames[frames.length - 1];
    if (f.i < f.kids.length) {
      const kid = f.kids[f.i++];
      const kk = children(kid);
      if (kk === null) continue;
      const o = kid as object;
      if (onPath.has(o)) throw new PickleFormatError(file, 'the pickle contains a reference cycle');
      const known = height.get(o);
      if (known !== undefined) {
        f.h = Math.max(f.h, known + 1);
        continue;
      }
      if (frames.length >= PICKLE_LIMITS.maxDepth) throw new PickleFormatError(file, `the data nests deeper than ${PICKLE_LIMITS.maxDepth} levels`);
      onPath.add(o);
      frames.push({ node: o, kids: kk, i: 0, h: 0 });
    } else {
      frames.pop();
      onPath.delete(f.node);
      height.set(f.node, f.h);
      const parent = frames[frames.length - 1];
      if (parent !== undefined) parent.h = Math.max(parent.h, f.h + 1);
    }
  }
}

// ---- the pickler (§2.4) -----------------------------------------------------------------------

/** Forces a Python float for an integral JS number (2.0 rather than 2). */
export class PyFloat {
  constructor(readonly value: number) {}
}

/** What the pickler emits for a tensor: a persistent storage id and a contiguous view. */
export interface PickledTensor {
  key: string;
  storageType: string;
  numel: number;
  shape: readonly number[];
}

/**
 * Tensors (whatever `tensor` recognises) go through `_rebuild_tensor_v2`; a Map or plain object is
 * a dict, a TorchDict with `ordered` an OrderedDict, an array a list, a TorchTuple a tuple.
 */
export interface PicklerHooks {
  /** Returns the storage for a tensor-like value, or null if `v` is not one. */
  tensor(v: unknown): PickledTensor | null;
}

const OP = {
  PROTO: 0x80, STOP: 0x2e, MARK: 0x28, EMPTY_DICT: 0x7d, EMPTY_LIST: 0x5d, EMPTY_TUPLE: 0x29,
  TUPLE: 0x74, TUPLE1: 0x85, TUPLE2: 0x86, TUPLE3: 0x87, SETITEMS: 0x75, APPENDS: 0x65,
  NONE: 0x4e, NEWTRUE: 0x88, NEWFALSE: 0x89, BININT: 0x4a, BININT1: 0x4b, BININT2: 0x4d,
  LONG1: 0x8a, BINFLOAT: 0x47, BINUNICODE: 0x58, GLOBAL: 0x63, REDUCE: 0x52, BINPERSID: 0x51,
  BINPUT: 0x71, LONG_BINPUT: 0x72, BINGET: 0x68, LONG_BINGET: 0x6a,
} as const;

/** An opcode byte followed by a fixed-width little-endian (or, for floats, big-endian) argument. */
function opArg(op: number, width: 2 | 4 | 8, v: number, kind: 'u' | 'i' | 'f' = 'u'): Buffer {
  const b = Buffer.alloc(1 + width);
  b[0] = op;
  if (kind === 'f') b.writeDoubleBE(v, 1);
  else if (width === 2) b.writeUInt16LE(v, 1);
  else if (kind === 'i') b.writeInt32LE(v, 1);
  else b.writeUInt32LE(v, 1);
  return b;
}

/** Pickles `value` at protocol 2 using only opcodes A1111's safe.py and torch.load accept. */
export function pickle(value: unknown, hooks: PicklerHooks): Buffer {
  const parts: Buffer[] = [];
  const emit = (...xs: (number | Buffer)[]): void => {
    for (const x of xs) parts.push(typeof x === 'number' ? Buffer.from([x]) : x);
  };
  // Each global is written once and memoized, as CPython's pickler does (keeps big files small).
  const globals = new Map<string, number>();
  const onPath = new Set<object>();

  const global = (module: string, name: string): void => {
    const key = `${module}\n${name}\n`;
    const idx = globals.get(key);
    if (idx !== undefined) return emit(idx < 256 ? Buffer.from([OP.BINGET, idx]) : opArg(OP.LONG_BINGET, 4, idx));
    const i = globals.size;
    globals.set(key, i);
    emit(OP.GLOBAL, Buffer.from(key, 'utf-8'), i < 256 ? Buffer.from([OP.BINPUT, i]) : opArg(OP.LONG_BINPUT, 4, i));
  };
  const int = (v: number | bigint, path: string): void => {
    const n = BigInt(v);
    if (n >= 0n && n < 256n) return emit(OP.BININT1, Number(n));
    if (n >= 0n && n < 65536n) return emit(opArg(OP.BININT2, 2, Number(n)));
    if (n >= -(2n ** 31n) && n < 2n ** 31n) return emit(opArg(OP.BININT, 4, Number(n), 'i'));
    // LONG1: minimal two's complement, little-endian; stop once the rest is all sign bits.
    const bytes: number[] = [];
    for (let x = n; ; ) {
      bytes.push(Number(x & 0xffn));
      x >>= 8n;
      const signBit = (bytes[bytes.length - 1] & 0x80) !== 0;
      if ((x === 0n && !signBit) || (x === -1n && signBit)) break;
    }
    if (bytes.length > 255) throw new Error(`cannot save ${path}: integer too large`);
    emit(Buffer.from([OP.LONG1, bytes.length, ...bytes]));
  };
  const string = (s: string): void => {
    const u = Buffer.from(s, 'utf-8');
    emit(opArg(OP.BINUNICODE, 4, u.length), u);
  };
  const tuple = (items: readonly unknown[], path: string): void => {
    if (items.length === 0) return emit(OP.EMPTY_TUPLE);
    if (items.length > 3) emit(OP.MARK);
    items.forEach((x, i) => save(x, `${path}[${i}]`));
    emit([OP.TUPLE, OP.TUPLE1, OP.TUPLE2, OP.TUPLE3][items.length] ?? OP.TUPLE);
  };
  // Items go in batches of 1000 (as CPython does), so a reader's MARK stack stays small.
  const dictItems = (entries: readonly (readonly [unknown, unknown])[], path: string): void => {
    for (let i = 0; i < entries.length; i += 1000) {
      emit(OP.MARK);
      for (const [k, v] of entries.slice(i, i + 1000)) {
        if (!(k === null || typeof k === 'string' || typeof k === 'number' || typeof k === 'bigint' || typeof k === 'boolean')) {
          throw new Error(`cannot save ${path}: dict keys must be str, int, float, bool or None`);
        }
        save(k, path);
        save(v, `${path}.${String(k)}`);
      }
      emit(OP.SETITEMS);
    }
  };

  function save(v: unknown, path: string): void {
    if (v === null || v === undefined) return emit(OP.NONE);
    if (typeof v === 'boolean') return emit(v ? OP.NEWTRUE : OP.NEWFALSE);
    if (typeof v === 'bigint') return int(v, path);
    if (typeof v === 'number') return Number.isSafeInteger(v) && !Object.is(v, -0) ? int(v, path) : emit(opArg(OP.BINFLOAT, 8, v, 'f'));
    if (v instanceof PyFloat) return emit(opArg(OP.BINFLOAT, 8, v.value, 'f'));
    if (typeof v === 'string') return string(v);
    if (typeof v !== 'object') throw new Error(`cannot save ${path}: a ${typeof v} is not plain data`);
    const t = hooks.tensor(v);
    if (t !== null) return tensor(t);
    if (onPath.has(v)) throw new Error(`cannot save ${path}: the value contains itself`);
    onPath.add(v);
    try {
      if (v instanceof Uint8Array) {
        // Protocol 2 has no bytes opcode; CPython writes _codecs.encode(latin1 text, 'latin1').
        global('_codecs', 'encode');
        tuple([Buffer.from(v).toString('latin1'), 'latin1'], path);
        return emit(OP.REDUCE);
      }
      if (Array.isArray(v)) {
        emit(OP.EMPTY_LIST);
        for (let i = 0; i < v.length; i += 1000) {
          emit(OP.MARK);
          v.slice(i, i + 1000).forEach((x, j) => save(x, `${path}[${i + j}]`));
          emit(OP.APPENDS);
        }
        return;
      }
      if (v instanceof TorchTuple) return tuple(v.items, path);
      if (v instanceof Map) {
        if (v instanceof TorchDict && v.ordered) {
          global('collections', 'OrderedDict');
          emit(OP.EMPTY_TUPLE, OP.REDUCE);
        } else emit(OP.EMPTY_DICT);
        return dictItems([...v], path);
      }
      if (Object.getPrototypeOf(v) === Object.prototype) {
        emit(OP.EMPTY_DICT);
        return dictItems(Object.entries(v), path);
      }
      throw new Error(`cannot save ${path}: a ${v.constructor?.name ?? 'object'} is not a tensor or plain data`);
    } finally {
      onPath.delete(v);
    }
  }

  // REDUCE(_rebuild_tensor_v2, (BINPERSID(('storage', <Storage>, key, 'cpu', numel)), 0, size,
  // contiguous stride, False, OrderedDict())), exactly the shape torch.save writes (§2.2).
  function tensor(t: PickledTensor): void {
    global('torch._utils', '_rebuild_tensor_v2');
    emit(OP.MARK, OP.MARK);
    string('storage');
    global('torch', t.storageType);
    string(t.key);
    string('cpu');
    int(t.numel, 'numel');
    emit(OP.TUPLE, OP.BINPERSID);
    int(0, 'offset');
    const stride: number[] = [];
    for (let i = t.shape.length - 1, s = 1; i >= 0; s *= Math.max(1, t.shape[i]), i--) stride[i] = s;
    tuple(t.shape, 'size');
    tuple(stride, 'stride');
    emit(OP.NEWFALSE);
    global('collections', 'OrderedDict');
    emit(OP.EMPTY_TUPLE, OP.REDUCE, OP.TUPLE, OP.REDUCE);
  }

  emit(OP.PROTO, 2);
  save(value, 'value');
  emit(OP.STOP);
  return Buffer.concat(parts);
}
