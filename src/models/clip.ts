// CLIP text encoder (transformers CLIPTextModel) with transformers' module paths under
// `text_model.`: SD1's OpenAI ViT-L/14 and SD2's OpenCLIP ViT-H/14 as diffusers stores it.
// Follows transformers 4.34 models/clip/modeling_clip.py; spec: sd-formats.md §3.1 and §3.4.
// Under gradient checkpointing each encoder layer that trains, or that a trained input (textual
// inversion's vectors) passes through, is a checkpoint() segment (as transformers'
// gradient_checkpointing_enable); a frozen encoder on plain tokens runs as it is.
import * as T from '../torch/index.ts';
import { type Tensor, checkpoint, isCheckpointing, tidy, nn } from '../torch/index.ts';
import type { ClipTextConfig } from './config.ts';
import type { ModelOptions } from './attention.ts';

export class ClipAttention extends nn.Module {
  readonly headDim: number;
  constructor(vb: nn.VarBuilder, readonly dim: number, readonly heads: number, readonly opts: ModelOptions) {
    super();
    this.headDim = dim / heads;
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) this.child(vb, n, (v) => new nn.Linear(v, dim, dim));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [b, n] = x.shape;
      const split = (t: Tensor) => t.reshape(b, n, this.heads, this.headDim).transpose(1, 2);
      const q = split(this.sub('q_proj').forward(x));
      const k = split(this.sub('k_proj').forward(x));
      const v = split(this.sub('v_proj').forward(x));
      // Causal mask: token i sees tokens ≤ i. SD passes no padding mask (§3.1).
      const o = T.scaledDotProductAttention(q, k, v, { causal: true, impl: this.opts.attention });
      return this.sub('out_proj').forward(o.transpose(1, 2).reshape(b, n, this.dim));
    });
  }
}

export class ClipMlp extends nn.Module {
  constructor(vb: nn.VarBuilder, dim: number, inner: number, readonly act: ClipTextConfig['act']) {
    super();
    this.child(vb, 'fc1', (v) => new nn.Linear(v, dim, inner));
    this.child(vb, 'fc2', (v) => new nn.Linear(v, inner, dim));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => this.sub('fc2').forward(nn.activate(this.sub('fc1').forward(x), this.act)));
  }
}

class ClipLayer extends nn.Module {
  constructor(vb: nn.VarBuilder, c: ClipTextConfig, opts: ModelOptions) {
    super();
    this.child(vb, 'self_attn', (v) => new ClipAttention(v, c.hiddenSize, c.heads, opts));
    this.child(vb, 'layer_norm1', (v) => new nn.LayerNorm(v, c.hiddenSize, c.layerNormEps));
    this.child(vb, 'mlp', (v) => new ClipMlp(v, c.hiddenSize, c.intermediateSize, c.act));
    this.child(vb, 'layer_norm2', (v) => new nn.LayerNorm(v, c.hiddenSize, c.layerNormEps));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const h = x.add(this.sub('self_attn').forward(this.sub('layer_norm1').forward(x)));
      return h.add(this.sub('mlp').forward(this.sub('layer_norm2').forward(h)));
    });
  }
}

class ClipEmbeddings extends nn.Module {
  readonly tokenEmbedding: nn.Embedding;
  readonly positionEmbedding: nn.Embedding;
  constructor(vb: nn.VarBuilder, c: ClipTextConfig) {
    super();
    this.tokenEmbedding = this.child(vb, 'token_embedding', (v) => new nn.Embedding(v, c.vocabSize, c.hiddenSize));
    this.positionEmbedding = this.child(vb, 'position_embedding', (v) => new nn.Embedding(v, c.maxPositions, c.hiddenSize));
  }
  /** Token vectors for ids [B, L] (textual inversion replaces rows of these before positions are added). */
  tokens(ids: Tensor): Tensor {
    return this.tokenEmbedding.forward(ids);
  }
  /** tokens [B, L, D] + position vectors 0..L-1. */
  withPositions(tokens: Tensor): Tensor {
    return tidy(() => {
      const L = tokens.size(1);
      if (L > this.positionEmbedding.num) throw new Error(`CLIP: ${L} tokens exceed the ${this.positionEmbedding.num} positions (split prompts into 75-token chunks)`);
      return tokens.add(this.positionEmbedding.weight.slice(0, 0, L).unsqueeze(0));
    });
  }
}

export interface ClipOutput {
  /** final_layer_norm(output of the last layer): SD's conditioning (clip skip 1). */
  lastHidden: Tensor;
  /** hidden[0] = embeddings, hidden[k] = output of layer k (before the final LN). Only if asked. */
  hidden: Tensor[];
  /** last-hidden at the EOS position (argmax of ids for legacy eos_token_id 2). */
  pooled: Tensor;
}

export class CLIPTextModel extends nn.Module {
  readonly embeddings: ClipEmbeddings;
  readonly layers: nn.ModuleList<ClipLayer>;

  constructor(vb: nn.VarBuilder, readonly cfg: ClipTextConfig, opts: ModelOptions = {}) {
    super();
    const tvb = vb.pp('text_model');
    const inner = new nn.ModuleList<nn.Module>();
    this.addModule('text_model', inner);
    // text_model.{embeddings, encoder.layers.N, final_layer_norm}
    this.embeddings = new ClipEmbeddings(tvb.pp('embeddings'), cfg);
    const encoder = new nn.ModuleList<nn.Module>();
    this.layers = new nn.ModuleList(Array.from({ length: cfg.layers }, (_, i) => new ClipLayer(tvb.pp('encoder').pp('layers').pp(i), cfg, opts)));
    const finalLn = new nn.LayerNorm(tvb.pp('final_layer_norm'), cfg.hiddenSize, cfg.layerNormEps);
    named(inner, 'embeddings', this.embeddings);
    named(encoder, 'layers', this.layers);
    named(inner, 'encoder', encoder);
    named(inner, 'final_layer_norm', finalLn);
  }

  get finalLayerNorm(): nn.LayerNorm {
    return this.getModule('text_model.final_layer_norm') as nn.LayerNorm;
  }

  /**
   * ids [B, L] (int64) → outputs. `tokenVectors` replaces the token embeddings (textual inversion
   * builds them itself); `clipSkip` is A1111's (1 = last layer, 2 = penultimate + final LN).
   */
  forward(ids: Tensor, o: { clipSkip?: number; tokenVectors?: Tensor; keepHidden?: boolean } = {}): ClipOutput {
    return tidy(() => {
      const skip = Math.max(1, o.clipSkip ?? 1);
      if (skip > this.cfg.layers) throw new Error(`clip skip ${skip} is more than the encoder's ${this.cfg.layers} layers`);
      const tok = o.tokenVectors ?? this.embeddings.tokens(ids);
      let h = this.embeddings.withPositions(tok);
      const hidden: Tensor[] = [h];
      const stopAt = this.cfg.layers - (skip - 1);
      for (let i = 0; i < stopAt; i++) {
        const layer = this.layers.at(i);
        const segment = isCheckpointing() && (h.requiresGrad || layer.parameters().some((p) => p.requiresGrad));
        h = segment ? checkpoint((x) => [layer.forward(x)], [h])[0] : layer.forward(h);
        if (o.keepHidden) hidden.push(h);
      }
      const last = this.finalLayerNorm.forward(h);
      const pooled = this.pool(last, ids);
      return { lastHidden: last, hidden: o.keepHidden ? hidden : [], pooled };
    });
  }

  private pool(last: Tensor, ids: Tensor): Tensor {
    return tidy(() => {
      // transformers 4.34: legacy configs (eos_token_id 2) pool at argmax(ids); others at the first EOS.
      const pos = this.cfg.eosTokenId === 2 ? ids.argmax(-1) : ids.eq(this.cfg.eosTokenId).to('int32').argmax(-1);
      const rows = T.arange(0, last.size(0), 1, { device: last.device });
      return last.index([rows, pos]);
    });
  }
}

/** Registers m under name in parent (used where a path level has no module of its own). */
function named(parent: nn.ModuleList<nn.Module>, name: string, m: nn.Module): void {
  (parent as unknown as { addModule(n: string, m: nn.Module): void }).addModule(name, m);
}
