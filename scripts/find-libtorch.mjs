// Finds the libtorch that native/ builds against and prints one piece of it for binding.gyp.
// Order: $LIBTORCH (a libtorch folder, or a PyTorch install's torch/ folder — how CUDA users
// build), then Debian's libtorch-dev paths. `--json` prints everything (used by setup.sh).
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

function fromRoot(root) {
  const lib = join(root, 'lib');
  const include = join(root, 'include');
  if (!existsSync(join(include, 'ATen', 'ATen.h'))) return null;
  const libc10 = join(lib, 'libc10.so');
  if (!existsSync(join(lib, 'libtorch_cpu.so')) || !existsSync(libc10)) return null;
  return {
    root,
    includes: [include, join(include, 'torch', 'csrc', 'api', 'include')],
    libdir: lib,
    cuda: existsSync(join(lib, 'libtorch_cuda.so')),
    libc10,
  };
}

function debian() {
  const lib = '/usr/lib/x86_64-linux-gnu';
  const alt = '/usr/lib/aarch64-linux-gnu';
  const libdir = existsSync(join(lib, 'libtorch_cpu.so')) ? lib : existsSync(join(alt, 'libtorch_cpu.so')) ? alt : null;
  if (!libdir || !existsSync('/usr/include/ATen/ATen.h')) return null;
  return {
    root: '/usr',
    includes: ['/usr/include', '/usr/include/torch/csrc/api/include'],
    libdir,
    cuda: existsSync(join(libdir, 'libtorch_cuda.so')),
    libc10: join(libdir, 'libc10.so'),
  };
}

// Pip wheels of torch < 2.7 use the pre-C++11 std::string ABI; detect it from libc10's
// exported symbols instead of assuming (Debian and torch >= 2.7 use the new ABI).
function cxx11Abi(libc10) {
  try {
    const syms = execFileSync('nm', ['-D', '--defined-only', libc10], { maxBuffer: 64 << 20 }).toString();
    return syms.includes('__cxx11') ? 1 : 0;
  } catch {
    return 1;
  }
}

function version(includes) {
  for (const dir of includes) {
    const f = join(dir, 'torch', 'version.h');
    if (existsSync(f)) {
      const text = readFileSync(f, 'utf8');
      const m = /TORCH_VERSION\s*\\?\s*"([^"]+)"/.exec(text.replace(/\n/g, ' '));
      const major = /TORCH_VERSION_MAJOR (\d+)/.exec(text);
      const minor = /TORCH_VERSION_MINOR (\d+)/.exec(text);
      if (major && minor) return m ? m[1] : `${major[1]}.${minor[1]}`;
    }
  }
  return 'unknown';
}

export function findLibtorch() {
  const env = process.env.LIBTORCH;
  let found = null;
  if (env) {
    found = fromRoot(env);
    if (!found) {
      const hint = readdirSync(env, { withFileTypes: true }).map((d) => d.name).slice(0, 10).join(', ');
      throw new Error(`LIBTORCH=${env} is not a libtorch folder (expected include/ATen/ATen.h and lib/libtorch_cpu.so; found: ${hint})`);
    }
  } else {
    found = debian();
  }
  if (!found) return null;
  return { ...found, abi: cxx11Abi(found.libc10), version: version(found.includes) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const what = process.argv[2];
  let t;
  try {
    t = findLibtorch();
  } catch (e) {
    console.error(String(e.message));
    process.exit(2);
  }
  if (!t) {
    if (what === '--json') {
      console.log('null');
      process.exit(0);
    }
    console.error('libtorch not found: run `sudo apt-get install -y libtorch-dev libopenblas0` or set LIBTORCH');
    process.exit(2);
  }
  const libs = ['-L' + t.libdir, '-Wl,-rpath,' + t.libdir, '-Wl,--no-as-needed', '-ltorch_cpu', '-lc10'];
  if (t.cuda) libs.push('-ltorch_cuda');
  libs.push('-Wl,--as-needed');
  switch (what) {
    case '--include': console.log(t.includes.join(' ')); break;
    case '--libs': console.log(libs.join(' ')); break;
    case '--defines': console.log(`_GLIBCXX_USE_CXX11_ABI=${t.abi}` + (t.cuda ? ' SDTUNE_CUDA=1' : '')); break;
    case '--json': console.log(JSON.stringify(t)); break;
    default: console.error('usage: find-libtorch.mjs --include|--libs|--defines|--json'); process.exit(2);
  }
}
