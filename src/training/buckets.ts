// Aspect-ratio buckets as kohya's BucketManager makes and picks them. Split from dataset.ts,
// which re-exports it.
import { DatasetError } from './captions.ts';

// ---- aspect-ratio buckets (kohya BucketManager) ----------------------------------------------

export interface Size {
  width: number;
  height: number;
}

export interface BucketOptions {
  /** Training size; buckets keep width×height ≤ its area. */
  resolution: number | readonly [number, number];
  /** false: one bucket, the resolution itself. Default true. */
  enabled?: boolean;
  /** Bucket sides are multiples of this (64 for SD; 8 suits tiny test models). Default 64. */
  step?: number;
  /** Default resolution/2, as kohya's 256 for 512. */
  minSide?: number;
  /** Default resolution×2, as kohya's 1024 for 512. */
  maxSide?: number;
  /** Never enlarge an image: its bucket is its own size rounded down (kohya bucket_no_upscale). */
  noUpscale?: boolean;
}

export interface BucketConfig {
  res: Size;
  enabled: boolean;
  step: number;
  minSide: number;
  maxSide: number;
  noUpscale: boolean;
}

export function bucketConfig(o: BucketOptions): BucketConfig {
  const [w, h] = typeof o.resolution === 'number' ? [o.resolution, o.resolution] : o.resolution;
  const step = o.step ?? 64;
  const floorStep = (x: number): number => Math.max(step, Math.floor(x / step) * step);
  const c = {
    res: { width: w, height: h },
    enabled: o.enabled ?? true,
    step,
    minSide: o.minSide ?? floorStep(Math.min(w, h) / 2),
    maxSide: o.maxSide ?? floorStep(Math.max(w, h) * 2),
    noUpscale: o.noUpscale ?? false,
  };
  if (!(step >= 1 && Number.isInteger(step))) throw new DatasetError(`the bucket step must be a whole number of pixels, not ${step}`);
  if (w % step || h % step) throw new DatasetError(`the resolution ${w}×${h} is not a multiple of the bucket step ${step}`);
  if (c.minSide % step || c.maxSide % step || c.minSide > c.maxSide) {
    throw new DatasetError(`the bucket sides ${c.minSide}..${c.maxSide} must be multiples of ${step}, smallest first`);
  }
  return c;
}

/** kohya make_bucket_resolutions: the square, and every (w, h) of area ≤ max within min..max. */
export function makeBuckets(o: BucketOptions): Size[] {
  const c = bucketConfig(o);
  if (!c.enabled) return [c.res];
  const area = c.res.width * c.res.height;
  const seen = new Map<string, Size>();
  const add = (width: number, height: number): void => void seen.set(`${width}x${height}`, { width, height });
  const side = Math.floor(Math.sqrt(area) / c.step) * c.step;
  add(side, side);
  for (let width = c.minSide; width <= c.maxSide; width += c.step) {
    const height = Math.min(c.maxSide, Math.floor(Math.floor(area / width) / c.step) * c.step);
    if (height >= c.minSide) {
      add(width, height);
      add(height, width);
    }
  }
  return [...seen.values()].sort((a, b) => a.width - b.width || a.height - b.height);
}

export interface BucketChoice {
  bucket: Size;
  /** The size the image is resized to before cropping: it covers the bucket. */
  resized: Size;
  /** bucket aspect − image aspect (kohya's ar_error). */
  arError: number;
}

/** kohya select_bucket: the nearest aspect ratio, or the image's own size without upscaling. */
export function selectBucket(width: number, height: number, o: BucketOptions, buckets: readonly Size[] = makeBuckets(o)): BucketChoice {
  const c = bucketConfig(o);
  const ar = width / height;
  let bucket: Size;
  let resized: Size;
  if (!c.noUpscale || !c.enabled) {
    bucket = buckets.find((b) => b.width === width && b.height === height) ?? buckets.reduce((best, b) => (Math.abs(b.width / b.height - ar) < Math.abs(best.width / best.height - ar) ? b : best));
    // Cover: match the side that leaves the other one overhanging, then crop that one.
    const scale = ar > bucket.width / bucket.height ? bucket.height / height : bucket.width / width;
    resized = { width: Math.max(bucket.width, Math.round(width * scale)), height: Math.max(bucket.height, Math.round(height * scale)) };
  } else {
    const area = c.res.width * c.res.height;
    const floor = (x: number): number => Math.floor(Math.round(x) / c.step) * c.step;
    if (width * height > area) {
      // Shrink to the area keeping the aspect; round whichever side loses less aspect.
      const rw = Math.sqrt(area * ar);
      const rh = area / rw;
      const bw = floor(rw);
      const arW = bw / floor(bw / ar);
      const bh = floor(rh);
      const arH = floor(bh * ar) / bh;
      resized = Math.abs(arW - ar) < Math.abs(arH - ar) ? { width: bw, height: Math.round(bw / ar) } : { width: Math.round(bh * ar), height: bh };
    } else resized = { width, height };
    bucket = { width: resized.width - (resized.width % c.step), height: resized.height - (resized.height % c.step) };
  }
  return { bucket, resized, arError: bucket.width / bucket.height - ar };
}

