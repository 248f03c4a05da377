// torch.load / torch.save for .pt, .ckpt and .bin files (sd-formats.md §2), without running the
// pickle's code: zip.ts checks the archive, pickle.ts runs the allow-listed pickle VM, and this
// file maps storages to file ranges so tensors are made lazily over a memory map. A 4 GB .ckpt
// is never read whole: only data.pkl is read, and each tensor is a zero-copy view when loaded.
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, unlinkSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as T from '../torch/index.ts';
import { DTYPE_BYTES, type DType } from '../torch/dtype.ts';
import { ZipReader, ZipWriter, readEntryBytes, type ZipEntry } from './zip.ts';
import {
  PickleFormatError,
  PyFloat,
  TorchDict,
  TorchStorage,
  TorchTensorRef,
  TorchTuple,
  pickle,
  typeName,
  unpickle,
  type PickledTensor,
  type TorchDType,
  type TorchValue,
} from './pickle.ts';

export {
  PickleFormatError,
  PyFloat,
  TorchDict,
  TorchGlobal,
  TorchObject,
  TorchSet,
  TorchStorage,
  TorchTensorRef,
  TorchTuple,
  UnsafePickleError,
  type TorchDType,
  type TorchValue,
} from './pickle.ts';
export { ZipFormatError } from './zip.ts';

/** A file that is not (or not a supported kind of) PyTorch checkpoint; the message says why. */
export class TorchFileError extends Error {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = 'TorchFileError';
  }
}

/** data.pkl of a real checkpoint is a few MB; more is not a checkpoint we should trust. */
const MAX_PICKLE_BYTES = 1 << 30;
/** The magic number opening a legacy file (§2.5). */
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;

/** Where a storage's bytes are: a file range, or (deflated zip entries) inflated bytes. */
interface StorageSource {
  offset: number;
  bytes: number;
  entry?: ZipEntry;
}

/** The tensors of one open file: the mapping is made on the first load() and shared. */
class FileTensors {
  private map: T.MappedFile | null = null;
  readonly sources = new Map<string, StorageSource>();
  private readonly inflated = new Map<string, Buffer>();
  constructor(readonly path: string) {}

  private mapped(): T.MappedFile {
    if (this.map === null) this.map = T.mapFile(this.path);
    return this.map;
  }

  load(ref: TorchTensorRef): T.Tensor {
    const dtype = ref.dtype;
    if (dtype === 'complex64' || dtype === 'complex128') {
      throw new TorchFileError(this.path, `tensor in storage ${ref.storageKey} is ${dtype}, which sdtune does not support`);
    }
    const src = this.sources.get(ref.storageKey);
    if (src === undefined) throw new TorchFileError(this.path, `storage ${ref.storageKey} has no data in the file`);
    const el = DTYPE_BYTES[dtype];
    if (ref.storage.numel * el > src.bytes) {
      throw new TorchFileError(this.path, `storage ${ref.storageKey} holds ${src.bytes} bytes, less than its ${ref.storage.numel} ${dtype} elements; the file is truncated or corrupt`);
    }
    const shape = [...ref.shape];
    if (ref.numel === 0) return T.zeros(shape, { dtype });
    // Only the span the view touches is mapped (pickle.ts checked it lies inside the storage).
    let last = 0;
    shape.forEach((s, i) => (last += (s - 1) * ref.stride[i]));
    const span = last + 1;
    const start = ref.storageOffset * el;
    let base: T.Tensor;
    if (src.entry !== undefined) {
      let data = this.inflated.get(ref.storageKey);
      if (data === undefined) {
        const m = this.mapped();
        data = readEntryBytes(src.entry, (o, n) => m.read(o, n), this.path);
        this.inflated.set(ref.storageKey, data);
      }
      base = T.fromBuffer(data.subarray(start, start + span * el), dtype, [span]);
    } else {
      base = this.mapped().tensor(src.offset + start, dtype, [span]);
    }
    try {
      if (isContiguous(shape, ref.stride)) return base.reshape(...shape);
      return T.callOp('aten::as_strided', '', base, shape, [...ref.stride], 0) as T.Tensor;
    } finally {
      base.dispose();
    }
  }

  close(): void {
    this.map?.close();
    this.map = null;
    this.inflated.clear();
  }
}

function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== s) return false;
    s *= shape[i];
  }
  return true;
}

function elementSize(dtype: TorchDType): number {
  return dtype === 'complex64' ? 8 : dtype === 'complex128' ? 16 : DTYPE_BYTES[dtype];
}

function readHead(path: string, n: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(n);
    const got = readSync(fd, b, 0, n, 0);
    return b.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/**
 * torch.load without code: the object tree with tensors as lazy TorchTensorRef. Refuses legacy
 * files' unsupported variants, TorchScript archives and any pickle naming a global off the list.
 */
export function loadTorchFile(path: string): TorchValue {
  const head = readHead(path, 512);
  if (head.length >= 4 && head.readUInt32LE(0) === 0x04034b50) return loadZip(path);
  if (head.length >= 2 && head[0] === 0x80 && head[1] === 0x02) return loadLegacy(path);
  if (head.length >= 262 && head.toString('latin1', 257, 262) === 'ustar') {
    throw new TorchFileError(path, 'this is a tar-format PyTorch file (torch < 0.4), which sdtune cannot read; re-save it with torch.save in a recent PyTorch or convert it to .safetensors');
  }
  if (head.toString('latin1', 0, 8) === 'PYTORCH1') {
    throw new TorchFileError(path, 'this is a PyTorch preview-format file, which sdtune cannot read; re-save it with torch.save in a recent PyTorch or convert it to .safetensors');
  }
  if (head.length > 9 && head.readBigUInt64LE(0) < 100_000_000n && head[8] === 0x7b) {
    throw new TorchFileError(path, 'this is a .safetensors file, not a PyTorch pickle; load it with the safetensors reader');
  }
  throw new TorchFileError(path, 'not a PyTorch checkpoint (it is neither a torch.save zip archive nor a legacy pickle)');
}

function loadZip(path: string): TorchValue {
  const zip = new ZipReader(path);
  try {
    const first = zip.entries[0];
    const slash = first === undefined ? -1 : first.name.indexOf('/');
    if (first === undefined || slash <= 0) throw new TorchFileError(path, 'this zip archive is not a PyTorch checkpoint (no top-level folder)');
    // §2.1: the prefix is the first entry's folder (torch uses the saved file's stem).
    const prefix = first.name.slice(0, slash);
    const pkl = zip.get(`${prefix}/data.pkl`);
    if (pkl === undefined) {
      if (zip.get(`${prefix}/constants.pkl`) !== undefined || zip.entries.some((e) => e.name.startsWith(`${prefix}/code/`))) {
        throw new TorchFileError(path, 'this is a TorchScript archive (torch.jit.save); it holds code, not just weights, and cannot be loaded. Save the model\'s state_dict() with torch.save, or use .safetensors');
      }
      throw new TorchFileError(path, `this zip archive has no ${prefix}/data.pkl, so it is not a PyTorch checkpoint`);
    }
    const order = zip.get(`${prefix}/byteorder`);
    if (order !== undefined) {
      const v = zip.read(order).toString('latin1').trim();
      if (v === 'big') throw new TorchFileError(path, 'was saved on a big-endian machine; only little-endian files are supported (re-save it on a little-endian machine or convert it to .safetensors)');
      if (v !== 'little') throw new TorchFileError(path, `has an unknown byte order record ${JSON.stringify(v.slice(0, 20))}`);
    }
    if (pkl.size > MAX_PICKLE_BYTES) throw new TorchFileError(path, `its data.pkl is ${pkl.size} bytes, far more than any checkpoint's; refusing it`);
    const data = zip.read(pkl);
    const tensors = new FileTensors(path);
    const value = unpickle(data, {
      file: path,
      storage: (s) => {
        const e = zip.get(`${prefix}/data/${s.key}`);
        if (e === undefined) throw new TorchFileError(path, `the pickle refers to storage ${JSON.stringify(s.key.slice(0, 40))}, which is missing from the archive`);
        if (s.numel * elementSize(s.dtype) > e.size) {
          throw new TorchFileError(path, `storage ${s.key} should hold ${s.numel} ${s.dtype} elements but its entry is only ${e.size} bytes; the file is truncated or corrupt`);
        }
        tensors.sources.set(s.key, { offset: e.dataOffset, bytes: e.size, entry: e.method === 0 ? undefined : e });
        return s;
      },
      loadTensor: (ref) => tensors.load(ref),
    }).value;
    return value;
  } finally {
    zip.close();
  }
}

/**
 * The legacy format (§2.5): five pickles back to back, then each storage as an i64 element count
 * and its bytes, in the order of the pickled key list. Read with the same allow-list.
 */
function loadLegacy(path: string): TorchValue {
  const fd = openSync(path, 'r');
  let value: TorchValue = null;
  const tensors = new FileTensors(path);
  try {
    let size = 0;
    let buf = Buffer.alloc(0);
    // The pickles sit at the front; read more only if they run past what we have.
    const readUpTo = (n: number): void => {
      buf = Buffer.alloc(n);
      size = readSync(fd, buf, 0, n, 0);
      buf = buf.subarray(0, size);
    };
    let window = 1 << 20;
    readUpTo(window);
    const storages = new Map<string, TorchStorage>();
    for (;;) {
      try {
        let pos = 0;
        const next = (legacy = false): TorchValue => {
          const r = unpickle(buf, {
            file: path,
            legacy,
            storage: (s) => {
              storages.set(s.key, s);
              return s;
            },
            loadTensor: (ref) => tensors.load(ref),
          }, pos);
          pos = r.end;
          return r.value;
        };
        const magic = next();
        if (magic !== LEGACY_MAGIC) throw new TorchFileError(path, 'not a PyTorch checkpoint (it is a pickle without PyTorch\'s magic number)');
        const proto = next();
        if (proto !== 1001) throw new TorchFileError(path, `legacy PyTorch file with unsupported protocol ${String(proto)}`);
        const info = next();
        if (!(info instanceof TorchDict) || info.get('little_endian') !== true) {
          throw new TorchFileError(path, 'is a legacy file saved on a big-endian machine; only little-endian files are supported');
        }
        value = next(true);
        const keys = next();
        if (!Array.isArray(keys) || keys.some((k) => typeof k !== 'string')) throw new TorchFileError(path, 'legacy storage key list is damaged');
        // Storage records follow in key order.
        let off = pos;
        const fileSize = fstatSync(fd).size;
        for (const k of keys as string[]) {
          const s = storages.get(k);
          if (s === undefined) throw new TorchFileError(path, `legacy storage ${k.slice(0, 40)} is listed but never used; cannot tell its type`);
          const h = Buffer.alloc(8);
          if (readSync(fd, h, 0, 8, off) !== 8) throw new TorchFileError(path, 'legacy storage data is truncated');
          const n = h.readBigInt64LE(0);
          if (n !== BigInt(s.numel)) throw new TorchFileError(path, `legacy storage ${k} has ${n} elements, not the ${s.numel} its tensors declare`);
          const bytes = s.numel * elementSize(s.dtype);
          if (off + 8 + bytes > fileSize) throw new TorchFileError(path, 'legacy storage data is truncated');
          tensors.sources.set(k, { offset: off + 8, bytes });
          off += 8 + bytes;
        }
        return value;
      } catch (e) {
        if (e instanceof PickleFormatError && e.truncated && size === window) {
          window *= 4;
          if (window > MAX_PICKLE_BYTES * 4) throw e;
          readUpTo(window);
          storages.clear();
          continue;
        }
        throw e;
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** The tensors of a state dict: `state_dict` when present (Lightning .ckpt), else the top dict. */
export function loadTorchStateDict(path: string): Map<string, T.Tensor> {
  const root = loadTorchFile(path);
  if (!(root instanceof TorchDict)) throw new TorchFileError(path, `holds a ${typeName(root)}, not a state dict`);
  const inner = root.get('state_dict');
  const sd = inner instanceof TorchDict ? inner : root;
  const out = new Map<string, T.Tensor>();
  try {
    for (const [k, v] of sd) {
      // Non-tensor entries (a Lightning dict's epoch, …) are not weights.
      if (v instanceof TorchTensorRef) out.set(String(k), v.load());
    }
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  }
  return out;
}

// ---- saving (§2.4) ----------------------------------------------------------------------------

const STORAGE_NAMES: Record<DType, string> = {
  float32: 'FloatStorage', float16: 'HalfStorage', bfloat16: 'BFloat16Storage', float64: 'DoubleStorage',
  int64: 'LongStorage', int32: 'IntStorage', int16: 'ShortStorage', int8: 'CharStorage', uint8: 'ByteStorage', bool: 'BoolStorage',
};
/** A1111's safe.py allows only these storage types (§2.2). */
const A1111_STORAGES = new Set(['FloatStorage', 'HalfStorage', 'IntStorage', 'LongStorage', 'DoubleStorage', 'ByteStorage', 'BFloat16Storage']);

/**
 * What saveTorchFile accepts: plain data, Tensors, and trees from loadTorchFile (lazily loaded
 * tensors included). Sets, objects and globals in a loaded tree are refused when saving.
 */
export type SaveValue =
  | TorchValue
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyFloat
  | T.Tensor
  | TorchTensorRef
  | readonly SaveValue[]
  | TorchTuple<SaveValue>
  | ReadonlyMap<TorchValue, SaveValue>
  | { readonly [key: string]: SaveValue };

export interface SaveOptions {
  /** Refuse dtypes A1111's safe loader rejects (bool, int16, int8). Default true. */
  a1111Compatible?: boolean;
}

/**
 * torch.save(value, path) in the A1111-safe layout (§2.1, §2.4): `<stem>/data.pkl`, then
 * `<stem>/data/0..n-1`, then `<stem>/version`; stored and 64-byte aligned. Each distinct Tensor
 * object becomes one storage (written contiguous). Written to a temporary file in the same folder
 * and renamed over `path`, so a crash never leaves a half-written checkpoint.
 */
export function saveTorchFile(path: string, value: SaveValue, opts: SaveOptions = {}): void {
  const a1111 = opts.a1111Compatible ?? true;
  const storages: (T.Tensor | TorchTensorRef)[] = [];
  const keys = new Map<object, PickledTensor>();
  const data = pickle(value, {
    tensor(v) {
      if (!(v instanceof T.Tensor) && !(v instanceof TorchTensorRef)) return null;
      const known = keys.get(v);
      if (known !== undefined) return known;
      const dtype = v.dtype;
      if (dtype === 'complex64' || dtype === 'complex128') throw new Error(`cannot save ${path}: complex tensors are not supported`);
      const storageType = STORAGE_NAMES[dtype];
      if (a1111 && !A1111_STORAGES.has(storageType)) {
        throw new Error(`cannot save ${path}: a ${dtype} tensor would make the file unloadable by A1111 (its safe loader refuses ${storageType}); convert it, or pass a1111Compatible: false`);
      }
      const shape = [...v.shape];
      const p: PickledTensor = { key: String(storages.length), storageType, numel: shape.reduce((a, b) => a * b, 1), shape };
      keys.set(v, p);
      storages.push(v);
      return p;
    },
  });

  const stem = basename(path, extname(path));
  // The archive folder is the file's stem, as torch.save writes; nothing that could read as a path.
  const prefix = stem.replace(/[\\/\u0000-\u001f]/g, '_').replace(/^\.+$/, '') || 'archive';
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx');
  let closed = false;
  try {
    const zip = new ZipWriter(fd);
    zip.add(`${prefix}/data.pkl`, data);
    storages.forEach((s, i) => {
      const t = s instanceof TorchTensorRef ? s.load() : s;
      try {
        const bytes = t.toBuffer(); // copies to the host; waits for the device
        const want = keys.get(s)!.numel * DTYPE_BYTES[t.dtype];
        if (bytes.length !== want) throw new Error(`cannot save ${path}: tensor ${i} produced ${bytes.length} bytes, expected ${want}`);
        zip.add(`${prefix}/data/${i}`, bytes);
      } finally {
        if (s instanceof TorchTensorRef) t.dispose();
      }
    });
    zip.add(`${prefix}/version`, Buffer.from('3\n'));
    zip.finish();
    fsyncSync(fd);
    closeSync(fd);
    closed = true;
    renameSync(tmp, path);
  } catch (e) {
    if (!closed) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
    throw e;
  }
}
