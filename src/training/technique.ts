// The small interface the four fine-tuning techniques share (STYLE rule 5): what is trainable,
// how the model is patched, and how the result is saved. The loop (loop.ts) knows nothing else
// about a technique.
import type * as T from '../torch/index.ts';
import type { StableDiffusion } from '../models/load.ts';
import type { PromptEmbeddings } from '../sampling/conditioning.ts';

export type TechniqueKind = 'dreambooth' | 'lora' | 'embedding' | 'hypernetwork';

/** Parameters trained at one learning rate (UNet and text encoder can differ). */
export interface TrainableGroup {
  /** 'unet', 'text_encoder', 'embedding', 'hypernetwork' — names the rate in logs and configs. */
  name: string;
  /** Checkpoint names → the live parameters (leaf tensors with requiresGrad set). */
  params: [string, T.Tensor][];
  lr: number;
  weightDecay: number;
}

export interface SaveInfo {
  /** Optimizer steps done. */
  step: number;
  /** The trained-on model's name and A1111 short hash. */
  baseName: string;
  baseHash: string;
  /** The run's settings, for metadata (kohya ss_* keys, A1111 fields). */
  settings: Record<string, string | number | boolean>;
}

export interface Technique {
  readonly kind: TechniqueKind;
  readonly model: StableDiffusion;
  /** The parameter groups; the same tensors for the whole run (the optimizer holds them). */
  groups(): TrainableGroup[];
  /** Whether text conditioning needs gradients (TI, a trained text encoder). */
  readonly needsTextGrad: boolean;
  /** Textual-inversion vectors to insert in prompts (the trained ones, live). */
  embeddings(): PromptEmbeddings | undefined;
  /** Trigger word added to captions/templates ([name]); undefined when none. */
  readonly triggerWord?: string;
  /** Writes the product (LoRA file, embedding, hypernetwork, checkpoint) atomically. */
  save(path: string, info: SaveInfo): void;
  /** Default extension of the product file ('.safetensors', '.pt', or '' for a folder). */
  readonly extension: string;
  /** With initFrom: a sentence on what the run continues (the file, its step and shape). */
  readonly continued?: string;
  /** Switches adapters off (true) / on (false) to compute the base model's prediction. */
  bypass?(on: boolean): void;
  /** Undoes the patching and frees the technique's tensors; the model is as it was. */
  dispose(): void;
}
