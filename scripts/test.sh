#!/usr/bin/env bash
# Runs the whole suite with Node's test runner (TypeScript through tsx). Extra args: test files.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -gt 0 ]; then files=("$@"); else mapfile -t files < <(find test -name '*.test.ts' | sort); fi
exec node --import tsx --test --test-reporter=spec "${files[@]}"
