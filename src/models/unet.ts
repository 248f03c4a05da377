// UNet2DConditionModel for SD 1.x and 2.x, with diffusers' module paths (= checkpoint keys).
// Follows diffusers 0.25 models/unets/unet_2d_condition.py, unet_2d_blocks.py and resnet.py;
// spec: sd-formats.md §3.2 and §3.4. Each resnet, transformer and resampler is a checkpoint()
// segment: while a CheckpointTape records (gradient checkpointing), their activations are recomputed
// in the backward pass instead of kept (as diffusers' enable_gradient_checkpointing).
import * as T from '../torch/index.ts';
import { type Tensor, checkpoint, tidy, nn } from '../torch/index.ts';
import { Transformer2D, type ModelOptions } from './attention.ts';
import type { UNetConfig } from './config.ts';

/** ResnetBlock2D: GN→SiLU→conv3×3 (+ time embedding) → GN→SiLU→conv3×3, plus a 1×1 shortcut. */
export class ResnetBlock2D extends nn.Module {
  readonly hasShortcut: boolean;
  constructor(vb: nn.VarBuilder, readonly inCh: number, readonly outCh: number, tembCh: number | null, groups: number, eps: number) {
    super();
    this.child(vb, 'norm1', (v) => new nn.GroupNorm(v, groups, inCh, eps));
    this.child(vb, 'conv1', (v) => new nn.Conv2d(v, inCh, outCh, 3, { padding: 1 }));
    if (tembCh !== null) this.child(vb, 'time_emb_proj', (v) => new nn.Linear(v, tembCh, outCh));
    this.child(vb, 'norm2', (v) => new nn.GroupNorm(v, groups, outCh, eps));
    this.child(vb, 'conv2', (v) => new nn.Conv2d(v, outCh, outCh, 3, { padding: 1 }));
    this.hasShortcut = inCh !== outCh;
    if (this.hasShortcut) this.child(vb, 'conv_shortcut', (v) => new nn.Conv2d(v, inCh, outCh, 1));
  }

  forward(x: Tensor, temb: Tensor | null): Tensor {
    return tidy(() => {
      let h = this.sub('conv1').forward(this.sub('norm1').forward(x).silu());
      if (temb !== null) {
        // temb [B, C] → [B, C, 1, 1], broadcast over H, W
        h = h.add(this.sub('time_emb_proj').forward(temb.silu()).unsqueeze(-1).unsqueeze(-1));
      }
      h = this.sub('conv2').forward(this.sub('norm2').forward(h).silu());
      const skip = this.hasShortcut ? this.sub('conv_shortcut').forward(x) : x;
      return skip.add(h);
    });
  }
}

/** Conv 3×3, stride 2. `padding` 1 in the UNet; the VAE pads (0,1,0,1) itself and uses 0. */
export class Downsample2D extends nn.Module {
  constructor(vb: nn.VarBuilder, ch: number, readonly padding: number) {
    super();
    this.child(vb, 'conv', (v) => new nn.Conv2d(v, ch, ch, 3, { stride: 2, padding }));
  }
  forward(x: Tensor): Tensor {
    if (this.padding === 0) return tidy(() => this.sub('conv').forward(T.pad(x, [0, 1, 0, 1])));
    return this.sub('conv').forward(x);
  }
}

/** Nearest ×2 (or to the skip's size when it is odd), then conv 3×3. */
export class Upsample2D extends nn.Module {
  constructor(vb: nn.VarBuilder, ch: number) {
    super();
    this.child(vb, 'conv', (v) => new nn.Conv2d(v, ch, ch, 3, { padding: 1 }));
  }
  forward(x: Tensor, size?: [number, number]): Tensor {
    return tidy(() => this.sub('conv').forward(size ? T.interpolate(x, { size, mode: 'nearest' }) : T.interpolate(x, { scaleFactor: 2, mode: 'nearest' })));
  }
}

/** Sinusoidal timestep embedding (diffusers get_timestep_embedding; LDM's with flip_sin_to_cos). */
export function timestepEmbedding(t: Tensor, dim: number, flipSinToCos: boolean, freqShift: number): Tensor {
  return tidy(() => {
    const half = Math.floor(dim / 2);
    const exponent = T.arange(0, half, 1, { dtype: 'float32', device: t.device }).mul(-Math.log(10000)).div(half - freqShift);
    const args = t.to('float32').unsqueeze(1).mul(exponent.exp().unsqueeze(0));
    const sin = args.sin();
    const cos = args.cos();
    const emb = flipSinToCos ? T.cat([cos, sin], -1) : T.cat([sin, cos], -1);
    return dim % 2 === 1 ? T.pad(emb, [0, 1]) : emb;
  });
}

class TimestepEmbedding extends nn.Module {
  constructor(vb: nn.VarBuilder, inCh: number, dim: number) {
    super();
    this.child(vb, 'linear_1', (v) => new nn.Linear(v, inCh, dim));
    this.child(vb, 'linear_2', (v) => new nn.Linear(v, dim, dim));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => this.sub('linear_2').forward(this.sub('linear_1').forward(x).silu()));
  }
}

interface BlockCtx {
  groups: number;
  eps: number;
  temb: number;
  cfg: UNetConfig;
  opts: ModelOptions;
}

/** CrossAttnDownBlock2D / DownBlock2D (no attentions), with an optional downsampler. */
export class DownBlock extends nn.Module {
  readonly resnets: nn.ModuleList<ResnetBlock2D>;
  readonly attentions: nn.ModuleList<Transformer2D> | null;
  readonly down: Downsample2D | null;
  constructor(vb: nn.VarBuilder, inCh: number, outCh: number, heads: number, cross: boolean, addDown: boolean, c: BlockCtx) {
    super();
    const n = c.cfg.layersPerBlock;
    this.resnets = this.child(vb, 'resnets', (v) =>
      new nn.ModuleList(Array.from({ length: n }, (_, j) => new ResnetBlock2D(v.pp(j), j === 0 ? inCh : outCh, outCh, c.temb, c.groups, c.eps))));
    this.attentions = cross
      ? this.child(vb, 'attentions', (v) =>
          new nn.ModuleList(Array.from({ length: n }, (_, j) => new Transformer2D(v.pp(j), outCh, heads, c.cfg.crossAttentionDim, {
            groups: c.groups, linear: c.cfg.useLinearProjection, depth: c.cfg.transformerLayersPerBlock, ...c.opts,
          }))))
      : null;
    this.down = addDown ? this.child(vb, 'downsamplers', (v) => new nn.ModuleList([new Downsample2D(v.pp(0), outCh, 1)])).at(0) : null;
  }

  /** Returns the block output and every intermediate the up path will concatenate. */
  forward(x: Tensor, temb: Tensor, context: Tensor): { h: Tensor; skips: Tensor[] } {
    const skips: Tensor[] = [];
    let h = x;
    for (let j = 0; j < this.resnets.length; j++) {
      const res = this.resnets.at(j);
      [h] = checkpoint((a, t) => [res.forward(a, t)], [h, temb]);
      const att = this.attentions?.at(j);
      if (att) [h] = checkpoint((a, c) => [att.forward(a, c)], [h, context]);
      skips.push(h);
    }
    const down = this.down;
    if (down) {
      [h] = checkpoint((a) => [down.forward(a)], [h]);
      skips.push(h);
    }
    return { h, skips };
  }
}

/** CrossAttnUpBlock2D / UpBlock2D: each resnet takes cat([h, skip], 1). */
export class UpBlock extends nn.Module {
  readonly resnets: nn.ModuleList<ResnetBlock2D>;
  readonly attentions: nn.ModuleList<Transformer2D> | null;
  readonly up: Upsample2D | null;
  constructor(vb: nn.VarBuilder, inCh: number, outCh: number, prevOutCh: number, heads: number, cross: boolean, addUp: boolean, c: BlockCtx) {
    super();
    const n = c.cfg.layersPerBlock + 1;
    this.resnets = this.child(vb, 'resnets', (v) =>
      new nn.ModuleList(Array.from({ length: n }, (_, j) => {
        const skipCh = j === n - 1 ? inCh : outCh;
        const resIn = j === 0 ? prevOutCh : outCh;
        return new ResnetBlock2D(v.pp(j), resIn + skipCh, outCh, c.temb, c.groups, c.eps);
      })));
    this.attentions = cross
      ? this.child(vb, 'attentions', (v) =>
          new nn.ModuleList(Array.from({ length: n }, (_, j) => new Transformer2D(v.pp(j), outCh, heads, c.cfg.crossAttentionDim, {
            groups: c.groups, linear: c.cfg.useLinearProjection, depth: c.cfg.transformerLayersPerBlock, ...c.opts,
          }))))
      : null;
    this.up = addUp ? this.child(vb, 'upsamplers', (v) => new nn.ModuleList([new Upsample2D(v.pp(0), outCh)])).at(0) : null;
  }

  forward(x: Tensor, skips: Tensor[], temb: Tensor, context: Tensor, upSize?: [number, number]): Tensor {
    let h = x;
    for (let j = 0; j < this.resnets.length; j++) {
      const skip = skips.pop()!;
      const res = this.resnets.at(j);
      [h] = checkpoint((a, s, t) => [res.forward(T.cat([a, s], 1), t)], [h, skip, temb]);
      const att = this.attentions?.at(j);
      if (att) [h] = checkpoint((a, c) => [att.forward(a, c)], [h, context]);
    }
    const up = this.up;
    if (up) [h] = checkpoint((a) => [up.forward(a, upSize)], [h]);
    return h;
  }
}

/** UNetMidBlock2DCrossAttn: resnet → transformer → resnet. */
export class MidBlock extends nn.Module {
  constructor(vb: nn.VarBuilder, ch: number, heads: number, c: BlockCtx) {
    super();
    this.child(vb, 'attentions', (v) => new nn.ModuleList([new Transformer2D(v.pp(0), ch, heads, c.cfg.crossAttentionDim, {
      groups: c.groups, linear: c.cfg.useLinearProjection, depth: c.cfg.transformerLayersPerBlock, ...c.opts,
    })]));
    this.child(vb, 'resnets', (v) => new nn.ModuleList([0, 1].map((j) => new ResnetBlock2D(v.pp(j), ch, ch, c.temb, c.groups, c.eps))));
  }
  forward(x: Tensor, temb: Tensor, context: Tensor): Tensor {
    const res = this.getModule('resnets') as nn.ModuleList<ResnetBlock2D>;
    const att = this.getModule('attentions') as nn.ModuleList<Transformer2D>;
    const [a] = checkpoint((x0, t) => [res.at(0).forward(x0, t)], [x, temb]);
    const [b] = checkpoint((x1, c) => [att.at(0).forward(x1, c)], [a, context]);
    return checkpoint((x2, t) => [res.at(1).forward(x2, t)], [b, temb])[0];
  }
}

export class UNet2DConditionModel extends nn.Module {
  readonly downBlocks: nn.ModuleList<DownBlock>;
  readonly upBlocks: nn.ModuleList<UpBlock>;
  readonly midBlock: MidBlock;

  constructor(vb: nn.VarBuilder, readonly cfg: UNetConfig, readonly opts: ModelOptions = {}) {
    super();
    const ch = cfg.blockOutChannels;
    const nLevels = ch.length;
    if (cfg.downBlocks.length !== nLevels || cfg.upBlocks.length !== nLevels) throw new Error('UNet config: one down and one up block per entry of block_out_channels');
    const temb = ch[0] * 4;
    const c: BlockCtx = { groups: cfg.normGroups, eps: cfg.normEps, temb, cfg, opts };
    this.child(vb, 'conv_in', (v) => new nn.Conv2d(v, cfg.inChannels, ch[0], 3, { padding: 1 }));
    this.child(vb, 'time_embedding', (v) => new TimestepEmbedding(v, ch[0], temb));

    const downs: DownBlock[] = [];
    let outCh = ch[0];
    const dvb = vb.pp('down_blocks');
    for (let i = 0; i < nLevels; i++) {
      const inCh = outCh;
      outCh = ch[i];
      downs.push(new DownBlock(dvb.pp(i), inCh, outCh, cfg.heads[i], cfg.downBlocks[i] === 'CrossAttnDownBlock2D', i < nLevels - 1, c));
    }
    this.downBlocks = this.addModule('down_blocks', new nn.ModuleList(downs));
    this.midBlock = this.child(vb, 'mid_block', (v) => new MidBlock(v, ch[nLevels - 1], cfg.heads[nLevels - 1], c));

    const rev = [...ch].reverse();
    const revHeads = [...cfg.heads].reverse();
    const ups: UpBlock[] = [];
    outCh = rev[0];
    const uvb = vb.pp('up_blocks');
    for (let i = 0; i < nLevels; i++) {
      const prevOut = outCh;
      outCh = rev[i];
      const inCh = rev[Math.min(i + 1, nLevels - 1)];
      ups.push(new UpBlock(uvb.pp(i), inCh, outCh, prevOut, revHeads[i], cfg.upBlocks[i] === 'CrossAttnUpBlock2D', i < nLevels - 1, c));
    }
    this.upBlocks = this.addModule('up_blocks', new nn.ModuleList(ups));
    this.child(vb, 'conv_norm_out', (v) => new nn.GroupNorm(v, cfg.normGroups, ch[0], cfg.normEps));
    this.child(vb, 'conv_out', (v) => new nn.Conv2d(v, ch[0], cfg.outChannels, 3, { padding: 1 }));
  }

  /** Sinusoidal projection then the two-layer MLP; t may be a 0-d tensor (broadcast). */
  timeEmbedding(t: Tensor, batch: number): Tensor {
    return tidy(() => {
      const tb = t.ndim === 0 ? t.unsqueeze(0).expand(batch) : t;
      const proj = timestepEmbedding(tb, this.cfg.blockOutChannels[0], this.cfg.flipSinToCos, this.cfg.freqShift);
      return this.sub('time_embedding').forward(proj);
    });
  }

  /**
   * sample [B, 4, h, w], timestep (0-d or [B], int or float), context [B, 77, C] → noise (or v)
   * prediction [B, 4, h, w].
   */
  forward(sample: Tensor, timestep: Tensor | number, context: Tensor): Tensor {
    return tidy(() => {
      const b = sample.size(0);
      const t = typeof timestep === 'number' ? T.tensor(timestep, { dtype: Number.isInteger(timestep) ? 'int64' : 'float32', device: sample.device }) : timestep;
      const temb = this.timeEmbedding(t, b).to(sample.dtype);
      let h = this.sub('conv_in').forward(sample);
      const skips: Tensor[] = [h];
      for (const blk of this.downBlocks) {
        const r = blk.forward(h, temb, context);
        h = r.h;
        skips.push(...r.skips);
      }
      h = this.midBlock.forward(h, temb, context);
      // Odd latent sizes: each upsampler goes to the size of the skip it will meet (diffusers' upsample_size).
      const nUp = this.upBlocks.length;
      for (let i = 0; i < nUp; i++) {
        const blk = this.upBlocks.at(i);
        const nRes = blk.resnets.length;
        const mine = skips.splice(skips.length - nRes, nRes);
        const next = skips[skips.length - 1];
        const upSize = blk.up && next ? ([next.size(2), next.size(3)] as [number, number]) : undefined;
        h = blk.forward(h, mine, temb, context, upSize);
      }
      return this.sub('conv_out').forward(this.sub('conv_norm_out').forward(h).silu());
    });
  }
}
