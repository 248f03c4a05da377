// safetensors reader and writer: sd-formats.md §1 (huggingface/safetensors `tensor.rs`, whose
// `read_metadata`/`validate`/`prepare` this follows check for check).
//
// Reading is hostile-input safe: only the 8-byte length and the header are read, every size is
// checked against the file before anything is allocated, the header JSON goes through a strict
// parser of our own (JSON.parse cannot see duplicate keys or tell `4` from `4.0`), and every
// failure is a SafetensorsError whose message names the file, what is wrong and what to do.
// Tensors are then read lazily through a native memory mapping (zero copy, files over 4 GiB).
//
// Writing follows §1.4 byte for byte (the reference's tensor order, `{"` first, space padding to 8
// bytes, `"format":"pt"`) and is atomic: a temp file in the same folder, renamed when complete.
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as T from '../torch/index.ts';

/** §1.1: the reference refuses headers over 100,000,000 bytes (`MAX_HEADER_SIZE`). */
export const MAX_HEADER_SIZE = 100_000_000;
/** §1.2 (schema): offsets are at most 2^48. */
const MAX_OFFSET = 2 ** 48;
/** The header JSON nests two levels; anything much deeper is an attack on the parser's stack. */
const MAX_DEPTH = 32;

export class SafetensorsError extends Error {
  constructor(
    readonly file: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${file}: ${message}`, options);
    this.name = 'SafetensorsError';
  }
}

// ---- dtypes (§1.3) -----------------------------------------------------------------------------

interface DtypeInfo {
  readonly bits: number;
  /** Position in the reference's `enum Dtype`, whose derived order `prepare` sorts by. */
  readonly rank: number;
  /** The engine dtype, or null where libtorch here has none (read as bytes only). */
  readonly torch: T.DType | null;
}

// In the order of the reference's `enum Dtype` on main ("increasing alignment order"), so the
// writer's sort (§1.2 "writer order") is exactly the Rust one, including ties between F64/I64/U64
// and F16/BF16, where it is not alphabetical.
const DTYPE_TABLE: ReadonlyArray<readonly [string, number, T.DType | null]> = [
  ['BOOL', 8, 'bool'],
  ['F4', 4, null],
  ['F6_E2M3', 6, null],
  ['F6_E3M2', 6, null],
  ['U8', 8, 'uint8'],
  ['I8', 8, 'int8'],
  ['F8_E5M2', 8, null],
  ['F8_E4M3', 8, null],
  ['F8_E8M0', 8, null],
  ['F8_E4M3FNUZ', 8, null],
  ['F8_E5M2FNUZ', 8, null],
  ['I16', 16, 'int16'],
  ['U16', 16, null],
  ['F16', 16, 'float16'],
  ['BF16', 16, 'bfloat16'],
  ['I32', 32, 'int32'],
  ['U32', 32, null],
  ['F32', 32, 'float32'],
  ['C64', 64, null],
  ['F64', 64, 'float64'],
  ['I64', 64, 'int64'],
  ['U64', 64, null],
];
// A Map, not an object: a hostile dtype such as "constructor" must not find Object.prototype.
const DTYPES = new Map<string, DtypeInfo>(DTYPE_TABLE.map(([name, bits, torch], rank) => [name, { bits, rank, torch }]));
const FROM_TORCH = new Map<T.DType, string>(DTYPE_TABLE.filter(([, , t]) => t !== null).map(([name, , t]) => [t as T.DType, name]));

/** Every dtype string this module reads and writes (§1.3). */
export const SAFETENSORS_DTYPES: readonly string[] = DTYPE_TABLE.map(([name]) => name);

/** The safetensors dtype string of an engine dtype ('float16' → 'F16'). */
export function safetensorsDtype(dtype: T.DType): string {
  const s = FROM_TORCH.get(dtype);
  if (s === undefined) throw new Error(`dtype ${dtype} has no safetensors equivalent`);
  return s;
}
/** The engine dtype of a safetensors dtype string, or null when the engine has none ('U16', 'F8_E4M3'). */
export function torchDtype(dtype: string): T.DType | null {
  return DTYPES.get(dtype)?.torch ?? null;
}

// ---- header model --------------------------------------------------------------------------------

export interface SafetensorsEntry {
  readonly key: string;
  /** The safetensors dtype string, e.g. 'F16'. */
  readonly dtype: string;
  readonly shape: readonly number[];
  /** [begin, end) relative to the start of the data section (§1.2), not the file. */
  readonly dataOffsets: readonly [number, number];
  readonly byteLength: number;
}

export interface SafetensorsHeader {
  /** The file as named in messages (the path given, or the name given to parseSafetensors). */
  readonly file: string;
  /** N, the header's byte length, padding included. */
  readonly headerLength: number;
  /** 8 + N: where the data section starts in the file. */
  readonly dataStart: number;
  readonly fileSize: number;
  /** `__metadata__`: string → string only (§1.2); {} when absent. */
  readonly metadata: Readonly<Record<string, string>>;
  /** In file order (by data offset). */
  readonly entries: readonly SafetensorsEntry[];
}

// ---- strict JSON parser ----------------------------------------------------------------------------
// Objects become Maps (file order kept, duplicate keys refused, no prototype keys); integers become
// numbers (bigint past 2^53), so `4`, `4.0` and `4e0` stay distinct as the reference's serde does.

class JsonFraction {
  constructor(readonly text: string) {}
}
type Json = string | number | bigint | boolean | null | JsonFraction | Json[] | Map<string, Json>;

const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;

class JsonParser {
  private i = 0;
  constructor(
    private readonly s: string,
    private readonly fail: (what: string) => never,
  ) {}

  parseDocument(): Json {
    const v = this.value(0);
    this.ws();
    // §1.1: the header may be padded at the end with spaces (serde also skips \t \n \r).
    if (this.i < this.s.length) this.fail(`unexpected ${this.describe()} after the JSON object`);
    return v;
  }

  private describe(): string {
    return this.i >= this.s.length ? 'end of the header' : `character ${JSON.stringify(this.s[this.i])} at offset ${this.i}`;
  }

  private ws(): void {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      this.i++;
    }
  }

  private value(depth: number): Json {
    if (depth > MAX_DEPTH) this.fail(`it is nested more than ${MAX_DEPTH} levels deep`);
    this.ws();
    const c = this.s[this.i];
    if (c === '{') return this.object(depth);
    if (c === '[') return this.array(depth);
    if (c === '"') return this.string();
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return this.number();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (this.s.startsWith(word, this.i)) {
        this.i += word.length;
        return v;
      }
    }
    return this.fail(`unexpected ${this.describe()}`);
  }

  /** The items of an object or array up to `close`, comma-separated. */
  private list(close: '}' | ']', item: () => void): void {
    this.i++;
    this.ws();
    if (this.s[this.i] === close) return void this.i++;
    for (;;) {
      item();
      this.ws();
      const c = this.s[this.i];
      if (c === close) return void this.i++;
      if (c !== ',') this.fail(`expected "," or "${close}" but found ${this.describe()}`);
      this.i++;
    }
  }

  private object(depth: number): Map<string, Json> {
    const m = new Map<string, Json>();
    this.list('}', () => {
      this.ws();
      if (this.s[this.i] !== '"') this.fail(`expected a quoted key but found ${this.describe()}`);
      const k = this.string();
      this.ws();
      if (this.s[this.i++] !== ':') this.fail(`expected ":" after a key at offset ${this.i - 1}`);
      const v = this.value(depth + 1);
      // §1.2: duplicate names are forbidden (JSON.parse would silently keep the last one).
      if (m.has(k)) this.fail(`the key ${quote(k)} appears twice`);
      m.set(k, v);
    });
    return m;
  }

  private array(depth: number): Json[] {
    const a: Json[] = [];
    this.list(']', () => a.push(this.value(depth + 1)));
    return a;
  }

  private string(): string {
    const s = this.s;
    this.i++;
    let out = '';
    let start = this.i;
    for (;;) {
      if (this.i >= s.length) this.fail('a string is not terminated');
      const c = s.charCodeAt(this.i);
      if (c === 0x22) {
        out += s.slice(start, this.i++);
        return out;
      }
      if (c < 0x20) this.fail(`a string contains an unescaped control character at offset ${this.i}`);
      if (c !== 0x5c) {
        this.i++;
        continue;
      }
      out += s.slice(start, this.i);
      const e = s[this.i + 1];
      this.i += 2;
      const simple = e === undefined ? undefined : ESCAPES[e as keyof typeof ESCAPES];
      if (simple !== undefined) out += simple;
      else if (e === 'u') {
        const cu = this.hex4();
        if (cu >= 0xd800 && cu <= 0xdbff && s[this.i] === '\\' && s[this.i + 1] === 'u') {
          this.i += 2;
          const lo = this.hex4();
          if (lo < 0xdc00 || lo > 0xdfff) this.fail(`a string has an unpaired surrogate \\u${cu.toString(16)}`);
          out += String.fromCharCode(cu, lo);
        } else {
          // serde_json refuses unpaired surrogates too: they are not text.
          if (cu >= 0xd800 && cu <= 0xdfff) this.fail(`a string has an unpaired surrogate \\u${cu.toString(16)}`);
          out += String.fromCharCode(cu);
        }
      } else this.fail(`a string has an invalid escape at offset ${this.i - 2}`);
      start = this.i;
    }
  }

  private hex4(): number {
    const h = this.s.slice(this.i, this.i + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) this.fail(`a string has an invalid \\u escape at offset ${this.i - 2}`);
    this.i += 4;
    return parseInt(h, 16);
  }

  private number(): Json {
    NUMBER.lastIndex = this.i;
    const m = NUMBER.exec(this.s);
    if (m === null) return this.fail(`invalid number at offset ${this.i}`);
    this.i += m[0].length;
    if (m[1] !== undefined || m[2] !== undefined) return new JsonFraction(m[0]);
    const v = Number(m[0]);
    return Number.isSafeInteger(v) ? v + 0 /* -0 → 0 */ : BigInt(m[0]);
  }
}

const ESCAPES = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' } as const;

/** A key or value quoted for a message, shortened: hostile names can be megabytes long. */
function quote(s: string): string {
  return JSON.stringify(s.length > 100 ? s.slice(0, 100) + '…' : s);
}

function describeJson(v: Json): string {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return `the boolean ${v}`;
  if (typeof v === 'string') return `the string ${quote(v)}`;
  if (Array.isArray(v)) return 'an array';
  return v instanceof Map ? 'an object' : `the number ${show(v)}`;
}

/** A short rendering of a JSON value for messages. */
function show(v: Json, depth = 0): string {
  if (Array.isArray(v)) return depth > 1 ? '[…]' : `[${v.slice(0, 8).map((x) => show(x, depth + 1)).join(', ')}${v.length > 8 ? ', …' : ''}]`;
  if (v instanceof Map) return '{…}';
  if (v instanceof JsonFraction) return v.text;
  if (typeof v === 'string') return quote(v);
  return String(v);
}

// ---- header validation (§1.1, §1.2) -------------------------------------------------------------------

/** What the first bytes of a file that is not safetensors probably are, for the error message. */
function sniff(head: Buffer): string {
  const text = head.toString('latin1');
  if (head.length >= 4 && head.readUInt32BE(0) === 0x504b0304) return 'it looks like a PyTorch .ckpt/.pt/.bin (zip) checkpoint, not safetensors; load it with the checkpoint reader or convert it';
  if (head[0] === 0x80 && head.length > 1 && head[1] <= 5) return 'it looks like a pickled PyTorch file, not safetensors';
  if (/^\s*<(!doctype|html)/i.test(text)) return 'it is a web page (a failed or login-protected download?), not a model: download the file again';
  if (text.startsWith('version https://git-lfs')) return 'it is a Git LFS pointer, not the model: run `git lfs pull` or download the file itself';
  return 'the file is truncated or not a safetensors file';
}

/** §1.1 step 1: the header length, checked against the file before anything is allocated. */
function checkHeaderLength(file: string, fileSize: number, head: Buffer): number {
  if (fileSize === 0) throw new SafetensorsError(file, 'the file is empty (0 bytes): it is not a safetensors file; save or download it again');
  if (fileSize < 8) {
    throw new SafetensorsError(file, `the file is only ${fileSize} bytes, shorter than the 8-byte header length every safetensors file starts with: it is truncated or not a safetensors file`);
  }
  const n = head.readBigUInt64LE(0);
  if (n > BigInt(fileSize - 8)) {
    throw new SafetensorsError(file, `header length ${n} is larger than the file (${fileSize} bytes): ${sniff(head)}`);
  }
  if (n > BigInt(MAX_HEADER_SIZE)) {
    throw new SafetensorsError(file, `header length ${n} bytes is over the format's limit of ${MAX_HEADER_SIZE} bytes (100 MB): the file is corrupt or not a safetensors file`);
  }
  if (n < 2n) throw new SafetensorsError(file, `header length ${n} is too small to hold a JSON object: the file is corrupt or not a safetensors file`);
  return Number(n);
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** §1.2: parses and validates the header; every offset is checked against the file size. */
function parseHeader(file: string, fileSize: number, headerBytes: Buffer): SafetensorsHeader {
  const n = headerBytes.length;
  const dataStart = 8 + n;
  const dataLength = fileSize - dataStart;
  const bad = (what: string): never => {
    throw new SafetensorsError(file, what);
  };
  let text: string;
  try {
    text = UTF8.decode(headerBytes);
  } catch {
    return bad('the header is not valid UTF-8 text: the file is corrupt or not a safetensors file');
  }
  // §1.1: "The header must start with `{`" (A1111 even insists on `{"`).
  if (!text.startsWith('{')) bad('the header does not start with "{": the file is corrupt or not a safetensors file');
  const root = new JsonParser(text, (what) => bad(`the header is not valid JSON: ${what}; the file is corrupt`)).parseDocument();
  if (!(root instanceof Map)) return bad('the header is not a JSON object: the file is corrupt');

  const metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [key, v] of root) {
    if (key === '__metadata__') {
      if (v === null) continue; // serde reads null as None
      if (!(v instanceof Map)) bad(`"__metadata__" is ${describeJson(v)}, but it must be an object of strings: the file was written by a non-conforming tool`);
      for (const [mk, mv] of v as Map<string, Json>) {
        if (typeof mv !== 'string') {
          bad(`"__metadata__" value ${quote(mk)} is ${describeJson(mv)}, not a string: the format allows only string values (structured data goes in as JSON text); re-save the file with string metadata`);
        }
        // defineProperty, not assignment: a "__proto__" key must stay an ordinary entry.
        Object.defineProperty(metadata, mk, { value: mv, enumerable: true, writable: true, configurable: true });
      }
      continue;
    }
    entries.push(checkEntry(file, key, v));
  }

  // §1.2: sorted by offsets, the entries must tile the data section from 0, without holes or
  // overlaps, and the last one must end exactly at the end of the file.
  const sorted = entries.slice().sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let pos = 0;
  let prev: SafetensorsEntry | null = null;
  for (const e of sorted) {
    const [begin, end] = e.dataOffsets;
    if (end > dataLength) {
      bad(`tensor ${quote(e.key)} ends at byte ${end} of the data but the file holds only ${Math.max(0, dataLength)} data bytes: the file is truncated (an interrupted download or copy?); get it again`);
    }
    if (begin < pos) {
      bad(`tensors ${quote(prev!.key)} [${prev!.dataOffsets.join(', ')}] and ${quote(e.key)} [${begin}, ${end}] overlap in the data section: the header is corrupt`);
    }
    if (begin > pos) {
      bad(prev === null
        ? `the first tensor, ${quote(e.key)}, starts at data byte ${begin} instead of 0, leaving a hole: the header is corrupt`
        : `there is a hole of ${begin - pos} bytes between tensors ${quote(prev.key)} (ends at ${pos}) and ${quote(e.key)} (starts at ${begin}): the header is corrupt`);
    }
    pos = end;
    prev = e;
  }
  if (pos < dataLength) {
    bad(`the file has ${dataLength - pos} bytes after the last tensor (the header describes ${pos} data bytes, the file has ${dataLength}): it was altered or badly written; save it again`);
  }
  return { file, headerLength: n, dataStart, fileSize, metadata: Object.freeze(metadata), entries: Object.freeze(sorted) };
}

function checkEntry(file: string, key: string, v: Json): SafetensorsEntry {
  const bad = (what: string): never => {
    throw new SafetensorsError(file, `tensor ${quote(key)}: ${what}`);
  };
  if (!(v instanceof Map)) return bad(`its entry is ${describeJson(v)}, not an object with "dtype", "shape" and "data_offsets": the header is corrupt`);
  const dtype = v.get('dtype');
  if (typeof dtype !== 'string') return bad(`"dtype" is ${dtype === undefined ? 'missing' : describeJson(dtype)}: the header is corrupt`);
  const info = DTYPES.get(dtype);
  if (info === undefined) {
    return bad(`unknown dtype ${quote(dtype)} (known: ${SAFETENSORS_DTYPES.join(', ')}): the file may come from a newer tool; convert it to F16 or F32 first`);
  }
  const shapeJ = v.get('shape');
  if (!Array.isArray(shapeJ)) return bad(`"shape" is ${shapeJ === undefined ? 'missing' : describeJson(shapeJ)}, not an array of non-negative integers: the header is corrupt`);
  for (const d of shapeJ) {
    if (typeof d !== 'number' || d < 0) bad(`"shape" ${show(shapeJ)} holds ${describeJson(d)}, but dimensions must be non-negative integers below 2^53: the header is corrupt`);
  }
  const shape = Object.freeze(shapeJ.slice() as number[]);
  const offs = v.get('data_offsets');
  if (!Array.isArray(offs) || offs.length !== 2 || offs.some((o) => typeof o !== 'number' || o < 0 || o > MAX_OFFSET)) {
    return bad(`"data_offsets" must be [begin, end] with integers from 0 to 2^48, not ${offs === undefined ? 'missing' : show(offs)}: the header is corrupt`);
  }
  const [begin, end] = offs as [number, number];
  if (end < begin) bad(`"data_offsets" [${begin}, ${end}] end before they begin: the header is corrupt`);
  // §1.2: end - begin == prod(shape) * bits / 8, computed exactly (the reference uses checked_mul).
  let numel = 1n;
  for (const d of shape) {
    numel *= BigInt(d);
    // The reference folds with checked_mul and fails on the first product past usize.
    if (numel >= 2n ** 64n) bad(`the element count of shape [${shape.join(', ')}] overflows 64 bits: the header is corrupt`);
  }
  const bits = numel * BigInt(info.bits);
  if (bits % 8n !== 0n) bad(`${numel} ${dtype} values (${bits} bits) do not fill whole bytes: the header is corrupt`);
  const bytes = bits / 8n;
  if (bytes !== BigInt(end - begin)) {
    bad(`${dtype} [${shape.join(', ')}] needs ${bytes} bytes but "data_offsets" [${begin}, ${end}] span ${end - begin}: the header is corrupt`);
  }
  return Object.freeze({ key, dtype, shape, dataOffsets: Object.freeze([begin, end] as [number, number]), byteLength: end - begin });
}

// ---- reading -----------------------------------------------------------------------------------------

/** Where a reader's bytes come from: a memory mapping or a Buffer. */
interface ByteSource {
  read(offset: number, length: number): Buffer;
  tensor(offset: number, dtype: T.DType, shape: readonly number[]): T.Tensor;
  close(): void;
}

// parseSafetensors' source. The reader checks for close() itself, so close() has nothing to do.
class BufferSource implements ByteSource {
  constructor(private readonly buf: Buffer) {}
  read(offset: number, n: number): Buffer { return Buffer.from(this.buf.subarray(offset, offset + n)); }
  tensor(offset: number, dtype: T.DType, shape: readonly number[]): T.Tensor { return T.fromBuffer(this.buf.subarray(offset, offset + length(shape, dtype)), dtype, shape); }
  close(): void {}
}
function length(shape: readonly number[], dtype: T.DType): number {
  return shape.reduce((a, b) => a * b, 1) * T.DTYPE_BYTES[dtype];
}

/** The header of a safetensors file: metadata and tensor entries, validated with plain fs reads (no mapping, no data read). */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new SafetensorsError(path, (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file; check the path and name' : `cannot read it: ${(e as Error).message}`, { cause: e });
  }
  // A FIFO or device would block or never end: refuse before opening it.
  if (!st.isFile()) throw new SafetensorsError(path, st.isDirectory() ? 'is a folder, not a safetensors file' : 'is not a regular file');
  let fd = -1;
  try {
    fd = openSync(path, 'r');
    const size = fstatSync(fd).size;
    const head = Buffer.alloc(Math.min(64, size)); // 8 bytes, and a few more for sniff()
    readFully(fd, head, 0);
    const n = checkHeaderLength(path, size, head);
    const header = Buffer.alloc(n);
    readFully(fd, header, 8);
    return parseHeader(path, size, header);
  } catch (e) {
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(path, `cannot read it: ${(e as Error).message}`, { cause: e });
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

function readFully(fd: number, buf: Buffer, position: number): void {
  let done = 0;
  while (done < buf.length) {
    const got = readSync(fd, buf, done, buf.length - done, position + done);
    if (got === 0) throw new Error('the file became shorter while it was read');
    done += got;
  }
}

/**
 * A validated safetensors file with lazy per-tensor access. Implements nn's TensorSource, so a
 * model can be built straight from it: `VarBuilder.from(SafetensorsFile.open(p))`.
 */
export class SafetensorsFile implements T.nn.TensorSource {
  private readonly byKey: Map<string, SafetensorsEntry>;
  private src: ByteSource | null;

  private constructor(
    readonly header: SafetensorsHeader,
    src: ByteSource,
  ) {
    this.src = src;
    this.byKey = new Map(header.entries.map((e) => [e.key, e]));
  }

  /** Reads the 8-byte length and the header only, then memory-maps the file for the tensors. */
  static open(path: string): SafetensorsFile {
    const header = readSafetensorsHeader(path);
    let map: T.MappedFile;
    try {
      map = T.mapFile(path);
    } catch (e) {
      throw new SafetensorsError(path, `cannot memory-map it: ${(e as Error).message}`, { cause: e });
    }
    if (map.size !== header.fileSize) {
      map.close();
      throw new SafetensorsError(path, `the file changed size while it was opened (${header.fileSize} → ${map.size} bytes): another program is writing it; wait and retry`);
    }
    return new SafetensorsFile(header, map);
  }

  /** @internal parseSafetensors' constructor. */
  static fromBuffer(buf: Buffer, name: string): SafetensorsFile {
    const n = checkHeaderLength(name, buf.length, buf.subarray(0, 64));
    const header = parseHeader(name, buf.length, buf.subarray(8, 8 + n));
    return new SafetensorsFile(header, new BufferSource(buf));
  }

  get file(): string { return this.header.file; }
  get metadata(): Readonly<Record<string, string>> { return this.header.metadata; }
  /** Tensor names in file order. */
  keys(): string[] {
    return this.header.entries.map((e) => e.key);
  }
  entries(): readonly SafetensorsEntry[] {
    return this.header.entries;
  }
  has(key: string): boolean { return this.byKey.has(key); }
  entry(key: string): SafetensorsEntry {
    const e = this.byKey.get(key);
    if (e === undefined) {
      const some = this.header.entries.slice(0, 5).map((x) => quote(x.key));
      throw new SafetensorsError(this.file, `has no tensor ${quote(key)} (it holds ${this.byKey.size} tensors${some.length ? ', e.g. ' + some.join(', ') : ''})`);
    }
    return e;
  }
  shape(key: string): readonly number[] { return this.entry(key).shape; }
  /** The safetensors dtype string. */
  dtype(key: string): string { return this.entry(key).dtype; }

  private source(key: string): ByteSource {
    if (this.src === null) throw new SafetensorsError(this.file, `was closed; open it again to read ${quote(key)}`);
    return this.src;
  }

  /**
   * The tensor (caller owns it). From a file it is a zero-copy CPU tensor over the mapping, which
   * is copy-on-write: in-place ops on it never change the file. It stays valid after close().
   */
  get(key: string): T.Tensor {
    const e = this.entry(key);
    const dtype = DTYPES.get(e.dtype)!.torch;
    if (dtype === null) {
      throw new SafetensorsError(this.file, `tensor ${quote(key)} has dtype ${e.dtype}, which the tensor engine cannot hold: read its raw bytes with getBytes() and convert them`);
    }
    const src = this.source(key);
    try {
      return src.tensor(this.header.dataStart + e.dataOffsets[0], dtype, e.shape);
    } catch (err) {
      throw new SafetensorsError(this.file, `cannot load tensor ${quote(key)} (${e.dtype} [${e.shape.join(', ')}]): ${(err as Error).message}`, { cause: err });
    }
  }

  /** The tensor's raw little-endian bytes (a copy), for every dtype of §1.3. */
  getBytes(key: string): Buffer {
    const e = this.entry(key);
    return this.source(key).read(this.header.dataStart + e.dataOffsets[0], e.byteLength);
  }

  /** Total number of elements over all tensors. */
  parameterCount(): number {
    let n = 0;
    for (const e of this.header.entries) n += e.shape.reduce((a, b) => a * b, 1);
    return n;
  }

  /** Releases the mapping; tensors already returned by get() stay valid. */
  close(): void {
    this.src?.close();
    this.src = null;
  }
  [Symbol.dispose](): void { this.close(); }
}

/** A safetensors file held in memory (get() copies out of the Buffer). */
export function parseSafetensors(buf: Buffer, name = '<in-memory safetensors>'): SafetensorsFile {
  return SafetensorsFile.fromBuffer(buf, name);
}

// ---- writing (§1.4) --------------------------------------------------------------------------------------

/** A tensor given as raw bytes, for dtypes the engine lacks (converters). */
export interface RawTensor {
  key: string;
  /** A safetensors dtype string (§1.3). */
  dtype: string;
  shape: readonly number[];
  /** Little-endian, row-major, exactly prod(shape) * bits / 8 bytes. */
  data: Buffer;
}

interface WriteItem {
  key: string;
  dtype: string;
  shape: readonly number[];
  byteLength: number;
  bytes(): Buffer;
}

/**
 * `metadata` undefined → `{"format":"pt"}`; an object → written with `format: pt` appended when
 * it has no `format` (§1.4 rule 2); null → no `__metadata__` at all (as the reference writes for
 * None; only for byte-exact copies of such files).
 */
export type SafetensorsMetadata = Readonly<Record<string, string>> | null | undefined;

export type TensorEntries = Iterable<readonly [string, T.Tensor]> | ReadonlyMap<string, T.Tensor>;

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function checkName(file: string, what: string, s: string): void {
  // JSON.stringify would write "\ud800", which serde_json (and so every other reader) refuses.
  if (LONE_SURROGATE.test(s)) throw new SafetensorsError(file, `${what} ${quote(s)} contains an unpaired UTF-16 surrogate and cannot be written as UTF-8`);
}

function tensorItems(file: string, tensors: TensorEntries): WriteItem[] {
  const items: WriteItem[] = [];
  for (const [key, t] of tensors) {
    if (!(t instanceof T.Tensor)) throw new SafetensorsError(file, `the value for ${quote(key)} is not a Tensor`);
    if (t.disposed) throw new SafetensorsError(file, `tensor ${quote(key)} was disposed before it was saved; save it before disposing it`);
    const dtype = t.dtype;
    const shape = t.shape;
    items.push({ key, dtype: safetensorsDtype(dtype), shape, byteLength: length(shape, dtype), bytes: () => t.toBuffer() });
  }
  return items;
}

function rawItems(file: string, entries: Iterable<RawTensor>): WriteItem[] {
  const items: WriteItem[] = [];
  for (const r of entries) {
    const info = DTYPES.get(r.dtype);
    if (info === undefined) throw new SafetensorsError(file, `tensor ${quote(r.key)}: unknown dtype ${quote(r.dtype)} (known: ${SAFETENSORS_DTYPES.join(', ')})`);
    if (!Array.isArray(r.shape) || !r.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(file, `tensor ${quote(r.key)}: shape [${String(r.shape)}] is not a list of non-negative integers`);
    }
    const bits = r.shape.reduce((a, b) => a * b, 1) * info.bits;
    if (bits % 8 !== 0 || r.data.length !== bits / 8) {
      throw new SafetensorsError(file, `tensor ${quote(r.key)}: ${r.dtype} [${r.shape.join(', ')}] needs ${bits / 8} bytes but ${r.data.length} were given`);
    }
    items.push({ key: r.key, dtype: r.dtype, shape: r.shape.slice(), byteLength: r.data.length, bytes: () => r.data });
  }
  return items;
}

/** UTF-8 byte order, as Rust's `String::cmp` (equal to code-point order, unlike JS `<`). */
function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * The reference's `prepare` (§1.2 writer order, §1.4): sort by dtype (the enum's order, largest
 * first: so every tensor starts aligned to its element size), then by name; assign contiguous
 * offsets; serialise compactly with `__metadata__` first; pad with spaces to a multiple of 8.
 * Returns the 8-byte length + header, and the items in data order.
 */
function prepare(file: string, items: WriteItem[], metadata: SafetensorsMetadata): { head: Buffer; items: WriteItem[]; dataLength: number } {
  const seen = new Set<string>();
  for (const it of items) {
    if (it.key === '__metadata__') throw new SafetensorsError(file, 'a tensor cannot be named "__metadata__": that key holds the file\'s metadata');
    if (seen.has(it.key)) throw new SafetensorsError(file, `the tensor name ${quote(it.key)} is given twice; names must be unique`);
    seen.add(it.key);
    checkName(file, 'the tensor name', it.key);
  }
  const sorted = items.slice().sort((a, b) => DTYPES.get(b.dtype)!.rank - DTYPES.get(a.dtype)!.rank || compareUtf8(a.key, b.key));

  const parts: string[] = [];
  if (metadata !== null) {
    const meta: [string, string][] = [];
    for (const [k, v] of Object.entries(metadata ?? {})) {
      // §1.4 rule 3: strings only; converting silently would hide "4" vs 4.0 vs "True" decisions.
      if (typeof v !== 'string') {
        throw new SafetensorsError(file, `metadata ${quote(k)} is a ${typeof v}, but safetensors metadata values must be strings: pass String(value) (Python conventions: "True", "False", "None")`);
      }
      checkName(file, 'the metadata key', k);
      checkName(file, `the value of metadata ${quote(k)}:`, v);
      meta.push([k, v]);
    }
    if (!meta.some(([k]) => k === 'format')) meta.push(['format', 'pt']); // §1.4 rule 2
    parts.push(`"__metadata__":{${meta.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);
  }
  let offset = 0;
  for (const it of sorted) {
    parts.push(`${JSON.stringify(it.key)}:{"dtype":"${it.dtype}","shape":[${it.shape.join(',')}],"data_offsets":[${offset},${offset + it.byteLength}]}`);
    offset += it.byteLength;
  }
  // §1.4 rule 1: `{"` first, no whitespace; §1.1: pad with spaces so the data starts 8-aligned.
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const n = Math.ceil(json.length / 8) * 8;
  if (n > MAX_HEADER_SIZE) throw new SafetensorsError(file, `the header would be ${n} bytes, over the format's ${MAX_HEADER_SIZE}-byte limit: too many or too long names/metadata`);
  const head = Buffer.alloc(8 + n, 0x20);
  head.writeBigUInt64LE(BigInt(n), 0);
  json.copy(head, 8);
  return { head, items: sorted, dataLength: offset };
}

function itemBytes(file: string, it: WriteItem): Buffer {
  const b = it.bytes(); // for a device tensor: copies to the host, waits for the device
  if (b.length !== it.byteLength) throw new SafetensorsError(file, `tensor ${quote(it.key)} produced ${b.length} bytes instead of ${it.byteLength}`);
  return b;
}

function serializeItems(file: string, items: WriteItem[], metadata: SafetensorsMetadata): Buffer {
  const p = prepare(file, items, metadata);
  const out = Buffer.allocUnsafe(p.head.length + p.dataLength);
  p.head.copy(out, 0);
  let pos = p.head.length;
  for (const it of p.items) pos += itemBytes(file, it).copy(out, pos);
  return out;
}

function writeAll(fd: number, buf: Buffer): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done);
}

/**
 * Atomic save: everything goes to a temp file in the target's folder (same filesystem, so the
 * rename is atomic), which is fsynced and renamed over the target only when complete. On any
 * error (ENOSPC included) the temp file is removed and an existing target is left untouched.
 * Tensors are written one at a time: peak extra memory is one tensor's bytes.
 */
function saveItems(path: string, items: WriteItem[], metadata: SafetensorsMetadata): void {
  const p = prepare(path, items, metadata);
  const dir = dirname(resolve(path));
  // Hidden, unique, and short enough for NAME_MAX even when the target's name is long.
  const tmp = join(dir, `.${basename(path).slice(0, 200)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let fd = -1;
  try {
    fd = openSync(tmp, 'wx', 0o644);
    writeAll(fd, p.head);
    for (const it of p.items) writeAll(fd, itemBytes(path, it));
    fsyncSync(fd); // the data must be on disk before the rename makes it the file
    closeSync(fd);
    fd = -1;
    renameSync(tmp, path);
  } catch (e) {
    if (fd >= 0) ignoreErrors(() => closeSync(fd));
    ignoreErrors(() => unlinkSync(tmp)); // never created, or already gone: fine
    throw saveError(path, dir, e);
  }
}

/** For clean-up after a failure: the original error is the one to report. */
function ignoreErrors(fn: () => void): void {
  try {
    fn();
  } catch {
    /* see above */
  }
}

function saveError(path: string, dir: string, e: unknown): Error {
  if (e instanceof SafetensorsError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  const keep = ' (any existing file was left as it was)';
  let what: string;
  if (code === 'ENOENT') what = `cannot save: the folder ${dir} does not exist; create it first`;
  else if (code === 'ENOSPC' || code === 'EDQUOT') what = `cannot save: the disk is full; free some space and save again${keep}`;
  else if (code === 'EFBIG') what = `cannot save: the file is larger than this filesystem or process allows${keep}`;
  else if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') what = `cannot save: no permission to write in ${dir}${keep}`;
  else if (code === 'EISDIR') what = 'cannot save: a folder already has that name';
  else what = `cannot save: ${(e as Error)?.message ?? String(e)}${keep}`;
  return new SafetensorsError(path, what, { cause: e });
}

/** Writes tensors to `path` as safetensors (§1.4), atomically. Tensors may be non-contiguous or on any device. */
export function saveSafetensors(path: string, tensors: TensorEntries, metadata?: SafetensorsMetadata): void {
  saveItems(path, tensorItems(path, tensors), metadata);
}

/** saveSafetensors for raw bytes, for dtypes the engine lacks (F8_*, U16, U32, U64, …). */
export function saveSafetensorsRaw(path: string, entries: Iterable<RawTensor>, metadata?: SafetensorsMetadata): void {
  saveItems(path, rawItems(path, entries), metadata);
}

/** The bytes of a safetensors file, for small in-memory use (one Buffer holds everything). */
export function serializeSafetensors(tensors: TensorEntries, metadata?: SafetensorsMetadata): Buffer {
  return serializeItems('<in-memory safetensors>', tensorItems('<in-memory safetensors>', tensors), metadata);
}

/** serializeSafetensors for raw bytes. */
export function serializeSafetensorsRaw(entries: Iterable<RawTensor>, metadata?: SafetensorsMetadata): Buffer {
  return serializeItems('<in-memory safetensors>', rawItems('<in-memory safetensors>', entries), metadata);
}
