//! What one request saw, and what a load point's requests add up to: latency percentiles,
//! throughput, goodput and whether the SLO holds — vLLM `bench serve`'s definitions.
//!
//! Pure: records in, summaries out. Clocks (where each starts and stops) are defined on
//! [`RequestRecord`]; the HTTP client that fills records lives in `serving`.

use serde::{Deserialize, Serialize};

use crate::stats::percentile;

/// One request as the client saw it. Times in milliseconds from the moment the request was
/// sent (the first byte of the HTTP request written), on a monotonic clock.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Position in its load point (0-based; warm-up requests are not recorded).
    pub i: u32,
    /// The probe of a saturation search it belongs to (0 otherwise).
    #[serde(default)]
    pub probe: u32,
    /// When it was due and when it was sent, seconds since the load point started.
    pub scheduled_s: f64,
    pub sent_s: f64,
    /// What was asked: prompt tokens (with the shared prefix) and output tokens.
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    /// Time to the first streamed chunk that carries generated text (not the first chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Gaps between consecutive chunks that carry text (one per token, unless the server
    /// bundled several tokens in one chunk).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub itl_ms: Vec<f64>,
    /// Time to the response's last event (the chunk with `finish_reason`, or the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_ms: Option<f64>,
    /// Tokens the server says it read and produced (`usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_prompt_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_output_tokens: Option<u32>,
    /// The server's own timings (llama-server's `timings`): prompt processing, decoding, and
    /// prompt tokens it took from its cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_prompt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_decode_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cached_tokens: Option<u32>,
    /// HTTP status (0: no response).
    pub status: u16,
    /// Why the request failed; `None` for a complete answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Not answered within the request timeout (also a failure).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
}

impl RequestRecord {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.ttft_ms.is_some() && self.e2e_ms.is_some()
    }

    /// Output tokens produced: the server's count, else what was asked.
    pub fn produced_tokens(&self) -> u32 {
        self.usage_output_tokens.unwrap_or(self.output_tokens)
    }

    /// Time per output token after the first: `(e2e − ttft) / (tokens − 1)`; 0 for one token
    /// (vLLM's definition, with the server's token count).
    pub fn tpot_ms(&self) -> Option<f64> {
        let (t, e) = (self.ttft_ms?, self.e2e_ms?);
        let n = self.produced_tokens();
        Some(if n > 1 { (e - t) / (n - 1) as f64 } else { 0.0 })
    }
}

/// Per-request targets (`[slo]`): each must hold for `percentile` % of the requests, and at
/// least `min_goodput` of the requests must meet all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestSlo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttft_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tpot_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_e2e_ms: Option<f64>,
    /// 0–100; 99 when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// 0–1; no goodput condition when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_goodput: Option<f64>,
}

impl RequestSlo {
    /// Whether any latency target is set (a saturation search needs one).
    pub fn has_target(&self) -> bool {
        self.max_ttft_ms.is_some() || self.max_tpot_ms.is_some() || self.max_e2e_ms.is_some()
    }

    pub fn percentile(&self) -> f64 {
        self.percentile.unwrap_or(99.0)
    }

    /// Whether one request met every target (a failed one never does).
    pub fn good(&self, r: &RequestRecord) -> bool {
        if !r.ok() {
            return false;
        }
        let within = |v: Option<f64>, max: Option<f64>| match (v, max) {
            (_, None) => true,
            (Some(v), Some(m)) => v <= m,
            (None, Some(_)) => false,
        };
        within(r.ttft_ms, self.max_ttft_ms)
            && within(r.tpot_ms(), self.max_tpot_ms)
            && within(r.e2e_ms, self.max_e2e_ms)
    }
}

/// Mean and percentiles of one latency over the complete requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pcts {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Pcts {
    pub fn of(v: &[f64]) -> Option<Pcts> {
        let s = crate::stats::summarize(v)?;
        let p = |q| percentile(v, q).unwrap_or(f64::NAN);
        Some(Pcts {
            mean: s.mean,
            p50: p(50.0),
            p90: p(90.0),
            p95: p(95.0),
            p99: p(99.0),
            max: s.max,
        })
    }

    /// The value named by a column suffix: `mean`, `p50`, …
    pub fn get(&self, which: &str) -> Option<f64> {
        Some(match which {
            "mean" => self.mean,
            "p50" => self.p50,
            "p90" => self.p90,
            "p95" => self.p95,
            "p99" => self.p99,
            "max" => self.max,
            _ => return None,
        })
    }
}

/// The column suffixes of a [`Pcts`], in order.
pub const PCT_NAMES: [&str; 5] = ["mean", "p50", "p90", "p95", "p99"];

/// One load point: what was offered and what the requests saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PointSummary {
    /// Open loop: requests per second offered; closed loop: `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_rate_req_s: Option<f64>,
    /// Closed loop: users; open loop: `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Requests sent (measured ones), answered completely, failed, of those timed out.
    pub requests: u32,
    pub completed: u32,
    pub failed_requests: u32,
    pub timed_out_requests: u32,
    /// From the first request sent to the last answer received (seconds).
    pub duration_s: f64,
    /// Completed requests, and their output tokens (the server's count), per second.
    pub req_per_s: f64,
    pub output_tok_s: f64,
    /// Prompt and output tokens of the completed requests per second.
    pub total_tok_s: f64,
    pub ttft_ms: Option<Pcts>,
    pub tpot_ms: Option<Pcts>,
    pub itl_ms: Option<Pcts>,
    pub e2e_ms: Option<Pcts>,
    /// Requests meeting every target per second, and their share of the requests sent
    /// (`None` without targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goodput_req_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goodput_frac: Option<f64>,
    /// Whether the SLO held at this point (`None` without targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_met: Option<bool>,
    /// Which target failed and by how much, when it did not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_miss: Option<String>,
    /// Mean prompt and output tokens of the complete requests (the server's counts).
    pub prompt_tokens_mean: f64,
    pub output_tokens_mean: f64,
    /// Complete requests whose output token count differs from the one asked for.
    pub output_mismatches: u32,
    /// Means of the server's own prompt and decode times, and of what the client saw beyond
    /// them (`e2e − server prompt − server decode`: HTTP, queueing for a slot, scheduling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_prompt_ms_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_decode_ms_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead_ms_mean: Option<f64>,
    /// Prompt tokens the server took from its cache, summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens: Option<u64>,
    /// The first failure's reason, for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Summarises the records of one load point; `slo` decides goodput and whether it held.
pub fn summarize_point(
    records: &[RequestRecord],
    offered_rate_req_s: Option<f64>,
    concurrency: Option<u32>,
    slo: &RequestSlo,
) -> PointSummary {
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.ok()).collect();
    let start = records
        .iter()
        .map(|r| r.sent_s)
        .fold(f64::INFINITY, f64::min);
    let end = records
        .iter()
        .filter_map(|r| r.e2e_ms.map(|e| r.sent_s + e / 1000.0))
        .fold(f64::NEG_INFINITY, f64::max);
    let duration_s = if end > start { end - start } else { 0.0 };
    let per_s = |x: f64| {
        if duration_s > 0.0 {
            x / duration_s
        } else {
            0.0
        }
    };
    let out_tokens: u64 = ok.iter().map(|r| r.produced_tokens() as u64).sum();
    let in_tokens: u64 = ok
        .iter()
        .map(|r| r.usage_prompt_tokens.unwrap_or(r.prompt_tokens) as u64)
        .sum();
    let col = |f: &dyn Fn(&RequestRecord) -> Option<f64>| -> Vec<f64> {
        ok.iter().filter_map(|r| f(r)).collect()
    };
    let itl: Vec<f64> = ok.iter().flat_map(|r| r.itl_ms.iter().copied()).collect();
    let mean_of = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let failed = records.len() - ok.len();
    let mut s = PointSummary {
        offered_rate_req_s,
        concurrency,
        requests: records.len() as u32,
        completed: ok.len() as u32,
        failed_requests: failed as u32,
        timed_out_requests: records.iter().filter(|r| r.timed_out).count() as u32,
        duration_s,
        req_per_s: per_s(ok.len() as f64),
        output_tok_s: per_s(out_tokens as f64),
        total_tok_s: per_s((out_tokens + in_tokens) as f64),
        ttft_ms: Pcts::of(&col(&|r| r.ttft_ms)),
        tpot_ms: Pcts::of(&col(&|r| r.tpot_ms())),
        itl_ms: Pcts::of(&itl),
        e2e_ms: Pcts::of(&col(&|r| r.e2e_ms)),
        prompt_tokens_mean: if ok.is_empty() {
            0.0
        } else {
            in_tokens as f64 / ok.len() as f64
        },
        output_tokens_mean: if ok.is_empty() {
            0.0
        } else {
            out_tokens as f64 / ok.len() as f64
        },
        output_mismatches: ok
            .iter()
            .filter(|r| r.usage_output_tokens.is_some_and(|u| u != r.output_tokens))
            .count() as u32,
        server_prompt_ms_mean: mean_of(col(&|r| r.server_prompt_ms)),
        server_decode_ms_mean: mean_of(col(&|r| r.server_decode_ms)),
        overhead_ms_mean: mean_of(col(&|r| {
            Some(r.e2e_ms? - r.server_prompt_ms? - r.server_decode_ms?)
        })),
        cached_prompt_tokens: {
            let v: Vec<u64> = ok
                .iter()
                .filter_map(|r| r.server_cached_tokens.map(u64::from))
                .collect();
            (!v.is_empty()).then(|| v.iter().sum())
        },
        first_error: records.iter().find_map(|r| r.error.clone()),
        ..Default::default()
    };
    if slo.has_target() || slo.min_goodput.is_some() {
        let good = records.iter().filter(|r| slo.good(r)).count();
        s.goodput_req_s = Some(per_s(good as f64));
        s.goodput_frac = Some(if records.is_empty() {
            0.0
        } else {
            good as f64 / records.len() as f64
        });
        let miss = slo_miss(records, slo, s.goodput_frac.unwrap_or(0.0));
        s.slo_met = Some(miss.is_none() && !records.is_empty());
        s.slo_miss = if records.is_empty() {
            Some("no request was measured".into())
        } else {
            miss
        };
    }
    s
}

/// The first target that does not hold, with the measured value: `p99 TTFT 812 ms > 500 ms`.
/// Failed requests count as infinitely late (they were not served within any target).
fn slo_miss(records: &[RequestRecord], slo: &RequestSlo, goodput_frac: f64) -> Option<String> {
    let q = slo.percentile();
    type Of = fn(&RequestRecord) -> Option<f64>;
    let targets: [(&str, Option<f64>, Of); 3] = [
        ("TTFT", slo.max_ttft_ms, |r| r.ttft_ms),
        ("TPOT", slo.max_tpot_ms, |r| r.tpot_ms()),
        ("E2E", slo.max_e2e_ms, |r| r.e2e_ms),
    ];
    for (name, max, f) in targets {
        let Some(max) = max else { continue };
        let v: Vec<f64> = records
            .iter()
            .map(|r| {
                if r.ok() {
                    f(r).unwrap_or(f64::INFINITY)
                } else {
                    f64::INFINITY
                }
            })
            .collect();
        let at = percentile_with_inf(&v, q);
        if at > max {
            let shown = if at.is_finite() {
                format!("{at:.1} ms")
            } else {
                "not served (failed requests)".to_string()
            };
            return Some(format!(
                "p{} {name} {shown} > {max} ms",
                crate::traffic::fmt_num(q)
            ));
        }
    }
    if let Some(min) = slo.min_goodput {
        if goodput_frac < min {
            return Some(format!(
                "goodput {:.1}% of requests < {:.1}%",
                goodput_frac * 100.0,
                min * 100.0
            ));
        }
    }
    None
}

/// numpy's linear percentile over values that may be +∞ (failed requests).
fn percentile_with_inf(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::INFINITY;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 100.0) / 100.0) * (s.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    if s[hi].is_infinite() && rank > lo as f64 || s[lo].is_infinite() {
        return f64::INFINITY;
    }
    s[lo] + (s[hi] - s[lo]) * (rank - lo as f64)
}

/// The search for the highest rate that meets the SLO: double from a first guess until a
/// rate fails (or halve until one holds), then bisect between the highest rate that held and
/// the lowest that failed until they are within `tolerance` (relative) of each other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateSearch {
    /// Highest rate that held, lowest that failed.
    pub held: Option<f64>,
    pub failed: Option<f64>,
    pub tolerance: f64,
    /// Rates below this are not tried: the search ends with no rate meeting the SLO.
    pub floor: f64,
    pub probes: u32,
    pub max_probes: u32,
}

impl RateSearch {
    pub fn new(tolerance: f64, floor: f64, max_probes: u32) -> Self {
        RateSearch {
            held: None,
            failed: None,
            tolerance,
            floor,
            probes: 0,
            max_probes,
        }
    }

    /// Records a probe's verdict.
    pub fn record(&mut self, rate: f64, met: bool) {
        self.probes += 1;
        if met {
            self.held = Some(self.held.map_or(rate, |h| h.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
        }
    }

    /// The next rate to probe, starting from `first`; `None` when the search is over.
    pub fn next(&self, first: f64) -> Option<f64> {
        if self.probes >= self.max_probes {
            return None;
        }
        match (self.held, self.failed) {
            (None, None) => Some(first),
            (Some(h), None) => Some(h * 2.0),
            (None, Some(f)) => {
                let r = f / 2.0;
                (r >= self.floor).then_some(r)
            }
            (Some(h), Some(f)) => {
                if f <= h || (f - h) / h <= self.tolerance {
                    None
                } else {
                    Some((h + f) / 2.0)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u32, sent: f64, ttft: f64, e2e: f64, out: u32) -> RequestRecord {
        RequestRecord {
            i,
            sent_s: sent,
            prompt_tokens: 10,
            output_tokens: out,
            ttft_ms: Some(ttft),
            e2e_ms: Some(e2e),
            usage_output_tokens: Some(out),
            usage_prompt_tokens: Some(10),
            status: 200,
            itl_ms: vec![(e2e - ttft) / (out - 1) as f64; out as usize - 1],
            ..Default::default()
        }
    }

    #[test]
    fn vllm_definitions_of_tpot_goodput_and_throughput() {
        // 4 requests of 11 tokens: TTFT 100 ms, then 20 ms per token → e2e 300 ms
        let mut v: Vec<RequestRecord> = (0..4)
            .map(|i| rec(i, i as f64 * 0.5, 100.0, 300.0, 11))
            .collect();
        v[3].ttft_ms = Some(900.0);
        v[3].e2e_ms = Some(1100.0);
        assert_eq!(v[0].tpot_ms(), Some(20.0));
        let slo = RequestSlo {
            max_ttft_ms: Some(500.0),
            ..Default::default()
        };
        let s = summarize_point(&v, Some(2.0), None, &slo);
        // from the first send (0 s) to the last answer (1.5 s + 1.1 s)
        assert!((s.duration_s - 2.6).abs() < 1e-9);
        assert!((s.req_per_s - 4.0 / 2.6).abs() < 1e-9);
        assert!((s.output_tok_s - 44.0 / 2.6).abs() < 1e-9);
        assert_eq!(s.goodput_frac, Some(0.75));
        assert!((s.goodput_req_s.unwrap() - 3.0 / 2.6).abs() < 1e-9);
        assert_eq!(s.tpot_ms.as_ref().unwrap().p50, 20.0);
        assert_eq!(s.itl_ms.as_ref().unwrap().mean, 20.0);
        // p99 of TTFT is 900·0.97 + 100·0.03... → above 500: not met, and says by how much
        assert_eq!(s.slo_met, Some(false));
        assert!(
            s.slo_miss.as_deref().unwrap().starts_with("p99 TTFT"),
            "{s:?}"
        );
        let lax = RequestSlo {
            max_ttft_ms: Some(1000.0),
            min_goodput: Some(0.5),
            ..Default::default()
        };
        assert_eq!(
            summarize_point(&v, Some(2.0), None, &lax).slo_met,
            Some(true)
        );
    }

    #[test]
    fn failed_requests_count_against_the_slo_not_in_the_latencies() {
        let mut v: Vec<RequestRecord> = (0..100).map(|i| rec(i, 0.0, 100.0, 300.0, 5)).collect();
        v[7] = RequestRecord {
            i: 7,
            status: 503,
            error: Some("HTTP 503".into()),
            ..Default::default()
        };
        let slo = RequestSlo {
            max_ttft_ms: Some(200.0),
            ..Default::default()
        };
        let s = summarize_point(&v, Some(1.0), None, &slo);
        assert_eq!((s.completed, s.failed_requests), (99, 1));
        assert_eq!(s.ttft_ms.as_ref().unwrap().max, 100.0);
        // one failure in 100 puts p99 between the 99th value and infinity
        assert_eq!(s.slo_met, Some(false));
        assert!(s.slo_miss.unwrap().contains("not served"));
        let p95 = RequestSlo {
            percentile: Some(95.0),
            ..slo
        };
        assert_eq!(
            summarize_point(&v, Some(1.0), None, &p95).slo_met,
            Some(true)
        );
        assert_eq!(s.first_error.as_deref(), Some("HTTP 503"));
    }

    #[test]
    fn the_search_brackets_then_bisects_to_the_tolerance() {
        // a server that meets the SLO up to 7.3 requests per second
        let capacity = 7.3;
        let mut s = RateSearch::new(0.05, 0.01, 30);
        let mut tried = Vec::new();
        while let Some(r) = s.next(1.0) {
            tried.push(r);
            s.record(r, r <= capacity);
        }
        let (h, f) = (s.held.unwrap(), s.failed.unwrap());
        assert!(
            h <= capacity && capacity < f && (f - h) / h <= 0.05,
            "{h} {f}"
        );
        assert!(tried.len() <= 10, "{tried:?}");
        // nothing holds: halves down to the floor and stops
        let mut s = RateSearch::new(0.05, 0.1, 30);
        while let Some(r) = s.next(4.0) {
            s.record(r, false);
        }
        assert_eq!(s.held, None);
        assert!(s.probes <= 6);
    }

    #[test]
    fn percentiles_match_numpy() {
        let p = Pcts::of(&[1.0, 2.0, 3.0, 4.0, 10.0]).unwrap();
        assert_eq!(p.p50, 3.0);
        assert!((p.p90 - 7.6).abs() < 1e-12);
        assert!((p.p99 - 9.76).abs() < 1e-12);
        assert_eq!(percentile_with_inf(&[1.0, f64::INFINITY], 0.0), 1.0);
        assert!(percentile_with_inf(&[1.0, f64::INFINITY], 50.0).is_infinite());
    }
}
