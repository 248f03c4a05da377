#!/usr/bin/env bash
# Builds sdtune against the PyTorch (CUDA) install of a machine that has Python + torch but no
# Node or registry, then runs what is asked. Used for the CUDA checks on a lent GPU machine:
# the caller carries .carry/ = node.xz (the node binary), nm.tar.xz (node_modules without
# typescript), nodeinc.tar.xz (Node's headers) and, for the full suite, shared.tar.xz.
#   bash scripts/device-run.sh test [files…]   # the suite on SDTUNE_TEST_DEVICE=cuda
#   bash scripts/device-run.sh bench [suites…]
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('.carry/node.xz'), open('/usr/local/bin/node','wb'))"
chmod +x /usr/local/bin/node
tar xJf .carry/nm.tar.xz
mkdir -p /tmp/nodeinc && tar xJf .carry/nodeinc.tar.xz -C /tmp/nodeinc
if [ -f .carry/shared.tar.xz ]; then mkdir -p /tmp/sdshared && tar xJf .carry/shared.tar.xz -C /tmp/sdshared && export SDTUNE_SHARED=/tmp/sdshared/shared; fi
LIBTORCH="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')"
export LIBTORCH
echo "node $(node --version); torch $(python3 -c 'import torch;print(torch.__version__, torch.cuda.get_device_name(0))')"
inc=(); for d in $(node scripts/find-libtorch.mjs --include); do inc+=("-I$d"); done
defs=(); for d in $(node scripts/find-libtorch.mjs --defines); do defs+=("-D$d"); done
libs=($(node scripts/find-libtorch.mjs --libs))
mkdir -p build/Release build/obj
for f in native/*.cc; do
  g++ -c -fPIC -std=c++17 -O2 -fexceptions -frtti -Wno-deprecated-declarations "${defs[@]}" -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS \
    -DNODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS -Inode_modules/node-addon-api -I/tmp/nodeinc/include/node "${inc[@]}" "$f" -o "build/obj/$(basename "$f" .cc).o" &
done
wait
g++ -shared -o build/Release/sdtune_native.node build/obj/*.o "${libs[@]}"
node scripts/find-libtorch.mjs --json > build/libtorch.json
echo "built in $(( $(date +%s) - t0 )) s"
what="${1:-test}"; shift || true
case "$what" in
  test) SDTUNE_TEST_DEVICE=cuda bash scripts/test.sh "$@" ;;
  bench) node --import tsx bench/run.ts "$@" ;;
  *) node --import tsx "$what" "$@" ;;
esac
