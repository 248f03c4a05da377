// Optimizers with state save/load, grad-norm clipping and a loss scaler for fp16.
//
// AdamW and SGD follow PyTorch's update formulas step for step (torch/optim/adamw.py and sgd.py,
// 1.13 single-tensor path), using ATen's _foreach_* ops so one call updates every parameter of a
// group: the same elementwise arithmetic, with far fewer calls from JS.
import { Tensor, call1, callInplace, callN, op } from './tensor.ts';
import { keep } from './scope.ts';
import * as F from './functional.ts';

export type NamedParams = Iterable<[string, Tensor]>;

export interface ParamGroup<H> {
  params: [string, Tensor][];
  hyper: H;
}

/** The part of an optimizer's state that is not tensors (JSON-serialisable). */
export interface OptimizerMeta<H> {
  kind: string;
  step: number;
  groups: { names: string[]; hyper: H }[];
}

export interface OptimizerState<H> {
  meta: OptimizerMeta<H>;
  /** `<param name>.<slot>` → tensor (e.g. `unet.conv_in.weight.exp_avg`). */
  tensors: Map<string, Tensor>;
}

const O = {
  mulS_: op('aten::_foreach_mul_', 'Scalar'),
  addList_: op('aten::_foreach_add_', 'List'),
  addS_: op('aten::_foreach_add_', 'Scalar'),
  addcmulS_: op('aten::_foreach_addcmul_', 'Scalar'),
  addcdivS_: op('aten::_foreach_addcdiv_', 'Scalar'),
  sqrt: op('aten::_foreach_sqrt'),
  divS_: op('aten::_foreach_div_', 'Scalar'),
  norm: op('aten::_foreach_norm', 'Scalar'),
  stack: op('aten::stack'),
};

const handles = (ts: readonly Tensor[]) => ts.map((t) => t.h);

export abstract class Optimizer<H extends { lr: number }> {
  readonly groups: ParamGroup<H>[];
  stepCount = 0;
  protected readonly slots = new Map<string, Map<string, Tensor>>(); // slot name → param name → tensor

  constructor(groups: { params: NamedParams; hyper: H }[]) {
    this.groups = groups.map((g) => ({ params: [...g.params], hyper: { ...g.hyper } }));
    const seen = new Set<string>();
    for (const g of this.groups) {
      for (const [n] of g.params) {
        if (seen.has(n)) throw new Error(`optimizer: parameter ${n} is listed twice`);
        seen.add(n);
      }
    }
  }

  abstract readonly kind: string;
  protected abstract updateGroup(g: ParamGroup<H>, live: [string, Tensor, Tensor][]): void;

  /** Per-parameter state tensor, created with zeros on first use. */
  protected slot(slot: string, name: string, like: Tensor): Tensor {
    let m = this.slots.get(slot);
    if (!m) {
      m = new Map();
      this.slots.set(slot, m);
    }
    let t = m.get(name);
    if (!t) {
      t = keep(F.noGrad(() => F.zerosLike(like)));
      m.set(name, t);
    }
    return t;
  }

  /** One update with the current gradients. Parameters without a gradient are skipped. */
  step(): void {
    this.stepCount++;
    F.noGrad(() => {
      for (const g of this.groups) {
        const live: [string, Tensor, Tensor][] = [];
        for (const [n, p] of g.params) {
          const grad = p.grad;
          if (grad !== null) live.push([n, p, grad]);
        }
        try {
          if (live.length) this.updateGroup(g, live);
        } finally {
          for (const [, , grad] of live) grad.dispose();
        }
      }
    });
  }

  /** Drops every gradient (set_to_none, PyTorch's default). */
  zeroGrad(): void {
    for (const g of this.groups) for (const [, p] of g.params) p.grad = null;
  }

  setLr(lr: number | number[]): void {
    this.groups.forEach((g, i) => {
      g.hyper.lr = typeof lr === 'number' ? lr : lr[i];
    });
  }

  /** State for checkpoints. The tensors are the optimizer's own: save them, don't dispose them. */
  stateDict(): OptimizerState<H> {
    const tensors = new Map<string, Tensor>();
    for (const [slot, m] of this.slots) for (const [n, t] of m) tensors.set(`${n}.${slot}`, t);
    return {
      meta: { kind: this.kind, step: this.stepCount, groups: this.groups.map((g) => ({ names: g.params.map(([n]) => n), hyper: { ...g.hyper } })) },
      tensors,
    };
  }

  /** Restores state saved by stateDict() (values are copied; the caller keeps its tensors). */
  loadStateDict(s: OptimizerState<H>): void {
    if (s.meta.kind !== this.kind) throw new Error(`optimizer state is for ${s.meta.kind}, this optimizer is ${this.kind}`);
    if (s.meta.groups.length !== this.groups.length) throw new Error(`optimizer state has ${s.meta.groups.length} parameter groups, this optimizer ${this.groups.length}`);
    const byName = new Map<string, Tensor>();
    this.groups.forEach((g, i) => {
      const names = g.params.map(([n]) => n);
      const saved = s.meta.groups[i].names;
      if (saved.length !== names.length || saved.some((n, j) => n !== names[j])) {
        throw new Error(`optimizer state group ${i} lists other parameters than this model (first difference: ${saved.find((n, j) => n !== names[j]) ?? names[saved.length]})`);
      }
      g.hyper = { ...s.meta.groups[i].hyper };
      for (const [n, p] of g.params) byName.set(n, p);
    });
    for (const m of this.slots.values()) for (const t of m.values()) t.dispose();
    this.slots.clear();
    for (const [key, t] of s.tensors) {
      const dot = key.lastIndexOf('.');
      const name = key.slice(0, dot);
      const slot = key.slice(dot + 1);
      const p = byName.get(name);
      if (!p) throw new Error(`optimizer state has ${key} for an unknown parameter`);
      const own = this.slot(slot, name, p);
      F.noGrad(() => own.copy_(t));
    }
    this.stepCount = s.meta.step;
  }

  dispose(): void {
    for (const m of this.slots.values()) for (const t of m.values()) t.dispose();
    this.slots.clear();
  }
}

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export class AdamW extends Optimizer<AdamWHyper> {
  readonly kind = 'adamw';
  static readonly defaults: AdamWHyper = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2 };

  constructor(params: NamedParams | { params: NamedParams; hyper: Partial<AdamWHyper> }[], hyper: Partial<AdamWHyper> = {}) {
    const groups = Array.isArray(params) && params.length > 0 && !Array.isArray(params[0])
      ? (params as { params: NamedParams; hyper: Partial<AdamWHyper> }[])
      : [{ params: params as NamedParams, hyper: {} }];
    super(groups.map((g) => ({ params: g.params, hyper: { ...AdamW.defaults, ...hyper, ...g.hyper } })));
  }

  protected updateGroup(g: ParamGroup<AdamWHyper>, live: [string, Tensor, Tensor][]): void {
    const { lr, beta1, beta2, eps, weightDecay } = g.hyper;
    const params = handles(live.map(([, p]) => p));
    const grads = handles(live.map(([, , gr]) => gr));
    const m = handles(live.map(([n, p]) => this.slot('exp_avg', n, p)));
    const v = handles(live.map(([n, p]) => this.slot('exp_avg_sq', n, p)));
    const step = this.stepCount;
    // 1. decoupled weight decay: p *= 1 - lr·wd
    if (weightDecay !== 0) callInplace(O.mulS_, [params, 1 - lr * weightDecay]);
    // 2. m = β1·m + (1-β1)·g ; v = β2·v + (1-β2)·g²
    callInplace(O.mulS_, [m, beta1]);
    callInplace(O.addList_, [m, grads, 1 - beta1]);
    callInplace(O.mulS_, [v, beta2]);
    callInplace(O.addcmulS_, [v, grads, grads, 1 - beta2]);
    // 3. p -= lr/(1-β1^t) · m / (√v / √(1-β2^t) + eps)
    const bc1 = 1 - Math.pow(beta1, step);
    const bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
    const denom = callN(O.sqrt, [v]);
    const dh = handles(denom);
    callInplace(O.divS_, [dh, bc2Sqrt]);
    callInplace(O.addS_, [dh, eps]);
    callInplace(O.addcdivS_, [params, m, dh, -(lr / bc1)]);
    for (const d of denom) d.dispose();
  }
}

export interface SGDHyper {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}

export class SGD extends Optimizer<SGDHyper> {
  readonly kind = 'sgd';
  static readonly defaults: SGDHyper = { lr: 1e-2, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false };

  constructor(params: NamedParams, hyper: Partial<SGDHyper> = {}) {
    super([{ params, hyper: { ...SGD.defaults, ...hyper } }]);
  }

  protected updateGroup(g: ParamGroup<SGDHyper>, live: [string, Tensor, Tensor][]): void {
    const { lr, momentum, dampening, weightDecay, nesterov } = g.hyper;
    for (const [n, p, grad] of live) {
      let d = grad;
      if (weightDecay !== 0) d = grad.add(p, weightDecay);
      if (momentum !== 0) {
        const fresh = !this.slots.get('momentum_buffer')?.has(n);
        const buf = this.slot('momentum_buffer', n, p);
        if (fresh) buf.copy_(d);
        else buf.mul_(momentum).add_(d, 1 - dampening);
        if (nesterov) {
          const nd = d.add(buf, momentum);
          if (d !== grad) d.dispose();
          d = nd;
        } else {
          if (d !== grad) d.dispose();
          d = buf;
        }
      }
      p.add_(d, -lr);
      if (d !== grad && d !== this.slots.get('momentum_buffer')?.get(n)) d.dispose();
    }
  }
}

/**
 * Scales gradients so that their total norm is at most maxNorm, as torch.nn.utils.clip_grad_norm_.
 * Returns the total norm before clipping as a 0-d tensor (no host sync).
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number): Tensor {
  const grads: Tensor[] = [];
  for (const p of params) {
    const g = p.grad;
    if (g !== null) grads.push(g);
  }
  if (grads.length === 0) {
    return F.zeros([]);
  }
  return F.noGrad(() => {
    const norms = callN(O.norm, [handles(grads), 2]);
    const stacked = call1(O.stack, [handles(norms), 0]);
    const total = stacked.norm(2);
    const coef = total.add(1e-6).reciprocal().mul(maxNorm);
    coef.clamp_(null, 1.0);
    for (const g of grads) g.mul_(coef); // as clip_grad_norm_: no host sync
    for (const t of [...norms, stacked, coef, ...grads]) t.dispose();
    return total;
  });
}

/**
 * Dynamic loss scaling for fp16 training (torch.cuda.amp.GradScaler's rules): the loss is
 * multiplied by `scale` before backward; gradients are unscaled before the step; a step whose
 * gradients hold inf/NaN is skipped and the scale halves; 2000 clean steps double it.
 */
export class GradScaler {
  scale: number;
  private clean = 0;
  constructor(
    o: { initScale?: number; growthFactor?: number; backoffFactor?: number; growthInterval?: number; enabled?: boolean } = {},
    private readonly growthFactor = o.growthFactor ?? 2,
    private readonly backoffFactor = o.backoffFactor ?? 0.5,
    private readonly growthInterval = o.growthInterval ?? 2000,
    readonly enabled = o.enabled ?? true,
  ) {
    this.scale = o.initScale ?? 65536;
  }
  scaleLoss(loss: Tensor): Tensor {
    return this.enabled ? loss.mul(this.scale) : loss.alias();
  }
  /** Unscales the optimizer's gradients; returns false (and updates the scale) when they are not finite. */
  unscale<H extends { lr: number }>(opt: Optimizer<H>): boolean {
    if (!this.enabled) return true;
    return F.noGrad(() => {
      const flags: Tensor[] = [];
      for (const g of opt.groups) {
        for (const [, p] of g.params) {
          const grad = p.grad;
          if (grad === null) continue;
          grad.mul_(1 / this.scale);
          flags.push(grad.isfinite().all());
          grad.dispose();
        }
      }
      if (flags.length === 0) return true;
      const all = F.stack(flags).all();
      const ok = all.item() !== 0; // .item(): waits for the device
      all.dispose();
      for (const f of flags) f.dispose();
      return ok;
    });
  }
  /** Call after each iteration with unscale()'s answer. */
  update(finite: boolean): void {
    if (!this.enabled) return;
    if (!finite) {
      this.scale *= this.backoffFactor;
      this.clean = 0;
    } else if (++this.clean >= this.growthInterval) {
      this.scale *= this.growthFactor;
      this.clean = 0;
    }
  }
}
