#!/usr/bin/env python3
"""How trustworthy is the regression gate? Given N reports of the same matrix made back to back
on one machine (nothing changed between them), compare every pair with `quantbench compare`:

* false alarms: regressions reported among the N*(N-1)/2 pairs (the goal is zero);
* sensitivity: for each pair, slow the later report down by 3%, 5% and 10% (speeds scaled by
  1 - s, TTFT by 1 + s, every repetition sample) and count how often the gate catches it.

With --multi K, each run is instead compared with a baseline of K other runs (the K before it,
wrapping around), the way scripts/nightly.sh keeps a baseline of several runs.

usage: scripts/gate-study.py QUANTBENCH_BINARY REPORTS_DIR [--multi K] [--threshold ...]...
REPORTS_DIR holds the runs' results.json files (or run folders). Prints Markdown.
"""
import itertools
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path


def load_reports(d: Path):
    files = sorted(d.glob("*.json")) or sorted(d.glob("*/results.json"))
    return files


def compare(qb, base, cur, extra):
    bases = base if isinstance(base, list) else [base]
    out = subprocess.run(
        [qb, "compare", *map(str, bases), str(cur), "--format", "json", "--config", "/nonexistent.toml", *extra],
        capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"compare failed ({out.returncode}): {out.stderr}")
    return json.loads(out.stdout)


def slowed(report_path: Path, s: float, tmp: Path) -> Path:
    r = json.loads(report_path.read_text())
    for c in r["cells"]:
        for rep in c.get("samples", []):
            for k in ("decode_tok_s", "tg_tok_s", "pp_tok_s"):
                rep[k] = rep[k] * (1 - s)
            rep["ttft_ms"] = rep["ttft_ms"] * (1 + s)
            # every token s% later: the inter-token latencies grow by s
            rep["token_ms"] = [x * (1 + s) for x in rep.get("token_ms", [])]
    p = tmp / f"{report_path.stem}-slow{int(s * 100)}.json"
    p.write_text(json.dumps(r))
    return p


def main():
    qb, d, extra = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    multi = 0
    if extra[:1] == ["--multi"]:
        multi, extra = int(extra[1]), extra[2:]
    files = load_reports(d)
    if multi:
        n = len(files)
        pairs = [([files[(j - i) % n] for i in range(1, multi + 1)], files[j]) for j in range(n)]
    else:
        pairs = list(itertools.combinations(files, 2))
    false_alarms = Counter()
    cells_with_alarm = 0
    n_cells = 0
    for a, b in pairs:
        cmp = compare(qb, a, b, extra)
        for c in cmp["cells"]:
            n_cells += 1
            hit = False
            for m in c["metrics"]:
                if m["verdict"] == "regressed":
                    false_alarms[m["metric"]] += 1
                    hit = True
            cells_with_alarm += hit
    what = f"comparisons with a {multi}-run baseline" if multi else "pairwise comparisons"
    print(f"{len(files)} runs, {len(pairs)} {what}, {n_cells} cell comparisons"
          f"{' (thresholds: ' + ' '.join(extra) + ')' if extra else ' (default thresholds)'}\n")
    print(f"False alarms: {sum(false_alarms.values())} regressions reported, in "
          f"{cells_with_alarm} of {n_cells} cell comparisons"
          + (": " + ", ".join(f"{k} {v}" for k, v in sorted(false_alarms.items())) if false_alarms else "") + "\n")
    print("| injected slowdown | metric | caught | rate |\n|---|---|---|---|")
    metrics = ("decode_tok_s", "itl_ms_p50", "tg_tok_s", "pp_tok_s", "ttft_ms")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for s in (0.03, 0.05, 0.10, 0.15, 0.20):
            caught = Counter()
            total = Counter()
            for a, b in pairs:
                cmp = compare(qb, a, slowed(b, s, tmp), extra)
                for c in cmp["cells"]:
                    for m in c["metrics"]:
                        if m["metric"] in metrics:
                            total[m["metric"]] += 1
                            caught[m["metric"]] += m["verdict"] == "regressed"
            for k in metrics:
                if total[k]:
                    print(f"| {int(s * 100)}% | {k} | {caught[k]}/{total[k]} | {100 * caught[k] / total[k]:.0f}% |")


if __name__ == "__main__":
    main()
