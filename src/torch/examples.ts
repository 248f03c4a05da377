// A small conv + self-attention network: the engine's demo, a training test and the benchmark's
// workload. Its twin in PyTorch is bench/reference.py (same layers, same order, same sizes).
import { Generator, Tensor } from './tensor.ts';
import { tidy } from './scope.ts';
import * as F from './functional.ts';
import { Conv2d, GroupNorm, Linear, Module, type VarBuilder } from './nn.ts';

export interface TinyNetConfig {
  channels: number;
  heads: number;
  inChannels?: number;
}

export class TinyNet extends Module {
  readonly convIn: Conv2d;
  readonly norm1: GroupNorm;
  readonly toQ: Linear;
  readonly toK: Linear;
  readonly toV: Linear;
  readonly toOut: Linear;
  readonly norm2: GroupNorm;
  readonly convMid: Conv2d;
  readonly convOut: Conv2d;

  constructor(
    vb: VarBuilder,
    readonly cfg: TinyNetConfig,
  ) {
    super();
    const c = cfg.channels;
    const cin = cfg.inChannels ?? 4;
    this.convIn = this.child(vb, 'conv_in', (v) => new Conv2d(v, cin, c, 3, { padding: 1 }));
    this.norm1 = this.child(vb, 'norm1', (v) => new GroupNorm(v, 8, c));
    this.toQ = this.child(vb, 'to_q', (v) => new Linear(v, c, c, { bias: false }));
    this.toK = this.child(vb, 'to_k', (v) => new Linear(v, c, c, { bias: false }));
    this.toV = this.child(vb, 'to_v', (v) => new Linear(v, c, c, { bias: false }));
    this.toOut = this.child(vb, 'to_out', (v) => new Linear(v, c, c));
    this.norm2 = this.child(vb, 'norm2', (v) => new GroupNorm(v, 8, c));
    this.convMid = this.child(vb, 'conv_mid', (v) => new Conv2d(v, c, c, 3, { padding: 1 }));
    this.convOut = this.child(vb, 'conv_out', (v) => new Conv2d(v, c, cin, 3, { padding: 1 }));
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [b, , hgt, wid] = x.shape;
      const c = this.cfg.channels;
      const heads = this.cfg.heads;
      const h = this.convIn.forward(x);
      // 1. self-attention over the H·W positions: [B, C, H, W] → [B, HW, C] → heads
      const tokens = this.norm1.forward(h).reshape(b, c, hgt * wid).transpose(1, 2);
      const split = (t: Tensor) => t.reshape(b, hgt * wid, heads, c / heads).transpose(1, 2);
      const q = split(this.toQ.forward(tokens));
      const k = split(this.toK.forward(tokens));
      const v = split(this.toV.forward(tokens));
      const att = F.scaledDotProductAttention(q, k, v).transpose(1, 2).reshape(b, hgt * wid, c);
      const a = this.toOut.forward(att).transpose(1, 2).reshape(b, c, hgt, wid);
      const h2 = h.add(a);
      // 2. a residual conv block
      const m = this.convMid.forward(this.norm2.forward(h2).silu());
      return this.convOut.forward(h2.add(m));
    });
  }
}

/** A fixed learnable target: a shifted, squashed copy of the input plus its channel mean. */
export function makeBatch(batch: number, size: number, inChannels = 4, seed = 1234): { x: Tensor; y: Tensor } {
  return tidy(() => {
    const x = F.randn([batch, inChannels, size, size], { generator: new Generator(seed) });
    const y = x.roll([1], [3]).mul(0.5).tanh().add(x.mean(1, true));
    return { x, y };
  });
}
