// AutoencoderKL (the SD VAE) with diffusers' module paths. Follows diffusers 0.25
// models/autoencoders/autoencoder_kl.py and vae.py; spec: sd-formats.md §3.3.
import * as T from '../torch/index.ts';
import { type Tensor, tidy, nn } from '../torch/index.ts';
import { Attention, type ModelOptions } from './attention.ts';
import { Downsample2D, ResnetBlock2D, Upsample2D } from './unet.ts';
import type { VAEConfig } from './config.ts';

const EPS = 1e-6; // every GroupNorm of the VAE (§3.3)

/** Single-head self-attention over H·W with its own GroupNorm and a residual (mid_block.attentions.0). */
class SpatialSelfAttention extends Attention {
  constructor(vb: nn.VarBuilder, readonly ch: number, groups: number, opts: ModelOptions) {
    // One head of dimension C; q/k/v have biases here (diffusers Attention(bias=True)).
    super(vb, ch, ch, 1, ch, { ...opts, bias: true });
    this.child(vb, 'group_norm', (v) => new nn.GroupNorm(v, groups, ch, EPS));
  }
  override forward(x: Tensor): Tensor {
    return tidy(() => {
      const [b, c, h, w] = x.shape;
      const n = this.sub('group_norm').forward(x).reshape(b, c, h * w).transpose(1, 2);
      return super.forward(n).transpose(1, 2).reshape(b, c, h, w).add(x);
    });
  }
}

class VaeMid extends nn.Module {
  constructor(vb: nn.VarBuilder, ch: number, groups: number, opts: ModelOptions) {
    super();
    this.child(vb, 'attentions', (v) => new nn.ModuleList([new SpatialSelfAttention(v.pp(0), ch, groups, opts)]));
    this.child(vb, 'resnets', (v) => new nn.ModuleList([0, 1].map((j) => new ResnetBlock2D(v.pp(j), ch, ch, null, groups, EPS))));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const r = this.getModule('resnets') as nn.ModuleList<ResnetBlock2D>;
      const a = this.getModule('attentions') as nn.ModuleList<SpatialSelfAttention>;
      return r.at(1).forward(a.at(0).forward(r.at(0).forward(x, null)), null);
    });
  }
}

class EncoderBlock extends nn.Module {
  readonly resnets: nn.ModuleList<ResnetBlock2D>;
  readonly down: Downsample2D | null;
  constructor(vb: nn.VarBuilder, inCh: number, outCh: number, n: number, groups: number, addDown: boolean) {
    super();
    this.resnets = this.child(vb, 'resnets', (v) => new nn.ModuleList(Array.from({ length: n }, (_, j) => new ResnetBlock2D(v.pp(j), j === 0 ? inCh : outCh, outCh, null, groups, EPS))));
    // The VAE pads (0,1,0,1) and convolves with padding 0 (diffusers downsample_padding=0).
    this.down = addDown ? this.child(vb, 'downsamplers', (v) => new nn.ModuleList([new Downsample2D(v.pp(0), outCh, 0)])).at(0) : null;
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = x;
      for (const r of this.resnets) h = r.forward(h, null);
      return this.down ? this.down.forward(h) : h;
    });
  }
}

class DecoderBlock extends nn.Module {
  readonly resnets: nn.ModuleList<ResnetBlock2D>;
  readonly up: Upsample2D | null;
  constructor(vb: nn.VarBuilder, inCh: number, outCh: number, n: number, groups: number, addUp: boolean) {
    super();
    this.resnets = this.child(vb, 'resnets', (v) => new nn.ModuleList(Array.from({ length: n }, (_, j) => new ResnetBlock2D(v.pp(j), j === 0 ? inCh : outCh, outCh, null, groups, EPS))));
    this.up = addUp ? this.child(vb, 'upsamplers', (v) => new nn.ModuleList([new Upsample2D(v.pp(0), outCh)])).at(0) : null;
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = x;
      for (const r of this.resnets) h = r.forward(h, null);
      return this.up ? this.up.forward(h) : h;
    });
  }
}

class Encoder extends nn.Module {
  readonly blocks: nn.ModuleList<EncoderBlock>;
  constructor(vb: nn.VarBuilder, c: VAEConfig, opts: ModelOptions) {
    super();
    const ch = c.blockOutChannels;
    this.child(vb, 'conv_in', (v) => new nn.Conv2d(v, c.inChannels, ch[0], 3, { padding: 1 }));
    let out = ch[0];
    const blocks: EncoderBlock[] = [];
    for (let i = 0; i < ch.length; i++) {
      const inCh = out;
      out = ch[i];
      blocks.push(new EncoderBlock(vb.pp('down_blocks').pp(i), inCh, out, c.layersPerBlock, c.normGroups, i < ch.length - 1));
    }
    this.blocks = this.addModule('down_blocks', new nn.ModuleList(blocks));
    this.child(vb, 'mid_block', (v) => new VaeMid(v, out, c.normGroups, opts));
    this.child(vb, 'conv_norm_out', (v) => new nn.GroupNorm(v, c.normGroups, out, EPS));
    this.child(vb, 'conv_out', (v) => new nn.Conv2d(v, out, 2 * c.latentChannels, 3, { padding: 1 }));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = this.sub('conv_in').forward(x);
      for (const b of this.blocks) h = b.forward(h);
      h = this.sub('mid_block').forward(h);
      return this.sub('conv_out').forward(this.sub('conv_norm_out').forward(h).silu());
    });
  }
}

class Decoder extends nn.Module {
  readonly blocks: nn.ModuleList<DecoderBlock>;
  constructor(vb: nn.VarBuilder, c: VAEConfig, opts: ModelOptions) {
    super();
    const rev = [...c.blockOutChannels].reverse();
    this.child(vb, 'conv_in', (v) => new nn.Conv2d(v, c.latentChannels, rev[0], 3, { padding: 1 }));
    this.child(vb, 'mid_block', (v) => new VaeMid(v, rev[0], c.normGroups, opts));
    let out = rev[0];
    const blocks: DecoderBlock[] = [];
    for (let i = 0; i < rev.length; i++) {
      const prev = out;
      out = rev[i];
      blocks.push(new DecoderBlock(vb.pp('up_blocks').pp(i), prev, out, c.layersPerBlock + 1, c.normGroups, i < rev.length - 1));
    }
    this.blocks = this.addModule('up_blocks', new nn.ModuleList(blocks));
    this.child(vb, 'conv_norm_out', (v) => new nn.GroupNorm(v, c.normGroups, out, EPS));
    this.child(vb, 'conv_out', (v) => new nn.Conv2d(v, out, c.outChannels, 3, { padding: 1 }));
  }
  forward(z: Tensor): Tensor {
    return tidy(() => {
      let h = this.sub('mid_block').forward(this.sub('conv_in').forward(z));
      for (const b of this.blocks) h = b.forward(h);
      return this.sub('conv_out').forward(this.sub('conv_norm_out').forward(h).silu());
    });
  }
}

/** The encoder's Gaussian: mean and clamped log-variance (diffusers DiagonalGaussianDistribution). */
export interface Posterior {
  mean: Tensor;
  logvar: Tensor;
  std: Tensor;
}

export class AutoencoderKL extends nn.Module {
  constructor(vb: nn.VarBuilder, readonly cfg: VAEConfig, opts: ModelOptions = {}) {
    super();
    const l = cfg.latentChannels;
    this.child(vb, 'encoder', (v) => new Encoder(v, cfg, opts));
    this.child(vb, 'decoder', (v) => new Decoder(v, cfg, opts));
    this.child(vb, 'quant_conv', (v) => new nn.Conv2d(v, 2 * l, 2 * l, 1));
    this.child(vb, 'post_quant_conv', (v) => new nn.Conv2d(v, l, l, 1));
  }

  /** Image in [-1, 1], [B, 3, H, W] → posterior over [B, 4, H/f, W/f] (unscaled latents). */
  encode(x: Tensor): Posterior {
    return tidy(() => {
      const moments = this.sub('quant_conv').forward(this.sub('encoder').forward(x));
      const [mean, lv] = moments.chunk(2, 1);
      const logvar = lv.clamp(-30, 20);
      return { mean, logvar, std: logvar.mul(0.5).exp() };
    });
  }

  /** mean + std·noise, with noise from the generator (as latent_dist.sample(generator)). */
  sample(p: Posterior, generator?: T.Generator): Tensor {
    return tidy(() => p.mean.add(p.std.mul(T.randn(p.mean.shape, { generator, dtype: p.mean.dtype }).to(p.mean.device))));
  }

  /** Unscaled latents → image in about [-1, 1]. */
  decode(z: Tensor): Tensor {
    return tidy(() => this.sub('decoder').forward(this.sub('post_quant_conv').forward(z)));
  }
}
