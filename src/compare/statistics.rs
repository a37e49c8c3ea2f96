//! The significance tests of the gate: Welch's t-test against one baseline run, a t
//! prediction interval against several, and a z-test for means reported with their standard
//! errors (the quality metrics).

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use super::view::Stat;

/// Welch's t-test: the two-sided p-value of a difference in means, from summaries.
pub fn welch_p(a: &Stat, b: &Stat) -> Option<f64> {
    let (ma, va, na) = moments(a);
    let (mb, vb, nb) = moments(b);
    if na < 2 || nb < 2 {
        return None;
    }
    let se2 = va / na as f64 + vb / nb as f64;
    if se2 <= 0.0 {
        // no spread at all: any difference is certain, none is none
        return Some(if (ma - mb).abs() > 0.0 { 0.0 } else { 1.0 });
    }
    let t = (ma - mb) / se2.sqrt();
    let df = se2 * se2
        / ((va / na as f64).powi(2) / (na - 1) as f64 + (vb / nb as f64).powi(2) / (nb - 1) as f64);
    // statrs panics on a NaN argument: no p-value for numbers that are not finite
    if !t.is_finite() || !df.is_finite() {
        return None;
    }
    let dist = StudentsT::new(0.0, 1.0, df.max(1.0)).ok()?;
    Some(2.0 * (1.0 - dist.cdf(t.abs())))
}

pub(super) fn moments(s: &Stat) -> (f64, f64, usize) {
    match &s.samples {
        Some(v) if v.len() >= 2 => {
            let n = v.len();
            let m = v.iter().sum::<f64>() / n as f64;
            let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
            (m, var, n)
        }
        _ => (s.mean, s.sd * s.sd, s.n),
    }
}

/// The two-sided p-value of `x` under the distribution of the per-run values `runs`: a t
/// prediction interval with k − 1 degrees of freedom (k ≥ 3).
pub fn between_runs_p(runs: &[f64], x: f64) -> Option<f64> {
    let k = runs.len();
    if k < 3 {
        return None;
    }
    let m = runs.iter().sum::<f64>() / k as f64;
    let sd = (runs.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (k - 1) as f64).sqrt();
    if !sd.is_finite() || !x.is_finite() {
        return None;
    }
    if sd == 0.0 {
        return Some(if x == m { 1.0 } else { 0.0 });
    }
    let t = (x - m) / (sd * (1.0 + 1.0 / k as f64).sqrt());
    if !t.is_finite() {
        return None;
    }
    let dist = StudentsT::new(0.0, 1.0, (k - 1) as f64).ok()?;
    Some(2.0 * (1.0 - dist.cdf(t.abs())))
}

/// The two-sided p-value of the difference of two means given with their standard errors
/// (`se_a`, `se_b`): a z-test, `z = (b − a) / √(se_a² + se_b²)`. Both errors 0: any difference
/// is certain, none is none.
pub fn z_p(a: f64, se_a: f64, b: f64, se_b: f64) -> Option<f64> {
    let se = (se_a * se_a + se_b * se_b).sqrt();
    if !a.is_finite() || !b.is_finite() || !se.is_finite() {
        return None;
    }
    if se == 0.0 {
        return Some(if a == b { 1.0 } else { 0.0 });
    }
    let z = (b - a) / se;
    if !z.is_finite() {
        return None;
    }
    let dist = Normal::new(0.0, 1.0).ok()?;
    Some(2.0 * (1.0 - dist.cdf(z.abs())))
}

/// Power the gate asks of its tests: a change of the threshold's size must be detected this
/// often (the usual 80%), or the verdict is inconclusive.
pub const POWER: f64 = 0.8;

/// The smallest change (in the metric's units) a two-sided t-test at p < 0.05 with `df`
/// degrees of freedom detects with probability [`POWER`], given the standard error `se` of the
/// difference: `(t(0.975) + t(POWER)) × se`. `None` for a standard error or degrees of freedom
/// that are not finite and positive.
pub fn min_detectable(se: f64, df: f64) -> Option<f64> {
    if !(se.is_finite() && se >= 0.0 && df.is_finite() && df > 0.0) {
        return None;
    }
    let t = StudentsT::new(0.0, 1.0, df.max(1.0)).ok()?;
    Some((t.inverse_cdf(0.975) + t.inverse_cdf(POWER)) * se)
}

/// [`min_detectable`] for Welch's test of `a` against `b`; `None` with fewer than two values
/// on a side.
pub fn welch_min_detectable(a: &Stat, b: &Stat) -> Option<f64> {
    let (_, va, na) = moments(a);
    let (_, vb, nb) = moments(b);
    if na < 2 || nb < 2 {
        return None;
    }
    let (qa, qb) = (va / na as f64, vb / nb as f64);
    let se2 = qa + qb;
    if se2 == 0.0 {
        return Some(0.0);
    }
    let df = se2 * se2 / (qa * qa / (na - 1) as f64 + qb * qb / (nb - 1) as f64);
    min_detectable(se2.sqrt(), df)
}

/// [`min_detectable`] for one value against the per-run values `runs` (k ≥ 3): the prediction
/// interval's standard error `sd × √(1 + 1/k)`, k − 1 degrees of freedom.
pub fn between_runs_min_detectable(runs: &[f64]) -> Option<f64> {
    let k = runs.len();
    if k < 3 {
        return None;
    }
    let m = runs.iter().sum::<f64>() / k as f64;
    let sd = (runs.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (k - 1) as f64).sqrt();
    min_detectable(sd * (1.0 + 1.0 / k as f64).sqrt(), (k - 1) as f64)
}
