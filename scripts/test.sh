#!/usr/bin/env bash
# Runs the whole suite with Node's test runner (TypeScript through tsx). Extra args: test files.
set -euo pipefail
cd "$(dirname "$0")/.."
# The parity tests read the reference fixtures in ../shared (or SDTUNE_SHARED): say so once, up front,
# instead of letting dozens of tests fail on a missing file.
shared="${SDTUNE_SHARED:-$(cd .. && pwd)/shared}"
if [ ! -f "$shared/fixtures/README.md" ]; then
  echo "sdtune tests: the reference fixtures are not at $shared/fixtures; clone sdtune beside shared/, or set SDTUNE_SHARED=/path/to/shared" >&2
  exit 2
fi
if [ "$#" -gt 0 ]; then files=("$@"); else mapfile -t files < <(find test -name '*.test.ts' | sort); fi
exec node --import tsx --test --test-reporter=spec "${files[@]}"
