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
