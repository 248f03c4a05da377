// Request schemas, written once: each validates a parsed JSON body (unknown fields, types, ranges
// refused with a sentence naming the field) and renders itself as JSON Schema for the OpenAPI
// document. Small on purpose: the API's bodies are flat records of numbers, texts and lists.

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

export type Schema =
  | { type: 'string'; min?: number; max?: number; pattern?: RegExp; enum?: readonly string[]; description?: string }
  | { type: 'number' | 'integer'; min?: number; max?: number; description?: string }
  | { type: 'boolean'; description?: string }
  | { type: 'array'; items: Schema; max?: number; description?: string }
  | { type: 'object'; properties: Record<string, Schema>; required?: readonly string[]; open?: boolean; description?: string }
  /** Any JSON object, checked elsewhere (training settings go through the CLI's own schema). */
  | { type: 'record'; description?: string };

type StrOpts = { min?: number; max?: number; pattern?: RegExp; enum?: readonly string[]; description?: string };
type NumOpts = { min?: number; max?: number; description?: string };
export const str = (o: StrOpts = {}): Schema => ({ type: 'string', max: 10_000, ...o });
export const num = (o: NumOpts = {}): Schema => ({ type: 'number', ...o });
export const int = (o: NumOpts = {}): Schema => ({ type: 'integer', ...o });
export const bool = (description?: string): Schema => ({ type: 'boolean', description });
export const arr = (items: Schema, max = 100, description?: string): Schema => ({ type: 'array', items, max, description });
export const obj = (properties: Record<string, Schema>, required: readonly string[] = [], o: { open?: boolean; description?: string } = {}): Schema => ({ type: 'object', properties, required, ...o });
export const rec = (description?: string): Schema => ({ type: 'record', description });

const where = (path: string) => path || 'the body';

/** Checks `v` against `s`; returns it typed as T. Throws HttpError(400) naming the field. */
export function check<T>(s: Schema, v: unknown, path = ''): T {
  const fail = (msg: string): never => {
    throw new HttpError(400, `${where(path)} ${msg}`, path || undefined);
  };
  switch (s.type) {
    case 'string':
      if (typeof v !== 'string') fail(`must be text (got ${describe(v)})`);
      if (s.min !== undefined && (v as string).length < s.min) fail(s.min === 1 ? 'must not be empty' : `must have at least ${s.min} characters`);
      if (s.max !== undefined && (v as string).length > s.max) fail(`must have at most ${s.max} characters`);
      if (s.enum && !s.enum.includes(v as string)) fail(`must be one of ${s.enum.join(', ')} (got ${JSON.stringify(v)})`);
      if (s.pattern && !s.pattern.test(v as string)) fail(`has characters that are not allowed (${JSON.stringify(v)})`);
      return v as T;
    case 'number':
    case 'integer':
      if (typeof v !== 'number' || !Number.isFinite(v)) fail(`must be a number (got ${describe(v)})`);
      if (s.type === 'integer' && !Number.isInteger(v)) fail(`must be a whole number (got ${v})`);
      if (s.min !== undefined && (v as number) < s.min) fail(`must be at least ${s.min} (got ${v})`);
      if (s.max !== undefined && (v as number) > s.max) fail(`must be at most ${s.max} (got ${v})`);
      return v as T;
    case 'boolean':
      if (typeof v !== 'boolean') fail(`must be true or false (got ${describe(v)})`);
      return v as T;
    case 'array':
      if (!Array.isArray(v)) fail(`must be a list (got ${describe(v)})`);
      if (s.max !== undefined && (v as unknown[]).length > s.max) fail(`must have at most ${s.max} entries`);
      (v as unknown[]).forEach((x, i) => check(s.items, x, `${path}[${i}]`));
      return v as T;
    case 'record':
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`must be an object (got ${describe(v)})`);
      return v as T;
    case 'object': {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`must be a JSON object (got ${describe(v)})`);
      const o = v as Record<string, unknown>;
      for (const k of Object.keys(o)) {
        if (!(k in s.properties)) {
          if (s.open) continue;
          const names = Object.keys(s.properties);
          fail(`has an unknown field ${JSON.stringify(k)} (known: ${names.join(', ')})`);
        }
      }
      for (const k of s.required ?? []) if (o[k] === undefined || o[k] === null) throw new HttpError(400, `${path ? path + '.' : ''}${k} is required`, path ? `${path}.${k}` : k);
      for (const [k, ps] of Object.entries(s.properties)) if (o[k] !== undefined && o[k] !== null) check(ps, o[k], path ? `${path}.${k}` : k);
      return v as T;
    }
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  return typeof v === 'object' ? 'an object' : JSON.stringify(v);
}

/** JSON Schema (OpenAPI 3.1 flavour) of a schema. */
export function jsonSchema(s: Schema): Record<string, unknown> {
  const d = s.description ? { description: s.description } : {};
  switch (s.type) {
    case 'string':
      return { type: 'string', ...d, ...(s.min !== undefined && { minLength: s.min }), ...(s.max !== undefined && { maxLength: s.max }), ...(s.enum && { enum: s.enum }), ...(s.pattern && { pattern: s.pattern.source }) };
    case 'number':
    case 'integer':
      return { type: s.type, ...d, ...(s.min !== undefined && { minimum: s.min }), ...(s.max !== undefined && { maximum: s.max }) };
    case 'boolean':
      return { type: 'boolean', ...d };
    case 'array':
      return { type: 'array', items: jsonSchema(s.items), ...d, ...(s.max !== undefined && { maxItems: s.max }) };
    case 'record':
      return { type: 'object', additionalProperties: true, ...d };
    case 'object':
      return {
        type: 'object',
        ...d,
        properties: Object.fromEntries(Object.entries(s.properties).map(([k, v]) => [k, jsonSchema(v)])),
        ...(s.required?.length && { required: s.required }),
        additionalProperties: s.open === true,
      };
  }
}
