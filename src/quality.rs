//! Quality of a quantized model against its reference, with the definitions of llama.cpp's
//! `llama-perplexity --kl-divergence`: per-token KL divergence, perplexities and their ratio,
//! top-token agreement and Δp, their uncertainties, and which corpus positions are scored.
//!
//! Pure arithmetic over logits and log-probabilities; no llama.cpp call (the `engine` produces
//! the logits). Every formula mirrors `tools/perplexity/perplexity.cpp` of llama.cpp (read at
//! commit 050fc7f32de16858ac667d775b43a51ed8976e6f); each item names the upstream function or
//! lines it follows.
//!
//! Deliberate differences from upstream, all below the precision upstream prints:
//! - **The reference stays unquantized.** Upstream's base run (`perplexity()` with
//!   `--kl-divergence-base`) writes each position's log-probabilities as `uint16` (a `scale` and
//!   `min_log_prob` header, then `nearest_int((logit - min_logit)/scale)`, with
//!   `min_logit = max(min_logit, max_logit - 16)`), so the KL run reads them back with a step of
//!   at most 16/65535 in log space and every log-prob below `max - 16` clamped to the floor.
//!   Here the reference's log-probabilities are kept in memory as `f32` or `f64`, exactly.
//! - **Intermediates in `f64`.** Upstream rounds `nll`, `log_sum_exp`, each `p`, `Δp` and each
//!   term of the KLD sum to `float` and accumulates the sums in `double`; here everything is
//!   `f64`.
//! - **No NaN.** Where upstream's formula divides by zero or takes the square root of a negative
//!   number (and would print `nan`), the uncertainty here is 0; non-finite inputs are errors.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Reference log-probabilities at or below this are left out of the KLD sum, as upstream's KL
/// `log_softmax` does: `if (p_log_base > -16.f) { ... sum += p_base * (...) }`. (The base file
/// cannot represent them anyway: its floor is `max_logit - 16`.)
pub const KLD_LOG_PROB_FLOOR: f64 = -16.0;

/// Upstream prints its final statistics only from this many scored tokens:
/// `if (kld.count < 100) return; // we do not wish to do statistics on so few values`.
/// [`QualityAccumulator::stats`] computes them for any count ≥ 1; callers that want upstream's
/// report should check the count against this.
pub const MIN_TOKENS_FOR_REPORT: usize = 100;

/// How far `Σ exp(log p)` of the reference may be from 1 (f32 storage of log-probs is far
/// inside it; raw logits passed by mistake are far outside it).
const NORMALIZATION_TOLERANCE: f64 = 1e-4;

/// What can be wrong with the inputs.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QualityError {
    #[error("no logits: the vocabulary is empty")]
    EmptyVocab,
    #[error("{what} has a non-finite value ({value}) at token {index}")]
    NonFinite {
        what: &'static str,
        index: usize,
        value: f64,
    },
    #[error(
        "the reference has {reference} log-probabilities and the quant {quant} logits: \
         both models must share one vocabulary"
    )]
    VocabMismatch { reference: usize, quant: usize },
    #[error("token {target} is outside the vocabulary of {n_vocab} tokens")]
    TargetOutOfRange { target: usize, n_vocab: usize },
    #[error(
        "the reference log-probabilities are not normalised (the sum of their exp is {sum}): \
         pass log_softmax of the reference's logits, not the logits"
    )]
    NotNormalized { sum: f64 },
    #[error("a token score has a non-finite {field} ({value})")]
    NonFiniteScore { field: &'static str, value: f64 },
    #[error("no token was scored")]
    NoTokens,
    #[error("the statistic {field} came out non-finite ({value})")]
    NonFiniteStat { field: &'static str, value: f64 },
    #[error(
        "a context of {n_ctx} tokens scores none (positions n_ctx/2 .. n_ctx-1 are scored): \
         use at least 3"
    )]
    ContextTooSmall { n_ctx: usize },
    #[error(
        "the corpus tokenizes to {n_tokens} tokens; llama-perplexity needs at least 2*n_ctx = \
         {needed} for a context of {n_ctx}"
    )]
    CorpusTooShort {
        n_tokens: usize,
        n_ctx: usize,
        needed: usize,
    },
    #[error("chunk {start}..{end} is outside the {n_tokens} tokens given")]
    ChunkOutOfRange {
        start: usize,
        end: usize,
        n_tokens: usize,
    },
}

/// The first pass of every upstream `log_softmax` overload: the largest logit, where it is, and
/// `log Σ exp(logit - max)`. Upstream (KL mode):
/// `if (logits[i] > max_logit) { max_logit = logits[i]; imax = i; }` (so the first of equal
/// maxima), `sum_exp += expf(logits[i] - max_logit)` (in `double`),
/// `const float log_sum_exp = log(sum_exp)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalizer {
    pub max_logit: f64,
    /// Index of the first largest logit (upstream's `imax`).
    pub argmax: usize,
    pub log_sum_exp: f64,
}

impl Normalizer {
    /// Errors on an empty slice and on any NaN or ±inf logit.
    pub fn of(logits: &[f32]) -> Result<Self, QualityError> {
        let first = *logits.first().ok_or(QualityError::EmptyVocab)?;
        let (mut max_logit, mut argmax) = (f64::from(first), 0);
        for (i, &l) in logits.iter().enumerate() {
            let l = f64::from(l);
            if !l.is_finite() {
                return Err(QualityError::NonFinite {
                    what: "the logits",
                    index: i,
                    value: l,
                });
            }
            if l > max_logit {
                (max_logit, argmax) = (l, i);
            }
        }
        let sum_exp: f64 = logits
            .iter()
            .map(|&l| (f64::from(l) - max_logit).exp())
            .sum();
        Ok(Normalizer {
            max_logit,
            argmax,
            log_sum_exp: sum_exp.ln(),
        })
    }

    /// `log p` of a token with this logit: upstream's `logits[tok] - max_logit - log(sum_exp)`.
    pub fn log_prob(&self, logit: f32) -> f64 {
        f64::from(logit) - self.max_logit - self.log_sum_exp
    }
}

/// Log-probabilities of a whole vocabulary, `logit - max - log Σ exp(logit - max)`, as upstream's
/// `log_softmax` overloads compute them per token (the PPL one returns
/// `logits[tok] - max_logit - log(sum_exp)`). Errors on empty or non-finite logits.
pub fn log_softmax(logits: &[f32]) -> Result<Vec<f64>, QualityError> {
    let norm = Normalizer::of(logits)?;
    Ok(logits.iter().map(|&l| norm.log_prob(l)).collect())
}

/// How the quant did at one scored position, against the reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenScore {
    /// `KLD(reference ‖ quant) = Σ p_ref · (log p_ref − log p_q)` over the vocabulary, leaving
    /// out tokens with `log p_ref ≤ -16` ([`KLD_LOG_PROB_FLOOR`]), as upstream.
    pub kld: f64,
    /// `log p_q` of the actual next token (upstream's `-nll`).
    pub log_p: f64,
    /// `log p_ref` of the actual next token (upstream's `-nll_base`).
    pub log_p_ref: f64,
    /// The quant's most likely token (first of equal maxima: upstream's `imax`).
    pub top: usize,
    /// The reference's most likely token (first of equal maxima: upstream's `imax_base`).
    pub top_ref: usize,
    /// `Δp = p_q(actual) − p_ref(actual)`: upstream's `p_diff = p - p_base`.
    pub p_diff: f64,
}

impl TokenScore {
    /// Whether both models rank the same token first (upstream: `if (imax == imax_base)`).
    pub fn same_top(&self) -> bool {
        self.top == self.top_ref
    }
}

/// Scores the quant's logits at one position against the reference's log-probabilities there,
/// for the actual next token `target`. Mirrors upstream's KL-mode overload
/// `log_softmax(n_vocab, logits, base_log_prob, tok, kld)`:
/// `nll = max_logit + log_sum_exp - logits[tok]`, `nll_base = -(base log-prob of tok)`,
/// `sum += p_base * (p_log_base - logits[i] + max_logit)` (with `max_logit += log_sum_exp`
/// first) for each `p_log_base > -16`, `p_diff = expf(-nll) - expf(-nll_base)`.
///
/// Upstream reads the reference's log-probs back from the `uint16` base file; here they are the
/// exact values (`f32` or `f64`, e.g. from [`log_softmax`]). Errors on an empty or mismatched
/// vocabulary, a target outside it, any non-finite input, and a reference whose probabilities
/// do not sum to 1 (raw logits passed as log-probs).
pub fn score_token<R: Copy + Into<f64>>(
    ref_log_probs: &[R],
    quant_logits: &[f32],
    target: usize,
) -> Result<TokenScore, QualityError> {
    if ref_log_probs.len() != quant_logits.len() {
        return Err(QualityError::VocabMismatch {
            reference: ref_log_probs.len(),
            quant: quant_logits.len(),
        });
    }
    let norm = Normalizer::of(quant_logits)?;
    if target >= quant_logits.len() {
        return Err(QualityError::TargetOutOfRange {
            target,
            n_vocab: quant_logits.len(),
        });
    }
    let top_ref = reference_argmax(ref_log_probs)?;
    let kld = ref_log_probs
        .iter()
        .zip(quant_logits)
        .map(|(&r, &l)| (r.into(), norm.log_prob(l)))
        .filter(|&(lp_ref, _)| lp_ref > KLD_LOG_PROB_FLOOR)
        .map(|(lp_ref, lp_q)| lp_ref.exp() * (lp_ref - lp_q))
        .sum();
    let log_p = norm.log_prob(quant_logits[target]);
    let log_p_ref = ref_log_probs[target].into();
    Ok(TokenScore {
        kld,
        log_p,
        log_p_ref,
        top: norm.argmax,
        top_ref,
        p_diff: log_p.exp() - log_p_ref.exp(),
    })
}

/// The reference's most likely token, after checking its log-probs are finite and normalised.
/// Upstream: `if (i == 0 || p_log_base > p_log_base_max) { p_log_base_max = p_log_base;
/// imax_base = i; }` (the first of equal maxima).
fn reference_argmax<R: Copy + Into<f64>>(ref_log_probs: &[R]) -> Result<usize, QualityError> {
    let (mut best, mut argmax, mut sum) = (f64::NEG_INFINITY, 0, 0.0);
    for (i, &r) in ref_log_probs.iter().enumerate() {
        let lp: f64 = r.into();
        if !lp.is_finite() {
            return Err(QualityError::NonFinite {
                what: "the reference log-probabilities",
                index: i,
                value: lp,
            });
        }
        if i == 0 || lp > best {
            (best, argmax) = (lp, i);
        }
        sum += lp.exp();
    }
    if (sum - 1.0).abs() > NORMALIZATION_TOLERANCE {
        return Err(QualityError::NotNormalized { sum });
    }
    Ok(argmax)
}

/// The summary of a comparison, with the quantities upstream's final report prints. Every
/// `_err` is upstream's `±`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityStats {
    /// Scored tokens (upstream's `kld.count`).
    pub tokens: usize,
    /// "Mean PPL(Q)": `exp(mean nll)` of the quant.
    pub ppl: f64,
    /// Its `±`: `ppl_val * log_ppl.second`.
    pub ppl_err: f64,
    /// "Mean PPL(base)": `exp(mean nll_base)` of the reference.
    pub ppl_ref: f64,
    pub ppl_ref_err: f64,
    /// "Mean PPL(Q)/PPL(base)": `exp(ln_ppl_ratio)`.
    pub ppl_ratio: f64,
    /// `ppl_ratio_val * log_ppl_ratio_unc`.
    pub ppl_ratio_err: f64,
    /// "Mean ln(PPL(Q)/PPL(base))": `log_ppl.first - log_ppl_base.first`.
    pub ln_ppl_ratio: f64,
    /// `sqrt(err(ln PPL(Q))² + err(ln PPL(base))² - 2·cov)`.
    pub ln_ppl_ratio_err: f64,
    /// "Mean KLD".
    pub kld_mean: f64,
    pub kld_mean_err: f64,
    /// "Median KLD": the middle value, or the mean of the two middle values.
    pub kld_median: f64,
    /// "99.0% KLD", upstream's `percentile(kld_values, 0.990f)`.
    pub kld_p99: f64,
    /// "99.9% KLD", upstream's `percentile(kld_values, 0.999f)`.
    pub kld_p999: f64,
    /// "Maximum KLD".
    pub kld_max: f64,
    /// "Same top p", as a fraction (upstream prints percent).
    pub top1_agree: f64,
    /// Binomial: `sqrt(p·(1 − p)/(count − 1))`.
    pub top1_agree_err: f64,
    /// "Mean Δp", as a fraction.
    pub dp_mean: f64,
    pub dp_mean_err: f64,
    /// "RMS Δp", as a fraction: `sqrt(mean Δp²)`.
    pub dp_rms: f64,
    /// `0.5/p_diff_rms_val * p_diff_mse.second`.
    pub dp_rms_err: f64,
}

/// The running sums of upstream's `kl_divergence_result`, plus every token's KLD (upstream's
/// `kld_values`) for the median and percentiles. Feed it [`TokenScore`]s in any order.
#[derive(Clone, Debug, Default)]
pub struct QualityAccumulator {
    sum_nll: f64,
    sum_nll2: f64,
    sum_nll_base: f64,
    sum_nll_base2: f64,
    sum_nll_nll_base: f64,
    sum_kld: f64,
    sum_kld2: f64,
    sum_p_diff: f64,
    sum_p_diff2: f64,
    sum_p_diff4: f64,
    n_same_top: usize,
    kld_values: Vec<f64>,
}

impl QualityAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scored tokens so far.
    pub fn count(&self) -> usize {
        self.kld_values.len()
    }

    /// Adds one token, as upstream's KL `log_softmax` does to `kld` (`sum_nll += nll;
    /// sum_nll2 += nll*nll; ... sum_p_diff4 += p_diff2*p_diff2; ++kld.count`). Errors (and adds
    /// nothing) when a field is non-finite.
    pub fn push(&mut self, s: &TokenScore) -> Result<(), QualityError> {
        for (field, value) in [
            ("kld", s.kld),
            ("log_p", s.log_p),
            ("log_p_ref", s.log_p_ref),
            ("p_diff", s.p_diff),
        ] {
            if !value.is_finite() {
                return Err(QualityError::NonFiniteScore { field, value });
            }
        }
        let (nll, nll_base) = (-s.log_p, -s.log_p_ref);
        self.sum_nll += nll;
        self.sum_nll2 += nll * nll;
        self.sum_nll_base += nll_base;
        self.sum_nll_base2 += nll_base * nll_base;
        self.sum_nll_nll_base += nll * nll_base;
        self.sum_kld += s.kld;
        self.sum_kld2 += s.kld * s.kld;
        let p_diff2 = s.p_diff * s.p_diff;
        self.sum_p_diff += s.p_diff;
        self.sum_p_diff2 += p_diff2;
        self.sum_p_diff4 += p_diff2 * p_diff2;
        self.n_same_top += usize::from(s.same_top());
        self.kld_values.push(s.kld);
        Ok(())
    }

    /// The statistics upstream's `kl_divergence` prints at the end ("Perplexity statistics",
    /// "KL divergence statistics", "Token probability statistics"), with its formulas. Errors
    /// when nothing was scored or a result is non-finite (sums overflowed).
    pub fn stats(&self) -> Result<QualityStats, QualityError> {
        let n = self.count();
        if n == 0 {
            return Err(QualityError::NoTokens);
        }
        let (ln_ppl, ln_ppl_err) = mean_and_uncertainty(self.sum_nll, self.sum_nll2, n);
        let (ln_ref, ln_ref_err) = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, n);
        let cov = covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, n);
        let ln_ppl_ratio = ln_ppl - ln_ref;
        let ln_ppl_ratio_err = sqrt_or_zero(ln_ppl_err.powi(2) + ln_ref_err.powi(2) - 2.0 * cov);
        let (kld_mean, kld_mean_err) = mean_and_uncertainty(self.sum_kld, self.sum_kld2, n);
        let (dp_mean, dp_mean_err) = mean_and_uncertainty(self.sum_p_diff, self.sum_p_diff2, n);
        let (dp_mse, dp_mse_err) = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, n);
        let dp_rms = dp_mse.sqrt();
        let top1_agree = self.n_same_top as f64 / n as f64;
        let mut sorted = self.kld_values.clone();
        sorted.sort_by(f64::total_cmp);
        let (ppl, ppl_ref, ppl_ratio) = (ln_ppl.exp(), ln_ref.exp(), ln_ppl_ratio.exp());
        let stats = QualityStats {
            tokens: n,
            ppl,
            ppl_err: ppl * ln_ppl_err,
            ppl_ref,
            ppl_ref_err: ppl_ref * ln_ref_err,
            ppl_ratio,
            ppl_ratio_err: ppl_ratio * ln_ppl_ratio_err,
            ln_ppl_ratio,
            ln_ppl_ratio_err,
            kld_mean,
            kld_mean_err,
            kld_median: median(&sorted),
            kld_p99: percentile(&sorted, 0.990),
            kld_p999: percentile(&sorted, 0.999),
            kld_max: sorted[n - 1],
            top1_agree,
            top1_agree_err: binomial_err(top1_agree, n),
            dp_mean,
            dp_mean_err,
            dp_rms,
            // upstream: `0.5/p_diff_rms_val * p_diff_mse.second`, NaN when every Δp is 0
            dp_rms_err: if dp_rms > 0.0 {
                0.5 / dp_rms * dp_mse_err
            } else {
                0.0
            },
        };
        check_finite(&stats)?;
        Ok(stats)
    }
}

/// Aggregates a slice of scores: [`QualityAccumulator::push`] each, then `stats`.
pub fn aggregate(scores: &[TokenScore]) -> Result<QualityStats, QualityError> {
    let mut acc = QualityAccumulator::new();
    for s in scores {
        acc.push(s)?;
    }
    acc.stats()
}

/// Upstream's `mean_and_uncertainty` lambda in `kl_divergence`: `f = sum/count;
/// df = sum2/count - f*f; df = df > 0 && count > 10 ? sqrt(df/(count-1)) : 0.` (and `(0, 0)`
/// for `count < 1`). `sqrt(population variance/(count − 1))` is the standard error of the mean,
/// `s/√count`; it is 0 up to 10 samples.
fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count < 1 {
        return (0.0, 0.0);
    }
    let f = sum / count as f64;
    let df = sum2 / count as f64 - f * f;
    let df = if df > 0.0 && count > 10 {
        (df / (count - 1) as f64).sqrt()
    } else {
        0.0
    };
    (f, df)
}

/// Upstream's `covariance` lambda: `if (count < 10) return 0.0;
/// var = sumab/count - (suma/count)*(sumb/count); var /= count - 1;` — the covariance of the
/// two means (sample covariance / count). Note the threshold differs from
/// [`mean_and_uncertainty`]'s (`< 10` here, `> 10` there), so at exactly 10 tokens upstream's
/// ratio uncertainty is `sqrt(-2·cov)`, NaN for a positive covariance: [`sqrt_or_zero`] makes it 0.
fn covariance(suma: f64, sumb: f64, sumab: f64, count: usize) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (sumab / n - (suma / n) * (sumb / n)) / (n - 1.0)
}

/// `sqrt(x)`, or 0 where upstream's `sqrt` of a negative radicand would give NaN.
fn sqrt_or_zero(x: f64) -> f64 {
    if x > 0.0 {
        x.sqrt()
    } else {
        0.0
    }
}

/// "Same top p" `±`: `sqrt(same_top_p*(1.0 - same_top_p)/(kld.count - 1))`; 0 for one token
/// (upstream: 0/0).
fn binomial_err(p: f64, count: usize) -> f64 {
    if count < 2 {
        return 0.0;
    }
    sqrt_or_zero(p * (1.0 - p) / (count - 1) as f64)
}

/// Upstream's `kld_median`: `size%2 == 0 ? 0.5f*(v[size/2] + v[size/2-1]) : v[size/2]` of the
/// sorted values. `sorted` is not empty.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n.is_multiple_of(2) {
        0.5 * (sorted[n / 2] + sorted[n / 2 - 1])
    } else {
        sorted[n / 2]
    }
}

/// Upstream's `percentile` lambda, linear interpolation between closest ranks:
/// `if (fraction <= 0) return values.front(); if (fraction >= 1) return values.back();
/// float p = fraction*(values.size() - 1); size_t ip = size_t(p); p -= ip;
/// return (1 - p)*values[ip] + p*values[std::min(ip+1, values.size()-1)];`.
/// The rank is computed in `f32` as upstream does (so the same index and weight, e.g.
/// `0.999f`), the interpolation in `f64`. `sorted` is not empty.
fn percentile(sorted: &[f64], fraction: f32) -> f64 {
    let n = sorted.len();
    if fraction <= 0.0 {
        return sorted[0];
    }
    if fraction >= 1.0 {
        return sorted[n - 1];
    }
    let rank = fraction * (n - 1) as f32;
    let ip = rank as usize;
    let w = f64::from(rank - ip as f32);
    (1.0 - w) * sorted[ip] + w * sorted[(ip + 1).min(n - 1)]
}

fn check_finite(s: &QualityStats) -> Result<(), QualityError> {
    let fields = [
        ("ppl", s.ppl),
        ("ppl_err", s.ppl_err),
        ("ppl_ref", s.ppl_ref),
        ("ppl_ref_err", s.ppl_ref_err),
        ("ppl_ratio", s.ppl_ratio),
        ("ppl_ratio_err", s.ppl_ratio_err),
        ("ln_ppl_ratio", s.ln_ppl_ratio),
        ("ln_ppl_ratio_err", s.ln_ppl_ratio_err),
        ("kld_mean", s.kld_mean),
        ("kld_mean_err", s.kld_mean_err),
        ("kld_median", s.kld_median),
        ("kld_p99", s.kld_p99),
        ("kld_p999", s.kld_p999),
        ("kld_max", s.kld_max),
        ("top1_agree", s.top1_agree),
        ("top1_agree_err", s.top1_agree_err),
        ("dp_mean", s.dp_mean),
        ("dp_mean_err", s.dp_mean_err),
        ("dp_rms", s.dp_rms),
        ("dp_rms_err", s.dp_rms_err),
    ];
    match fields.into_iter().find(|(_, v)| !v.is_finite()) {
        Some((field, value)) => Err(QualityError::NonFiniteStat { field, value }),
        None => Ok(()),
    }
}

/// One chunk of the corpus as upstream's KL mode evaluates it: a fresh context (the KV cache is
/// cleared per chunk) holding tokens `start..end` (`n_ctx` of them), of which the logits at
/// positions `first_scored..end - 1` are scored, each against the token after it.
///
/// Indices are absolute, into the tokenized corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// `start = i * n_ctx`.
    pub start: usize,
    /// `start + n_ctx/2`: upstream's `const int first = n_ctx/2;`.
    pub first_scored: usize,
    /// `start + n_ctx`.
    pub end: usize,
    /// Whether token `start` is replaced by BOS for decoding (the vocabulary adds BOS). Upstream:
    /// `if (add_bos && j == 0) { tokens[batch_start] = llama_vocab_bos(vocab); }` before the
    /// chunk's first batch, restored after the decode. The model never sees the original token
    /// `start`, and it is never a target (targets start at `first_scored + 1`). For chunk 0 the
    /// corpus was tokenized with `add_special = true`, so that token already is BOS.
    pub bos_first: bool,
}

impl Chunk {
    /// The positions whose logits are scored; the logits at `p` predict token `p + 1` (upstream
    /// passes `logits + first*n_vocab` and `tokens + start + first` and scores `tokens[i+1]` for
    /// `i < n_ctx - 1 - first`). In the chunk's batch, position `p` is `p - start`.
    pub fn scored(&self) -> Range<usize> {
        self.first_scored..self.end - 1
    }

    /// `n_ctx - 1 - n_ctx/2`.
    pub fn n_scored(&self) -> usize {
        self.end - 1 - self.first_scored
    }

    /// The tokens to decode for this chunk: `tokens[start..end]`, the first one replaced by
    /// `bos` when [`Chunk::bos_first`]. Errors when `tokens` is shorter than the chunk.
    pub fn decode_input<T: Copy>(&self, tokens: &[T], bos: T) -> Result<Vec<T>, QualityError> {
        let mut input = tokens
            .get(self.start..self.end)
            .ok_or(QualityError::ChunkOutOfRange {
                start: self.start,
                end: self.end,
                n_tokens: tokens.len(),
            })?
            .to_vec();
        if self.bos_first {
            input[0] = bos;
        }
        Ok(input)
    }
}

/// The chunks upstream scores for a corpus of `n_tokens` tokens and a context of `n_ctx`.
///
/// Mirrors the base run (`perplexity()`, which writes the `--kl-divergence-base` file and so
/// decides the chunks; the KL run reads `n_ctx`, `n_chunk` and the tokens back from that file
/// and ignores its own `--chunks`): it refuses `tokens.size() < 2*n_ctx` ("you need at least %d
/// tokens to evaluate perplexity"), then `n_chunk_max = tokens.size() / n_ctx` (the remainder
/// is not used) and `n_chunk = params.n_chunks < 0 ? n_chunk_max : min(params.n_chunks,
/// n_chunk_max)` — `None` here is upstream's default `-1`, and `Some(0)` gives no chunk, as
/// upstream. Chunk `i` is `i*n_ctx .. (i+1)*n_ctx`, scored from `n_ctx/2`.
///
/// One difference: upstream accepts `n_ctx` 1 and 2 and scores nothing (`n_ctx - 1 - n_ctx/2`
/// is 0); this refuses them.
pub fn chunk_plan(
    n_tokens: usize,
    n_ctx: usize,
    n_chunks_wanted: Option<usize>,
    add_bos: bool,
) -> Result<Vec<Chunk>, QualityError> {
    if n_ctx < 3 {
        return Err(QualityError::ContextTooSmall { n_ctx });
    }
    let needed = 2 * n_ctx;
    if n_tokens < needed {
        return Err(QualityError::CorpusTooShort {
            n_tokens,
            n_ctx,
            needed,
        });
    }
    let n_chunk_max = n_tokens / n_ctx;
    let n_chunk = n_chunks_wanted.map_or(n_chunk_max, |w| w.min(n_chunk_max));
    Ok((0..n_chunk)
        .map(|i| Chunk {
            start: i * n_ctx,
            first_scored: i * n_ctx + n_ctx / 2,
            end: (i + 1) * n_ctx,
            bos_first: add_bos,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic, irregular logits.
    fn logits(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| 3.0 * ((i as f32 + 1.0) * seed).sin() + 0.1 * i as f32)
            .collect()
    }

    /// Probabilities straight from the definition, without max subtraction.
    fn naive_probs(logits: &[f64]) -> Vec<f64> {
        let z: f64 = logits.iter().map(|l| l.exp()).sum();
        logits.iter().map(|l| l.exp() / z).collect()
    }

    #[test]
    fn log_softmax_matches_the_definition() {
        let l = logits(40, 0.7);
        let lp = log_softmax(&l).unwrap();
        let p = naive_probs(&l.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
        for (a, b) in lp.iter().zip(&p) {
            assert!((a - b.ln()).abs() < 1e-12);
        }
        assert!((lp.iter().map(|x| x.exp()).sum::<f64>() - 1.0).abs() < 1e-12);
        // large logits do not overflow
        let big = log_softmax(&[1000.0, 999.0]).unwrap();
        assert!((big[0] - (-(1.0 + (-1.0f64).exp()).ln())).abs() < 1e-12);
    }

    #[test]
    fn identical_distributions_score_zero() {
        let mut scores = Vec::new();
        for k in 0..150 {
            let l = logits(64, 0.3 + k as f32 * 0.01);
            let reference = log_softmax(&l).unwrap();
            let s = score_token(&reference, &l, (k * 7) % 64).unwrap();
            assert!(s.kld.abs() <= 1e-12, "kld {}", s.kld);
            assert!(s.same_top());
            assert_eq!(s.log_p, s.log_p_ref);
            assert_eq!(s.p_diff, 0.0);
            scores.push(s);
        }
        let st = aggregate(&scores).unwrap();
        assert_eq!(st.tokens, 150);
        assert!((st.ppl_ratio - 1.0).abs() <= 1e-12);
        assert!(st.ln_ppl_ratio.abs() <= 1e-12 && st.ln_ppl_ratio_err <= 1e-9);
        assert!(st.kld_mean.abs() <= 1e-12 && st.kld_max.abs() <= 1e-12);
        assert_eq!((st.top1_agree, st.top1_agree_err), (1.0, 0.0));
        // upstream's 0.5/rms * err is 0/0 here
        assert_eq!((st.dp_rms, st.dp_rms_err, st.dp_mean), (0.0, 0.0, 0.0));
        assert_eq!(st.ppl, st.ppl_ref);
    }

    #[test]
    fn three_token_vocabulary_by_hand() {
        let ref_logits = [1.0f32, 2.0, 0.5];
        let reference = log_softmax(&ref_logits).unwrap();
        let p = naive_probs(&[1.0, 2.0, 0.5]);
        for (quant, target, same) in [([1.2f32, 1.5, 0.9], 0, true), ([2.5, 1.5, 0.9], 2, false)] {
            let q = naive_probs(&quant.map(f64::from));
            let kld: f64 = (0..3).map(|i| p[i] * (p[i] / q[i]).ln()).sum();
            let s = score_token(&reference, &quant, target).unwrap();
            assert!((s.kld - kld).abs() < 1e-12, "{} vs {kld}", s.kld);
            assert!((s.log_p - q[target].ln()).abs() < 1e-12);
            assert!((s.log_p_ref - p[target].ln()).abs() < 1e-12);
            assert!((s.p_diff - (q[target] - p[target])).abs() < 1e-12);
            assert_eq!(s.same_top(), same);
            assert_eq!(s.top_ref, 1);
            assert_eq!(s.top, if same { 1 } else { 0 });
        }
        // f32 reference log-probs are accepted too
        let r32: Vec<f32> = reference.iter().map(|&x| x as f32).collect();
        let s = score_token(&r32, &[1.2, 1.5, 0.9], 0).unwrap();
        assert!(s.kld > 0.0 && s.kld < 1.0);
    }

    #[test]
    fn ties_pick_the_first_token_and_kld_skips_tiny_reference_probs() {
        let s = score_token(&log_softmax(&[1.0, 1.0, 0.0]).unwrap(), &[0.0, 1.0, 1.0], 0).unwrap();
        assert_eq!((s.top_ref, s.top), (0, 1));
        // log p_ref of token 2 is about -20.7 < -16: left out of the sum, as upstream
        let reference = log_softmax(&[0.0, 0.0, -20.0]).unwrap();
        assert!(reference[2] < KLD_LOG_PROB_FLOOR);
        let quant = [0.0f32, 1.0, 5.0];
        let q = naive_probs(&[0.0, 1.0, 5.0]);
        let p: Vec<f64> = reference.iter().map(|x| x.exp()).collect();
        let kept: f64 = (0..2).map(|i| p[i] * (p[i] / q[i]).ln()).sum();
        let s = score_token(&reference, &quant, 1).unwrap();
        assert!((s.kld - kept).abs() < 1e-12);
        assert!((s.kld - (kept + p[2] * (p[2] / q[2]).ln())).abs() > 1e-9);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let good = log_softmax(&[0.0, 1.0, 2.0]).unwrap();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert!(matches!(
                log_softmax(&[0.0, bad]),
                Err(QualityError::NonFinite { .. })
            ));
            let e = score_token(&good, &[0.0, bad, 1.0], 0).unwrap_err();
            assert!(matches!(e, QualityError::NonFinite { index: 1, .. }), "{e}");
            let mut r = good.clone();
            r[2] = f64::from(bad);
            assert!(matches!(
                score_token(&r, &[0.0, 1.0, 2.0], 0),
                Err(QualityError::NonFinite { .. })
            ));
        }
        assert_eq!(log_softmax(&[]), Err(QualityError::EmptyVocab));
        assert!(matches!(
            score_token(&good, &[0.0, 1.0], 0),
            Err(QualityError::VocabMismatch { .. })
        ));
        assert!(matches!(
            score_token(&good, &[0.0, 1.0, 2.0], 3),
            Err(QualityError::TargetOutOfRange { .. })
        ));
        // logits passed as the reference
        assert!(matches!(
            score_token(&[0.0f32, 1.0, 2.0], &[0.0, 1.0, 2.0], 0),
            Err(QualityError::NotNormalized { .. })
        ));
        let s = score_token(&good, &[0.0, 1.0, 2.0], 0).unwrap();
        let mut acc = QualityAccumulator::new();
        assert!(acc.push(&TokenScore { kld: f64::NAN, ..s }).is_err());
        assert!(acc
            .push(&TokenScore {
                log_p: f64::NEG_INFINITY,
                ..s
            })
            .is_err());
        assert_eq!(acc.count(), 0);
        assert_eq!(acc.stats(), Err(QualityError::NoTokens));
        assert_eq!(aggregate(&[]), Err(QualityError::NoTokens));
    }

    /// Constructed scores: token k has nll, nll_base, kld and Δp from simple formulas.
    fn sample(n: usize) -> Vec<TokenScore> {
        (0..n)
            .map(|k| {
                let x = k as f64;
                TokenScore {
                    kld: 0.01 * (x * 1.3).sin().abs() + 0.001 * x,
                    log_p: -(2.0 + (x * 0.7).cos()),
                    log_p_ref: -(1.9 + 0.8 * (x * 0.7).cos() + 0.1 * (x * 2.1).sin()),
                    top: k % 5,
                    top_ref: if k % 4 == 0 { 99 } else { k % 5 },
                    p_diff: 0.02 * (x * 0.9).sin() + 0.005,
                }
            })
            .collect()
    }

    /// Mean and standard error of the mean (s/√n), two-pass.
    fn mean_se(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        let s2 = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
        (m, (s2 / n).sqrt())
    }

    #[test]
    fn uncertainties_match_an_independent_computation() {
        let sc = sample(37);
        let st = aggregate(&sc).unwrap();
        let col = |f: fn(&TokenScore) -> f64| sc.iter().map(f).collect::<Vec<f64>>();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-10 * (1.0 + b.abs());
        let (m, se) = mean_se(&col(|s| -s.log_p));
        assert!(close(st.ppl, m.exp()) && close(st.ppl_err, m.exp() * se));
        let (mr, ser) = mean_se(&col(|s| -s.log_p_ref));
        assert!(close(st.ppl_ref, mr.exp()) && close(st.ppl_ref_err, mr.exp() * ser));
        // the covariance-based error of the mean of ln ratios = s.e. of the per-token difference
        let (md, sed) = mean_se(&col(|s| s.log_p_ref - s.log_p));
        assert!(close(st.ln_ppl_ratio, md) && close(st.ln_ppl_ratio_err, sed));
        assert!(close(st.ppl_ratio, md.exp()) && close(st.ppl_ratio_err, md.exp() * sed));
        assert!(sed < (se * se + ser * ser).sqrt()); // the correlation helps
        let (mk, sek) = mean_se(&col(|s| s.kld));
        assert!(close(st.kld_mean, mk) && close(st.kld_mean_err, sek));
        let (mp, sep) = mean_se(&col(|s| s.p_diff));
        assert!(close(st.dp_mean, mp) && close(st.dp_mean_err, sep));
        let (mse, se_mse) = mean_se(&col(|s| s.p_diff * s.p_diff));
        assert!(close(st.dp_rms, mse.sqrt()) && close(st.dp_rms_err, 0.5 / mse.sqrt() * se_mse));
        // same top: k % 4 != 0 → 27 of 37
        assert!(close(st.top1_agree, 27.0 / 37.0));
        assert!(close(
            st.top1_agree_err,
            (27.0 / 37.0 * (10.0 / 37.0) / 36.0f64).sqrt()
        ));
    }

    #[test]
    fn few_tokens_give_zero_uncertainty_never_nan() {
        // up to 10 tokens upstream's mean_and_uncertainty gives 0; at exactly 10 its covariance
        // is already non-zero, so its sqrt(0 + 0 - 2 cov) is NaN for a positive covariance
        for n in [1, 2, 9, 10, 11] {
            let st = aggregate(&sample(n)).unwrap();
            assert_eq!(st.tokens, n);
            if n <= 10 {
                assert_eq!(
                    (st.ppl_err, st.kld_mean_err, st.dp_rms_err),
                    (0.0, 0.0, 0.0)
                );
                let sc = sample(n);
                let nll: Vec<f64> = sc.iter().map(|s| -s.log_p).collect();
                let base: Vec<f64> = sc.iter().map(|s| -s.log_p_ref).collect();
                let sab = nll.iter().zip(&base).map(|(a, b)| a * b).sum();
                let cov = covariance(nll.iter().sum(), base.iter().sum(), sab, n);
                assert!(if n == 10 { cov > 0.0 } else { cov == 0.0 });
                assert_eq!(st.ln_ppl_ratio_err, 0.0);
            } else {
                assert!(st.ln_ppl_ratio_err > 0.0 && st.kld_mean_err > 0.0);
            }
        }
        assert!(covariance(10.0, 10.0, 20.0, 10) > 0.0);
        assert_eq!(aggregate(&sample(1)).unwrap().top1_agree_err, 0.0);
    }

    #[test]
    fn median_and_percentiles_index_like_upstream() {
        assert_eq!(median(&[1.0, 2.0, 4.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 8.0]), 3.0);
        let v: Vec<f64> = (0..12).map(|k| (k * k) as f64).collect();
        // rank 0.99*11 = 10.89: between v[10] = 100 and v[11] = 121
        let w = f64::from(0.99f32 * 11.0 - 10.0);
        assert!((percentile(&v, 0.99) - ((1.0 - w) * 100.0 + w * 121.0)).abs() < 1e-9);
        assert!((percentile(&v, 0.99) - 118.69).abs() < 1e-4);
        assert_eq!((percentile(&v, 0.0), percentile(&v, 1.0)), (0.0, 121.0));
        assert_eq!(percentile(&[5.0], 0.999), 5.0);
        let sc: Vec<TokenScore> = sample(12)
            .into_iter()
            .zip(&v)
            .map(|(s, &k)| TokenScore { kld: k, ..s })
            .rev()
            .collect();
        let st = aggregate(&sc).unwrap();
        assert_eq!((st.kld_median, st.kld_max), ((25.0 + 36.0) / 2.0, 121.0));
        assert_eq!(st.kld_p99, percentile(&v, 0.99));
    }

    #[test]
    fn stats_round_trip_through_json() {
        let st = aggregate(&sample(120)).unwrap();
        let json = serde_json::to_string(&st).unwrap();
        for field in [
            "\"ppl_ratio_err\"",
            "\"ln_ppl_ratio\"",
            "\"kld_p99\"",
            "\"top1_agree\"",
            "\"dp_rms\"",
        ] {
            assert!(json.contains(field), "{field} missing in {json}");
        }
        // serde_json may round the last digit of a float: compare within 1e-15
        let back = serde_json::from_str::<QualityStats>(&json).unwrap();
        let (a, b) = (
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&st).unwrap(),
        );
        let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
        assert_eq!(a.len(), b.len());
        for (k, v) in b {
            let (x, y) = (a[k].as_f64().unwrap(), v.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-15 * y.abs(), "{k}: {x} vs {y}");
        }
    }

    #[test]
    fn chunk_plans() {
        assert_eq!(
            chunk_plan(1023, 512, None, true),
            Err(QualityError::CorpusTooShort {
                n_tokens: 1023,
                n_ctx: 512,
                needed: 1024
            })
        );
        assert!(chunk_plan(100, 0, None, true).is_err());
        assert_eq!(
            chunk_plan(100, 2, None, true),
            Err(QualityError::ContextTooSmall { n_ctx: 2 })
        );
        let two = chunk_plan(1024, 512, None, true).unwrap();
        let c = |start, first_scored, end| Chunk {
            start,
            first_scored,
            end,
            bos_first: true,
        };
        assert_eq!(two, [c(0, 256, 512), c(512, 768, 1024)]);
        assert_eq!(two[1].scored(), 768..1023);
        assert_eq!(two[1].n_scored(), 255);
        // the remainder is unused; --chunks caps the count
        assert_eq!(chunk_plan(1500, 512, None, true).unwrap().len(), 2);
        assert_eq!(chunk_plan(5000, 512, Some(3), false).unwrap().len(), 3);
        assert_eq!(chunk_plan(5000, 512, Some(100), false).unwrap().len(), 9);
        assert!(chunk_plan(5000, 512, Some(0), false).unwrap().is_empty());
        // odd context: first = 7/2 = 3, positions 3, 4, 5 predict tokens 4, 5, 6
        let odd = chunk_plan(14, 7, None, false).unwrap();
        assert_eq!(
            odd[1],
            Chunk {
                start: 7,
                first_scored: 10,
                end: 14,
                bos_first: false
            }
        );
        assert_eq!((odd[0].scored(), odd[0].n_scored()), (3..6, 3));
        assert_eq!(chunk_plan(6, 3, None, true).unwrap()[1].scored(), 4..5);
    }

    #[test]
    fn decode_input_replaces_the_first_token_with_bos() {
        let tokens: Vec<i32> = (100..114).collect();
        let with = chunk_plan(14, 7, None, true).unwrap();
        assert_eq!(
            with[1].decode_input(&tokens, 1).unwrap(),
            [1, 108, 109, 110, 111, 112, 113]
        );
        let without = chunk_plan(14, 7, None, false).unwrap();
        assert_eq!(
            without[1].decode_input(&tokens, 1).unwrap(),
            (107..114).collect::<Vec<_>>()
        );
        assert!(matches!(
            with[1].decode_input(&tokens[..10], 1),
            Err(QualityError::ChunkOutOfRange { .. })
        ));
    }
}
