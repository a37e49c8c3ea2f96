//! Verdicts: each metric of each cell against the baseline, and confirmation re-runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::statistics::{
    between_runs_min_detectable, between_runs_p, welch_min_detectable, welch_p, z_p,
};
use super::view::{CellView, QualityView, ReportView, Stat};
use crate::metrics::{metric, Direction, MetricDef, Thresholds, METRICS};

/// The outcome for one metric of one cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Regressed,
    NotComparable,
    Missing,
    New,
    /// The gate cannot tell: the machine was busy while the cell was timed (in this run or
    /// the baseline), or the samples are too spread to detect a change of the threshold's
    /// size. The reason says which; a nightly job retries rather than alerts.
    Inconclusive,
    /// Beyond the threshold in one run, but not in every confirmation re-run: noise.
    Unconfirmed,
    Improved,
    Unchanged,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Regressed => "REGRESSED",
            Verdict::NotComparable => "not comparable",
            Verdict::Missing => "missing",
            Verdict::New => "new",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Unconfirmed => "unconfirmed",
            Verdict::Improved => "improved",
            Verdict::Unchanged => "unchanged",
        }
    }
}

/// One metric's comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    pub metric: String,
    pub direction: Direction,
    pub base: Option<f64>,
    pub current: Option<f64>,
    /// (current − base) / base, percent.
    pub change_pct: Option<f64>,
    /// The standard errors of `base` and `current`, for metrics reported with one (quality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_err: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_err: Option<f64>,
    /// Two-sided p-value of the significance test; `None` where none applies.
    pub p_value: Option<f64>,
    /// `welch` (repetition samples of one baseline run), `between_runs` (the spread of several
    /// baseline runs), `floor` (one value per run, absolute floor), `z_test` (means with their
    /// standard errors: the quality metrics) or `none`.
    pub method: String,
    pub threshold_pct: f64,
    /// The smallest change, percent of the baseline, that the test could detect 80% of the
    /// time from these samples (their spread and number); `None` where the test has no such
    /// figure (a floor, a z-test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_detectable_pct: Option<f64>,
    pub verdict: Verdict,
    /// Why the verdict is `inconclusive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Re-measurements of a cell that regressed (`run --confirm`, `compare --confirm-with`),
    /// each compared with the same baseline: the regression stands only if every one regresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirmations: Vec<Confirmation>,
}

/// How an `inconclusive` verdict for a busy machine starts its reason.
pub const BUSY: &str = "the machine was busy";
const THIS_RUN: &str = "during this run";

impl MetricResult {
    /// Whether the metric is inconclusive because the machine was busy (not for lack of
    /// repetitions): a re-run on a quiet machine may decide it.
    pub fn disturbed(&self) -> bool {
        self.verdict == Verdict::Inconclusive
            && self.reason.as_deref().is_some_and(|r| r.starts_with(BUSY))
    }
}

/// One confirmation re-run of a regressed metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The run the re-measurement belongs to.
    pub run_id: String,
    pub current: Option<f64>,
    pub change_pct: Option<f64>,
    pub p_value: Option<f64>,
    /// `missing` when the re-run has no result for the cell (it failed or was interrupted).
    pub verdict: Verdict,
}

/// One cell's comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellComparison {
    pub model: String,
    pub quant: String,
    /// All measurement parameters of the cell.
    pub params: String,
    /// Their short form, e.g. `pp512 tg50`.
    pub label: String,
    /// The worst verdict of its metrics (or the cell's own: new, missing, not comparable).
    pub verdict: Verdict,
    /// Why a cell is not comparable, missing, or new; for a comparable cell, why its quality
    /// metrics were not compared (another reference or corpus, a test that failed or was off).
    pub note: Option<String>,
    pub metrics: Vec<MetricResult>,
}

/// The whole comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub base: String,
    pub current: String,
    pub base_run_id: String,
    pub current_run_id: String,
    /// How many baseline runs (three or more: significance from their spread).
    pub base_runs: usize,
    /// Thresholds of GPU cells, percent by metric.
    pub thresholds: BTreeMap<String, f64>,
    /// Thresholds of CPU cells, percent by metric.
    #[serde(default)]
    pub cpu_thresholds: BTreeMap<String, f64>,
    pub regressions: usize,
    pub improvements: usize,
    /// Metrics the gate could not judge (`inconclusive`).
    #[serde(default)]
    pub inconclusive: usize,
    /// Confirmation re-runs applied (0: none).
    #[serde(default)]
    pub confirm_runs: usize,
    pub cells: Vec<CellComparison>,
}

impl Comparison {
    pub fn has_regression(&self) -> bool {
        self.regressions > 0
    }

    /// Whether some verdicts are inconclusive.
    pub fn has_inconclusive(&self) -> bool {
        self.inconclusive > 0
    }

    /// The cells with a metric inconclusive because the machine was busy during this run (not
    /// the baseline's): a re-run on a quiet machine may decide them.
    pub fn disturbed_cells(&self) -> Vec<(String, String, String)> {
        self.cells
            .iter()
            .filter(|c| {
                c.metrics.iter().any(|m| {
                    m.disturbed() && m.reason.as_deref().is_some_and(|r| r.contains(THIS_RUN))
                })
            })
            .map(|c| (c.model.clone(), c.quant.clone(), c.params.clone()))
            .collect()
    }

    /// The cells with a regressed metric: (model, quant, params) as in [`CellComparison`].
    pub fn regressed_cells(&self) -> Vec<(String, String, String)> {
        self.cells
            .iter()
            .filter(|c| c.metrics.iter().any(|m| m.verdict == Verdict::Regressed))
            .map(|c| (c.model.clone(), c.quant.clone(), c.params.clone()))
            .collect()
    }

    /// Worst verdicts first, counts recomputed.
    fn tally(&mut self) {
        for c in &mut self.cells {
            if let Some(worst) = c.metrics.iter().map(|m| m.verdict).min() {
                c.verdict = worst;
            }
        }
        self.cells
            .sort_by(|a, b| a.verdict.cmp(&b.verdict).then(a.model.cmp(&b.model)));
        let count = |v: Verdict| {
            self.cells
                .iter()
                .flat_map(|c| &c.metrics)
                .filter(|m| m.verdict == v)
                .count()
        };
        self.regressions = count(Verdict::Regressed);
        self.improvements = count(Verdict::Improved);
        self.inconclusive = count(Verdict::Inconclusive);
    }
}

/// Applies confirmation re-runs, what Perfherder and Chromium's bisect do before they call a
/// change a regression: `reruns` are comparisons of re-measurements of the regressed cells with
/// the same baseline. A regressed metric keeps its verdict only when it regresses in every
/// re-run that measured it; otherwise it becomes [`Verdict::Unconfirmed`] (a re-run that failed
/// refutes nothing). Each re-run's result is recorded on the metric. A metric with a standard
/// error (quality) is deterministic: only re-runs that scored it again count (`run --baseline`'s
/// re-runs measure speed only). Without re-runs nothing changes.
pub fn confirm(cmp: &mut Comparison, reruns: &[Comparison]) {
    if reruns.is_empty() {
        return;
    }
    for c in &mut cmp.cells {
        for m in &mut c.metrics {
            if m.verdict != Verdict::Regressed && !m.disturbed() {
                continue;
            }
            let deterministic = metric(&m.metric).is_some_and(|d| d.std_err);
            m.confirmations = reruns
                .iter()
                .filter_map(|r| {
                    let found = r
                        .cells
                        .iter()
                        .find(|rc| {
                            (&rc.model, &rc.quant, &rc.params) == (&c.model, &c.quant, &c.params)
                        })
                        .and_then(|rc| rc.metrics.iter().find(|rm| rm.metric == m.metric));
                    match found {
                        Some(rm) => Some(Confirmation {
                            run_id: r.current_run_id.clone(),
                            current: rm.current,
                            change_pct: rm.change_pct,
                            p_value: rm.p_value,
                            verdict: rm.verdict,
                        }),
                        None if deterministic => None,
                        None => Some(Confirmation {
                            run_id: r.current_run_id.clone(),
                            current: None,
                            change_pct: None,
                            p_value: None,
                            verdict: Verdict::Missing,
                        }),
                    }
                })
                .collect();
            decide_by_reruns(m);
        }
    }
    cmp.confirm_runs = reruns.len();
    cmp.tally();
}

/// A regressed metric, or one inconclusive because the machine was busy, after its
/// confirmation re-runs. A re-run without a result for the cell (it failed) or one itself
/// disturbed neither confirms nor refutes. A regression stands when every re-run that decided
/// regressed too, and becomes `unconfirmed` otherwise; when every re-run was disturbed it is
/// `inconclusive`. A busy-machine verdict takes the re-runs' when they agree (`regressed`
/// only when all of them regressed).
fn decide_by_reruns(m: &mut MetricResult) {
    let decided: Vec<Verdict> = m
        .confirmations
        .iter()
        .map(|x| x.verdict)
        .filter(|v| !matches!(v, Verdict::Missing | Verdict::Inconclusive))
        .collect();
    let busy_reruns = m
        .confirmations
        .iter()
        .any(|x| x.verdict == Verdict::Inconclusive);
    let regressed = |v: &Verdict| *v == Verdict::Regressed;
    match m.verdict {
        Verdict::Regressed if decided.iter().any(|v| !regressed(v)) => {
            m.verdict = Verdict::Unconfirmed;
        }
        Verdict::Regressed if decided.is_empty() && busy_reruns => {
            m.verdict = Verdict::Inconclusive;
            m.reason = Some(format!(
                "{BUSY} during every confirmation re-run: the regression is not confirmed"
            ));
        }
        Verdict::Inconclusive if !decided.is_empty() => {
            m.verdict = if decided.iter().all(regressed) {
                Verdict::Regressed
            } else if decided.iter().any(regressed) {
                Verdict::Unconfirmed
            } else if decided.iter().all(|v| *v == Verdict::Improved) {
                Verdict::Improved
            } else {
                Verdict::Unchanged
            };
            m.reason = Some(format!(
                "decided by {} re-run{} on a quiet machine ({BUSY} during the first)",
                decided.len(),
                if decided.len() == 1 { "" } else { "s" }
            ));
        }
        _ => {}
    }
}

/// One metric of a cell against its baseline ([`judge_metric`] on a quiet machine).
#[cfg(test)]
pub(super) fn compare_metric(
    def: &MetricDef,
    bases: &[&Stat],
    cur: &Stat,
    threshold_pct: f64,
) -> MetricResult {
    judge_metric(def, bases, cur, threshold_pct, None)
}

/// One metric of a cell against its baseline: regressed or improved when the change is beyond
/// the threshold and the floor and significant; otherwise unchanged — or inconclusive when
/// `busy` says the machine was busy (a timing metric), or when the samples could not detect a
/// change of the threshold's size.
pub(super) fn judge_metric(
    def: &MetricDef,
    bases: &[&Stat],
    cur: &Stat,
    threshold_pct: f64,
    busy: Option<&str>,
) -> MetricResult {
    let runs: Vec<f64> = bases.iter().map(|s| s.mean).collect();
    let base_mean = runs.iter().sum::<f64>() / runs.len().max(1) as f64;
    let change = if base_mean != 0.0 {
        Some((cur.mean - base_mean) / base_mean.abs() * 100.0)
    } else {
        None
    };
    let (p, method, significant) = significance(def, bases, &runs, base_mean, cur);
    let beyond = match change {
        Some(c) => c.abs() > threshold_pct,
        // a quality metric from exactly 0 (the reference against itself): no percentage, the
        // floor and the significance decide
        None => def.std_err && cur.mean != base_mean,
    } && !def.below_floor(base_mean, cur.mean);
    let worse = match def.direction {
        Direction::HigherIsBetter => cur.mean < base_mean,
        Direction::LowerIsBetter => cur.mean > base_mean,
    };
    let mut verdict = match (beyond && significant, worse) {
        (true, true) => Verdict::Regressed,
        (true, false) => Verdict::Improved,
        _ => Verdict::Unchanged,
    };
    let mdc = min_detectable_pct(def, bases, &runs, base_mean, cur);
    let mut reason = None;
    if let Some(why) = busy.filter(|_| def.timing()) {
        verdict = Verdict::Inconclusive;
        reason = Some(why.to_string());
    } else if verdict == Verdict::Unchanged && detectable(def, base_mean, threshold_pct) {
        let why = match (method, mdc) {
            ("welch" | "between_runs", Some(m)) if m > threshold_pct => Some(format!(
                "the samples detect only changes beyond {m:.0}% (threshold {threshold_pct}%): \
                 more repetitions, or a quieter machine"
            )),
            ("none", _) => {
                Some("too few repetitions to test (at least 2 in both runs)".to_string())
            }
            _ => None,
        };
        if why.is_some() {
            verdict = Verdict::Inconclusive;
            reason = why;
        }
    }
    MetricResult {
        metric: def.name.into(),
        direction: def.direction,
        base: Some(base_mean),
        current: Some(cur.mean),
        change_pct: change,
        base_err: if def.std_err { base_se(bases) } else { None },
        current_err: if def.std_err { cur.se } else { None },
        p_value: p,
        method: method.into(),
        threshold_pct,
        min_detectable_pct: mdc,
        verdict,
        reason,
        confirmations: Vec::new(),
    }
}

/// The smallest change the metric's test could detect 80% of the time, percent of the
/// baseline: Welch's test on the repetitions, or the spread of three or more baseline runs.
fn min_detectable_pct(
    def: &MetricDef,
    bases: &[&Stat],
    runs: &[f64],
    base_mean: f64,
    cur: &Stat,
) -> Option<f64> {
    if def.std_err || def.floor.is_some() || base_mean == 0.0 {
        return None;
    }
    let abs = if runs.len() >= 3 {
        between_runs_min_detectable(runs)
    } else {
        welch_min_detectable(bases[0], cur)
    }?;
    Some(abs / base_mean.abs() * 100.0)
}

/// Whether a change of the threshold's size would count at all: not when it is below the
/// metric's absolute floor (microseconds per token), where no test is needed to say
/// "unchanged".
fn detectable(def: &MetricDef, base: f64, threshold_pct: f64) -> bool {
    let worse = match def.direction {
        Direction::HigherIsBetter => base * (1.0 - threshold_pct / 100.0),
        Direction::LowerIsBetter => base * (1.0 + threshold_pct / 100.0),
    };
    !def.below_floor(base, worse)
}

/// The significance test of a metric: (p-value, method, significant). Against three or more
/// baseline runs their spread; otherwise Welch's test on the repetition samples, or the floor of
/// a metric measured once per cell. A metric with a standard error always takes the z-test.
fn significance(
    def: &MetricDef,
    bases: &[&Stat],
    runs: &[f64],
    base_mean: f64,
    cur: &Stat,
) -> (Option<f64>, &'static str, bool) {
    if def.std_err {
        std_err_test(def, bases, base_mean, cur)
    } else if runs.len() >= 3 {
        let p = between_runs_p(runs, cur.mean);
        (p, "between_runs", p.is_some_and(|p| p < 0.05))
    } else if let Some(floor) = def.floor {
        (None, "floor", (cur.mean - base_mean).abs() > floor)
    } else {
        match welch_p(bases[0], cur) {
            Some(p) => (Some(p), "welch", p < 0.05),
            None => (None, "none", false),
        }
    }
}

/// A mean over a sample of tokens (quality) against the baseline's: significant when the z-test
/// on the two means with their standard errors gives p < 0.05 (|Δ| > 1.96·√(err_b² + err_c²))
/// and the change is beyond the metric's floor. Without standard errors (a CSV missing the
/// `_err` columns), the floor alone.
fn std_err_test(
    def: &MetricDef,
    bases: &[&Stat],
    base_mean: f64,
    cur: &Stat,
) -> (Option<f64>, &'static str, bool) {
    let beyond_floor = (cur.mean - base_mean).abs() > def.floor.unwrap_or(0.0);
    match (base_se(bases), cur.se) {
        (Some(sb), Some(sc)) => {
            let p = z_p(base_mean, sb, cur.mean, sc);
            (p, "z_test", beyond_floor && p.is_some_and(|p| p < 0.05))
        }
        _ => (None, "floor", beyond_floor),
    }
}

/// The standard error of the baseline's mean: one run's, or the root mean square of several
/// runs' errors (they score the same tokens, so their mean is no more certain than one run);
/// `None` when a run has none.
fn base_se(bases: &[&Stat]) -> Option<f64> {
    let se2: Option<Vec<f64>> = bases.iter().map(|s| s.se.map(|e| e * e)).collect();
    se2.filter(|v| !v.is_empty())
        .map(|v| (v.iter().sum::<f64>() / v.len() as f64).sqrt())
}

/// Compares every cell of `cur` with the cells of the baseline run(s) that have the same model,
/// quant and measurement parameters. With three or more baseline runs, significance comes from
/// their spread; with one (or two: the first is used) from the repetition samples.
pub fn compare(bases: &[ReportView], cur: &ReportView, thr: &Thresholds) -> Comparison {
    let lookup: Vec<BTreeMap<_, &CellView>> = bases
        .iter()
        .map(|b| b.cells.iter().map(|c| (c.key(), c)).collect())
        .collect();
    let cur_by: BTreeMap<_, &CellView> = cur.cells.iter().map(|c| (c.key(), c)).collect();
    let mut cells = Vec::new();
    for (key, c) in &cur_by {
        let matches: Vec<&CellView> = lookup.iter().filter_map(|m| m.get(key).copied()).collect();
        cells.push(compare_cell(c, &matches, &bases[0], cur, thr));
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &lookup {
        for (key, b) in m {
            if !cur_by.contains_key(key) && seen.insert(key.clone()) {
                cells.push(cell(
                    b,
                    Verdict::Missing,
                    Some("not in this run".into()),
                    Vec::new(),
                ));
            }
        }
    }
    let joined = |f: fn(&ReportView) -> &str| bases.iter().map(f).collect::<Vec<_>>().join(", ");
    let mut out = Comparison {
        base: joined(|b| &b.source),
        current: cur.source.clone(),
        base_run_id: joined(|b| &b.run_id),
        current_run_id: cur.run_id.clone(),
        base_runs: bases.len(),
        thresholds: thr.effective(false),
        cpu_thresholds: thr.effective(true),
        regressions: 0,
        improvements: 0,
        inconclusive: 0,
        confirm_runs: 0,
        cells,
    };
    out.tally();
    out
}

/// One cell of the current run against its `matches` in the baseline runs (empty: new).
fn compare_cell(
    c: &CellView,
    matches: &[&CellView],
    first: &ReportView,
    cur: &ReportView,
    thr: &Thresholds,
) -> CellComparison {
    let Some(b) = matches.first().copied() else {
        return cell(
            c,
            Verdict::New,
            Some("not in the baseline".into()),
            Vec::new(),
        );
    };
    if !c.ok || matches.iter().all(|b| !b.ok) {
        let which = if c.ok { "the baseline" } else { "this run" };
        let why = if c.ok { &b.error } else { &c.error };
        return cell(
            c,
            Verdict::Missing,
            Some(format!(
                "failed in {which}: {}",
                why.as_deref().unwrap_or("?")
            )),
            Vec::new(),
        );
    }
    let ok_bases: Vec<&CellView> = matches.iter().copied().filter(|b| b.ok).collect();
    let differs = differences(&ok_bases, c, first, cur);
    if !differs.is_empty() {
        return cell(
            c,
            Verdict::NotComparable,
            Some(differs.join("; ")),
            Vec::new(),
        );
    }
    let (quality_ok, note) = quality_check(&ok_bases, c);
    let busy = busy_reason(&ok_bases, c);
    let metrics: Vec<MetricResult> = METRICS
        .iter()
        .filter(|def| quality_ok || !def.std_err)
        .filter_map(|def| {
            let bs: Vec<&Stat> = ok_bases
                .iter()
                .filter_map(|o| o.stats.get(def.name))
                .collect();
            let cs = c.stats.get(def.name)?;
            let cpu = c.backend.eq_ignore_ascii_case("CPU");
            (!bs.is_empty()).then(|| judge_metric(def, &bs, cs, thr.get(def, cpu), busy.as_deref()))
        })
        .collect();
    let worst = metrics
        .iter()
        .map(|m| m.verdict)
        .min()
        .unwrap_or(Verdict::Unchanged);
    cell(c, worst, note, metrics)
}

/// Why the machine counts as busy for this comparison: it was while `c` was timed, or while
/// one of its baseline cells was; `None` when neither report says so.
fn busy_reason(ok_bases: &[&CellView], c: &CellView) -> Option<String> {
    if let Some(why) = &c.disturbed {
        return Some(format!("{BUSY} {THIS_RUN}: {why}"));
    }
    ok_bases
        .iter()
        .find_map(|b| b.disturbed.as_ref())
        .map(|why| format!("{BUSY} during the baseline run: {why}"))
}

/// Whether the quality metrics of `c` compare with its baseline cells (`ok_bases`): each scored
/// against the same reference on the same corpus. If not, the note says why (no verdict for
/// them; the speed metrics still compare). Quality off in both reports: nothing to say.
fn quality_check(ok_bases: &[&CellView], c: &CellView) -> (bool, Option<String>) {
    if c.quality.is_none() && ok_bases.iter().all(|b| b.quality.is_none()) {
        return (true, None);
    }
    let mut why: Vec<String> = Vec::new();
    let mut add = |w: String| {
        if !why.contains(&w) {
            why.push(w);
        }
    };
    let failed = |q: &QualityView| q.error.as_deref().map(str::to_string);
    match &c.quality {
        None => add("not scored in this run".into()),
        Some(q) => {
            if let Some(e) = failed(q) {
                add(format!("failed in this run: {e}"));
            }
        }
    }
    for b in ok_bases {
        let Some(bq) = &b.quality else {
            add("not scored in the baseline".into());
            continue;
        };
        if let Some(e) = failed(bq) {
            add(format!("failed in the baseline: {e}"));
        }
        let Some(cq) = &c.quality else { continue };
        if bq.reference != cq.reference {
            add(format!(
                "another reference ({} vs {})",
                short_hashes(&bq.reference),
                short_hashes(&cq.reference)
            ));
        }
        if bq.corpus != cq.corpus {
            add(format!(
                "another corpus ({} vs {})",
                short_hashes(&bq.corpus),
                short_hashes(&cq.corpus)
            ));
        }
    }
    if why.is_empty() {
        (true, None)
    } else {
        (
            false,
            Some(format!("quality not compared: {}", why.join("; "))),
        )
    }
}

/// `s` with every SHA-256 in it cut to its first 12 hex digits, for notes that fit a table.
fn short_hashes(s: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() > 16 {
            out.push_str(&run[..12]);
            out.push('…');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for ch in s.chars() {
        if ch.is_ascii_hexdigit() {
            run.push(ch);
        } else {
            flush(&mut run, &mut out);
            out.push(ch);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Why a cell cannot be compared with its baseline cells (`ok_bases`, the first decides):
/// another device, backend, thread count, build, or model file. Empty: comparable.
fn differences(
    ok_bases: &[&CellView],
    c: &CellView,
    first: &ReportView,
    cur: &ReportView,
) -> Vec<String> {
    let b = ok_bases[0];
    let mut differs = Vec::new();
    if b.device != c.device {
        differs.push(format!("device {:?} vs {:?}", b.device, c.device));
    }
    if b.backend != c.backend {
        differs.push(format!("backend {} vs {}", b.backend, c.backend));
    }
    if b.threads != c.threads {
        differs.push(format!("{} vs {} CPU threads", b.threads, c.threads));
    }
    if first.build_profile != cur.build_profile
        && !first.build_profile.is_empty()
        && !cur.build_profile.is_empty()
    {
        differs.push(format!(
            "build {} vs {}",
            first.build_profile, cur.build_profile
        ));
    }
    if b.synthetic != c.synthetic {
        differs.push("synthetic vs real weights".into());
    } else if !b.sha256.is_empty() && !c.sha256.is_empty() && b.sha256 != c.sha256 {
        differs.push("a different model file (sha256)".into());
    }
    if ok_bases
        .iter()
        .any(|o| o.device != b.device || o.backend != b.backend || o.sha256 != b.sha256)
    {
        differs.push("the baseline runs differ among themselves (device, backend or file)".into());
    }
    differs
}

fn cell(
    c: &CellView,
    verdict: Verdict,
    note: Option<String>,
    metrics: Vec<MetricResult>,
) -> CellComparison {
    CellComparison {
        model: c.model.clone(),
        quant: c.quant.clone(),
        params: c.params.clone(),
        label: c.label.clone(),
        verdict,
        note,
        metrics,
    }
}
