// PNG reading and writing, with text chunks: A1111 stores generation settings in a `parameters`
// chunk (tEXt when Latin-1, iTXt otherwise, as PIL's PngInfo does), which other tools read back.
// Reading covers what image tools write: 8/16-bit grey, grey+alpha, RGB, RGBA and palettes
// (with tRNS), non-interlaced and Adam7-interlaced. Hostile files fail with a message naming the file.
import { deflateSync, inflateSync } from 'node:zlib';
import { writeFileAtomic } from './atomic.ts';

export interface RgbImage {
  width: number;
  height: number;
  /** 3 (RGB) or 4 (RGBA), 8 bits each, rows top to bottom. */
  channels: 3 | 4;
  data: Uint8Array;
}

export interface PngText {
  [keyword: string]: string;
}

export class PngError extends Error {
  constructor(readonly file: string, what: string) {
    super(`${file}: ${what}`);
    this.name = 'PngError';
  }
}

/** Refuse images beyond this many pixels (a 20000×20000 PNG is 400 MP): decompression bombs. */
export const MAX_PIXELS = 16384 * 16384;

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bufs: Buffer[]): number {
  let c = 0xffffffff;
  for (const b of bufs) for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32([head.subarray(4), data]), 0);
  return Buffer.concat([head, data, crc]);
}

function textChunk(key: string, value: string): Buffer {
  // eslint-disable-next-line no-control-regex
  const latin1 = /^[\x00-\xff]*$/.test(value);
  if (latin1) return chunk('tEXt', Buffer.concat([Buffer.from(key, 'latin1'), Buffer.from([0]), Buffer.from(value, 'latin1')]));
  // iTXt: keyword \0 compression-flag compression-method language \0 translated \0 text (UTF-8)
  return chunk('iTXt', Buffer.concat([Buffer.from(key, 'latin1'), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(value, 'utf8')]));
}

/** Encodes an 8-bit RGB(A) image, with text chunks written before the image data. */
export function encodePng(img: RgbImage, text: PngText = {}): Buffer {
  const { width, height, channels, data } = img;
  if (data.length !== width * height * channels) throw new Error(`encodePng: ${data.length} bytes do not hold a ${width}×${height}×${channels} image`);
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = channels === 4 ? 6 : 2;
  const stride = width * channels;
  // Filter "Sub" on every row: cheap and compresses smooth images well.
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    const o = y * (stride + 1);
    raw[o] = 1;
    for (let x = 0; x < stride; x++) {
      const cur = data[y * stride + x];
      const left = x >= channels ? data[y * stride + x - channels] : 0;
      raw[o + 1 + x] = (cur - left) & 0xff;
    }
  }
  const parts = [SIGNATURE, chunk('IHDR', ihdr)];
  for (const [k, v] of Object.entries(text)) parts.push(textChunk(k, v));
  parts.push(chunk('IDAT', deflateSync(raw, { level: 6 })), chunk('IEND', Buffer.alloc(0)));
  return Buffer.concat(parts);
}

/** Writes a PNG atomically (temp file in the same folder, then rename). */
export function writePng(path: string, img: RgbImage, text: PngText = {}): void {
  writeFileAtomic(path, encodePng(img, text));
}

interface Header {
  width: number;
  height: number;
  depth: number;
  color: number;
  interlace: number;
}

const SAMPLES: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

/** Decodes a PNG to 8-bit RGB or RGBA (RGBA when it has any alpha), plus its text chunks. */
export function decodePng(buf: Buffer, file = '<png>'): RgbImage & { text: PngText } {
  if (buf.length < 8 || !buf.subarray(0, 8).equals(SIGNATURE)) throw new PngError(file, 'not a PNG file (bad signature)');
  let off = 8;
  let hdr: Header | null = null;
  let palette: Buffer | null = null;
  let trns: Buffer | null = null;
  const idat: Buffer[] = [];
  const text: PngText = {};
  while (off < buf.length) {
    if (off + 8 > buf.length) throw new PngError(file, 'truncated chunk header: the file is cut short');
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    if (len > buf.length - off - 12) throw new PngError(file, `chunk ${JSON.stringify(type)} claims ${len} bytes, past the end of the file: the file is truncated`);
    const data = buf.subarray(off + 8, off + 8 + len);
    const crc = buf.readUInt32BE(off + 8 + len);
    if (crc32([buf.subarray(off + 4, off + 8), data]) !== crc) throw new PngError(file, `chunk ${JSON.stringify(type)} is corrupt (CRC mismatch)`);
    off += 12 + len;
    if (type === 'IHDR') {
      if (len !== 13) throw new PngError(file, 'bad IHDR chunk');
      hdr = { width: data.readUInt32BE(0), height: data.readUInt32BE(4), depth: data[8], color: data[9], interlace: data[12] };
      if (!(hdr.color in SAMPLES)) throw new PngError(file, `unknown colour type ${hdr.color}`);
      if (![1, 2, 4, 8, 16].includes(hdr.depth)) throw new PngError(file, `unsupported bit depth ${hdr.depth}`);
      if (hdr.width === 0 || hdr.height === 0) throw new PngError(file, 'the image is empty (0 pixels)');
      if (hdr.width * hdr.height > MAX_PIXELS) {
        throw new PngError(file, `the image is ${hdr.width}×${hdr.height}, over the ${MAX_PIXELS / 1e6 | 0}-megapixel limit: downscale it first`);
      }
    } else if (type === 'PLTE') palette = Buffer.from(data);
    else if (type === 'tRNS') trns = Buffer.from(data);
    else if (type === 'IDAT') idat.push(data);
    else if (type === 'tEXt') {
      const z = data.indexOf(0);
      if (z > 0) text[data.toString('latin1', 0, z)] = data.toString('latin1', z + 1);
    } else if (type === 'iTXt') {
      const z = data.indexOf(0);
      if (z > 0 && z + 2 < data.length) {
        const compressed = data[z + 1] === 1;
        const langEnd = data.indexOf(0, z + 3);
        const transEnd = langEnd < 0 ? -1 : data.indexOf(0, langEnd + 1);
        if (transEnd > 0) {
          const body = data.subarray(transEnd + 1);
          try {
            text[data.toString('latin1', 0, z)] = (compressed ? inflateSync(body, { maxOutputLength: 1 << 24 }) : body).toString('utf8');
          } catch {
            /* an unreadable text chunk does not stop the image */
          }
        }
      }
    } else if (type === 'zTXt') {
      const z = data.indexOf(0);
      if (z > 0) {
        try {
          text[data.toString('latin1', 0, z)] = inflateSync(data.subarray(z + 2), { maxOutputLength: 1 << 24 }).toString('latin1');
        } catch {
          /* as above */
        }
      }
    } else if (type === 'IEND') break;
  }
  if (!hdr) throw new PngError(file, 'no IHDR chunk');
  if (idat.length === 0) throw new PngError(file, 'no image data (IDAT): the file is truncated or damaged');
  if (hdr.color === 3 && !palette) throw new PngError(file, 'palette image without a PLTE chunk');
  const bpp = Math.max(1, (SAMPLES[hdr.color] * hdr.depth) >> 3);
  const passes = hdr.interlace === 1 ? ADAM7 : [[0, 0, 1, 1]];
  let expected = 0;
  for (const [x0, y0, dx, dy] of passes) {
    const w = Math.ceil((hdr.width - x0) / dx);
    const h = Math.ceil((hdr.height - y0) / dy);
    if (w > 0 && h > 0) expected += h * (1 + Math.ceil((w * SAMPLES[hdr.color] * hdr.depth) / 8));
  }
  let raw: Buffer;
  try {
    raw = inflateSync(Buffer.concat(idat), { maxOutputLength: expected + 1 });
  } catch (e) {
    throw new PngError(file, `the image data does not decompress (${(e as Error).message}): the file is damaged`);
  }
  if (raw.length < expected) throw new PngError(file, `the image data is short (${raw.length} of ${expected} bytes): the file is truncated`);
  return { ...toRgb(hdr, raw, passes, bpp, palette, trns, file), text };
}

const ADAM7 = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
];

function unfilter(raw: Buffer, off: number, w: number, h: number, rowBytes: number, bpp: number, file: string): Buffer {
  const out = Buffer.alloc(rowBytes * h);
  for (let y = 0; y < h; y++) {
    const f = raw[off + y * (rowBytes + 1)];
    const src = off + y * (rowBytes + 1) + 1;
    const o = y * rowBytes;
    for (let x = 0; x < rowBytes; x++) {
      const a = x >= bpp ? out[o + x - bpp] : 0;
      const b = y > 0 ? out[o - rowBytes + x] : 0;
      const c = x >= bpp && y > 0 ? out[o - rowBytes + x - bpp] : 0;
      let v = raw[src + x];
      switch (f) {
        case 0: break;
        case 1: v += a; break;
        case 2: v += b; break;
        case 3: v += (a + b) >> 1; break;
        case 4: {
          const p = a + b - c;
          const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
          v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default: throw new PngError(file, `bad row filter ${f}: the file is damaged`);
      }
      out[o + x] = v & 0xff;
    }
  }
  void w;
  return out;
}

function toRgb(hdr: Header, raw: Buffer, passes: number[][], bpp: number, palette: Buffer | null, trns: Buffer | null, file: string): RgbImage {
  const { width, height, depth, color } = hdr;
  const spp = SAMPLES[color];
  const alpha = color === 4 || color === 6 || trns !== null;
  const channels: 3 | 4 = alpha ? 4 : 3;
  const out = new Uint8Array(width * height * channels);
  const maxv = (1 << Math.min(depth, 8)) - 1;
  let off = 0;
  for (const [x0, y0, dx, dy] of passes) {
    const w = Math.ceil((width - x0) / dx);
    const h = Math.ceil((height - y0) / dy);
    if (w <= 0 || h <= 0) continue;
    const rowBytes = Math.ceil((w * spp * depth) / 8);
    const px = unfilter(raw, off, w, h, rowBytes, bpp, file);
    off += h * (rowBytes + 1);
    const sample = (row: number, i: number): number => {
      // i-th sample of the row, scaled to 8 bits (16-bit keeps the high byte, as PIL does)
      if (depth === 8) return px[row * rowBytes + i];
      if (depth === 16) return px[row * rowBytes + i * 2];
      const bit = i * depth;
      const byte = px[row * rowBytes + (bit >> 3)];
      const v = (byte >> (8 - depth - (bit & 7))) & maxv;
      return color === 3 ? v : Math.round((v * 255) / maxv);
    };
    const raw16 = (row: number, i: number): number => (depth === 16 ? px.readUInt16BE(row * rowBytes + i * 2) : -1);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const o = ((y0 + y * dy) * width + (x0 + x * dx)) * channels;
        let r: number, g: number, b: number, a = 255;
        if (color === 3) {
          const idx = sample(y, x);
          if (idx * 3 + 2 >= palette!.length) throw new PngError(file, `palette index ${idx} is out of range`);
          r = palette![idx * 3];
          g = palette![idx * 3 + 1];
          b = palette![idx * 3 + 2];
          if (trns && idx < trns.length) a = trns[idx];
        } else if (color === 0 || color === 4) {
          r = g = b = sample(y, x * spp);
          if (color === 4) a = sample(y, x * spp + 1);
          else if (trns && trns.length >= 2 && (depth === 16 ? raw16(y, x) : Math.round((sample(y, x) * maxv) / 255)) === trns.readUInt16BE(0)) a = 0;
        } else {
          r = sample(y, x * spp);
          g = sample(y, x * spp + 1);
          b = sample(y, x * spp + 2);
          if (color === 6) a = sample(y, x * spp + 3);
          else if (trns && trns.length >= 6 && depth === 8 && r === trns.readUInt16BE(0) && g === trns.readUInt16BE(2) && b === trns.readUInt16BE(4)) a = 0;
        }
        out[o] = r;
        out[o + 1] = g;
        out[o + 2] = b;
        if (channels === 4) out[o + 3] = a;
      }
    }
  }
  return { width, height, channels, data: out };
}
