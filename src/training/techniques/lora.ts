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

  constructor(readonly model: StableDiffusion, private readonly o: LoraTrainOptions) {
    this.needsTextGrad = o.trainTextEncoder !== false;
    for (const m of [model.unet, model.textEncoder, model.vae]) m.requiresGrad_(false);
    const te = this.needsTextGrad;
    this.handle = injectLora(model, {
      rank: o.rank,
      alpha: o.alpha,
      ...(o.convRank ? { convRank: o.convRank, convAlpha: o.convAlpha ?? 1 } : {}),
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
            network: { module: 'networks.lora', dim: this.o.rank, alpha: this.o.alpha, args: this.o.convRank ? { conv_dim: String(this.o.convRank), conv_alpha: String(this.o.convAlpha ?? 1) } : undefined },
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
