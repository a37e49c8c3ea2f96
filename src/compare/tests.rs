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
            samples: None
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
        },
    );
    ReportView {
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
