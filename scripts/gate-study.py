#!/usr/bin/env python3
"""How trustworthy is the regression gate? Given N reports of the same matrix made back to back
on one machine (nothing changed between them), compare every pair with `quantbench compare`:

* false alarms: regressions reported among the N*(N-1)/2 pairs (the goal is zero);
* sensitivity: for each pair, slow the later report down by 3%, 5% and 10% (speeds scaled by
  1 - s, TTFT by 1 + s, every repetition sample) and count how often the gate catches it.

With --multi K, each run is instead compared with a baseline of K other runs (the K before it,
wrapping around), the way scripts/nightly.sh keeps a baseline of several runs.

With --confirm K, the gate confirms every regression the way `run --baseline --confirm K` does:
the K runs made right after the current one (in time order) stand for its re-measurements
(`compare --confirm-with`), so the last K runs of REPORTS_DIR serve only as confirmations and
the pairs are formed from the runs before them. A slowdown is injected into the current run and
its confirmations alike (a slower build is slower in every re-run).

--hold-out K leaves the last K runs out of the pairs without confirming (to compare the gate
without confirmation on the same pairs as with --confirm K).

usage: scripts/gate-study.py QUANTBENCH_BINARY REPORTS_DIR [--multi K] [--confirm K] [--hold-out K]
                             [--slowdowns 3,5,10,15,20] [--threshold ...]...
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


def compare(qb, base, cur, extra, confirm=()):
    bases = base if isinstance(base, list) else [base]
    confirm_args = [a for c in confirm for a in ("--confirm-with", str(c))]
    out = subprocess.run(
        [qb, "compare", *map(str, bases), str(cur), "--format", "json", "--config", "/nonexistent.toml",
         *confirm_args, *extra],
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
    p = tmp / f"{report_path.parent.name}-{report_path.stem}-slow{int(s * 100)}.json"
    p.write_text(json.dumps(r))
    return p


def main():
    qb, d, extra = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    multi = confirm = hold_out = 0
    slowdowns = [0.03, 0.05, 0.10, 0.15, 0.20]
    while extra[:1] and extra[0] in ("--multi", "--confirm", "--hold-out", "--slowdowns"):
        flag, value, extra = extra[0], extra[1], extra[2:]
        if flag == "--multi":
            multi = int(value)
        elif flag == "--confirm":
            confirm = int(value)
        elif flag == "--hold-out":
            hold_out = int(value)
        else:
            slowdowns = [int(x) / 100 for x in value.split(",")]
    files = load_reports(d)
    later = {f: files[k + 1:k + 1 + confirm] for k, f in enumerate(files)}
    held = max(confirm, hold_out)
    runs = files[:len(files) - held] if held else files
    if multi:
        n = len(runs)
        pairs = [([runs[(j - i) % n] for i in range(1, multi + 1)], runs[j]) for j in range(n)]
    else:
        pairs = list(itertools.combinations(runs, 2))
    false_alarms = Counter()
    cells_with_alarm = 0
    n_cells = 0
    runs_with_alarm = 0
    for a, b in pairs:
        cmp = compare(qb, a, b, extra, later[b])
        runs_with_alarm += cmp["regressions"] > 0
        for c in cmp["cells"]:
            n_cells += 1
            hit = False
            for m in c["metrics"]:
                if m["verdict"] == "regressed":
                    false_alarms[m["metric"]] += 1
                    hit = True
            cells_with_alarm += hit
    what = f"comparisons with a {multi}-run baseline" if multi else "pairwise comparisons"
    how = f", each regression confirmed by the {confirm} runs that followed" if confirm else ""
    print(f"{len(runs)} runs, {len(pairs)} {what}{how}, {n_cells} cell comparisons"
          f"{' (thresholds: ' + ' '.join(extra) + ')' if extra else ' (default thresholds)'}\n")
    print(f"False alarms: {sum(false_alarms.values())} regressions reported, in "
          f"{cells_with_alarm} of {n_cells} cell comparisons"
          + (": " + ", ".join(f"{k} {v}" for k, v in sorted(false_alarms.items())) if false_alarms else "")
          + f"; {runs_with_alarm} of {len(pairs)} comparisons would fail the gate (exit 1)\n")
    print("| injected slowdown | metric | caught | rate |\n|---|---|---|---|")
    metrics = ("decode_tok_s", "itl_ms_p50", "tg_tok_s", "pp_tok_s", "ttft_ms")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for s in slowdowns:
            caught = Counter()
            total = Counter()
            any_caught = cells = runs_caught = 0
            for a, b in pairs:
                cmp = compare(qb, a, slowed(b, s, tmp), extra, [slowed(c, s, tmp) for c in later[b]])
                runs_caught += cmp["regressions"] > 0
                for c in cmp["cells"]:
                    cells += 1
                    any_caught += any(m["verdict"] == "regressed" for m in c["metrics"])
                    for m in c["metrics"]:
                        if m["metric"] in metrics:
                            total[m["metric"]] += 1
                            caught[m["metric"]] += m["verdict"] == "regressed"
            for k in metrics:
                if total[k]:
                    print(f"| {int(s * 100)}% | {k} | {caught[k]}/{total[k]} | {100 * caught[k] / total[k]:.0f}% |")
            if cells:
                print(f"| {int(s * 100)}% | **any metric** (the cell is flagged) | {any_caught}/{cells} | "
                      f"{100 * any_caught / cells:.0f}% |")
                print(f"| {int(s * 100)}% | **the run** (the gate exits 1) | {runs_caught}/{len(pairs)} | "
                      f"{100 * runs_caught / len(pairs):.0f}% |")


if __name__ == "__main__":
    main()
