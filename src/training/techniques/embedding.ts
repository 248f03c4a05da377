// Textual inversion (§6.3, §6.4): every model weight frozen; n new vectors in CLIP's token-
// embedding space are trained, inserted where the trigger word stands in the captions (A1111's
// EmbeddingsWithFixes, via the conditioning layer). Products: A1111 `.pt` or `.safetensors`
// (`emb_params`), both of which A1111, Forge, ComfyUI and sdtune load.
import * as T from '../../torch/index.ts';
import { readSafetensorsHeader, saveSafetensors } from '../../formats/safetensors.ts';
import { loadEmbeddingFile } from '../../formats/embedding-file.ts';
import { saveTorchFile } from '../../formats/torchfile.ts';
import { disposeEmbedding, embeddingToA1111, embeddingToKohya, modelspecArchitecture, type Embedding } from '../../formats/layouts/index.ts';
import type { StableDiffusion } from '../../models/load.ts';
import { promptChunks, type PromptEmbeddings } from '../../sampling/conditioning.ts';
import type { SaveInfo, Technique, TrainableGroup } from '../technique.ts';

export interface EmbeddingOptions {
  /** The trigger word (A1111: the file stem; sanitised to letters, digits and ._- ). */
  name: string;
  /** Vectors per token (A1111 1…75). */
  vectors?: number;
  /** Text whose token vectors start the training (A1111 default '*'). */
  initText?: string;
  lr?: number;
  /** Continue from this embedding file (A1111 .pt, kohya or diffusers .safetensors): its vectors and step count. */
  initFrom?: string;
}

/** A1111 create_embedding's name rule: alphanumerics and `._- ` only. */
export function sanitizeEmbeddingName(name: string): string {
  const clean = name.replace(/[^\p{L}\p{N}._\- ]/gu, '').trim();
  if (clean === '') throw new Error(`embedding name ${JSON.stringify(name)} has no letters or digits left after removing punctuation; pick a word like "sksheart"`);
  return clean;
}

export class EmbeddingTechnique implements Technique {
  readonly kind = 'embedding';
  readonly needsTextGrad = true;
  readonly extension = '.safetensors';
  readonly triggerWord: string;
  readonly vec: T.Tensor;
  private readonly lr: number;
  readonly continued?: string;
  /** Steps the vectors had been trained before this run (the file's A1111 `step`); saved steps count on from it. */
  readonly initialStep: number = 0;

  constructor(readonly model: StableDiffusion, o: EmbeddingOptions) {
    const n = o.vectors ?? 1;
    if (!Number.isInteger(n) || n < 1 || n > 75) throw new Error(`vectors per token must be 1 to 75 (got ${n})`);
    this.triggerWord = sanitizeEmbeddingName(o.name);
    if (model.tokenizer.encode(this.triggerWord).length === 0) throw new Error(`the embedding name "${this.triggerWord}" tokenizes to nothing; pick a word`);
    this.lr = o.lr ?? 0.005;
    model.unet.requiresGrad_(false);
    model.textEncoder.requiresGrad_(false);
    model.vae.requiresGrad_(false);
    const dim = model.textEncoder.cfg.hiddenSize;
    if (o.initFrom) {
      const { vec, step, what } = continuedVectors(o.initFrom, dim);
      this.vec = T.keep(T.noGrad(() => T.tidy(() => vec.to('float32').to(model.device).clone())));
      vec.dispose();
      this.initialStep = step;
      this.continued = `continuing the embedding ${what}`;
    } else {
      // A1111 create_embedding: vec[i] = embedded[floor(i·k/n)] of the init text's k token vectors.
      const init = o.initText ?? '*';
      const ids = model.tokenizer.encode(init).slice(0, n);
      this.vec = T.keep(T.noGrad(() => T.tidy(() => {
        if (ids.length === 0) return T.zeros([n, dim], { device: model.device });
        const rows = model.textEncoder.embeddings.tokens(T.tensor([ids], { dtype: 'int64', device: model.device })).select(0, 0);
        const pick = Array.from({ length: n }, (_, i) => Math.floor((i * ids.length) / n));
        return rows.indexSelect(0, T.tensor(pick, { dtype: 'int64', device: model.device })).clone();
      })));
    }
    this.vec.requiresGrad_(true);
  }

  groups(): TrainableGroup[] {
    // A1111 trains embeddings with AdamW and weight decay 0.
    return [{ name: 'embedding', params: [['emb_params', this.vec]], lr: this.lr, weightDecay: 0 }];
  }

  embeddings(): PromptEmbeddings {
    return new Map([[this.triggerWord, this.vec]]);
  }

  /** Whether a caption trains the vectors: the word is matched on token ids, as encoding does. */
  appearsIn(caption: string): boolean {
    return promptChunks(this.model, caption, { embeddings: this.embeddings() }).some((c) => c.embeddings.length > 0);
  }

  /** The trained vectors as the formats layer's Embedding (tensors are views of the live ones). */
  toEmbedding(info: SaveInfo): Embedding {
    return { name: this.triggerWord, vectors: { te: this.vec }, step: this.initialStep + info.step, checkpoint: { hash: info.baseHash || null, name: info.baseName }, layout: 'a1111' };
  }

  save(path: string, info: SaveInfo): void {
    const e = this.toEmbedding(info);
    const detached = T.noGrad(() => T.tidy(() => this.vec.detach().cpu().contiguous().clone()));
    try {
      const plain: Embedding = { ...e, vectors: { te: detached } };
      if (/\.(pt|bin)$/i.test(path)) {
        const obj = embeddingToA1111(plain);
        saveTorchFile(path, obj as never);
        obj.string_to_param['*'].dispose();
        return;
      }
      const sd = embeddingToKohya(plain);
      const family = this.model.family;
      saveSafetensors(path, sd, {
        'modelspec.sai_model_spec': '1.0.1',
        'modelspec.architecture': modelspecArchitecture(family, 'textual-inversion'),
        'modelspec.implementation': 'https://github.com/Stability-AI/generative-models',
        'modelspec.title': this.triggerWord,
        'modelspec.trigger_phrase': this.triggerWord,
        'sdtune.base_model': info.baseName,
        'sdtune.base_model_hash': info.baseHash,
        'sdtune.step': String(this.initialStep + info.step),
      });
      for (const t of sd.values()) t.dispose();
    } finally {
      detached.dispose();
    }
  }

  dispose(): void {
    this.vec.dispose();
  }
}

/** The vectors and step of an embedding file to continue, checked against the text encoder's width. */
function continuedVectors(path: string, dim: number): { vec: T.Tensor; step: number; what: string } {
  const e = loadEmbeddingFile(path);
  try {
    const te = e.vectors.te;
    if (!te) throw new Error(`${path}: an SDXL embedding (clip_l and clip_g vectors) cannot be continued on this ${dim}-wide text encoder; continue it on an SDXL model, or start a new embedding`);
    const [n, width] = te.shape;
    if (width !== dim) {
      const fam = (w: number) => (w === 768 ? ' (SD 1.x)' : w === 1024 ? ' (SD 2.x)' : '');
      throw new Error(`${path}: its vectors are ${width} wide${fam(width)}, this model's text encoder is ${dim} wide${fam(dim)}; continue it on the model it was trained for, or start a new embedding`);
    }
    // sdtune's .safetensors keep the count in the header; A1111's .pt in the pickle.
    const meta = /\.safetensors$/i.test(path) ? readSafetensorsHeader(path).metadata : {};
    const step = e.step ?? (Number.isInteger(Number(meta['sdtune.step'])) ? Number(meta['sdtune.step']) : 0);
    const name = path.replace(/^.*[\\/]/, '');
    return { vec: te.clone(), step, what: `${name}: ${n} vector${n === 1 ? '' : 's'} of ${width}, trained ${step} steps before; the vectors and initText settings are the file's` };
  } finally {
    disposeEmbedding(e);
  }
}
