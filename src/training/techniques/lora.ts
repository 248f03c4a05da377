// LoRA (§5): the base model frozen; low-rank pairs trained in kohya's default layers (UNet
// transformer linears and 1×1 projections, text-encoder attention and MLP; 3×3 convs too with
// LoCon), scale = alpha/rank. The product is a kohya .safetensors with ss_* and modelspec.*
// metadata (A1111, Forge, ComfyUI) or, on request, diffusers/PEFT.
import * as T from '../../torch/index.ts';
import { saveTorchFile } from '../../formats/torchfile.ts';
import { saveSafetensors, serializeSafetensors } from '../../formats/safetensors.ts';
import { addnetHashes, kohyaMetadata, loraToKohya, loraToPeft, type KohyaTrainingInfo } from '../../formats/layouts/index.ts';
import type { StableDiffusion } from '../../models/load.ts';
import { disposeLoraFile, injectLora, type LoraHandle } from '../../adapters/lora.ts';
import { loadLoraFile } from '../../adapters/lora-file.ts';
import type { SaveInfo, Technique, TrainableGroup } from '../technique.ts';

export interface LoraTrainOptions {
  rank: number;
  alpha: number;
  convRank?: number;
  convAlpha?: number;
  trainTextEncoder?: boolean;
  lr?: number;
  textEncoderLr?: number;
  format?: 'kohya' | 'peft';
  saveDtype?: 'fp32' | 'fp16' | 'bf16';
  seed?: number;
  /** Continue from this LoRA file (kohya or PEFT): its modules, ranks, alphas and weights. */
  initFrom?: string;
  /** Run facts for the kohya metadata (dataset dirs, tag frequency, …). */
  info?: Partial<KohyaTrainingInfo>;
}

const DT = { fp32: 'float32', fp16: 'float16', bf16: 'bfloat16' } as const;

export class LoraTechnique implements Technique {
  readonly kind = 'lora';
  readonly extension = '.safetensors';
  readonly needsTextGrad: boolean;
  readonly handle: LoraHandle;
  private readonly started = new Date();

  readonly continued?: string;
  /** network_dim / network_alpha as trained (the file's, when continuing). */
  private readonly rank: number;
  private readonly alpha: number;
  private readonly conv?: { rank: number; alpha: number };

  constructor(readonly model: StableDiffusion, private readonly o: LoraTrainOptions) {
    for (const m of [model.unet, model.textEncoder, model.vae]) m.requiresGrad_(false);
    if (o.initFrom) {
      // Strict: a file made for another model is refused with its keys listed, not half-loaded.
      const file = loadLoraFile(o.initFrom, model);
      try {
        this.handle = injectLora(model, { from: file }, o.seed ?? 0);
      } finally {
        disposeLoraFile(file);
      }
      const branches = [...this.handle.modules.entries()];
      const te = branches.filter(([p]) => !p.startsWith('unet.')).length;
      this.needsTextGrad = te > 0;
      const isConv = ([, b]: (typeof branches)[number]) => b.down.shape.length === 4 && b.down.shape[2] > 1;
      const lin = branches.find((e) => !isConv(e)) ?? branches[0];
      const conv = branches.find(isConv);
      this.rank = lin[1].rank;
      this.alpha = lin[1].alpha;
      if (conv) this.conv = { rank: conv[1].rank, alpha: conv[1].alpha };
      const name = o.initFrom.replace(/^.*[\\/]/, '');
      const notes = [`${branches.length} modules at rank ${this.rank}, alpha ${this.alpha}${conv ? ` (3×3 convs: rank ${conv[1].rank})` : ''}`];
      if (te === 0 && o.trainTextEncoder !== false) notes.push('it has no text-encoder pairs, so only the UNet is trained');
      if (te > 0 && o.trainTextEncoder === false) notes.push(`its ${te} text-encoder pairs are trained too (they are part of the file)`);
      this.continued = `continuing the LoRA ${name}: ${notes.join('; ')}; the rank and alpha settings are the file's`;
      return;
    }
    this.needsTextGrad = o.trainTextEncoder !== false;
    this.rank = o.rank;
    this.alpha = o.alpha;
    if (o.convRank) this.conv = { rank: o.convRank, alpha: o.convAlpha ?? 1 };
    const te = this.needsTextGrad;
    this.handle = injectLora(model, {
      rank: o.rank,
      alpha: o.alpha,
      ...(this.conv ? { convRank: this.conv.rank, convAlpha: this.conv.alpha } : {}),
      targets: (p) => te || p.startsWith('unet.'),
    }, o.seed ?? 0);
  }

  groups(): TrainableGroup[] {
    const unet: [string, T.Tensor][] = [];
    const te: [string, T.Tensor][] = [];
    for (const [k, p] of this.handle.namedParameters()) {
      p.requiresGrad_(true);
      (k.startsWith('lora_unet') ? unet : te).push([k, p]);
    }
    const lr = this.o.lr ?? 1e-4;
    const g: TrainableGroup[] = [{ name: 'unet', params: unet, lr, weightDecay: 1e-2 }];
    if (te.length) g.push({ name: 'text_encoder', params: te, lr: this.o.textEncoderLr ?? lr, weightDecay: 1e-2 });
    return g;
  }

  embeddings(): undefined {
    return undefined;
  }

  bypass(on: boolean): void {
    this.handle.setMultiplier(on ? 0 : 1, on ? 0 : 1);
  }

  save(path: string, info: SaveInfo): void {
    const lora = this.handle.toLoraFile();
    try {
      const { tensors, metadata } = this.o.format === 'peft' ? loraToPeft(lora) : loraToKohya(lora);
      const dt = DT[this.o.saveDtype ?? 'fp16'];
      const cast = new Map([...tensors].map(([k, t]) => [k, t.dtype === dt ? t.alias() : t.to(dt)] as const));
      try {
        if (/\.(pt|ckpt|bin)$/i.test(path)) {
          saveTorchFile(path, cast as never);
          return;
        }
        const md: Record<string, string> = { ...metadata };
        if (this.o.format !== 'peft') {
          const name = path.replace(/^.*[\\/]/, '').replace(/\.[^.]+$/, '');
          Object.assign(md, kohyaMetadata({
            family: this.model.family,
            kind: 'lora',
            outputName: name,
            title: name,
            startedAt: this.started,
            finishedAt: new Date(),
            baseModel: { name: info.baseName, sha256: info.baseHash || undefined },
            network: { module: 'networks.lora', dim: this.rank, alpha: this.alpha, args: this.conv ? { conv_dim: String(this.conv.rank), conv_alpha: String(this.conv.alpha) } : undefined },
            learningRate: this.o.lr,
            unetLr: this.o.lr,
            textEncoderLr: this.needsTextGrad ? this.o.textEncoderLr ?? this.o.lr : null,
            steps: info.step,
            ...this.o.info,
          }));
          // The "addnet" hashes A1111 shows for a LoRA are of the tensor bytes, so they need the file.
          Object.assign(md, addnetHashes(serializeSafetensors(cast, md)));
        }
        saveSafetensors(path, cast, md);
      } finally {
        for (const t of [...cast.values(), ...tensors.values()]) t.dispose();
      }
    } finally {
      disposeLoraFile(lora);
    }
  }

  dispose(): void {
    this.handle.remove();
  }
}
