// A minimal zip reader and writer for PyTorch archives (sd-formats.md §2.1).
//
// Reading trusts nothing: a checkpoint is a file someone downloaded. Sizes and offsets come from
// the central directory (torch's writer leaves them 0 in local headers, flag bit 3), and every
// entry is checked to lie inside the file, before the central directory, and not to overlap
// another entry. Names with `..`, absolute paths, backslashes or duplicates are refused, so no
// caller can be tricked into reading a different entry than the one it named.
//
// Writing produces what torch.save does: STORED entries whose data start on a 64-byte boundary
// (padding with torch's `FB` extra field) and ZIP64 records once an offset or size passes 4 GiB.
// Data is never compressed, so tensors can be memory-mapped straight out of the file.
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { crc32, inflateRawSync } from 'node:zlib';

export interface ZipEntry {
  readonly name: string;
  /** 0 = stored, 8 = deflate. */
  readonly method: 0 | 8;
  readonly compressedSize: number;
  /** Uncompressed size. */
  readonly size: number;
  readonly crc32: number;
  readonly localHeaderOffset: number;
  /** Absolute offset of the entry's (possibly compressed) bytes in the file. */
  readonly dataOffset: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;
/** deflate cannot expand data by more than ~1032x; anything claiming more is a zip bomb. */
const MAX_DEFLATE_RATIO = 1100;
/** Entries we inflate into memory (only small records: torch never compresses). */
const MAX_INFLATED = 2 ** 31 - 1;

/** A problem with the archive structure itself; the message names the file. */
export class ZipFormatError extends Error {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = 'ZipFormatError';
  }
}

/** Positioned reads from a file descriptor; positions are plain numbers (safe to 2^53). */
class FileBytes {
  constructor(
    readonly fd: number,
    readonly size: number,
  ) {}
  read(offset: number, length: number): Buffer {
    const b = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, b, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return done === length ? b : b.subarray(0, done);
  }
}

/** A u64 little-endian field as a number; refuses values past 2^53 (no real file is that big). */
function u64(b: Buffer, off: number, file: string, what: string): number {
  const v = b.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ZipFormatError(file, `${what} (${v}) is absurd; the file is corrupt`);
  return Number(v);
}

/**
 * Names as they are allowed inside an archive we read: relative, '/'-separated, no '.'/'..'
 * components, no NUL or backslash, no drive letters.
 */
function checkName(name: string, file: string): void {
  const bad = (why: string): never => {
    throw new ZipFormatError(file, `refusing the entry name ${JSON.stringify(name.slice(0, 200))}: ${why}`);
  };
  if (name.length === 0) bad('it is empty');
  if (name.includes('\0')) bad('it contains a NUL character');
  if (/[\u0001-\u001f\u007f]/.test(name)) bad('it contains a control character');
  if (name.includes('\\')) bad('it contains a backslash');
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) bad('it is an absolute path');
  for (const part of name.split('/')) if (part === '..' || part === '.') bad('it contains a "." or ".." path component');
}

export class ZipReader {
  readonly entries: readonly ZipEntry[];
  private readonly byName: Map<string, ZipEntry>;
  private bytes: FileBytes | null;

  /** Opens `path` and reads its central directory; throws ZipFormatError on anything odd. */
  constructor(readonly path: string) {
    const fd = openSync(path, 'r');
    try {
      this.bytes = new FileBytes(fd, fstatSync(fd).size);
      this.entries = readCentralDirectory(this.bytes, path);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    this.byName = new Map(this.entries.map((e) => [e.name, e]));
  }

  get fileSize(): number {
    return this.file.size;
  }

  private get file(): FileBytes {
    if (this.bytes === null) throw new Error(`${this.path}: zip reader used after close()`);
    return this.bytes;
  }

  get(name: string): ZipEntry | undefined {
    return this.byName.get(name);
  }

  /** The entry's uncompressed bytes (for records: data.pkl, version, byteorder). */
  read(entry: ZipEntry): Buffer {
    return readEntryBytes(entry, (off, len) => this.file.read(off, len), this.path);
  }

  close(): void {
    if (this.bytes !== null) closeSync(this.bytes.fd);
    this.bytes = null;
  }
}

/**
 * An entry's uncompressed bytes through any positioned reader (the torch layer passes its mmap).
 * Checks the CRC so a damaged pickle fails here rather than as a confusing pickle error.
 */
export function readEntryBytes(entry: ZipEntry, read: (offset: number, length: number) => Buffer, file: string): Buffer {
  const raw = read(entry.dataOffset, entry.compressedSize);
  if (raw.length !== entry.compressedSize) throw new ZipFormatError(file, `entry ${entry.name} is truncated`);
  let data: Buffer;
  if (entry.method === 0) {
    data = raw;
  } else {
    if (entry.size > MAX_INFLATED) throw new ZipFormatError(file, `entry ${entry.name} is compressed and too large to inflate (${entry.size} bytes)`);
    try {
      data = inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.size) });
    } catch (e) {
      throw new ZipFormatError(file, `entry ${entry.name} does not inflate (${(e as Error).message}); the file is corrupt`);
    }
    if (data.length !== entry.size) throw new ZipFormatError(file, `entry ${entry.name} inflates to ${data.length} bytes, not the ${entry.size} declared`);
  }
  if (entry.crc32 !== 0 && crc32(data) >>> 0 !== entry.crc32) {
    throw new ZipFormatError(file, `entry ${entry.name} fails its CRC check; the file is corrupt (re-download it)`);
  }
  return data;
}

function findEocd(f: FileBytes, file: string): number {
  if (f.size < EOCD_SIZE) throw new ZipFormatError(file, `not a zip archive (only ${f.size} bytes)`);
  const tailLen = Math.min(f.size, EOCD_SIZE + MAX_COMMENT);
  const tailStart = f.size - tailLen;
  const tail = f.read(tailStart, tailLen);
  // Scan backwards: the record whose comment length reaches exactly to the end of the file.
  for (let i = tail.length - EOCD_SIZE; i >= 0; i--) {
    if (tail.readUInt32LE(i) !== SIG_EOCD) continue;
    if (i + EOCD_SIZE + tail.readUInt16LE(i + 20) === tail.length) return tailStart + i;
  }
  throw new ZipFormatError(file, 'no zip end-of-central-directory record found; the file is truncated or not a zip archive');
}

function readCentralDirectory(f: FileBytes, file: string): ZipEntry[] {
  const eocdOff = findEocd(f, file);
  const eocd = f.read(eocdOff, EOCD_SIZE);
  if (eocd.readUInt16LE(4) !== 0 || eocd.readUInt16LE(6) !== 0) throw new ZipFormatError(file, 'multi-disk zip archives are not supported');
  let count = eocd.readUInt16LE(10);
  let cdSize = eocd.readUInt32LE(12);
  let cdOff = eocd.readUInt32LE(16);
  let cdEnd = eocdOff;
  if (count === 0xffff || cdSize === 0xffffffff || cdOff === 0xffffffff) {
    // ZIP64: a locator sits right before the EOCD and points at the 64-bit record.
    if (eocdOff < 20) throw new ZipFormatError(file, 'the ZIP64 locator is missing');
    const loc = f.read(eocdOff - 20, 20);
    if (loc.readUInt32LE(0) !== SIG_EOCD64_LOCATOR) throw new ZipFormatError(file, 'the ZIP64 locator is missing');
    const recOff = u64(loc, 8, file, 'ZIP64 record offset');
    if (recOff + 56 > eocdOff - 20) throw new ZipFormatError(file, 'the ZIP64 record lies outside the file');
    const rec = f.read(recOff, 56);
    if (rec.readUInt32LE(0) !== SIG_EOCD64) throw new ZipFormatError(file, 'the ZIP64 end-of-central-directory record is damaged');
    count = u64(rec, 32, file, 'entry count');
    cdSize = u64(rec, 40, file, 'central directory size');
    cdOff = u64(rec, 48, file, 'central directory offset');
    cdEnd = recOff;
  }
  if (cdOff + cdSize > cdEnd) {
    throw new ZipFormatError(file, `the central directory (${cdSize} bytes at ${cdOff}) runs past its end record; the file is truncated or corrupt`);
  }
  if (count * 46 > cdSize) throw new ZipFormatError(file, `the central directory claims ${count} entries but is only ${cdSize} bytes`);
  const cd = f.read(cdOff, cdSize);
  const entries: ZipEntry[] = [];
  const seen = new Set<string>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) throw new ZipFormatError(file, `central directory entry ${i} is damaged`);
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    const crc = cd.readUInt32LE(p + 16);
    let csize = cd.readUInt32LE(p + 20);
    let usize = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let lho = cd.readUInt32LE(p + 42);
    const recEnd = p + 46 + nameLen + extraLen + commentLen;
    if (recEnd > cd.length) throw new ZipFormatError(file, `central directory entry ${i} runs past the directory`);
    const nameBytes = cd.subarray(p + 46, p + 46 + nameLen);
    // Bit 11 = UTF-8; otherwise CP437, of which torch only ever writes the ASCII part.
    const name = flags & 0x800 ? new TextDecoder('utf-8', { fatal: false }).decode(nameBytes) : nameBytes.toString('latin1');
    // ZIP64 extra (0x0001) holds, in order, only the fields that are 0xFFFFFFFF above.
    let q = p + 46 + nameLen;
    const extraEnd = q + extraLen;
    while (q + 4 <= extraEnd) {
      const tag = cd.readUInt16LE(q);
      const len = cd.readUInt16LE(q + 2);
      if (q + 4 + len > extraEnd) throw new ZipFormatError(file, `entry ${name}: damaged extra field`);
      if (tag === 0x0001) {
        let r = q + 4;
        const take = (what: string): number => {
          if (r + 8 > q + 4 + len) throw new ZipFormatError(file, `entry ${name}: ZIP64 field ${what} is missing`);
          const v = u64(cd, r, file, `entry ${name} ${what}`);
          r += 8;
          return v;
        };
        if (usize === 0xffffffff) usize = take('size');
        if (csize === 0xffffffff) csize = take('compressed size');
        if (lho === 0xffffffff) lho = take('offset');
      }
      q += 4 + len;
    }
    p = recEnd;

    checkName(name, file);
    if (seen.has(name)) throw new ZipFormatError(file, `the entry ${name} appears twice; refusing an ambiguous archive`);
    seen.add(name);
    if (flags & 0x1) throw new ZipFormatError(file, `entry ${name} is encrypted`);
    if (method !== 0 && method !== 8) throw new ZipFormatError(file, `entry ${name} uses compression method ${method}; only stored and deflate are supported`);
    if (method === 0 && csize !== usize) throw new ZipFormatError(file, `entry ${name} is stored but declares ${csize} bytes stored for ${usize} bytes of data`);
    if (method === 8 && usize > csize * MAX_DEFLATE_RATIO + 1024) throw new ZipFormatError(file, `entry ${name} declares an absurd size (${usize} bytes from ${csize} compressed)`);
    if (lho + 30 > cdOff) throw new ZipFormatError(file, `entry ${name} starts at ${lho}, outside the file's data area`);
    entries.push({ name, method, compressedSize: csize, size: usize, crc32: crc, localHeaderOffset: lho, dataOffset: -1 });
  }

  // Local headers give each entry's data start (their name and extra lengths may differ from the
  // central copy; torch's padding lives only there).
  const resolved: ZipEntry[] = entries.map((e) => {
    const lh = f.read(e.localHeaderOffset, 30);
    if (lh.length < 30 || lh.readUInt32LE(0) !== SIG_LOCAL) throw new ZipFormatError(file, `entry ${e.name}: local header missing at offset ${e.localHeaderOffset}`);
    const dataOffset = e.localHeaderOffset + 30 + lh.readUInt16LE(26) + lh.readUInt16LE(28);
    const localName = f.read(e.localHeaderOffset + 30, lh.readUInt16LE(26));
    const lname = localName.toString('utf-8');
    if (lname !== e.name && localName.toString('latin1') !== e.name) {
      throw new ZipFormatError(file, `entry ${e.name}: its local header names it ${JSON.stringify(lname.slice(0, 200))}; refusing an ambiguous archive`);
    }
    if (dataOffset + e.compressedSize > cdOff) {
      throw new ZipFormatError(file, `entry ${e.name} declares ${e.compressedSize} bytes, which run past the data area (the file is ${f.size} bytes); it is truncated or corrupt`);
    }
    return { ...e, dataOffset };
  });
  const byStart = [...resolved].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1];
    if (prev.dataOffset + prev.compressedSize > byStart[i].localHeaderOffset) {
      throw new ZipFormatError(file, `entries ${prev.name} and ${byStart[i].name} overlap; refusing a malformed archive`);
    }
  }
  return resolved;
}

// ---- writing ----------------------------------------------------------------------------------

interface Written {
  name: Buffer;
  crc: number;
  size: number;
  offset: number;
}

/**
 * Streams STORED entries to an open file descriptor. Entry data start on `align`-byte boundaries
 * through torch's `FB` extra field (§2.1), so files we write can be memory-mapped by torch too.
 */
export class ZipWriter {
  private pos = 0;
  private readonly done: Written[] = [];
  private readonly names = new Set<string>();

  /** forceZip64: write ZIP64 records even for small files (tests exercise the > 4 GiB path). */
  constructor(
    private readonly fd: number,
    private readonly opts: { align?: number; forceZip64?: boolean } = {},
  ) {}

  private write(b: Buffer): void {
    let off = 0;
    while (off < b.length) off += writeSync(this.fd, b, off, b.length - off, this.pos + off);
    this.pos += b.length;
  }

  private needs64(n: number): boolean {
    return this.opts.forceZip64 === true || n >= 0xffffffff;
  }

  /** Adds one stored entry; `chunks` are written in order (a tensor need not be joined first). */
  add(name: string, chunks: Buffer | readonly Buffer[]): void {
    const parts = Buffer.isBuffer(chunks) ? [chunks] : chunks;
    if (this.names.has(name)) throw new Error(`zip writer: duplicate entry ${name}`);
    this.names.add(name);
    let crc = 0;
    let size = 0;
    for (const c of parts) {
      crc = crc32(c, crc);
      size += c.length;
    }
    const nameBuf = Buffer.from(name, 'utf-8');
    const offset = this.pos;
    const zip64 = this.needs64(size);
    // Local ZIP64 extra carries both sizes when either is too large for 32 bits.
    const z64 = zip64 ? Buffer.alloc(20) : Buffer.alloc(0);
    if (zip64) {
      z64.writeUInt16LE(0x0001, 0);
      z64.writeUInt16LE(16, 2);
      z64.writeBigUInt64LE(BigInt(size), 4);
      z64.writeBigUInt64LE(BigInt(size), 12);
    }
    const align = this.opts.align ?? 64;
    const before = offset + 30 + nameBuf.length + z64.length + 4;
    const pad = (align - (before % align)) % align;
    const fb = Buffer.alloc(4 + pad, 'Z');
    fb.write('FB', 0, 'latin1');
    fb.writeUInt16LE(pad, 2);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(SIG_LOCAL, 0);
    lh.writeUInt16LE(zip64 ? 45 : 20, 4);
    lh.writeUInt16LE(0x0800, 6); // UTF-8 names; sizes known up front, so no data descriptor
    lh.writeUInt16LE(0, 8); // stored
    lh.writeUInt32LE(0, 10); // DOS time/date 0, as torch writes
    lh.writeUInt32LE(crc >>> 0, 14);
    lh.writeUInt32LE(zip64 ? 0xffffffff : size, 18);
    lh.writeUInt32LE(zip64 ? 0xffffffff : size, 22);
    lh.writeUInt16LE(nameBuf.length, 26);
    lh.writeUInt16LE(z64.length + fb.length, 28);
    this.write(Buffer.concat([lh, nameBuf, z64, fb]));
    for (const c of parts) this.write(c);
    this.done.push({ name: nameBuf, crc: crc >>> 0, size, offset });
  }

  /** Writes the central directory and end records. The caller closes the fd. */
  finish(): void {
    const cdStart = this.pos;
    for (const e of this.done) {
      const bigSize = this.needs64(e.size);
      const bigOff = this.needs64(e.offset);
      const fields: bigint[] = [];
      if (bigSize) fields.push(BigInt(e.size), BigInt(e.size));
      if (bigOff) fields.push(BigInt(e.offset));
      const extra = Buffer.alloc(fields.length ? 4 + 8 * fields.length : 0);
      if (fields.length) {
        extra.writeUInt16LE(0x0001, 0);
        extra.writeUInt16LE(8 * fields.length, 2);
        fields.forEach((v, i) => extra.writeBigUInt64LE(v, 4 + 8 * i));
      }
      const h = Buffer.alloc(46);
      h.writeUInt32LE(SIG_CENTRAL, 0);
      h.writeUInt16LE(fields.length ? 45 : 20, 4); // version made by
      h.writeUInt16LE(fields.length ? 45 : 20, 6); // version needed
      h.writeUInt16LE(0x0800, 8);
      h.writeUInt16LE(0, 10);
      h.writeUInt32LE(0, 12);
      h.writeUInt32LE(e.crc, 16);
      h.writeUInt32LE(bigSize ? 0xffffffff : e.size, 20);
      h.writeUInt32LE(bigSize ? 0xffffffff : e.size, 24);
      h.writeUInt16LE(e.name.length, 28);
      h.writeUInt16LE(extra.length, 30);
      h.writeUInt32LE(bigOff ? 0xffffffff : e.offset, 42);
      this.write(Buffer.concat([h, e.name, extra]));
    }
    const cdSize = this.pos - cdStart;
    const n = this.done.length;
    const big = this.opts.forceZip64 === true || n >= 0xffff || this.needs64(cdStart) || this.needs64(cdSize);
    if (big) {
      const rec = Buffer.alloc(56);
      const recOff = this.pos;
      rec.writeUInt32LE(SIG_EOCD64, 0);
      rec.writeBigUInt64LE(44n, 4); // size of the rest of this record
      rec.writeUInt16LE(45, 12);
      rec.writeUInt16LE(45, 14);
      rec.writeBigUInt64LE(BigInt(n), 24);
      rec.writeBigUInt64LE(BigInt(n), 32);
      rec.writeBigUInt64LE(BigInt(cdSize), 40);
      rec.writeBigUInt64LE(BigInt(cdStart), 48);
      const loc = Buffer.alloc(20);
      loc.writeUInt32LE(SIG_EOCD64_LOCATOR, 0);
      loc.writeBigUInt64LE(BigInt(recOff), 8);
      loc.writeUInt32LE(1, 16);
      this.write(Buffer.concat([rec, loc]));
    }
    const eocd = Buffer.alloc(EOCD_SIZE);
    eocd.writeUInt32LE(SIG_EOCD, 0);
    eocd.writeUInt16LE(big ? 0xffff : n, 8);
    eocd.writeUInt16LE(big ? 0xffff : n, 10);
    eocd.writeUInt32LE(big ? 0xffffffff : cdSize, 12);
    eocd.writeUInt32LE(big ? 0xffffffff : cdStart, 16);
    this.write(eocd);
  }
}
