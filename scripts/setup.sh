#!/usr/bin/env bash
# Installs what sdtune needs, and only what is missing, so that `npm test` and `npm run demo` work
# on a fresh Debian 12 machine with Node 20:
#   1. libtorch + OpenBLAS from Debian (apt-get, when we are root; otherwise says what to run),
#   2. the npm packages,
#   3. the native addon (native/), rebuilt when its sources changed.
#   4. better-sqlite3's addon (the studio's job store), built from its bundled SQLite source,
#   5. the studio's web UI (web/ → web/dist with Vite), rebuilt when its sources changed.
# Flags: --rebuild (force the addon build), --bench (also python3-torch, the benchmark's reference),
#        --test (also Debian's chromium, for the studio's browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."

rebuild=0
bench=0
browser=0
for a in "$@"; do
  case "$a" in
    --rebuild) rebuild=1 ;;
    --bench) bench=1 ;;
    --test) browser=1 ;;
    *) echo "setup.sh: unknown flag $a" >&2; exit 2 ;;
  esac
done

say() { echo "[sdtune setup] $*" >&2; }

# 1. system packages --------------------------------------------------------------------------
pkgs=()
if [ -z "${LIBTORCH:-}" ] && [ ! -f /usr/include/ATen/ATen.h ]; then pkgs+=(libtorch-dev); fi
if ! ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\.0'; then pkgs+=(libopenblas0); fi
if [ "$bench" = 1 ] && ! /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then pkgs+=(python3-torch); fi
if [ "$browser" = 1 ] && [ ! -x /usr/bin/chromium ]; then pkgs+=(chromium); fi
if [ "${#pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${pkgs[*]} (apt-get; a few minutes the first time)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  else
    say "missing system packages: ${pkgs[*]}"
    say "install them with:  sudo apt-get install -y ${pkgs[*]}"
    say "(or set LIBTORCH to a libtorch folder, or to a PyTorch install's torch/ folder for CUDA)"
    exit 1
  fi
fi

# 2. npm packages -----------------------------------------------------------------------------
if [ ! -f node_modules/.package-lock.json ] || [ package.json -nt node_modules/.package-lock.json ]; then
  say "installing npm packages"
  npm install --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
fi

# 3. native addon -----------------------------------------------------------------------------
addon=build/Release/sdtune_native.node
stamp=build/libtorch.json
want="$(node scripts/find-libtorch.mjs --json)"
if [ "$want" = null ]; then
  say "libtorch not found: sudo apt-get install -y libtorch-dev libopenblas0 (or set LIBTORCH)"
  exit 1
fi
if [ "$rebuild" = 1 ] || [ ! -f "$addon" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] \
   || [ -n "$(find native binding.gyp scripts/find-libtorch.mjs -newer "$addon" -print -quit)" ]; then
  say "building the native addon against $(echo "$want" | node -e 'const t=JSON.parse(require("fs").readFileSync(0,"utf8"));console.log(t.root+" (libtorch "+t.version+(t.cuda?", CUDA":"")+")")') (~30 s)"
  gyp="$(npm prefix -g 2>/dev/null)/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"
  nodedir="$(dirname "$(dirname "$(command -v node)")")"
  args=(rebuild -j 2)
  if [ -f "$nodedir/include/node/node_api.h" ]; then args+=("--nodedir=$nodedir"); fi
  if [ -f "$gyp" ]; then node "$gyp" "${args[@]}" >build.log 2>&1 || { tail -30 build.log >&2; say "native build failed (full log: build.log)"; exit 1; }
  else npx --yes node-gyp "${args[@]}" >build.log 2>&1 || { tail -30 build.log >&2; say "native build failed (full log: build.log)"; exit 1; }
  fi
  echo "$want" >"$stamp"
fi

# 4. better-sqlite3 (npm ran with --ignore-scripts: its addon is built here, once) -------------
if ! node -e "new (require('better-sqlite3'))(':memory:').close()" >/dev/null 2>&1; then
  say "building better-sqlite3 (SQLite for the studio's jobs; ~1 min, once)"
  npm rebuild better-sqlite3 --loglevel=error >sqlite-build.log 2>&1 || { tail -20 sqlite-build.log >&2; say "better-sqlite3 build failed (log: sqlite-build.log)"; exit 1; }
fi

# 5. the web UI ---------------------------------------------------------------------------------
if [ ! -f web/dist/index.html ] || [ -n "$(find web/index.html web/src web/vite.config.ts src/server/api-types.ts -newer web/dist/index.html -print -quit)" ]; then
  say "building the web UI (vite)"
  npx vite build --config web/vite.config.ts --logLevel error >web-build.log 2>&1 || { tail -20 web-build.log >&2; say "web UI build failed (log: web-build.log)"; exit 1; }
fi
