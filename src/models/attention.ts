// Transformer parts of the SD UNet, named as diffusers names them (models/attention.py,
// attention_processor.py, transformer_2d.py). Spec: sd-formats.md §3.2 "SpatialTransformer".
import * as T from '../torch/index.ts';
import { type Tensor, tidy, nn } from '../torch/index.ts';

export interface ModelOptions {
  /** Attention kernel: ATen's fused op where the libtorch has it, or the exact math path. */
  attention?: T.AttentionImpl;
}

/** `to_out` = [Linear, Dropout] in diffusers, hence the `.0` in `to_out.0.weight`. */
class ToOut extends nn.Module {
  constructor(vb: nn.VarBuilder, inner: number, dim: number) {
    super();
    this.child(vb, 0, (v) => new nn.Linear(v, inner, dim));
    this.addModule(1, new nn.Dropout(0));
  }
  forward(x: Tensor): Tensor {
    return this.sub('0').forward(x);
  }
}

/**
 * Multi-head attention (diffusers `Attention` with the default processor): q from x, k and v from
 * the context (x itself for self-attention), softmax(q kᵀ / √d) v, then to_out.
 * Hypernetworks wrap to_k/to_v and LoRA wraps all four projections by module path.
 */
export class Attention extends nn.Module {
  readonly headDim: number;
  constructor(
    vb: nn.VarBuilder,
    readonly queryDim: number,
    contextDim: number,
    readonly heads: number,
    headDim: number,
    readonly opts: ModelOptions & { bias?: boolean } = {},
  ) {
    super();
    this.headDim = headDim;
    const inner = heads * headDim;
    const bias = opts.bias ?? false;
    this.child(vb, 'to_q', (v) => new nn.Linear(v, queryDim, inner, { bias }));
    this.child(vb, 'to_k', (v) => new nn.Linear(v, contextDim, inner, { bias }));
    this.child(vb, 'to_v', (v) => new nn.Linear(v, contextDim, inner, { bias }));
    this.child(vb, 'to_out', (v) => new ToOut(v, inner, queryDim));
  }

  /** x [B, N, C], context [B, M, Cctx] (null = self-attention) → [B, N, C]. */
  forward(x: Tensor, context: Tensor | null = null): Tensor {
    return tidy(() => {
      const [b, n] = x.shape;
      const ctx = context ?? x;
      const m = ctx.size(1);
      const h = this.heads;
      const d = this.headDim;
      // [B, L, h·d] → [B, h, L, d]
      const q = this.sub('to_q').forward(x).reshape(b, n, h, d).transpose(1, 2);
      const k = this.sub('to_k').forward(ctx).reshape(b, m, h, d).transpose(1, 2);
      const v = this.sub('to_v').forward(ctx).reshape(b, m, h, d).transpose(1, 2);
      const o = T.scaledDotProductAttention(q, k, v, { impl: this.opts.attention }).transpose(1, 2).reshape(b, n, h * d);
      return this.sub('to_out').forward(o);
    });
  }
}

/** GEGLU feed-forward: proj → (a, gate) halves → a·gelu(gate) → Linear (diffusers FeedForward). */
class GEGLU extends nn.Module {
  constructor(vb: nn.VarBuilder, dim: number, inner: number) {
    super();
    this.child(vb, 'proj', (v) => new nn.Linear(v, dim, inner * 2));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [a, gate] = this.sub('proj').forward(x).chunk(2, -1);
      return a.mul(gate.gelu());
    });
  }
}

export class FeedForward extends nn.Module {
  constructor(vb: nn.VarBuilder, dim: number, mult = 4) {
    super();
    const net = this.child(vb, 'net', () => new nn.ModuleList<nn.Module>());
    const nvb = vb.pp('net');
    net.push(new GEGLU(nvb.pp(0), dim, dim * mult));
    net.push(new nn.Dropout(0));
    net.push(new nn.Linear(nvb.pp(2), dim * mult, dim));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const net = this.getModule('net');
      const h = (net.getModule('0') as GEGLU).forward(x);
      return (net.getModule('2') as nn.Module & nn.Forward).forward(h);
    });
  }
}

/** norm1 → self-attention, norm2 → cross-attention, norm3 → GEGLU, each with a residual. */
export class BasicTransformerBlock extends nn.Module {
  readonly attn1: Attention;
  readonly attn2: Attention;
  readonly ff: FeedForward;
  constructor(vb: nn.VarBuilder, dim: number, heads: number, headDim: number, contextDim: number, opts: ModelOptions) {
    super();
    this.child(vb, 'norm1', (v) => new nn.LayerNorm(v, dim));
    this.attn1 = this.child(vb, 'attn1', (v) => new Attention(v, dim, dim, heads, headDim, opts));
    this.child(vb, 'norm2', (v) => new nn.LayerNorm(v, dim));
    this.attn2 = this.child(vb, 'attn2', (v) => new Attention(v, dim, contextDim, heads, headDim, opts));
    this.child(vb, 'norm3', (v) => new nn.LayerNorm(v, dim));
    this.ff = this.child(vb, 'ff', (v) => new FeedForward(v, dim));
  }
  forward(x: Tensor, context: Tensor): Tensor {
    return tidy(() => {
      const h1 = x.add(this.attn1.forward(this.sub('norm1').forward(x)));
      const h2 = h1.add(this.attn2.forward(this.sub('norm2').forward(h1), context));
      return h2.add(this.ff.forward(this.sub('norm3').forward(h2)));
    });
  }
}

/**
 * Transformer2DModel (LDM SpatialTransformer): GroupNorm(eps 1e-6) → proj_in → blocks → proj_out
 * → + input. SD1 projects with 1×1 convs on NCHW; SD2 reshapes first and uses Linear.
 */
export class Transformer2D extends nn.Module {
  readonly blocks: nn.ModuleList<BasicTransformerBlock>;
  constructor(
    vb: nn.VarBuilder,
    readonly channels: number,
    heads: number,
    contextDim: number,
    readonly o: { groups: number; linear: boolean; depth: number } & ModelOptions,
  ) {
    super();
    const headDim = channels / heads;
    if (!Number.isInteger(headDim)) throw new Error(`${vb.prefix}: ${channels} channels do not split into ${heads} heads`);
    this.child(vb, 'norm', (v) => new nn.GroupNorm(v, o.groups, channels, 1e-6));
    const proj = (v: nn.VarBuilder) => (o.linear ? new nn.Linear(v, channels, channels) : new nn.Conv2d(v, channels, channels, 1));
    this.child(vb, 'proj_in', proj);
    this.blocks = this.child(vb, 'transformer_blocks', (v) =>
      new nn.ModuleList(Array.from({ length: o.depth }, (_, i) => new BasicTransformerBlock(v.pp(i), channels, heads, headDim, contextDim, o))));
    this.child(vb, 'proj_out', proj);
  }

  forward(x: Tensor, context: Tensor): Tensor {
    return tidy(() => {
      const [b, c, hgt, wid] = x.shape;
      const n = this.sub('norm').forward(x);
      let h: Tensor;
      if (this.o.linear) {
        h = this.sub('proj_in').forward(n.permute(0, 2, 3, 1).reshape(b, hgt * wid, c));
      } else {
        h = this.sub('proj_in').forward(n).permute(0, 2, 3, 1).reshape(b, hgt * wid, c);
      }
      for (const blk of this.blocks) h = blk.forward(h, context);
      let out: Tensor;
      if (this.o.linear) {
        out = this.sub('proj_out').forward(h).reshape(b, hgt, wid, c).permute(0, 3, 1, 2);
      } else {
        out = this.sub('proj_out').forward(h.reshape(b, hgt, wid, c).permute(0, 3, 1, 2).contiguous());
      }
      return out.add(x);
    });
  }
}
