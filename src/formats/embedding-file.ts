// Reading a textual-inversion embedding file of any layout (§6.1): A1111 .pt/.bin (a pickled
// dict, read by the restricted unpickler), or .safetensors (kohya emb_params, SDXL clip_l/clip_g,
// diffusers learned_embeds). The prompt word is the file's stem, as in A1111.
import { basename } from 'node:path';
import type * as T from '../torch/index.ts';
import { SafetensorsFile } from './safetensors.ts';
import { loadTorchFile } from './torchfile.ts';
import { embeddingFromObject, embeddingFromStateDict, type Embedding } from './layouts/embedding.ts';

export function loadEmbeddingFile(path: string): Embedding {
  const stem = basename(path).replace(/\.[^.]+$/, '');
  if (!/\.safetensors$/i.test(path)) return embeddingFromObject(loadTorchFile(path), { fileStem: stem });
  const f = SafetensorsFile.open(path);
  const sd = new Map<string, T.Tensor>();
  try {
    for (const k of f.keys()) sd.set(k, f.get(k));
    return embeddingFromStateDict(sd, { fileStem: stem });
  } finally {
    for (const t of sd.values()) t.dispose();
    f.close();
  }
}
