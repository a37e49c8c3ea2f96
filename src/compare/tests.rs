use super::verdict::compare_metric;
use super::*;
use std::collections::BTreeMap;

use crate::metrics::{metric, Thresholds};

fn stat(v: &[f64]) -> Stat {
    let n = v.len();
    let m = v.iter().sum::<f64>() / n as f64;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    Stat {
        mean: m,
        sd,
        n,
        samples: Some(v.to_vec()),
        se: None,
    }
}

#[test]
fn welch_matches_a_known_value() {
    // Welch's own textbook example: t = −2.46, 25 degrees of freedom, p = 0.021
    let a = stat(&[
        27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4,
    ]);
    let b = stat(&[
        27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4,
    ]);
    let p = welch_p(&a, &b).unwrap();
    assert!((p - 0.0214).abs() < 0.0005, "{p}");
    // the same from summaries only (a CSV baseline)
    let a2 = Stat {
        samples: None,
        ..a.clone()
    };
    assert!((welch_p(&a2, &b).unwrap() - p).abs() < 1e-9);
    assert!(welch_p(&stat(&[1.0, 1.0]), &stat(&[1.0, 1.0])).unwrap() == 1.0);
    assert!(welch_p(
        &Stat {
            mean: 1.0,
            sd: 0.0,
            n: 1,
            samples: None,
            se: None,
        },
        &b
    )
    .is_none());
}

fn view(decode: &[f64], load: f64) -> ReportView {
    let mut stats = BTreeMap::new();
    stats.insert("decode_tok_s".to_string(), stat(decode));
    stats.insert(
        "load_s".to_string(),
        Stat {
            mean: load,
            sd: 0.0,
            n: 1,
            samples: None,
            se: None,
        },
    );
    ReportView {
        warnings: Vec::new(),
        source: "x".into(),
        run_id: "r".into(),
        build_profile: "release".into(),
        cells: vec![CellView {
            model: "m".into(),
            quant: "Q8_0".into(),
            params: "p".into(),
            label: "pp1 tg2".into(),
            threads: "2".into(),
            device: "CPU".into(),
            backend: "CPU".into(),
            sha256: "abc".into(),
            synthetic: true,
            ok: true,
            error: None,
            stats,
            quality: None,
            disturbed: None,
        }],
    }
}

#[test]
fn verdicts() {
    let base = view(&[100.0, 101.0, 99.0, 100.5, 99.5], 1.0);
    let mut thr = Thresholds::default();
    thr.apply_cli(&["5".into(), "load_s=10".into()]).unwrap();
    let same = compare(
        std::slice::from_ref(&base),
        &view(&[100.2, 99.1, 100.9, 99.8, 100.1], 1.02),
        &thr,
    );
    assert_eq!(same.regressions, 0);
    assert_eq!(same.cells[0].verdict, Verdict::Unchanged);
    let slow = compare(
        std::slice::from_ref(&base),
        &view(&[80.0, 81.0, 79.0, 80.5, 79.5], 1.0),
        &thr,
    );
    assert_eq!(slow.regressions, 1);
    assert_eq!(slow.cells[0].verdict, Verdict::Regressed);
    // beyond the threshold but not significant: noise
    let noisy = compare(
        std::slice::from_ref(&base),
        &view(&[60.0, 140.0, 70.0, 130.0, 90.0], 1.0),
        &thr,
    );
    assert_eq!(noisy.regressions, 0);
    // significant but within the threshold: unchanged
    let small = compare(
        std::slice::from_ref(&base),
        &view(&[98.0, 98.1, 97.9, 98.0, 98.0], 1.0),
        &thr,
    );
    assert_eq!(small.regressions, 0);
    let fast = compare(
        std::slice::from_ref(&base),
        &view(&[120.0, 121.0, 119.0, 120.5, 119.5], 1.0),
        &thr,
    );
    assert_eq!(fast.improvements, 1);
    // single-value metric: threshold and floor
    let load = compare(
        std::slice::from_ref(&base),
        &view(&[100.0, 101.0, 99.0, 100.5, 99.5], 1.3),
        &thr,
    );
    assert_eq!(load.regressions, 1);
    let mut tiny_base = base.clone();
    tiny_base.cells[0].stats.get_mut("load_s").unwrap().mean = 0.010;
    let tiny = compare(
        std::slice::from_ref(&tiny_base),
        &view(&[100.0, 101.0, 99.0, 100.5, 99.5], 0.2),
        &thr,
    );
    assert_eq!(
        tiny.regressions, 0,
        "a 190 ms change is under the 250 ms floor"
    );
}

#[test]
fn cells_that_cannot_be_compared() {
    let base = view(&[100.0, 101.0, 99.0], 1.0);
    let mut gpu = view(&[50.0, 51.0, 49.0], 1.0);
    gpu.cells[0].device = "NVIDIA H200".into();
    let c = compare(std::slice::from_ref(&base), &gpu, &Thresholds::default());
    assert_eq!(c.cells[0].verdict, Verdict::NotComparable);
    assert_eq!(c.regressions, 0);
    assert!(c.cells[0].note.as_deref().unwrap().contains("device"));
    let mut other = view(&[100.0, 101.0, 99.0], 1.0);
    other.cells[0].quant = "F16".into();
    let c = compare(std::slice::from_ref(&base), &other, &Thresholds::default());
    let verdicts: Vec<Verdict> = c.cells.iter().map(|c| c.verdict).collect();
    assert_eq!(verdicts, vec![Verdict::Missing, Verdict::New]);
}

#[test]
fn several_baseline_runs_use_their_spread() {
    // five noisy baseline runs around 100: 93 is within their spread, 80 is not
    let runs: Vec<ReportView> = [100.0, 96.0, 104.0, 98.0, 102.0]
        .iter()
        .map(|m| view(&[m - 0.5, m + 0.5, *m], 1.0))
        .collect();
    let mut thr = Thresholds::default();
    thr.apply_cli(&["5".into()]).unwrap();
    let ok = compare(&runs, &view(&[92.5, 93.5, 93.0], 1.0), &thr);
    assert_eq!(ok.regressions, 0, "{:?}", ok.cells[0].metrics);
    assert_eq!(ok.base_runs, 5);
    let bad = compare(&runs, &view(&[79.5, 80.5, 80.0], 1.0), &thr);
    assert_eq!(bad.regressions, 1);
    assert_eq!(bad.cells[0].metrics[0].method, "between_runs");
    // the same 7% drop against one tight baseline run would be flagged
    let single = compare(
        std::slice::from_ref(&runs[0]),
        &view(&[92.5, 93.5, 93.0], 1.0),
        &thr,
    );
    assert_eq!(single.regressions, 1);
    let p = between_runs_p(&[1.0, 2.0, 3.0], 2.0).unwrap();
    assert!((p - 1.0).abs() < 1e-9);
    assert!(between_runs_p(&[1.0, 2.0], 2.0).is_none());
}

#[test]
fn changes_of_a_few_microseconds_are_never_regressions() {
    // itl_ms_p50 on a 0.1 ms decode step: +8.8% (8.8 µs), tight samples, p < 0.001
    let mut thr = Thresholds::default();
    thr.apply_cli(&["5".into()]).unwrap();
    let def = metric("itl_ms_p50").unwrap();
    let base = stat(&[0.100, 0.1001, 0.0999, 0.1, 0.1]);
    let cur = stat(&[0.1088, 0.1089, 0.1087, 0.1088, 0.1088]);
    let r = compare_metric(def, &[&base], &cur, thr.get(def, true));
    assert!(r.p_value.unwrap() < 0.001, "{r:?}");
    assert_eq!(r.verdict, Verdict::Unchanged, "{r:?}");
    // the same +8.8% on a 1 ms step (88 µs) is one
    let base = stat(&[1.0, 1.001, 0.999, 1.0, 1.0]);
    let cur = stat(&[1.088, 1.089, 1.087, 1.088, 1.088]);
    assert_eq!(
        compare_metric(def, &[&base], &cur, 5.0).verdict,
        Verdict::Regressed
    );
    // rates: the floor is on the time per token (10000 → 9200 tok/s is 8.7 µs per token)
    let def = metric("decode_tok_s").unwrap();
    let base = stat(&[10000.0, 10010.0, 9990.0, 10000.0, 10000.0]);
    let cur = stat(&[9200.0, 9210.0, 9190.0, 9200.0, 9200.0]);
    assert_eq!(
        compare_metric(def, &[&base], &cur, 5.0).verdict,
        Verdict::Unchanged
    );
    let base = stat(&[100.0, 100.1, 99.9, 100.0, 100.0]);
    let cur = stat(&[92.0, 92.1, 91.9, 92.0, 92.0]);
    assert_eq!(
        compare_metric(def, &[&base], &cur, 5.0).verdict,
        Verdict::Regressed
    );
}

#[test]
fn confirmation_keeps_only_regressions_every_rerun_repeats() {
    let base = view(&[100.0, 101.0, 99.0, 100.5, 99.5], 1.0);
    let mut thr = Thresholds::default();
    thr.apply_cli(&["5".into()]).unwrap();
    let slow = || view(&[80.0, 81.0, 79.0, 80.5, 79.5], 1.0);
    let fine = || view(&[100.2, 99.1, 100.9, 99.8, 100.1], 1.0);
    let b = std::slice::from_ref(&base);
    let mut cmp = compare(b, &slow(), &thr);
    assert_eq!(cmp.regressions, 1);
    assert_eq!(cmp.regressed_cells().len(), 1);
    // one re-run back at the baseline's speed: unconfirmed, no regression
    let reruns = [compare(b, &slow(), &thr), compare(b, &fine(), &thr)];
    confirm(&mut cmp, &reruns);
    assert_eq!(cmp.regressions, 0);
    assert_eq!(cmp.confirm_runs, 2);
    assert_eq!(cmp.cells[0].verdict, Verdict::Unconfirmed);
    let m = &cmp.cells[0].metrics[0];
    assert_eq!(m.confirmations.len(), 2);
    assert_eq!(m.confirmations[1].verdict, Verdict::Unchanged);
    assert!(
        markdown(&cmp).contains("unconfirmed (re-runs: "),
        "{}",
        markdown(&cmp)
    );
    // every re-run slow: confirmed
    let mut cmp = compare(b, &slow(), &thr);
    confirm(
        &mut cmp,
        &[compare(b, &slow(), &thr), compare(b, &slow(), &thr)],
    );
    assert_eq!(cmp.regressions, 1);
    assert!(markdown(&cmp).contains("confirmed by the re-runs"));
    // a re-run without the cell (it failed) refutes nothing: the regression stands
    let mut empty = slow();
    empty.cells.clear();
    let mut cmp = compare(b, &slow(), &thr);
    confirm(&mut cmp, &[compare(b, &empty, &thr)]);
    assert_eq!(cmp.regressions, 1);
    assert_eq!(
        cmp.cells[0].metrics[0].confirmations[0].verdict,
        Verdict::Missing
    );
    // no re-runs: nothing changes
    let mut cmp = compare(b, &slow(), &thr);
    confirm(&mut cmp, &[]);
    assert_eq!(cmp.regressions, 1);
}

#[test]
fn non_finite_values_never_panic_and_are_refused() {
    let nan = Stat {
        mean: f64::NAN,
        sd: 1.0,
        n: 5,
        samples: None,
        se: None,
    };
    let ok = stat(&[1.0, 2.0, 3.0]);
    assert_eq!(welch_p(&nan, &ok), None);
    let huge = stat(&[1e308, 1e308, 1e308]);
    assert_eq!(welch_p(&huge, &ok), None);
    assert_eq!(between_runs_p(&[1.0, f64::INFINITY, 2.0], 1.0), None);
    let mut v = view(&[100.0, f64::NAN, 99.0], 1.0);
    let e = check_finite(&v).unwrap_err().to_string();
    assert!(
        e.contains("column decode_tok_s") && e.contains("repetition 2"),
        "{e}"
    );
    v.cells[0].stats.get_mut("decode_tok_s").unwrap().samples = Some(vec![1e308; 3]);
    let e = check_finite(&v).unwrap_err().to_string();
    assert!(e.contains("overflows"), "{e}");
}

#[test]
fn cli_thresholds() {
    let mut t = Thresholds::default();
    t.apply_cli(&["3".into(), "ttft_ms=20".into()]).unwrap();
    assert_eq!(t.get(metric("decode_tok_s").unwrap(), false), 3.0);
    assert_eq!(t.get(metric("decode_tok_s").unwrap(), true), 3.0);
    assert_eq!(t.get(metric("ttft_ms").unwrap(), true), 20.0);
    // defaults differ by backend
    let d = Thresholds::default();
    assert_eq!(d.get(metric("decode_tok_s").unwrap(), false), 12.0);
    assert_eq!(d.get(metric("decode_tok_s").unwrap(), true), 25.0);
    assert!(t.apply_cli(&["decode=3".into()]).is_err());
    assert!(t.apply_cli(&["fast".into()]).is_err());
}

const REFERENCE: &str =
    "F16 (m-F16.gguf, sha256 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef)";

/// The cell of [`view`] with quality figures: KLD and top-1 agreement as (mean, standard error),
/// scored against [`REFERENCE`] on `corpus`.
fn quality_view(kld: (f64, f64), top1: (f64, f64), corpus: &str) -> ReportView {
    let mut v = view(&[100.0, 101.0, 99.0, 100.5, 99.5], 1.0);
    let c = &mut v.cells[0];
    for (name, (mean, se)) in [("kld_mean", kld), ("top1_agree", top1)] {
        let st = Stat {
            mean,
            sd: 0.0,
            n: 1,
            samples: None,
            se: Some(se),
        };
        c.stats.insert(name.into(), st);
    }
    c.quality = Some(QualityView {
        reference: REFERENCE.into(),
        corpus: corpus.into(),
        error: None,
    });
    v
}

/// The verdict of one metric of the first cell; `None` when it was not compared.
fn verdict_of(cmp: &Comparison, name: &str) -> Option<Verdict> {
    cmp.cells[0]
        .metrics
        .iter()
        .find(|m| m.metric == name)
        .map(|m| m.verdict)
}

fn cmp_quality(base: &ReportView, cur: &ReportView) -> Comparison {
    compare(std::slice::from_ref(base), cur, &Thresholds::default())
}

#[test]
fn a_doubled_kld_with_small_errors_regresses() {
    let base = quality_view((0.02, 0.0005), (0.95, 0.002), "c.txt");
    let cur = quality_view((0.04, 0.0005), (0.95, 0.002), "c.txt");
    let c = cmp_quality(&base, &cur);
    assert_eq!(c.regressions, 1, "{:?}", c.cells[0].metrics);
    assert_eq!(c.cells[0].verdict, Verdict::Regressed);
    let m = c.cells[0]
        .metrics
        .iter()
        .find(|m| m.metric == "kld_mean")
        .unwrap();
    assert_eq!(m.verdict, Verdict::Regressed);
    assert_eq!(m.method, "z_test");
    assert!(m.p_value.unwrap() < 1e-6, "{m:?}");
    assert_eq!((m.base_err, m.current_err), (Some(0.0005), Some(0.0005)));
    assert_eq!(m.threshold_pct, 10.0);
    // the speed metrics of the same cell compare as before
    assert_eq!(verdict_of(&c, "decode_tok_s"), Some(Verdict::Unchanged));
    assert_eq!(verdict_of(&c, "top1_agree"), Some(Verdict::Unchanged));
    // halved: an improvement
    let c = cmp_quality(&cur, &base);
    assert_eq!(verdict_of(&c, "kld_mean"), Some(Verdict::Improved));
    assert_eq!(c.regressions, 0);
}

#[test]
fn a_kld_change_within_its_uncertainty_or_below_the_floor_is_unchanged() {
    // +15%, beyond the 10% threshold, but 1.1 standard errors: what another text could give
    let base = quality_view((0.02, 0.002), (0.95, 0.002), "c.txt");
    let cur = quality_view((0.023, 0.002), (0.95, 0.002), "c.txt");
    let c = cmp_quality(&base, &cur);
    assert_eq!(verdict_of(&c, "kld_mean"), Some(Verdict::Unchanged));
    let p = c.cells[0].metrics.iter().find(|m| m.metric == "kld_mean");
    assert!(p.unwrap().p_value.unwrap() > 0.05, "{p:?}");
    // +12.5% and certain, but 5e-5 nats per token: under the floor
    let base = quality_view((0.0004, 1e-6), (0.95, 0.002), "c.txt");
    let cur = quality_view((0.00045, 1e-6), (0.95, 0.002), "c.txt");
    assert_eq!(
        verdict_of(&cmp_quality(&base, &cur), "kld_mean"),
        Some(Verdict::Unchanged)
    );
    // significant and beyond the floor, but within the 10% threshold
    let base = quality_view((0.05, 1e-5), (0.95, 0.002), "c.txt");
    let cur = quality_view((0.054, 1e-5), (0.95, 0.002), "c.txt");
    assert_eq!(
        verdict_of(&cmp_quality(&base, &cur), "kld_mean"),
        Some(Verdict::Unchanged)
    );
    // the reference against itself: from exactly 0, the floor and the z-test decide
    let zero = quality_view((0.0, 0.0), (1.0, 0.0), "c.txt");
    let tiny = quality_view((5e-5, 1e-5), (1.0, 0.0), "c.txt");
    let c = cmp_quality(&zero, &tiny);
    assert_eq!(verdict_of(&c, "kld_mean"), Some(Verdict::Unchanged));
    assert_eq!(verdict_of(&c, "top1_agree"), Some(Verdict::Unchanged));
    let off = quality_view((0.003, 1e-4), (1.0, 0.0), "c.txt");
    let c = cmp_quality(&zero, &off);
    let m = c.cells[0].metrics.iter().find(|m| m.metric == "kld_mean");
    assert_eq!(m.unwrap().verdict, Verdict::Regressed);
    assert_eq!(m.unwrap().change_pct, None, "no percentage from 0");
}

#[test]
fn a_top1_drop_regresses() {
    let base = quality_view((0.02, 0.0005), (0.95, 0.002), "c.txt");
    let cur = quality_view((0.02, 0.0005), (0.90, 0.003), "c.txt");
    let c = cmp_quality(&base, &cur);
    assert_eq!(verdict_of(&c, "top1_agree"), Some(Verdict::Regressed));
    assert_eq!(c.regressions, 1);
    // −0.5% relative, certain: within the 1% threshold
    let small = quality_view((0.02, 0.0005), (0.94525, 0.0001), "c.txt");
    assert_eq!(
        verdict_of(&cmp_quality(&base, &small), "top1_agree"),
        Some(Verdict::Unchanged)
    );
    // −3% relative but within 2 standard errors of a short corpus
    let short = quality_view((0.02, 0.0005), (0.92, 0.02), "c.txt");
    assert_eq!(
        verdict_of(&cmp_quality(&base, &short), "top1_agree"),
        Some(Verdict::Unchanged)
    );
    // below the absolute floor (0.002), whatever the percentage: a model that rarely agrees
    let low = quality_view((0.02, 0.0005), (0.1, 1e-5), "c.txt");
    let lower = quality_view((0.02, 0.0005), (0.0985, 1e-5), "c.txt");
    assert_eq!(
        verdict_of(&cmp_quality(&low, &lower), "top1_agree"),
        Some(Verdict::Unchanged)
    );
}

#[test]
fn quality_compares_only_on_the_same_reference_and_corpus() {
    let base = quality_view((0.02, 0.0005), (0.95, 0.002), "a.txt (sha256 aaaa)");
    let cur = quality_view((0.04, 0.0005), (0.80, 0.002), "b.txt (sha256 bbbb)");
    let c = cmp_quality(&base, &cur);
    assert_eq!(c.regressions, 0);
    assert_eq!(
        c.cells[0].verdict,
        Verdict::Unchanged,
        "not `not comparable`"
    );
    assert_eq!(verdict_of(&c, "kld_mean"), None);
    assert_eq!(verdict_of(&c, "top1_agree"), None);
    assert_eq!(verdict_of(&c, "decode_tok_s"), Some(Verdict::Unchanged));
    let note = c.cells[0].note.clone().unwrap();
    assert!(
        note.starts_with("quality not compared: another corpus (a.txt"),
        "{note}"
    );
    // the note is a row of the table
    assert!(rows(&c).iter().any(|r| r[9] == note), "{:?}", rows(&c));
    // another reference: its hash cut short in the note
    let mut other = quality_view((0.04, 0.0005), (0.95, 0.002), "a.txt (sha256 aaaa)");
    other.cells[0].quality.as_mut().unwrap().reference = "Q8_0 (m-Q8_0.gguf, sha256 ffff)".into();
    let c = cmp_quality(&base, &other);
    let note = c.cells[0].note.clone().unwrap();
    assert!(
        note.contains("another reference (F16 (m-F16.gguf, sha256 0123456789ab…) vs Q8_0"),
        "{note}"
    );
    assert_eq!(verdict_of(&c, "kld_mean"), None);
    // quality off in this run, or failed
    let mut off = view(&[100.0, 101.0, 99.0, 100.5, 99.5], 1.0);
    let c = cmp_quality(&base, &off);
    assert_eq!(
        c.cells[0].note.as_deref(),
        Some("quality not compared: not scored in this run")
    );
    off.cells[0].quality = Some(QualityView {
        reference: REFERENCE.into(),
        corpus: "a.txt (sha256 aaaa)".into(),
        error: Some("the corpus is empty".into()),
    });
    let c = cmp_quality(&base, &off);
    assert!(c.cells[0]
        .note
        .as_deref()
        .unwrap()
        .contains("failed in this run: the corpus is empty"));
    // no quality in either report: exactly as before, no note
    let plain = view(&[100.0, 101.0, 99.0, 100.5, 99.5], 1.0);
    let c = cmp_quality(&plain, &plain);
    assert_eq!(c.cells[0].note, None);
    assert!(!explanation(&c).contains("Quality"), "{}", explanation(&c));
}

#[test]
fn quality_metrics_render_with_their_errors_and_their_rule() {
    let base = quality_view((0.02, 0.0005), (0.95, 0.002), "c.txt");
    let cur = quality_view((0.04, 0.0005), (0.95, 0.002), "c.txt");
    let c = cmp_quality(&base, &cur);
    let row = rows(&c).into_iter().find(|r| r[3] == "kld_mean").unwrap();
    assert_eq!(row[4], "0.02000 ± 0.0005000");
    assert_eq!(row[5], "0.04000 ± 0.0005000");
    assert_eq!(row[6], "+100.0%");
    assert!(row[7].ends_with("(z test)"), "{row:?}");
    assert_eq!((row[8].as_str(), row[9].as_str()), ("10%", "REGRESSED"));
    let md = markdown(&c);
    assert!(
        md.contains("Quality metrics (kld_mean, top1_agree)") && md.contains("z-test p < 0.05"),
        "{md}"
    );
    assert!(
        md.contains("beyond 0.0001 in KLD or 0.002 in top-1"),
        "{md}"
    );
}

#[test]
fn quality_ignores_the_spread_of_several_baseline_runs_and_needs_no_confirmation() {
    // three identical baseline runs (deterministic): no spread, yet a change within the
    // standard errors is no regression
    let runs: Vec<ReportView> = (0..3)
        .map(|_| quality_view((0.02, 0.002), (0.95, 0.002), "c.txt"))
        .collect();
    let cur = quality_view((0.023, 0.002), (0.95, 0.002), "c.txt");
    let c = compare(&runs, &cur, &Thresholds::default());
    let m = c.cells[0]
        .metrics
        .iter()
        .find(|m| m.metric == "kld_mean")
        .unwrap();
    assert_eq!(
        (m.method.as_str(), m.verdict),
        ("z_test", Verdict::Unchanged)
    );
    assert_eq!(m.base_err, Some(0.002), "the runs' errors, not shrunk");
    let cur = quality_view((0.04, 0.0005), (0.95, 0.002), "c.txt");
    let mut c = compare(&runs, &cur, &Thresholds::default());
    assert_eq!(verdict_of(&c, "kld_mean"), Some(Verdict::Regressed));
    // `run --baseline`'s re-runs measure speed only: the quality regression stands as it is
    let mut speed_only = view(&[100.0, 101.0, 99.0, 100.5, 99.5], 1.0);
    speed_only.run_id = "r-confirm-1".into();
    let rerun = compare(&runs, &speed_only, &Thresholds::default());
    confirm(&mut c, &[rerun]);
    let m = c.cells[0]
        .metrics
        .iter()
        .find(|m| m.metric == "kld_mean")
        .unwrap();
    assert_eq!(m.verdict, Verdict::Regressed);
    assert!(m.confirmations.is_empty(), "{m:?}");
    // a re-run that scored quality again does count
    let mut c = compare(&runs, &cur, &Thresholds::default());
    let back = compare(&runs, &runs[0], &Thresholds::default());
    confirm(&mut c, &[back]);
    assert_eq!(verdict_of(&c, "kld_mean"), Some(Verdict::Unconfirmed));
}

#[test]
fn z_test_p_values() {
    // 1.96 combined standard errors: p = 0.05
    let se = 0.01;
    let d = 1.959964 * (2.0f64).sqrt() * se;
    assert!((z_p(1.0, se, 1.0 + d, se).unwrap() - 0.05).abs() < 1e-5);
    assert_eq!(z_p(1.0, 0.0, 1.0, 0.0), Some(1.0));
    assert_eq!(z_p(1.0, 0.0, 1.1, 0.0), Some(0.0));
    assert_eq!(z_p(f64::NAN, 0.1, 1.0, 0.1), None);
    assert_eq!(z_p(1.0, f64::INFINITY, 1.0, 0.1), None);
    // a standard error that is not a finite number is refused like any other value
    let mut v = quality_view((0.02, 0.0005), (0.95, 0.002), "c.txt");
    v.cells[0].stats.get_mut("kld_mean").unwrap().se = Some(f64::NAN);
    let e = check_finite(&v).unwrap_err().to_string();
    assert!(
        e.contains("column kld_mean") && e.contains("standard error"),
        "{e}"
    );
}

/// `v` measured on a busy machine.
fn busy(mut v: ReportView) -> ReportView {
    v.cells[0].disturbed = Some("other processes used 45% of the CPU".into());
    v
}

fn speed_verdict(cmp: &Comparison) -> &super::verdict::MetricResult {
    cmp.cells[0]
        .metrics
        .iter()
        .find(|m| m.metric == "decode_tok_s")
        .unwrap()
}

#[test]
fn a_busy_machine_makes_speed_verdicts_inconclusive() {
    let base = view(&[100.0, 101.0, 99.0, 100.5, 99.5], 1.0);
    let mut thr = Thresholds::default();
    thr.apply_cli(&["5".into()]).unwrap();
    let b = std::slice::from_ref(&base);
    // halved on a busy machine: not a regression, inconclusive with the reason
    let slow = busy(view(&[50.0, 51.0, 49.0, 50.5, 49.5], 1.0));
    let cmp = compare(b, &slow, &thr);
    assert_eq!((cmp.regressions, cmp.inconclusive), (0, 2), "{cmp:?}");
    let m = speed_verdict(&cmp);
    assert_eq!(m.verdict, Verdict::Inconclusive);
    assert_eq!(
        m.reason.as_deref(),
        Some("the machine was busy during this run: other processes used 45% of the CPU")
    );
    assert!(cmp.has_inconclusive());
    assert_eq!(cmp.disturbed_cells().len(), 1);
    // unchanged on a busy machine is not "unchanged" either
    let same = busy(view(&[100.2, 99.1, 100.9, 99.8, 100.1], 1.0));
    assert_eq!(
        speed_verdict(&compare(b, &same, &thr)).verdict,
        Verdict::Inconclusive
    );
    // a busy baseline: inconclusive too, but re-running this run would not help
    let cmp = compare(&[busy(base.clone())], &slow_quiet(), &thr);
    let m = speed_verdict(&cmp);
    assert_eq!(m.verdict, Verdict::Inconclusive);
    assert!(m
        .reason
        .as_deref()
        .unwrap()
        .contains("during the baseline run"));
    assert!(cmp.disturbed_cells().is_empty());
    // quality and memory do not depend on how busy the machine was
    let mut q = quality_view((0.01, 0.0001), (0.9, 0.01), "c");
    let q2 = busy(quality_view((0.02, 0.0001), (0.9, 0.01), "c"));
    q.cells[0].disturbed = None;
    assert_eq!(
        verdict_of(&cmp_quality(&q, &q2), "kld_mean"),
        Some(Verdict::Regressed)
    );
    assert!(markdown(&compare(b, &slow, &thr)).contains("2 inconclusive"));
}

fn slow_quiet() -> ReportView {
    view(&[50.0, 51.0, 49.0, 50.5, 49.5], 1.0)
}

#[test]
fn samples_too_spread_to_detect_the_threshold_are_inconclusive() {
    let base = view(&[100.0, 101.0, 99.0, 100.5, 99.5], 1.0);
    let mut thr = Thresholds::default();
    thr.apply_cli(&["5".into()]).unwrap();
    let b = std::slice::from_ref(&base);
    // the spread seen on a busy VM (548–4056 tok/s): a halving is not significant, and the
    // samples could not have shown a 5% change: inconclusive, never unchanged
    let wild = view(&[60.0, 140.0, 70.0, 130.0, 90.0], 1.0);
    let m = speed_verdict(&compare(b, &wild, &thr)).clone();
    assert_eq!(m.verdict, Verdict::Inconclusive, "{m:?}");
    let mdc = m.min_detectable_pct.unwrap();
    assert!(mdc > 20.0, "{mdc}");
    assert!(m
        .reason
        .unwrap()
        .contains(&format!("beyond {mdc:.0}% (threshold 5%)")));
    // tight samples: unchanged, with the smallest change they could detect
    let fine = view(&[100.2, 99.1, 100.9, 99.8, 100.1], 1.0);
    let m = speed_verdict(&compare(b, &fine, &thr)).clone();
    assert_eq!(m.verdict, Verdict::Unchanged);
    assert!(m.min_detectable_pct.unwrap() < 5.0);
    // one repetition: nothing to test with
    let one = view(&[100.0], 1.0);
    let m = speed_verdict(&compare(std::slice::from_ref(&one), &one, &thr)).clone();
    assert_eq!(m.verdict, Verdict::Inconclusive);
    // a significant change beyond the threshold is a regression however spread the samples
    let low = view(&[10.0, 30.0, 12.0, 28.0, 20.0], 1.0);
    assert_eq!(
        speed_verdict(&compare(b, &low, &thr)).verdict,
        Verdict::Regressed
    );
}

#[test]
fn the_smallest_detectable_change_matches_the_power_formula() {
    // n = 5 on both sides, sd 1: se = √(2/5), df = 8; (t(0.975) + t(0.8)) = 2.306 + 0.889
    let a = stat(&[-1.0, -0.5, 0.0, 0.5, 1.0]);
    let sd = a.sd;
    let b = stat(&[9.0, 9.5, 10.0, 10.5, 11.0]);
    let m = super::statistics::welch_min_detectable(&a, &b).unwrap();
    let expect = (2.306 + 0.889) * (2.0 * sd * sd / 5.0).sqrt();
    assert!((m - expect).abs() < 0.01, "{m} vs {expect}");
    // three runs: sd × √(1 + 1/3), 2 degrees of freedom: 4.303 + 1.061
    let r = super::statistics::between_runs_min_detectable(&[1.0, 2.0, 3.0]).unwrap();
    assert!(
        (r - (4.303 + 1.061) * (4.0f64 / 3.0).sqrt()).abs() < 0.01,
        "{r}"
    );
    assert!(super::statistics::between_runs_min_detectable(&[1.0, 2.0]).is_none());
}

#[test]
fn reruns_decide_busy_verdicts_and_busy_reruns_confirm_nothing() {
    let base = view(&[100.0, 101.0, 99.0, 100.5, 99.5], 1.0);
    let mut thr = Thresholds::default();
    thr.apply_cli(&["5".into()]).unwrap();
    let b = std::slice::from_ref(&base);
    let slow = || view(&[80.0, 81.0, 79.0, 80.5, 79.5], 1.0);
    let fine = || view(&[100.2, 99.1, 100.9, 99.8, 100.1], 1.0);
    // a regression whose re-runs were all on a busy machine: not confirmed, inconclusive
    let mut cmp = compare(b, &slow(), &thr);
    confirm(
        &mut cmp,
        &[
            compare(b, &busy(slow()), &thr),
            compare(b, &busy(slow()), &thr),
        ],
    );
    let m = speed_verdict(&cmp);
    assert_eq!((m.verdict, cmp.regressions), (Verdict::Inconclusive, 0));
    assert!(m
        .reason
        .as_deref()
        .unwrap()
        .contains("every confirmation re-run"));
    // one busy re-run and one slow: the slow one confirms
    let mut cmp = compare(b, &slow(), &thr);
    confirm(
        &mut cmp,
        &[compare(b, &busy(fine()), &thr), compare(b, &slow(), &thr)],
    );
    assert_eq!(speed_verdict(&cmp).verdict, Verdict::Regressed);
    // measured on a busy machine, re-measured on a quiet one: the re-runs decide
    let mut cmp = compare(b, &busy(slow()), &thr);
    confirm(
        &mut cmp,
        &[compare(b, &fine(), &thr), compare(b, &fine(), &thr)],
    );
    let m = speed_verdict(&cmp);
    assert_eq!(m.verdict, Verdict::Unchanged);
    assert!(m
        .reason
        .as_deref()
        .unwrap()
        .starts_with("decided by 2 re-runs"));
    let mut cmp = compare(b, &busy(slow()), &thr);
    confirm(
        &mut cmp,
        &[compare(b, &slow(), &thr), compare(b, &slow(), &thr)],
    );
    assert_eq!(
        (speed_verdict(&cmp).verdict, cmp.regressions),
        (Verdict::Regressed, 1)
    );
    let mut cmp = compare(b, &busy(slow()), &thr);
    confirm(
        &mut cmp,
        &[compare(b, &slow(), &thr), compare(b, &fine(), &thr)],
    );
    assert_eq!(speed_verdict(&cmp).verdict, Verdict::Unconfirmed);
    // still busy in every re-run: stays inconclusive
    let mut cmp = compare(b, &busy(slow()), &thr);
    confirm(&mut cmp, &[compare(b, &busy(fine()), &thr)]);
    assert_eq!(speed_verdict(&cmp).verdict, Verdict::Inconclusive);
}
