// Images sent in requests (img2img's init image, A1111's init_images): base64 → RGB pixels via
// sharp, which decodes on libuv's thread pool, so neither the server nor a worker blocks on it.
import sharp from 'sharp';
import type { RgbImage } from '../formats/png.ts';
import { HttpError } from './schema.ts';

export const MAX_INIT_SIDE = 4096;

/** A base64 image (a data: URL or bare base64): PNG, JPEG or WebP, at most 4096×4096. */
export async function decodeImage(b64: string, field = 'init_image'): Promise<RgbImage> {
  const m = /^data:image\/[a-z+]+;base64,(.*)$/is.exec(b64);
  const buf = Buffer.from(m ? m[1] : b64, 'base64');
  if (buf.length < 8) throw new HttpError(400, `${field} is not a base64 image`, field);
  try {
    const meta = await sharp(buf).metadata();
    if (!['png', 'jpeg', 'webp'].includes(meta.format ?? '')) throw new Error(`it is ${meta.format ?? 'not an image'}`);
    if ((meta.width ?? 0) > MAX_INIT_SIDE || (meta.height ?? 0) > MAX_INIT_SIDE) throw new Error(`it is larger than ${MAX_INIT_SIDE}×${MAX_INIT_SIDE}`);
    const { data, info } = await sharp(buf).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height, channels: 3, data: new Uint8Array(data) };
  } catch (e) {
    throw new HttpError(400, `${field} cannot be read (${(e as Error).message}): send a PNG, JPEG or WebP as base64`, field);
  }
}

/** A batch as one picture: same-size RGB images side by side, left to right (a live preview of a batch). */
export function sideBySide(images: readonly RgbImage[]): RgbImage {
  if (images.length === 0) throw new Error('sideBySide: no images');
  const { width: w, height: h } = images[0];
  if (images.length === 1) return images[0];
  const out = new Uint8Array(w * images.length * h * 3);
  images.forEach((img, k) => {
    if (img.width !== w || img.height !== h || img.channels !== 3) throw new Error(`sideBySide: image ${k} is ${img.width}×${img.height}×${img.channels}, not ${w}×${h}×3`);
    for (let y = 0; y < h; y++) out.set(img.data.subarray(y * w * 3, (y + 1) * w * 3), (y * w * images.length + k * w) * 3);
  });
  return { width: w * images.length, height: h, channels: 3, data: out };
}
