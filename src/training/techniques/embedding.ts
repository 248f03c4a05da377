// Textual inversion (§6.3, §6.4): every model weight frozen; n new vectors in CLIP's token-
// embedding space are trained, inserted where the trigger word stands in the captions (A1111's
// EmbeddingsWithFixes, via the conditioning layer). Products: A1111 `.pt` or `.safetensors`
// (`emb_params`), both of which A1111, Forge, ComfyUI and sdtune load.
import * as T from '../../torch/index.ts';
import { saveSafetensors } from '../../formats/safetensors.ts';
import { saveTorchFile } from '../../formats/torchfile.ts';
import { embeddingToA1111, embeddingToKohya, modelspecArchitecture, type Embedding } from '../../formats/layouts/index.ts';
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

  constructor(readonly model: StableDiffusion, o: EmbeddingOptions) {
    const n = o.vectors ?? 1;
    if (!Number.isInteger(n) || n < 1 || n > 75) throw new Error(`vectors per token must be 1 to 75 (got ${n})`);
    this.triggerWord = sanitizeEmbeddingName(o.name);
    if (model.tokenizer.encode(this.triggerWord).length === 0) throw new Error(`the embedding name "${this.triggerWord}" tokenizes to nothing; pick a word`);
    this.lr = o.lr ?? 0.005;
    model.unet.requiresGrad_(false);
    model.textEncoder.requiresGrad_(false);
    model.vae.requiresGrad_(false);
    // A1111 create_embedding: vec[i] = embedded[floor(i·k/n)] of the init text's k token vectors.
    const init = o.initText ?? '*';
    const ids = model.tokenizer.encode(init).slice(0, n);
    const dim = model.textEncoder.cfg.hiddenSize;
    this.vec = T.keep(T.noGrad(() => T.tidy(() => {
      if (ids.length === 0) return T.zeros([n, dim], { device: model.device });
      const rows = model.textEncoder.embeddings.tokens(T.tensor([ids], { dtype: 'int64', device: model.device })).select(0, 0);
      const pick = Array.from({ length: n }, (_, i) => Math.floor((i * ids.length) / n));
      return rows.indexSelect(0, T.tensor(pick, { dtype: 'int64', device: model.device })).clone();
    })));
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
    return { name: this.triggerWord, vectors: { te: this.vec }, step: info.step, checkpoint: { hash: info.baseHash || null, name: info.baseName }, layout: 'a1111' };
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
        'sdtune.step': String(info.step),
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
