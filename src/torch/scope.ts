// Memory scopes. Node runs N-API finalizers only from the event loop, so a synchronous training
// loop frees nothing through GC (libtorch-notes.md, "Memory"): every tensor's lifetime is explicit.
//
// - tidy(fn): tensors created inside fn are disposed when it returns, except those it returns
//   (found inside arrays, plain objects and Maps), which move to the enclosing scope.
// - keep(t): t escapes every scope; its owner disposes it (parameters, optimizer state, caches).
// - `using t = …` disposes at the end of a block (Tensor implements Symbol.dispose).
// A finalizer still runs for a tensor that was never disposed; stats().leakedToGc counts those.

/** What a scope tracks: anything that can be disposed and kept. */
export interface Scoped {
  dispose(): void;
  /** true once keep() was called: no scope will dispose it. */
  kept: boolean;
}

const stack: Scoped[][] = [];

/** Registers a freshly created tensor with the innermost scope, if any. */
export function track(t: Scoped): void {
  const top = stack[stack.length - 1];
  if (top !== undefined) top.push(t);
}

export function keep<T extends Scoped>(t: T): T {
  t.kept = true;
  return t;
}

/** Number of scopes currently open (for tests and diagnostics). */
export function scopeDepth(): number {
  return stack.length;
}

function collect(value: unknown, out: Set<Scoped>, depth = 0): void {
  if (value === null || typeof value !== 'object' || depth > 8) return;
  if (isScoped(value)) {
    out.add(value);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collect(v, out, depth + 1);
  } else if (value instanceof Map) {
    for (const v of value.values()) collect(v, out, depth + 1);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collect(v, out, depth + 1);
  }
}

function isScoped(v: object): v is Scoped {
  return typeof (v as Scoped).dispose === 'function' && typeof (v as Scoped).kept === 'boolean';
}

/**
 * Runs fn; disposes every tensor it created except the ones it returns. If fn throws, everything
 * it created is disposed and the error propagates unchanged.
 */
export function tidy<T>(fn: () => T): T {
  const scope: Scoped[] = [];
  stack.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    stack.pop();
    for (const t of scope) if (!t.kept) t.dispose();
    throw e;
  }
  stack.pop();
  if (result instanceof Promise) {
    for (const t of scope) if (!t.kept) t.dispose();
    throw new Error('tidy() takes a synchronous function: tensor work is synchronous, await outside the scope');
  }
  const survivors = new Set<Scoped>();
  collect(result, survivors);
  const parent = stack[stack.length - 1];
  for (const t of scope) {
    if (t.kept) continue;
    if (survivors.has(t)) {
      if (parent !== undefined) parent.push(t);
    } else {
      t.dispose();
    }
  }
  return result;
}
