// Training images: scan a folder, caption each image, bucket by aspect ratio, decode, batch.
// Follows two references users arrive from:
// - kohya sd-scripts (train_util.py): `10_sks dog` subfolders (repeats + instance words), .txt
//   captions, shuffle_caption / keep_tokens / caption_tag_dropout_rate / caption_dropout_rate,
//   BucketManager (make_bucket_resolutions, select_bucket), regularisation images balanced to the
//   number of training samples, and the ss_* dataset metadata (sd-formats.md §5.5).
// - A1111 textual inversion (sd-formats.md §6.4): prompt templates with [name] and [filewords],
//   captions from the file name when there is no .txt.
// Every random choice comes from a stream derived from (seed, epoch, sample, repeat), so an epoch
// is the same whatever ran before it, and a resumed run replays exactly (epoch(e, {startBatch})).
// Images are decoded by sharp (libvips), metadata first, so a decompression bomb is refused from its
// header; a file that cannot be used is reported in a sentence naming it and training goes on.
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { basename, extname, join, relative, resolve, sep } from 'node:path';
import { createHash } from 'node:crypto';
import type { Sharp, SharpConstructor } from 'sharp';
import * as T from '../torch/index.ts';
import { MAX_PIXELS } from '../formats/png.ts';
import { Rng } from '../rng.ts';
import { DatasetError, buildCaption, captionFromFileName, cleanCaption, decodeCaption, fillTemplate, type CaptionOptions } from './captions.ts';
import { bucketConfig, makeBuckets, selectBucket, type BucketOptions, type Size } from './buckets.ts';

export * from './captions.ts';
export { Rng } from '../rng.ts';
export * from './buckets.ts';


// ---- scanning --------------------------------------------------------------------------------

export interface DatasetOptions {
  /** Instance images: a folder of images, and/or of kohya subfolders named like `10_sks dog`. */
  dir: string;
  /** Repeats for images directly in dir (kohya subfolders carry their own). Default 1, or the number in dir's own name. */
  repeats?: number;
  /** Regularisation (class) images for prior preservation; may sit inside dir. */
  classDir?: string;
  classRepeats?: number;
  /** Caption for class images with no .txt and no folder words, e.g. "a photo of a dog". */
  classPrompt?: string;
  /** Masks for masked loss: maskDir/<stem>.png; `<stem>.mask.png` beside an image also works. */
  maskDir?: string;
  resolution: number | readonly [number, number];
  buckets?: Omit<BucketOptions, 'resolution'>;
  /** Random instead of centre crops (kohya random_crop); latents then cannot be cached. */
  randomCrop?: boolean;
  batchSize: number;
  seed: number;
  /** 'white': composite transparency on white; 'mask': also return alpha as a loss mask. Default 'white'. */
  alpha?: 'white' | 'mask';
  /** Refuse images with more pixels than this, read from the header. Default 16384² (as png.ts). */
  maxPixels?: number;
  /** Decode every image once while scanning, so damaged files are reported before training. Default true. */
  verify?: boolean;
  caption?: CaptionOptions;
  /** Default '.txt' (kohya also uses '.caption'). */
  captionExtension?: string;
  /** Without a .txt, caption from the file name (A1111). Default true. */
  fileNameCaptions?: boolean;
  /** Put a kohya folder's words before a .txt caption that lacks them. Default true. */
  folderWordsPrefix?: boolean;
}

export interface ImageSample {
  readonly index: number;
  readonly file: string;
  /** Path relative to its root folder, as messages name it. */
  readonly name: string;
  /** Its folder's name: the key of ss_dataset_dirs and ss_tag_frequency. */
  readonly subset: string;
  readonly isClass: boolean;
  /** Size after EXIF orientation. */
  readonly width: number;
  readonly height: number;
  readonly hasAlpha: boolean;
  readonly format: string;
  readonly caption: string;
  readonly captionSource: 'file' | 'folder' | 'filename' | 'class-prompt' | 'none';
  readonly maskFile: string | null;
  /** Times per epoch (for class images, after balancing to the instance samples). */
  readonly repeats: number;
  readonly bucket: Size;
  readonly resized: Size;
  readonly arError: number;
  readonly mtimeMs: number;
  readonly size: number;
}

export interface SkippedFile {
  file: string;
  /** The sentence to show: names the file, says what is wrong and that it is skipped. */
  message: string;
}

interface Subset {
  dir: string;
  key: string;
  repeats: number;
  words: string | null;
  isClass: boolean;
  images: string[];
}

const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff', '.avif', '.bmp', '.heic', '.heif']);
const MASK_EXT = ['.png', '.jpg', '.jpeg', '.webp'];
const KOHYA_DIR = /^(\d+)_(.*)$/s;
const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function isImageName(n: string): boolean {
  // `._x.jpg` are macOS resource forks, not images; `x.mask.png` are masks.
  return IMAGE_EXT.has(extname(n).toLowerCase()) && !n.startsWith('.') && !/\.mask\.[a-z]+$/i.test(n);
}

function listDir(dir: string): { files: string[]; dirs: string[] } {
  const entries = readdirSync(dir, { withFileTypes: true });
  const files = entries.filter((e) => e.isFile() && isImageName(e.name)).map((e) => e.name).sort(byName);
  const dirs = entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name).sort(byName);
  return { files, dirs };
}

function findSubsets(root: string, defaultRepeats: number | undefined, isClass: boolean, exclude: string[], warnings: string[]): Subset[] {
  let st;
  try {
    st = statSync(root);
  } catch {
    throw new DatasetError(`the ${isClass ? 'class image' : 'image'} folder ${root} does not exist`);
  }
  if (!st.isDirectory()) throw new DatasetError(`${root} is a file, not a folder: give the folder that holds the images`);
  const subsets: Subset[] = [];
  const own = KOHYA_DIR.exec(basename(root));
  const { files, dirs } = listDir(root);
  if (files.length > 0) {
    subsets.push({ dir: root, key: basename(root), repeats: defaultRepeats ?? (own ? Number(own[1]) || 1 : 1), words: own ? own[2].trim() || null : null, isClass, images: files.map((f) => join(root, f)) });
  }
  for (const d of dirs) {
    const dir = join(root, d);
    if (exclude.includes(dir)) continue;
    const m = KOHYA_DIR.exec(d);
    const images = listDir(dir).files.map((f) => join(dir, f));
    if (!m) {
      if (images.length > 0) warnings.push(`folder "${d}" is ignored: name it like "10_${d}" (10 repeats per epoch, then the words the images show)`);
      continue;
    }
    if (Number(m[1]) < 1) {
      warnings.push(`folder "${d}" asks for 0 repeats, so its ${images.length} images are not used`);
      continue;
    }
    if (images.length === 0) warnings.push(`folder "${d}" has no images`);
    else subsets.push({ dir, key: d, repeats: Number(m[1]), words: m[2].trim() || null, isClass, images });
  }
  return subsets;
}

type SharpModule = SharpConstructor;
let sharpModule: SharpModule | null = null;
async function getSharp(): Promise<SharpModule> {
  if (sharpModule === null) {
    try {
      sharpModule = (await import('sharp')).default;
    } catch (e) {
      throw new DatasetError(`the image library (sharp) does not load here (${firstLine(e)}); run: npm install sharp`);
    }
  }
  return sharpModule;
}

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split('\n')[0];
}

/**
 * The per-file message. The wording comes from the stage that failed: libvips' own text is terse
 * and, with decodes in parallel, sometimes only "Unknown error", so it is added when it says more.
 */
function unreadable(name: string, file: string, e: unknown, stage: 'header' | 'pixels'): SkippedFile {
  const ext = extname(file).toLowerCase();
  if (ext === '.bmp') return { file, message: `${name}: BMP images cannot be read here (the bundled image library has no BMP reader); save it as PNG or JPEG; it is skipped` };
  if (ext === '.heic' || ext === '.heif') return { file, message: `${name}: HEIC photos cannot be read here (no HEVC decoder is bundled); export it as JPEG; it is skipped` };
  const raw = firstLine(e).replace(/:\s*$/, '');
  const detail = /^unknown error$/i.test(raw) || raw === '' ? '' : `: ${raw}`;
  const why = /unsupported image format/i.test(raw)
    ? 'it is not an image, or in a format that cannot be read'
    : stage === 'pixels'
      ? `its image data is damaged or cut short${detail}`
      : /corrupt header/i.test(raw) ? 'its header is damaged' : raw;
  return { file, message: `${name}: cannot read this image (${why}); it is skipped` };
}

function orientedSize(m: { width?: number; height?: number; orientation?: number }): Size {
  const w = m.width ?? 0;
  const h = m.height ?? 0;
  return (m.orientation ?? 1) >= 5 ? { width: h, height: w } : { width: w, height: h };
}

// ---- decoding --------------------------------------------------------------------------------

/** Bump when decoding changes, so cached latents made by an older pipeline are not reused. */
const PIPELINE_VERSION = 1;

export interface PlannedItem {
  readonly sample: ImageSample;
  /** Which of the sample's repeats this is (0-based). */
  readonly repeat: number;
  /** The caption this step trains on (template, shuffle and dropout applied). */
  readonly caption: string;
  readonly bucket: Size;
  /** Offset of the crop in the resized image. */
  readonly crop: { left: number; top: number };
  /** Stable key for this sample's pixels (file, mtime, size, bucket, crop): cache VAE latents under it. */
  readonly cacheKey: string;
}

export interface BatchPlan {
  readonly epoch: number;
  readonly index: number;
  readonly bucket: Size;
  readonly items: readonly PlannedItem[];
}

export interface Batch extends Disposable {
  readonly epoch: number;
  readonly index: number;
  readonly bucket: Size;
  readonly items: readonly PlannedItem[];
  readonly captions: string[];
  readonly isClass: boolean[];
  /** [B, 3, H, W] float32 in [-1, 1]. */
  readonly pixels: T.Tensor;
  /** [B, 1, H, W] in [0, 1] (1 = counts in the loss), or null when no item has a mask. */
  readonly masks: T.Tensor | null;
  dispose(): void;
}

interface Decoded {
  width: number;
  height: number;
  rgba: Buffer;
  mask: Buffer | null;
}

function cropGeometry(s: ImageSample, rng: Rng | null): { left: number; top: number } {
  const dx = s.resized.width - s.bucket.width;
  const dy = s.resized.height - s.bucket.height;
  return rng ? { left: rng.int(dx + 1), top: rng.int(dy + 1) } : { left: dx >> 1, top: dy >> 1 };
}

async function decode(item: PlannedItem, maxPixels: number): Promise<Decoded> {
  const sharp = await getSharp();
  const { sample: s, bucket, crop } = item;
  const open = (file: string): Sharp =>
    sharp(file, { limitInputPixels: maxPixels, failOn: 'truncated', autoOrient: true })
      .resize(s.resized.width, s.resized.height, { fit: 'fill', kernel: 'lanczos3' })
      .extract({ left: crop.left, top: crop.top, width: bucket.width, height: bucket.height });
  // sRGB (CMYK, grey and 16-bit sources converted), always 4 channels of 8 bits.
  const img = await open(s.file).toColourspace('srgb').ensureAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  let mask: Buffer | null = null;
  if (s.maskFile) {
    // Transparent parts of a mask image count as black (excluded).
    mask = (await open(s.maskFile).flatten({ background: '#000000' }).toColourspace('b-w').extractChannel(0).raw({ depth: 'uchar' }).toBuffer()) as Buffer;
  }
  if (img.info.width !== bucket.width || img.info.height !== bucket.height || img.info.channels !== 4) {
    throw new Error(`decoded to ${img.info.width}×${img.info.height}×${img.info.channels}, expected ${bucket.width}×${bucket.height}×4`);
  }
  return { width: bucket.width, height: bucket.height, rgba: img.data, mask };
}

/** Writes [3,H,W] in [-1,1] (composited on white) and, when asked, [1,H,W] mask values. */
function writeFloats(d: Decoded, px: Float32Array, pxOff: number, mask: Float32Array | null, maskOff: number, alphaMask: boolean): void {
  const n = d.width * d.height;
  const src = d.rgba;
  for (let i = 0; i < n; i++) {
    const a = src[i * 4 + 3] / 255;
    const white = 255 * (1 - a);
    px[pxOff + i] = (src[i * 4] * a + white) / 127.5 - 1;
    px[pxOff + n + i] = (src[i * 4 + 1] * a + white) / 127.5 - 1;
    px[pxOff + 2 * n + i] = (src[i * 4 + 2] * a + white) / 127.5 - 1;
    if (mask) mask[maskOff + i] = d.mask ? d.mask[i] / 255 : alphaMask ? a : 1;
  }
}

// ---- the dataset -----------------------------------------------------------------------------

export interface BucketSummary {
  width: number;
  height: number;
  images: number;
  samplesPerEpoch: number;
  batchesPerEpoch: number;
}

export interface DryRunSummary {
  dir: string;
  images: number;
  classImages: number;
  /** Class samples per epoch after balancing to the instance samples. */
  classSamplesPerEpoch: number;
  instanceSamplesPerEpoch: number;
  subsets: { key: string; isClass: boolean; repeats: number; images: number; words: string | null }[];
  skipped: SkippedFile[];
  warnings: string[];
  buckets: BucketSummary[];
  batchSize: number;
  epochs: number;
  stepsPerEpoch: number;
  totalSteps: number;
  /** The sentence users check: how the step count comes about. */
  stepsExplained: string;
  text: string;
}

export class Dataset {
  readonly samples: readonly ImageSample[];
  readonly skipped: readonly SkippedFile[];
  readonly warnings: readonly string[];
  /** Files that failed while training (changed or damaged since the scan). */
  readonly loadErrors: SkippedFile[] = [];
  readonly options: Readonly<DatasetOptions>;
  private readonly subsets: readonly Subset[];
  private readonly bucketKeys: readonly string[];

  private constructor(o: DatasetOptions, subsets: Subset[], samples: ImageSample[], skipped: SkippedFile[], warnings: string[]) {
    this.options = o;
    this.subsets = subsets;
    this.samples = samples;
    this.skipped = skipped;
    this.warnings = warnings;
    this.bucketKeys = [...new Set(samples.map((s) => `${s.bucket.width}x${s.bucket.height}`))].sort(byName);
  }

  /** Scans the folders, reads captions and image headers, assigns buckets. Never decodes a refused file. */
  static async open(o: DatasetOptions): Promise<Dataset> {
    if (!(o.batchSize >= 1 && Number.isInteger(o.batchSize))) throw new DatasetError(`the batch size must be a whole number ≥ 1, not ${o.batchSize}`);
    const bucketOpts: BucketOptions = { ...o.buckets, resolution: o.resolution };
    const buckets = makeBuckets(bucketOpts);
    const sharp = await getSharp();
    const root = resolve(o.dir);
    const classRoot = o.classDir ? resolve(o.classDir) : null;
    const maskRoot = o.maskDir ? resolve(o.maskDir) : null;
    const warnings: string[] = [];
    const skipped: SkippedFile[] = [];
    const exclude = [classRoot, maskRoot].filter((d): d is string => d !== null);
    const subsets = findSubsets(root, o.repeats, false, exclude, warnings);
    if (classRoot) subsets.push(...findSubsets(classRoot, o.classRepeats, true, maskRoot ? [maskRoot] : [], warnings));
    if (o.caption?.template?.some((l) => l.includes('[name]')) && !o.caption.name) {
      throw new DatasetError('the caption template uses [name], but no name was given (the embedding or hypernetwork name)');
    }
    const ctx: ScanContext = { sharp, o, bucketOpts, buckets, maxPixels: o.maxPixels ?? MAX_PIXELS, capExt: o.captionExtension ?? '.txt', maskRoot };
    const jobs = subsets.flatMap((sub) =>
      sub.images.map((file) => {
        const name = relative(sub.isClass ? classRoot! : root, file).split(sep).join('/') || basename(file);
        return async (): Promise<ScanResult> => {
          const out: ScanResult = { draft: null, skipped: [], warnings: [] };
          out.draft = await scanImage(ctx, file, name, sub, out);
          return out;
        };
      }),
    );
    // Headers (and the verify decode) in parallel, 8 at a time (sharp works on libuv threads);
    // messages are gathered in file order so the dry-run text is the same every time.
    const results: ScanResult[] = [];
    for (let i = 0; i < jobs.length; i += 8) results.push(...(await Promise.all(jobs.slice(i, i + 8).map((j) => j()))));
    for (const r of results) {
      skipped.push(...r.skipped);
      warnings.push(...r.warnings);
    }
    const kept = results.map((r) => r.draft).filter((d): d is Draft => d !== null);
    // kohya's regularisation balance: class images run until they match the instance samples.
    const numTrain = kept.filter((d) => !d.isClass).reduce((n, d) => n + d.subsetRepeats, 0);
    const classIdx = kept.map((d, i) => (d.isClass ? i : -1)).filter((i) => i >= 0);
    const repeats = kept.map((d) => (d.isClass ? 0 : d.subsetRepeats));
    if (classIdx.length > 0 && numTrain > 0) {
      let n = 0;
      for (let first = true; n < numTrain; first = false) {
        for (const i of classIdx) {
          if (first) {
            repeats[i] = kept[i].subsetRepeats;
            n += repeats[i];
          } else {
            repeats[i] += 1;
            n += 1;
          }
          if (n >= numTrain) break;
        }
      }
      const unused = repeats.filter((r, i) => r === 0 && kept[i].isClass).length;
      if (unused > 0) warnings.push(`${unused} of ${classIdx.length} class images are not needed to balance ${numTrain} instance samples and are not used`);
    }
    const samples: ImageSample[] = [];
    kept.forEach(({ subsetRepeats, ...rest }, i) => {
      if (repeats[i] > 0) samples.push({ ...rest, index: samples.length, repeats: repeats[i] });
      void subsetRepeats; // the balanced count replaces it
    });
    if (!o.classPrompt && samples.some((s) => s.isClass && s.captionSource === 'none')) {
      warnings.push('class images have no captions, no folder words and no classPrompt: they train on an empty caption');
    }
    return new Dataset(o, subsets, samples, skipped, warnings);
  }

  /** The captions a sample can train on, one per template line, before tag shuffle and dropout. */
  captionVariants(s: ImageSample): string[] {
    const c = this.options.caption ?? {};
    if (s.isClass || !c.template?.length) return [s.caption];
    return c.template.map((line) => fillTemplate(line, c.name ?? '', s.caption));
  }

  /** Whether the caption of a sample can change from step to step (then text embeddings cannot be cached). */
  get captionsVary(): boolean {
    const c = this.options.caption ?? {};
    return (c.template?.length ?? 0) > 1 || !!c.shuffle || (c.tagDropout ?? 0) > 0 || (c.captionDropout ?? 0) > 0 || (c.captionDropoutEveryNEpochs ?? 0) > 0;
  }

  private bucketCounts(): Map<string, { bucket: Size; images: number; samples: number }> {
    const m = new Map<string, { bucket: Size; images: number; samples: number }>();
    for (const key of this.bucketKeys) m.set(key, { bucket: { width: 0, height: 0 }, images: 0, samples: 0 });
    for (const s of this.samples) {
      const e = m.get(`${s.bucket.width}x${s.bucket.height}`)!;
      e.bucket = s.bucket;
      e.images += 1;
      e.samples += s.repeats;
    }
    return m;
  }

  /** Batches per epoch: Σ over buckets of ceil(samples in the bucket / batch size). */
  get stepsPerEpoch(): number {
    let n = 0;
    for (const b of this.bucketCounts().values()) n += Math.ceil(b.samples / this.options.batchSize);
    return n;
  }

  /** The cache key of a sample as cropped for training (centre crop unless given). */
  cacheKey(sample: ImageSample, crop: { left: number; top: number } = cropGeometry(sample, null)): string {
    const parts = [PIPELINE_VERSION, sample.file, sample.mtimeMs, sample.size, sample.bucket.width, sample.bucket.height, sample.resized.width, sample.resized.height, crop.left, crop.top, this.options.alpha ?? 'white'];
    if (sample.maskFile) {
      const st = statSync(sample.maskFile, { throwIfNoEntry: false });
      parts.push(sample.maskFile, st?.mtimeMs ?? 0, st?.size ?? 0);
    }
    return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
  }

  /**
   * The batches of an epoch without decoding anything: which samples, captions, buckets, crops.
   * Samples are grouped by bucket and shuffled, then the batch order is shuffled, all from
   * (seed, epoch) only, so epochPlan(e) is the same in a resumed run.
   */
  epochPlan(epoch: number): BatchPlan[] {
    if (this.samples.length === 0) {
      throw new DatasetError(`there are no usable images in ${this.options.dir}${this.skipped.length ? ` (${this.skipped.length} skipped: ${this.skipped.map((s) => s.message).join('; ')})` : ''}`);
    }
    const { seed, batchSize } = this.options;
    const caption = this.options.caption ?? {};
    const groups = new Map<string, PlannedItem[]>(this.bucketKeys.map((k) => [k, []]));
    for (const s of this.samples) {
      for (let r = 0; r < s.repeats; r++) {
        const rng = Rng.derive(seed, 'item', epoch, s.index, r);
        const crop = cropGeometry(s, this.options.randomCrop ? rng : null);
        const text = s.isClass ? s.caption : buildCaption(s.caption, caption, rng, epoch);
        groups.get(`${s.bucket.width}x${s.bucket.height}`)!.push({ sample: s, repeat: r, caption: text, bucket: s.bucket, crop, cacheKey: this.cacheKey(s, crop) });
      }
    }
    const batches: { bucket: Size; items: PlannedItem[] }[] = [];
    for (const [key, items] of groups) {
      Rng.derive(seed, 'bucket', epoch, key).shuffle(items);
      for (let i = 0; i < items.length; i += batchSize) batches.push({ bucket: items[0].bucket, items: items.slice(i, i + batchSize) });
    }
    Rng.derive(seed, 'batches', epoch).shuffle(batches);
    return batches.map((b, index) => ({ epoch, index, ...b }));
  }

  /** Decodes one planned item: pixels [3,H,W] in [-1,1] and, when it has one, mask [1,H,W]. The caller disposes both. */
  async loadItem(item: PlannedItem): Promise<{ pixels: T.Tensor; mask: T.Tensor | null }> {
    const d = await decode(item, this.options.maxPixels ?? MAX_PIXELS);
    const n = d.width * d.height;
    const hasMask = d.mask !== null || (this.options.alpha === 'mask' && item.sample.hasAlpha);
    const px = new Float32Array(3 * n);
    const mask = hasMask ? new Float32Array(n) : null;
    writeFloats(d, px, 0, mask, 0, this.options.alpha === 'mask');
    return {
      pixels: T.fromBuffer(px, 'float32', [3, d.height, d.width], { copy: false }),
      mask: mask ? T.fromBuffer(mask, 'float32', [1, d.height, d.width], { copy: false }) : null,
    };
  }

  /**
   * The batches of an epoch, decoded; the next batch decodes while the caller trains on this one.
   * Resume with startBatch = batches already done. A file that fails now is left out of its batch
   * and reported through onMessage and loadErrors. The caller disposes each batch.
   */
  async *epoch(epoch: number, opts: { startBatch?: number; onMessage?: (message: string) => void } = {}): AsyncGenerator<Batch> {
    const plan = this.epochPlan(epoch);
    const maxPixels = this.options.maxPixels ?? MAX_PIXELS;
    // Decoding yields plain buffers (no tensors), so a batch abandoned by `break` leaks nothing.
    const load = (b: BatchPlan): Promise<{ item: PlannedItem; d: Decoded }[]> =>
      Promise.all(
        b.items.map((item) =>
          decode(item, maxPixels).then(
            (d) => ({ item, d }),
            (e: unknown) => {
              const s = unreadable(item.sample.name, item.sample.file, e, 'pixels');
              this.loadErrors.push(s);
              opts.onMessage?.(s.message);
              return null;
            },
          ),
        ),
      ).then((xs) => xs.filter((x): x is { item: PlannedItem; d: Decoded } => x !== null));
    const start = opts.startBatch ?? 0;
    let next = start < plan.length ? load(plan[start]) : null;
    for (let i = start; i < plan.length; i++) {
      const got = await next!;
      next = i + 1 < plan.length ? load(plan[i + 1]) : null;
      if (got.length === 0) continue;
      yield this.toBatch(plan[i], got);
    }
  }

  private toBatch(plan: BatchPlan, got: { item: PlannedItem; d: Decoded }[]): Batch {
    const { width, height } = plan.bucket;
    const n = width * height;
    const alphaMask = this.options.alpha === 'mask';
    const anyMask = got.some(({ item, d }) => d.mask !== null || (alphaMask && item.sample.hasAlpha));
    const px = new Float32Array(got.length * 3 * n);
    const mask = anyMask ? new Float32Array(got.length * n) : null;
    got.forEach(({ d }, b) => writeFloats(d, px, b * 3 * n, mask, b * n, alphaMask));
    // Zero copy: the fresh arrays belong to the tensors from here on.
    const pixels = T.fromBuffer(px, 'float32', [got.length, 3, height, width], { copy: false });
    const masks = mask ? T.fromBuffer(mask, 'float32', [got.length, 1, height, width], { copy: false }) : null;
    const items = got.map((g) => g.item);
    const dispose = (): void => {
      pixels.dispose();
      masks?.dispose();
    };
    return { epoch: plan.epoch, index: plan.index, bucket: plan.bucket, items, captions: items.map((i) => i.caption), isClass: items.map((i) => i.sample.isClass), pixels, masks, dispose, [Symbol.dispose]: dispose };
  }

  /** What training would do, without decoding: counts, skipped files, buckets and the step count. */
  dryRun(epochs = 1): DryRunSummary {
    const B = this.options.batchSize;
    const inst = this.samples.filter((s) => !s.isClass);
    const cls = this.samples.filter((s) => s.isClass);
    const instanceSamples = inst.reduce((n, s) => n + s.repeats, 0);
    const classSamples = cls.reduce((n, s) => n + s.repeats, 0);
    const buckets: BucketSummary[] = [...this.bucketCounts().values()].map((b) => ({ ...b.bucket, images: b.images, samplesPerEpoch: b.samples, batchesPerEpoch: Math.ceil(b.samples / B) }));
    const steps = this.stepsPerEpoch;
    const classImages = this.subsets.filter((s) => s.isClass).reduce((n, s) => n + s.images.length, 0) - this.skipped.filter((s) => this.isClassFile(s.file)).length;
    const subsets = this.subsets.map((s) => ({ key: s.key, isClass: s.isClass, repeats: s.repeats, images: this.samples.filter((x) => x.subset === s.key && x.isClass === s.isClass).length, words: s.words }));
    const total = instanceSamples + classSamples;
    const plain = Math.ceil(total / B);
    const lines: string[] = [];
    const parts = subsets.filter((s) => !s.isClass && s.images > 0).map((s) => `${s.images} × ${s.repeats}`);
    let explained = `${parts.join(' + ')} = ${instanceSamples} instance sample${instanceSamples === 1 ? '' : 's'}`;
    if (classSamples > 0) explained += ` + ${classSamples} class samples (prior preservation doubles them) = ${total}`;
    explained += `, in batches of ${B}: ${steps} steps per epoch`;
    if (steps > plain) explained += ` (ceil(${total} / ${B}) = ${plain}, plus ${steps - plain} for partly filled batches: each bucket fills its own batches)`;
    explained += epochs > 1 ? ` × ${epochs} epochs = ${steps * epochs} steps in total` : '';
    lines.push(`Dataset ${this.options.dir}`);
    for (const s of subsets) {
      const what = s.isClass ? 'class images' : 'images';
      lines.push(`  ${s.key}: ${s.images} ${what} × ${s.repeats} repeat${s.repeats === 1 ? '' : 's'}${s.words ? `, folder words "${s.words}"` : ''}`);
    }
    if (cls.length > 0) lines.push(`  class images: ${classImages} usable, ${classSamples} samples per epoch (balanced to the ${instanceSamples} instance samples, as kohya does)`);
    if (this.skipped.length > 0) {
      lines.push(`Skipped ${this.skipped.length} file${this.skipped.length === 1 ? '' : 's'}:`);
      for (const s of this.skipped) lines.push(`  ${s.message}`);
    }
    if (this.warnings.length > 0) {
      lines.push('Warnings:');
      for (const w of this.warnings) lines.push(`  ${w}`);
    }
    const b0 = bucketConfig({ ...this.options.buckets, resolution: this.options.resolution });
    lines.push(`Buckets (resolution ${b0.res.width}×${b0.res.height}, sides multiples of ${b0.step}${b0.enabled ? '' : ', bucketing off'}):`);
    for (const b of buckets) lines.push(`  ${b.width}×${b.height}: ${b.images} image${b.images === 1 ? '' : 's'}, ${b.samplesPerEpoch} samples, ${b.batchesPerEpoch} batch${b.batchesPerEpoch === 1 ? '' : 'es'}`);
    if (this.samples.length === 0) lines.push('No usable images: nothing to train on.');
    lines.push(`Steps: ${explained}.`);
    lines.push(`TOTAL: ${steps * epochs} steps (${steps} per epoch × ${epochs} epoch${epochs === 1 ? '' : 's'}).`);
    return {
      dir: this.options.dir,
      images: inst.length,
      classImages,
      classSamplesPerEpoch: classSamples,
      instanceSamplesPerEpoch: instanceSamples,
      subsets,
      skipped: [...this.skipped],
      warnings: [...this.warnings],
      buckets,
      batchSize: B,
      epochs,
      stepsPerEpoch: steps,
      totalSteps: steps * epochs,
      stepsExplained: explained,
      text: lines.join('\n'),
    };
  }

  private isClassFile(file: string): boolean {
    return this.subsets.some((s) => s.isClass && s.images.includes(file));
  }

  /** kohya's dataset metadata (sd-formats.md §5.5), all values strings, for the saved LoRA. */
  kohyaMetadata(): Record<string, string> {
    const dirs = (isClass: boolean): Record<string, { n_repeats: number; img_count: number }> =>
      Object.fromEntries(this.subsets.filter((s) => s.isClass === isClass).map((s) => [s.key, { n_repeats: s.repeats, img_count: this.samples.filter((x) => x.subset === s.key && x.isClass === isClass).length }]));
    const tags: Record<string, Record<string, number>> = {};
    for (const s of this.samples) {
      const f = (tags[s.subset] ??= {});
      for (const t of s.caption.split(',')) {
        const tag = t.trim().toLowerCase();
        if (tag) f[tag] = (f[tag] ?? 0) + 1;
      }
    }
    const counts = [...this.bucketCounts().values()];
    const b = bucketConfig({ ...this.options.buckets, resolution: this.options.resolution });
    const meanArError = this.samples.length ? this.samples.reduce((n, s) => n + Math.abs(s.arError), 0) / this.samples.length : 0;
    return {
      ss_dataset_dirs: JSON.stringify(dirs(false)),
      ss_reg_dataset_dirs: JSON.stringify(dirs(true)),
      ss_tag_frequency: JSON.stringify(tags),
      ss_bucket_info: JSON.stringify({ buckets: Object.fromEntries(counts.map((c, i) => [String(i), { resolution: [c.bucket.width, c.bucket.height], count: c.samples }])), mean_img_ar_error: meanArError }),
      ss_num_train_images: String(this.samples.filter((s) => !s.isClass).reduce((n, s) => n + s.repeats, 0)),
      ss_num_reg_images: String(this.samples.filter((s) => s.isClass).length),
      ss_num_batches_per_epoch: String(this.stepsPerEpoch),
      ss_resolution: `(${b.res.width}, ${b.res.height})`,
      ss_enable_bucket: b.enabled ? 'True' : 'False',
      ss_min_bucket_reso: String(b.minSide),
      ss_max_bucket_reso: String(b.maxSide),
      ss_bucket_no_upscale: b.noUpscale ? 'True' : 'False',
      ss_random_crop: this.options.randomCrop ? 'True' : 'False',
      ss_shuffle_caption: this.options.caption?.shuffle ? 'True' : 'False',
      ss_keep_tokens: String(this.options.caption?.keepTokens ?? 0),
      ss_caption_dropout_rate: String(this.options.caption?.captionDropout ?? 0),
      ss_caption_dropout_every_n_epochs: String(this.options.caption?.captionDropoutEveryNEpochs ?? 0),
      ss_caption_tag_dropout_rate: String(this.options.caption?.tagDropout ?? 0),
    };
  }
}

interface ScanContext {
  sharp: SharpModule;
  o: DatasetOptions;
  bucketOpts: BucketOptions;
  buckets: Size[];
  maxPixels: number;
  capExt: string;
  maskRoot: string | null;
}
type Draft = Omit<ImageSample, 'index' | 'repeats'> & { subsetRepeats: number };
interface ScanResult {
  draft: Draft | null;
  skipped: SkippedFile[];
  warnings: string[];
}

/** One image's header, caption, mask and bucket; null (with a message in out) when it cannot be used. */
async function scanImage(ctx: ScanContext, file: string, name: string, sub: Subset, out: ScanResult): Promise<Draft | null> {
  const { sharp, o, bucketOpts, buckets, maxPixels, capExt, maskRoot } = ctx;
  const { skipped, warnings } = out;
  const st = statSync(file);
  // 1. The header only: a 20000×20000 PNG of a few bytes is refused here, before any pixel exists.
  let meta;
  try {
    meta = await sharp(file, { limitInputPixels: false }).metadata();
  } catch (e) {
    skipped.push(unreadable(name, file, e, 'header'));
    return null;
  }
  const { width, height } = orientedSize(meta);
  if (!(width > 0 && height > 0)) {
    skipped.push({ file, message: `${name}: the image has no size (${width}×${height}); it is skipped` });
    return null;
  }
  if (width * height > maxPixels) {
    skipped.push({ file, message: `${name}: the image is ${width}×${height} (${Math.round((width * height) / 1e6)} megapixels), over the ${Math.floor(maxPixels / 1e6)}-megapixel limit; downscale it (4096 pixels on the long side is plenty) and add it again; it is skipped` });
    return null;
  }
  // 2. Decode once, small, so a damaged file is reported now rather than mid-training.
  if (o.verify ?? true) {
    try {
      await sharp(file, { limitInputPixels: maxPixels, failOn: 'truncated' }).resize(32, 32, { fit: 'inside' }).raw().toBuffer();
    } catch (e) {
      skipped.push(unreadable(name, file, e, 'pixels'));
      return null;
    }
  }
  const choice = selectBucket(width, height, bucketOpts, buckets);
  const c = bucketConfig(bucketOpts);
  if (choice.bucket.width < c.step || choice.bucket.height < c.step) {
    skipped.push({ file, message: `${name}: the image is ${width}×${height}, smaller than one ${c.step}-pixel bucket step, and upscaling is off; it is skipped` });
    return null;
  }
  const up = Math.max(choice.resized.width / width, choice.resized.height / height);
  if (up > 2) warnings.push(`${name}: ${width}×${height} is small for ${c.res.width}×${c.res.height} training; it is enlarged ${up.toFixed(1)}× and will look soft`);
  // 3. Caption: the .txt, else the kohya folder words, else the class prompt or the file name.
  const stem = file.slice(0, file.length - extname(file).length);
  const capFile = stem + capExt;
  let caption = '';
  let source: ImageSample['captionSource'] = 'none';
  let emptyFile = false;
  if (existsSync(capFile)) {
    const { text, note } = decodeCaption(readFileSync(capFile));
    if (note) warnings.push(`${name.slice(0, name.length - extname(name).length)}${capExt} ${note}`);
    if (text !== '') [caption, source] = [text, 'file'];
    else emptyFile = true;
  }
  if (source === 'none') {
    if (sub.words) [caption, source] = [sub.words, 'folder'];
    else if (sub.isClass) {
      if (o.classPrompt) [caption, source] = [cleanCaption(o.classPrompt), 'class-prompt'];
    } else if (o.fileNameCaptions ?? true) {
      const fromName = captionFromFileName(file);
      if (fromName) [caption, source] = [fromName, 'filename'];
    }
    if (emptyFile) {
      const instead = source === 'none' ? 'an empty caption' : `the ${source === 'folder' ? 'folder words' : source === 'filename' ? 'file name' : 'class prompt'} "${caption}"`;
      warnings.push(`${name.slice(0, name.length - extname(name).length)}${capExt} is empty; ${name} trains on ${instead} instead`);
    }
  } else if (sub.words && (o.folderWordsPrefix ?? true) && !caption.toLowerCase().startsWith(sub.words.toLowerCase())) {
    caption = `${sub.words}, ${caption}`;
  }
  // 4. Mask: <stem>.mask.png beside the image, or <stem>.png in the mask folder.
  const candidates = [...MASK_EXT.map((e) => `${stem}.mask${e}`), ...(maskRoot ? MASK_EXT.map((e) => join(maskRoot, basename(stem) + e)) : [])];
  const found = candidates.find((f) => existsSync(f)) ?? null;
  let maskFile = found;
  if (found) {
    try {
      const mm = orientedSize(await sharp(found, { limitInputPixels: maxPixels }).metadata());
      if (Math.abs(mm.width / mm.height - width / height) > 0.01 * (width / height)) {
        warnings.push(`${name}: its mask ${basename(found)} is ${mm.width}×${mm.height}, a different shape from the image (${width}×${height}); the mask is ignored`);
        maskFile = null;
      }
    } catch (e) {
      warnings.push(`${name}: its mask ${basename(found)} cannot be read (${firstLine(e)}); the mask is ignored`);
      maskFile = null;
    }
  }
  return {
    file,
    name,
    subset: sub.key,
    isClass: sub.isClass,
    width,
    height,
    hasAlpha: meta.hasAlpha ?? false,
    format: String(meta.format),
    caption,
    captionSource: source,
    maskFile,
    subsetRepeats: sub.repeats,
    bucket: choice.bucket,
    resized: choice.resized,
    arError: choice.arError,
    mtimeMs: st.mtimeMs,
    size: st.size,
  };
}
