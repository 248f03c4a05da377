// `sdtune serve`: the studio over HTTP — the typed API (/api), the A1111-compatible subset
// (/sdapi/v1) and the web UI (web/dist) — on one node:http server.
// Security, by default: bound to 127.0.0.1; any other address needs --auth user:pass (HTTP Basic)
// or an explicit --insecure; no CORS headers, so other sites' pages cannot read the API; request
// bodies are size-limited while they stream; every name from a request is checked (data.ts).
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { apiRoutes } from './api.ts';
import { a1111Routes, a1111Error } from './a1111.ts';
import { authorized, makeReq, send, staticFile, type Reply, type Router } from './http.ts';
import { HttpError } from './schema.ts';
import { Studio, type StudioOptions } from './studio.ts';

export const WEB_ROOT = fileURLToPath(new URL('../../web/dist', import.meta.url));

export interface ServeOptions extends StudioOptions {
  port?: number;
  host?: string;
  /** "user:pass" for HTTP Basic auth. */
  auth?: string;
  /** Listen beyond localhost without auth (the user said so). */
  insecure?: boolean;
  webRoot?: string;
}

export interface RunningStudio {
  studio: Studio;
  server: Server;
  url: string;
  close(): Promise<void>;
}

const LOCAL = new Set(['127.0.0.1', 'localhost', '::1']);

export function checkServeOptions(o: ServeOptions): void {
  const host = o.host ?? '127.0.0.1';
  if (!LOCAL.has(host) && !o.auth && !o.insecure) {
    throw new Error(`listening on ${host} lets other machines use this studio: add --auth user:pass (or --insecure if you really mean it)`);
  }
  if (o.auth !== undefined && !/^[^:]+:.+$/.test(o.auth)) throw new Error('--auth takes user:pass');
  if (o.port !== undefined && (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535)) throw new Error(`--port must be 0–65535 (got ${o.port})`);
}

export async function startStudio(o: ServeOptions): Promise<RunningStudio> {
  checkServeOptions(o);
  const studio = new Studio(o);
  const api = apiRoutes(studio);
  const a1111 = a1111Routes(studio);
  const web = o.webRoot ?? WEB_ROOT;

  const server = createServer((raw, res) => {
    const url = new URL(raw.url ?? '/', 'http://localhost');
    const isA1111 = url.pathname.startsWith('/sdapi/');
    const fail = (e: unknown) => {
      const status = e instanceof HttpError ? e.status : 500;
      if (!(e instanceof HttpError)) process.stderr.write(`sdtune serve: ${raw.method} ${url.pathname}: ${(e as Error).stack ?? e}\n`);
      const message = e instanceof Error ? e.message : String(e);
      if (res.headersSent) return res.destroy();
      const body = isA1111 ? a1111Error(status, message) : { error: message, ...(e instanceof HttpError && e.field && { field: e.field }) };
      send(res, { status, json: body });
      // A refused upload: the rest of its body is not read.
      if (status === 413) raw.destroy();
    };
    if (o.auth && !authorized(raw.headers.authorization, o.auth)) {
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="sdtune studio", charset="UTF-8"', 'Content-Type': 'application/json' }).end(JSON.stringify({ error: 'this studio needs a user name and password' }));
      return;
    }
    const method = raw.method ?? 'GET';
    const router: Router | null = url.pathname.startsWith('/api/') || url.pathname.startsWith('/files/') ? api.router : isA1111 ? a1111.router : null;
    if (!router) {
      // The web UI: files of web/dist, and index.html for the app's own paths.
      if (method !== 'GET' && method !== 'HEAD') return fail(new HttpError(405, `${method} is not used here`));
      const file = staticFile(web, url.pathname === '/' ? '/index.html' : url.pathname) ?? (url.pathname.includes('.') ? null : staticFile(web, '/index.html'));
      if (!file) {
        if (!existsSync(join(web, 'index.html'))) return send(res, { status: 503, json: { error: `the web UI is not built (${web} is missing): run npm run setup` } });
        return fail(new HttpError(404, `there is no ${url.pathname}`));
      }
      return send(res, { file, cache: url.pathname.startsWith('/assets/') }, method === 'HEAD');
    }
    const m = router.match(method, url.pathname);
    if ('status' in m) return fail(new HttpError(m.status, m.status === 404 ? `there is no ${url.pathname} (GET /api/openapi.json lists the API)` : `${url.pathname} takes ${m.allowed!.join(', ')}, not ${method}`));
    Promise.resolve()
      .then(() => m.handler(makeReq(raw, m.params, url)))
      .then((reply: Reply) => {
        if ('sse' in reply) {
          res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
          res.write(': connected\n\n');
          const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
          const stop = reply.sse((d) => res.write(`data: ${JSON.stringify(d)}\n\n`), () => res.end());
          raw.on('close', () => {
            clearInterval(ping);
            stop();
          });
          return;
        }
        send(res, reply, method === 'HEAD');
      })
      .catch(fail);
  });
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  const host = o.host ?? '127.0.0.1';
  await new Promise<void>((res, rej) => {
    server.once('error', (e: NodeJS.ErrnoException) => rej(new Error(e.code === 'EADDRINUSE' ? `port ${o.port} is in use: choose another with --port` : e.message)));
    server.listen(o.port ?? 7860, host, () => res());
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${addr.port}`;
  let closing: Promise<void> | null = null;
  return {
    studio,
    server,
    url,
    close: () =>
      (closing ??= (async () => {
        server.closeAllConnections();
        await new Promise<void>((res) => server.close(() => res()));
        await studio.close();
      })()),
  };
}
