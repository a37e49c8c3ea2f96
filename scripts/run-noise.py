#!/usr/bin/env python3
"""Run-to-run noise of a set of reports of the same matrix: for every cell and metric, the
coefficient of variation of the per-run means (between runs), the median within-run CV of the
repetition samples, and the largest pairwise relative difference between two runs.

usage: scripts/run-noise.py REPORTS_DIR     (results.json files, or run folders)
"""
import json,glob,sys,statistics as st,itertools
files=sorted(glob.glob(sys.argv[1]+'/*.json')) or sorted(glob.glob(sys.argv[1]+'/*/results.json'))
runs=[json.load(open(f)) for f in files]
def val(c,m):
    if m in ('load_s','energy_j_per_tok','mem_bytes'): return c.get(m)
    if m=='itl_p50': return c.get('itl_ms_p50')
    s=c['samples']; return sum(r[m] for r in s)/len(s)
def within_cv(c,m):
    if m in ('load_s','energy_j_per_tok','mem_bytes','itl_p50'): return None
    v=[r[m] for r in c['samples']]; return st.stdev(v)/st.mean(v)
print("metric | cell | between-run CV | within-run CV (median over runs) | max pairwise |change|")
for m in ['decode_tok_s','tg_tok_s','pp_tok_s','ttft_ms','itl_p50','load_s','mem_bytes','energy_j_per_tok']:
    for i,c0 in enumerate(runs[0]['cells']):
        vals=[val(r['cells'][i],m) for r in runs]
        if any(v is None for v in vals): continue
        mean=st.mean(vals); cv=st.stdev(vals)/mean if mean else 0
        w=[within_cv(r['cells'][i],m) for r in runs]; w=[x for x in w if x is not None]
        mx=max(abs(b-a)/a for a,b in itertools.permutations(vals,2) if a)
        print(f"{m:16s} {c0['model']:12s} {c0['quant']:7s} between {100*cv:5.1f}%  within {100*st.median(w) if w else float('nan'):5.1f}%  maxpair {100*mx:5.1f}%")
