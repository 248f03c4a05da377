// The studio's data folder: what lives where, and the one way a name from a request becomes a path.
//   DATA/studio.db               jobs, their logs, settings (SQLite)
//   DATA/models/                 checkpoints (.safetensors, .ckpt) and diffusers folders
//   DATA/lora/ embeddings/ hypernetworks/   adapters, as A1111 lays them out
//   DATA/datasets/NAME/          images with same-name .txt captions
//   DATA/outputs/                generated PNGs (A1111 parameters inside)
//   DATA/jobs/ID/                a job's work folder: checkpoints, samples, log.jsonl
// Names are checked by pattern (no separators, no '..', no leading dot) and the resolved path must
// sit inside its folder: nothing a request sends can reach outside DATA.
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { basename, extname, join, resolve, sep } from 'node:path';
import { HttpError } from './schema.ts';
import type { AdapterInfo, AdapterKind } from './api-types.ts';

export const NAME = /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,79}$/;
export const ADAPTER_DIRS: Record<AdapterKind, string> = { lora: 'lora', embedding: 'embeddings', hypernetwork: 'hypernetworks' };
export const ADAPTER_EXT: Record<AdapterKind, RegExp> = { lora: /\.(safetensors|pt|ckpt|bin)$/i, embedding: /\.(pt|bin|safetensors)$/i, hypernetwork: /\.pt$/i };
export const MODEL_EXT = /\.(safetensors|ckpt)$/i;
export const IMAGE_EXT = /\.(png|jpe?g|webp)$/i;

/** Refuses a name that could leave its folder (or is no name a person would choose). */
export function checkName(name: string, what: string): string {
  if (typeof name !== 'string' || !NAME.test(name) || name.includes('..') || name.trim() !== name) {
    throw new HttpError(400, `${what} ${JSON.stringify(String(name).slice(0, 100))} is not allowed: use letters, digits, spaces, '.', '_' and '-' (up to 80, no '..', not starting with '.')`, what);
  }
  return name;
}

export class DataDir {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
    for (const d of ['models', ...Object.values(ADAPTER_DIRS), 'datasets', 'outputs', 'jobs']) mkdirSync(join(this.root, d), { recursive: true });
  }

  get db(): string {
    return join(this.root, 'studio.db');
  }

  /** A path inside DATA/folder for a checked name; throws if it would resolve elsewhere. */
  inside(folder: string, ...names: string[]): string {
    const base = resolve(this.root, folder);
    const p = resolve(base, ...names);
    if (p !== base && !p.startsWith(base + sep)) throw new HttpError(400, `${names.join('/')} is outside the data folder`);
    return p;
  }

  dir(folder: string): string {
    return join(this.root, folder);
  }

  dataset(name: string): string {
    return this.inside('datasets', checkName(name, 'dataset name'));
  }

  /** An existing dataset's folder, or 404. */
  existingDataset(name: string): string {
    const d = this.dataset(name);
    if (!existsSync(d) || !statSync(d).isDirectory()) throw new HttpError(404, `there is no dataset ${JSON.stringify(name)}`);
    return d;
  }

  jobDir(id: string): string {
    return this.inside('jobs', checkName(id, 'job id'));
  }

  adapters(kind?: AdapterKind): AdapterInfo[] {
    const out: AdapterInfo[] = [];
    for (const k of Object.keys(ADAPTER_DIRS) as AdapterKind[]) {
      if (kind && k !== kind) continue;
      const dir = this.dir(ADAPTER_DIRS[k]);
      for (const f of readdirSync(dir).sort()) {
        if (f.startsWith('.') || !ADAPTER_EXT[k].test(f)) continue;
        const st = statSync(join(dir, f));
        if (!st.isFile()) continue;
        out.push({ kind: k, name: basename(f, extname(f)), file: f, bytes: st.size, modified: st.mtime.toISOString() });
      }
    }
    return out;
  }

  /** The file of an adapter by kind and name (file stem, as A1111's <lora:NAME>), or 404. */
  adapterFile(kind: AdapterKind, name: string): string {
    checkName(name, `${kind} name`);
    const hit = this.adapters(kind).find((a) => a.name === name || a.file === name);
    if (!hit) throw new HttpError(404, `there is no ${kind} called ${JSON.stringify(name)} in ${ADAPTER_DIRS[kind]}/`);
    return this.inside(ADAPTER_DIRS[kind], hit.file);
  }
}
