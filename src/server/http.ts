// The HTTP plumbing of the studio, on node:http alone: a small router with path parameters, bodies
// read with a size limit (a 500 MB upload is refused while it streams, not after), JSON parsed with
// a clear 400, Basic auth, static files, server-sent events. Handlers throw HttpError for 4xx.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { extname, join, resolve, sep } from 'node:path';
import { timingSafeEqual } from 'node:crypto';
import { HttpError } from './schema.ts';

export interface Req {
  method: string;
  path: string;
  query: URLSearchParams;
  params: Record<string, string>;
  headers: IncomingMessage['headers'];
  raw: IncomingMessage;
  /** The body as bytes (at most `limit`), read once. */
  body(limit?: number): Promise<Buffer>;
  /** The body parsed as JSON (an empty body is {}). */
  json(limit?: number): Promise<unknown>;
}

export type Reply =
  | { status?: number; json: unknown }
  | { status?: number; file: string; type?: string; cache?: boolean }
  | { status: number; empty: true }
  | { sse: (send: (data: unknown) => void, close: () => void) => () => void }
  | { status?: number; bytes: Buffer; type: string };

export type Handler = (req: Req) => Promise<Reply> | Reply;

interface Route {
  method: string;
  parts: string[];
  handler: Handler;
}

export const JSON_LIMIT = 1 << 20;

export class Router {
  private readonly routes: Route[] = [];

  add(method: string, pattern: string, handler: Handler): this {
    this.routes.push({ method, parts: pattern.split('/').filter(Boolean), handler });
    return this;
  }

  /** The handler and parameters for a path; 404/405 when there is none. */
  match(method: string, path: string): { handler: Handler; params: Record<string, string> } | { status: 404 | 405; allowed?: string[] } {
    const segs = path.split('/').filter(Boolean);
    const allowed: string[] = [];
    for (const r of this.routes) {
      if (r.parts.length !== segs.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < segs.length && ok; i++) {
        if (r.parts[i].startsWith('{')) {
          let v: string;
          try {
            v = decodeURIComponent(segs[i]);
          } catch {
            return { status: 404 };
          }
          params[r.parts[i].slice(1, -1)] = v;
        } else ok = r.parts[i] === segs[i];
      }
      if (!ok) continue;
      if (r.method !== method && !(method === 'HEAD' && r.method === 'GET')) {
        allowed.push(r.method);
        continue;
      }
      return { handler: r.handler, params };
    }
    return allowed.length ? { status: 405, allowed } : { status: 404 };
  }
}

export function makeReq(raw: IncomingMessage, params: Record<string, string>, url: URL): Req {
  let read: Promise<Buffer> | null = null;
  const body = (limit = JSON_LIMIT): Promise<Buffer> => {
    read ??= new Promise<Buffer>((res, rej) => {
      const declared = Number(raw.headers['content-length'] ?? NaN);
      if (Number.isFinite(declared) && declared > limit) {
        rej(new HttpError(413, `the request body is ${fmtBytes(declared)}; the limit here is ${fmtBytes(limit)}`));
        raw.resume();
        return;
      }
      const chunks: Buffer[] = [];
      let n = 0;
      raw.on('data', (c: Buffer) => {
        n += c.length;
        if (n > limit) {
          rej(new HttpError(413, `the request body is over the limit of ${fmtBytes(limit)}`));
          raw.destroy();
          return;
        }
        chunks.push(c);
      });
      raw.on('end', () => res(Buffer.concat(chunks)));
      raw.on('error', rej);
    });
    return read;
  };
  return {
    method: raw.method ?? 'GET',
    path: url.pathname,
    query: url.searchParams,
    params,
    headers: raw.headers,
    raw,
    body,
    async json(limit = JSON_LIMIT) {
      const b = await body(limit);
      if (b.length === 0) return {};
      const type = String(raw.headers['content-type'] ?? 'application/json');
      if (!/json|text\/plain/i.test(type)) throw new HttpError(415, `send JSON (Content-Type: application/json), not ${type}`);
      try {
        return JSON.parse(b.toString('utf8'));
      } catch (e) {
        throw new HttpError(400, `the body is not valid JSON (${(e as Error).message})`);
      }
    },
  };
}

export function fmtBytes(n: number): string {
  return n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)} GB` : n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MB` : n >= 1024 ? `${(n / 1024).toFixed(0)} kB` : `${n} bytes`;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.json': 'application/json',
  '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.webp': 'image/webp', '.svg': 'image/svg+xml', '.ico': 'image/x-icon', '.txt': 'text/plain; charset=utf-8',
};

export function contentType(file: string): string {
  return TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream';
}

/** A file under root for a URL path, or null (never outside root). */
export function staticFile(root: string, urlPath: string): string | null {
  let rel: string;
  try {
    rel = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  const base = resolve(root);
  const p = resolve(join(base, rel));
  if (p !== base && !p.startsWith(base + sep)) return null;
  return existsSync(p) && statSync(p).isFile() ? p : null;
}

export function send(res: ServerResponse, reply: Reply, head = false): void {
  const common = { 'X-Content-Type-Options': 'nosniff' };
  if ('sse' in reply) throw new Error('send() does not take SSE replies');
  if ('empty' in reply) {
    res.writeHead(reply.status, common).end();
  } else if ('json' in reply) {
    const body = Buffer.from(JSON.stringify(reply.json));
    res.writeHead(reply.status ?? 200, { ...common, 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': body.length, 'Cache-Control': 'no-store' });
    res.end(head ? undefined : body);
  } else if ('bytes' in reply) {
    res.writeHead(reply.status ?? 200, { ...common, 'Content-Type': reply.type, 'Content-Length': reply.bytes.length });
    res.end(head ? undefined : reply.bytes);
  } else {
    const st = statSync(reply.file);
    res.writeHead(reply.status ?? 200, { ...common, 'Content-Type': reply.type ?? contentType(reply.file), 'Content-Length': st.size, 'Cache-Control': reply.cache ? 'public, max-age=31536000, immutable' : 'no-cache' });
    if (head) res.end();
    else createReadStream(reply.file).pipe(res);
  }
}

/** Basic auth check against "user:pass" (constant-time compare). */
export function authorized(header: string | undefined, cred: string): boolean {
  const m = /^Basic\s+(.+)$/i.exec(header ?? '');
  if (!m) return false;
  const got = Buffer.from(Buffer.from(m[1], 'base64').toString('utf8'));
  const want = Buffer.from(cred);
  return got.length === want.length && timingSafeEqual(got, want);
}
