#!/usr/bin/env python3
"""Compares quantbench's served-cell figures with AIPerf's, run by run and pooled.

Reads RAW_DIR/<load>/r<round>-<tool>/ as serving-agreement.sh leaves it:
  quantbench: requests.jsonl (one line per measured request), summary.json (the cell's
              `serving.summary` from results.json)
  aiperf:     records.jsonl (profile_export.jsonl, profiling phase only), summary.json
              (profile_export_aiperf.json, trimmed)
  both:       load.txt (1-minute load average sampled every 5 s during the run),
              server.log (llama-server's log lines of that run)
and writes RAW_DIR/../figures.csv and RAW_DIR/../tables.md. Percentiles are recomputed from
the per-request values of both tools the same way (numpy's linear interpolation, which both
tools use), and checked against each tool's own summary.

Per request:
  TTFT  quantbench ttft_ms            | AIPerf time_to_first_token     (both: request sent ->
                                        first chunk with non-empty text)
  TPOT  quantbench (e2e-ttft)/(n-1)   | AIPerf inter_token_latency = (request_latency-ttft)/(osl-1)
        e2e: last SSE event (the empty    request_latency: last chunk with non-empty text
        chunk with finish_reason+usage)
  TPOT* quantbench sum(itl_ms)/(n-1): last text chunk - first text chunk, AIPerf's definition
  E2E   quantbench e2e_ms             | AIPerf request_latency
  srv   llama-server's own decode time per token (its log, `eval time ... ms per token`)
"""
import csv
import json
import re
import statistics
import sys
from pathlib import Path

import numpy as np

TOOLS = ("aiperf", "quantbench")
TOL = 0.10


def pct(v, q):
    return float(np.percentile(np.asarray(v, dtype=float), q)) if v else float("nan")


def server_decode_ms_per_token(log: Path):
    """llama-server's `eval time = X ms / N tokens (Y ms per token ...)` lines of one run."""
    out = []
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            m = re.search(r"\s eval time =\s*([\d.]+) ms /\s*(\d+) tokens", line)
            if m and int(m.group(2)) > 1:
                out.append(float(m.group(1)) / int(m.group(2)))
    return out


def load_stats(p: Path):
    vals = []
    if p.exists():
        for line in p.read_text().split("\n"):
            parts = line.split()
            if len(parts) >= 2:
                vals.append(float(parts[1]))
    if not vals:
        return (float("nan"),) * 3
    return min(vals), statistics.mean(vals), max(vals)


def read_quantbench(d: Path):
    reqs = [json.loads(l) for l in (d / "requests.jsonl").read_text().splitlines() if l.strip()]
    ok = [r for r in reqs if not r.get("error") and r.get("ttft_ms") is not None]
    ttft, tpot, tpot_last_text, e2e, itl, cached = [], [], [], [], [], 0
    for r in ok:
        n = r.get("usage_output_tokens") or r["output_tokens"]
        ttft.append(r["ttft_ms"])
        e2e.append(r["e2e_ms"])
        if n > 1:
            tpot.append((r["e2e_ms"] - r["ttft_ms"]) / (n - 1))
            tpot_last_text.append(sum(r.get("itl_ms", [])) / (n - 1))
        itl.extend(r.get("itl_ms", []))
        cached += r.get("server_cached_tokens") or 0
    summ = json.loads((d / "summary.json").read_text())
    own = {
        "ttft_p50": summ["ttft_ms"]["p50"],
        "tpot_p50": summ["tpot_ms"]["p50"],
    }
    return dict(n=len(ok), failed=len(reqs) - len(ok), ttft=ttft, tpot=tpot,
                tpot_last_text=tpot_last_text, e2e=e2e, itl=itl, cached=cached,
                osl=[r.get("usage_output_tokens") for r in ok], own=own)


def read_aiperf(d: Path):
    recs = [json.loads(l) for l in (d / "records.jsonl").read_text().splitlines() if l.strip()]
    recs = [r for r in recs if r["metadata"].get("benchmark_phase") == "profiling"]
    ok = [r for r in recs if "time_to_first_token" in r["metrics"] and not r.get("error")]
    m = lambda r, k: r["metrics"][k]["value"]
    ttft = [m(r, "time_to_first_token") for r in ok]
    tpot = [m(r, "inter_token_latency") for r in ok]
    e2e = [m(r, "request_latency") for r in ok]
    itl = [x for r in ok for x in r["metrics"].get("inter_chunk_latency", {}).get("value", [])]
    cached = sum(r["metrics"].get("usage_prompt_cache_read_tokens", {}).get("value", 0) for r in ok)
    summ = json.loads((d / "summary.json").read_text())
    own = {
        "ttft_p50": summ["time_to_first_token"]["p50"],
        "tpot_p50": summ["inter_token_latency"]["p50"],
    }
    return dict(n=len(ok), failed=len(recs) - len(ok), ttft=ttft, tpot=tpot,
                tpot_last_text=tpot, e2e=e2e, itl=itl, cached=cached,
                osl=[m(r, "output_sequence_length") for r in ok], own=own)


def figures(x):
    f = {}
    for k in ("ttft", "tpot", "e2e"):
        for q in (50, 90, 99):
            f[f"{k}_p{q}"] = pct(x[k], q)
    f["tpot_last_text_p50"] = pct(x["tpot_last_text"], 50)
    f["itl_p50"] = pct(x["itl"], 50)
    f["srv_tpot_p50"] = pct(x["srv"], 50)
    return f


def main(raw: Path):
    rows, pooled = [], {}
    for load_dir in sorted(p for p in raw.iterdir() if p.is_dir()):
        load = load_dir.name
        for run in sorted(p for p in load_dir.iterdir() if p.is_dir()):
            rnd, tool = run.name.split("-", 1)
            x = read_aiperf(run) if tool == "aiperf" else read_quantbench(run)
            x["srv"] = server_decode_ms_per_token(run / "server.log")
            lo, mean, hi = load_stats(run / "load.txt")
            f = figures(x)
            # the recomputed medians must equal the tool's own
            for k in ("ttft_p50", "tpot_p50"):
                if abs(f[k] - x["own"][k]) > 1e-6 * max(1.0, abs(f[k])):
                    print(f"warning: {load} {run.name} {k}: recomputed {f[k]:.4f}, "
                          f"the tool says {x['own'][k]:.4f}", file=sys.stderr)
            rows.append(dict(load=load, round=rnd[1:], tool=tool, requests=x["n"],
                             failed=x["failed"], cached_prompt_tokens=x["cached"],
                             osl_min=min(x["osl"]) if x["osl"] else 0,
                             osl_max=max(x["osl"]) if x["osl"] else 0,
                             load1_min=lo, load1_mean=mean, load1_max=hi, **f))
            p = pooled.setdefault((load, tool), {k: [] for k in ("ttft", "tpot", "tpot_last_text", "e2e", "itl", "srv")})
            for k in p:
                p[k].extend(x[k])
    cols = list(rows[0].keys())
    with open(raw.parent / "figures.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})

    md = []
    md.append("### Per run\n")
    md.append("| load | round | tool | n | 1-min load (min–max) | TTFT p50 | p90 | p99 | TPOT p50 | p90 | p99 | TPOT* p50 | server ms/tok p50 |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        md.append(f"| {r['load']} | {r['round']} | {r['tool']} | {r['requests']} | "
                  f"{r['load1_min']:.1f}–{r['load1_max']:.1f} | "
                  f"{r['ttft_p50']:.1f} | {r['ttft_p90']:.1f} | {r['ttft_p99']:.1f} | "
                  f"{r['tpot_p50']:.2f} | {r['tpot_p90']:.2f} | {r['tpot_p99']:.2f} | "
                  f"{r['tpot_last_text_p50']:.2f} | {r['srv_tpot_p50']:.2f} |")
    md.append("\n### Ratios quantbench / AIPerf, per round\n")
    md.append("| load | round | TTFT p50 | p90 | p99 | TPOT p50 | p90 | p99 | server ms/tok p50 |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    by = {(r["load"], r["round"], r["tool"]): r for r in rows}
    for (load, rnd, tool) in sorted(by):
        if tool != "quantbench" or (load, rnd, "aiperf") not in by:
            continue
        q, a = by[(load, rnd, "quantbench")], by[(load, rnd, "aiperf")]
        ratio = lambda k: q[k] / a[k]
        md.append(f"| {load} | {rnd} | " + " | ".join(
            f"{ratio(k):.3f}" for k in ("ttft_p50", "ttft_p90", "ttft_p99", "tpot_p50",
                                         "tpot_p90", "tpot_p99", "srv_tpot_p50")) + " |")
    md.append("\n### Pooled over the rounds (all requests of a tool at a load)\n")
    md.append("| load | tool | n | TTFT p50 | p90 | p99 | TPOT p50 | p90 | p99 | TPOT* p50 | E2E p50 | ITL p50 | server ms/tok p50 |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    verdict = []
    loads = sorted({k[0] for k in pooled})
    for load in loads:
        fs = {}
        for tool in TOOLS:
            if (load, tool) not in pooled:
                continue
            x = pooled[(load, tool)]
            f = fs[tool] = figures(x)
            md.append(f"| {load} | {tool} | {len(x['ttft'])} | {f['ttft_p50']:.1f} | {f['ttft_p90']:.1f} | "
                      f"{f['ttft_p99']:.1f} | {f['tpot_p50']:.2f} | {f['tpot_p90']:.2f} | {f['tpot_p99']:.2f} | "
                      f"{f['tpot_last_text_p50']:.2f} | {f['e2e_p50']:.0f} | {f['itl_p50']:.2f} | {f['srv_tpot_p50']:.2f} |")
        if len(fs) == 2:
            q, a = fs["quantbench"], fs["aiperf"]
            r = {k: q[k] / a[k] for k in q}
            md.append(f"| {load} | **ratio** | | {r['ttft_p50']:.3f} | {r['ttft_p90']:.3f} | {r['ttft_p99']:.3f} | "
                      f"{r['tpot_p50']:.3f} | {r['tpot_p90']:.3f} | {r['tpot_p99']:.3f} | {r['tpot_last_text_p50']:.3f} | "
                      f"{r['e2e_p50']:.3f} | {r['itl_p50']:.3f} | {r['srv_tpot_p50']:.3f} |")
            ok = lambda k: abs(r[k] - 1) <= TOL
            verdict.append(f"- {load}: TTFT median ratio {r['ttft_p50']:.3f} "
                           f"({'within' if ok('ttft_p50') else 'OUTSIDE'} 10%), TPOT median ratio "
                           f"{r['tpot_p50']:.3f} ({'within' if ok('tpot_p50') else 'OUTSIDE'} 10%)")
    md.append("\n### Verdict (pooled medians)\n")
    md.extend(verdict)
    text = "\n".join(md) + "\n"
    (raw.parent / "tables.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
