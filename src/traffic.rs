//! A serving workload: what requests look like (prompt and output lengths drawn from
//! distributions, or taken from a dataset), how they arrive (open loop at a rate with
//! Poisson, constant or gamma spacing; closed loop at a concurrency; or the search for the
//! highest rate that meets the SLO), and how many are sent.
//!
//! Plain data and pure functions (drawing lengths and arrival times from a seed): no I/O, no
//! HTTP. The definitions of the arrival processes are vLLM's `bench serve` ones, so the same
//! `rate`, `arrivals` and `burstiness` mean the same traffic.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use rand::SeedableRng;
use rand_distr::{Distribution, Gamma, LogNormal, Normal, Uniform};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

/// Longest prompt or output a workload may ask for (tokens): beyond any context llama.cpp
/// creates on one machine, and small enough that sizes computed from it cannot overflow.
pub const MAX_TOKENS: u32 = 1 << 20;
/// Most requests one load point may send.
pub const MAX_REQUESTS: u32 = 1_000_000;
/// Highest request rate accepted (requests per second).
pub const MAX_RATE: f64 = 100_000.0;
/// Most requests one load point may keep in flight (closed loop), or that an open loop may
/// have outstanding at once before it stops sending.
pub const MAX_CONCURRENCY: u32 = 4096;

/// A number of tokens: fixed, or drawn per request from a distribution, rounded to an
/// integer and kept within `[min, max]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case")]
pub enum Dist {
    Fixed {
        value: u32,
    },
    Uniform {
        min: u32,
        max: u32,
    },
    /// Normal with this mean and standard deviation, cut to `[min, max]`.
    Normal {
        mean: f64,
        sd: f64,
        min: u32,
        max: u32,
    },
    /// Log-normal whose own mean and standard deviation are these (not those of its log),
    /// cut to `[min, max]`.
    Lognormal {
        mean: f64,
        sd: f64,
        min: u32,
        max: u32,
    },
}

impl Eq for Dist {}

impl Hash for Dist {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.to_string().hash(state);
    }
}

impl Dist {
    /// The most tokens a draw can give.
    pub fn max(&self) -> u32 {
        match *self {
            Dist::Fixed { value } => value,
            Dist::Uniform { max, .. } | Dist::Normal { max, .. } | Dist::Lognormal { max, .. } => {
                max
            }
        }
    }

    /// Checks the parameters: positive, finite, `min ≤ max ≤` [`MAX_TOKENS`]. `what` names
    /// the key in the message.
    pub fn check(&self, what: &str) -> Result<(), String> {
        let range = |min: u32, max: u32| {
            if min == 0 {
                Err(format!("{what} must be at least 1 token"))
            } else if min > max {
                Err(format!("{what}: min {min} is above max {max}"))
            } else if max > MAX_TOKENS {
                Err(format!("{what}: max {max} is above {MAX_TOKENS} tokens"))
            } else {
                Ok(())
            }
        };
        match *self {
            Dist::Fixed { value } => range(value, value),
            Dist::Uniform { min, max } => range(min, max),
            Dist::Normal { mean, sd, min, max } | Dist::Lognormal { mean, sd, min, max } => {
                if !(mean.is_finite() && mean > 0.0) {
                    return Err(format!(
                        "{what}: mean must be a positive number, not {mean}"
                    ));
                }
                if !(sd.is_finite() && sd >= 0.0) {
                    return Err(format!("{what}: sd must be a number ≥ 0, not {sd}"));
                }
                range(min, max)
            }
        }
    }

    /// One draw.
    pub fn draw(&self, rng: &mut Pcg64Mcg) -> u32 {
        let clamp = |x: f64, min: u32, max: u32| -> u32 {
            if x.is_finite() {
                x.round().clamp(min as f64, max as f64) as u32
            } else {
                min
            }
        };
        match *self {
            Dist::Fixed { value } => value,
            Dist::Uniform { min, max } => Uniform::new_inclusive(min, max)
                .map(|u| u.sample(rng))
                .unwrap_or(min),
            Dist::Normal { mean, sd, min, max } => match Normal::new(mean, sd) {
                Ok(n) => clamp(n.sample(rng), min, max),
                Err(_) => clamp(mean, min, max),
            },
            Dist::Lognormal { mean, sd, min, max } => {
                // the log's parameters that give this mean and standard deviation
                let sigma2 = (1.0 + (sd / mean).powi(2)).ln();
                let mu = mean.ln() - sigma2 / 2.0;
                match LogNormal::new(mu, sigma2.sqrt()) {
                    Ok(d) => clamp(d.sample(rng), min, max),
                    Err(_) => clamp(mean, min, max),
                }
            }
        }
    }
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Dist::Fixed { value } => write!(f, "{value}"),
            Dist::Uniform { min, max } => write!(f, "uniform {min}–{max}"),
            Dist::Normal { mean, sd, min, max } => {
                write!(f, "normal {mean}±{sd} [{min}, {max}]")
            }
            Dist::Lognormal { mean, sd, min, max } => {
                write!(f, "lognormal {mean}±{sd} [{min}, {max}]")
            }
        }
    }
}

/// How open-loop requests are spaced in time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arrivals {
    /// Exponential gaps: a Poisson process (vLLM's burstiness 1).
    Poisson,
    /// Equal gaps of `1 / rate`.
    Constant,
    /// Gamma-distributed gaps of shape `burstiness` and mean `1 / rate`: below 1 burstier
    /// than Poisson, above 1 more regular (vLLM's `--burstiness`).
    Gamma { burstiness: f64 },
}

impl Eq for Arrivals {}

impl Hash for Arrivals {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl Arrivals {
    /// `poisson`, `constant`, `gamma 0.5`.
    pub fn name(&self) -> String {
        match self {
            Arrivals::Poisson => "poisson".into(),
            Arrivals::Constant => "constant".into(),
            Arrivals::Gamma { burstiness } => format!("gamma {burstiness}"),
        }
    }

    /// Send times (seconds after the start) of `n` requests at `rate` requests per second:
    /// as vLLM's `bench serve`, each gap drawn from a gamma distribution (shape = burstiness,
    /// mean = 1/rate; exponential for Poisson, 1/rate exactly for constant), accumulated, then
    /// scaled so the last request goes at `n / rate` (the offered rate holds exactly,
    /// whatever the draws).
    pub fn offsets_s(&self, rate: f64, n: usize, seed: u64) -> Vec<f64> {
        if n == 0 || !(rate.is_finite() && rate > 0.0) {
            return vec![0.0; n];
        }
        let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x5eed_a11e);
        let shape = match *self {
            Arrivals::Poisson => Some(1.0),
            Arrivals::Constant => None,
            Arrivals::Gamma { burstiness } => Some(burstiness),
        };
        let gamma = shape.and_then(|k| Gamma::new(k, 1.0 / (rate * k)).ok());
        let mut t = 0.0;
        let mut out: Vec<f64> = (0..n)
            .map(|_| {
                t += match &gamma {
                    Some(g) => g.sample(&mut rng),
                    None => 1.0 / rate,
                };
                t
            })
            .collect();
        let last = out[n - 1];
        if last > 0.0 && last.is_finite() {
            let scale = (n as f64 / rate) / last;
            for x in &mut out {
                *x *= scale;
            }
        }
        out
    }
}

/// How much load one measurement point offers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Load {
    /// Open loop: requests arrive at this rate (per second) whether or not earlier ones are
    /// answered.
    Rate(f64),
    /// Open loop at the highest rate that meets the SLO, found by a search.
    MaxRate,
    /// Closed loop: this many users, each sending its next request when the last is answered.
    Concurrency(u32),
}

impl Eq for Load {}

impl Hash for Load {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.tag().hash(state);
    }
}

impl Load {
    /// Short tag for labels and keys: `r2/s`, `rmax`, `c4`.
    pub fn tag(&self) -> String {
        match self {
            Load::Rate(r) => format!("r{}/s", fmt_num(*r)),
            Load::MaxRate => "rmax".into(),
            Load::Concurrency(c) => format!("c{c}"),
        }
    }

    /// Checks a rate or concurrency given by the user.
    pub fn check(&self) -> Result<(), String> {
        match *self {
            Load::Rate(r) if !(r.is_finite() && r > 0.0) => Err(format!(
                "rate must be a positive number of requests per second, not {r}"
            )),
            Load::Rate(r) if r > MAX_RATE => Err(format!(
                "rate {r} requests per second is above the limit of {MAX_RATE}"
            )),
            Load::Concurrency(0) => Err("concurrency must be at least 1".into()),
            Load::Concurrency(c) if c > MAX_CONCURRENCY => Err(format!(
                "concurrency {c} is above the limit of {MAX_CONCURRENCY}"
            )),
            _ => Ok(()),
        }
    }
}

/// A number without a trailing `.0`: `2`, `0.5`.
pub fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Where the requests' prompts and output lengths come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Requests {
    /// Random prompts of these lengths (tokens), asked to produce exactly this many tokens.
    Synthetic {
        prompt_tokens: Dist,
        output_tokens: Dist,
    },
    /// Prompts (and output lengths) from a file: JSONL of `{"prompt", "output_tokens"}`, or
    /// ShareGPT conversations. `sha256` identifies the content (a changed file is another
    /// workload).
    Dataset { path: PathBuf, sha256: String },
}

/// A serving workload, fully resolved except for its load point.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Workload {
    pub requests: Requests,
    /// Measured requests per load point (per probe of a search), after the warm-up.
    pub requests_per_point: u32,
    /// Requests sent first and left out of every figure.
    pub warmup_requests: u32,
    /// Stop sending after this many seconds of a load point (`None`: after `requests_per_point`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
    /// Tokens every prompt starts with (a system prompt), the same for all requests.
    pub shared_prefix_tokens: u32,
    /// The server's prompt cache (llama-server's `cache_prompt`): on, a request whose prompt
    /// starts like one the slot holds skips those tokens.
    pub cache_prompt: bool,
    pub arrivals: Arrivals,
    pub seed: u64,
    /// A request not answered within this many seconds is counted as timed out.
    pub request_timeout_s: u64,
}

impl Workload {
    /// The longest prompt and output one request of the synthetic kind asks for (a dataset's
    /// are known once it is read).
    pub fn max_tokens(&self) -> Option<(u32, u32)> {
        match &self.requests {
            Requests::Synthetic {
                prompt_tokens,
                output_tokens,
            } => Some((
                prompt_tokens.max() + self.shared_prefix_tokens,
                output_tokens.max(),
            )),
            Requests::Dataset { .. } => None,
        }
    }

    /// The lengths (prompt tokens after the shared prefix, output tokens) of `n` synthetic
    /// requests of point `point` (each point and probe draws its own, from the seed).
    pub fn draw_lengths(&self, n: usize, point: u64) -> Vec<(u32, u32)> {
        let Requests::Synthetic {
            prompt_tokens,
            output_tokens,
        } = &self.requests
        else {
            return Vec::new();
        };
        let mut rng = Pcg64Mcg::seed_from_u64(self.seed.wrapping_add(point.wrapping_mul(7919)));
        (0..n)
            .map(|_| (prompt_tokens.draw(&mut rng), output_tokens.draw(&mut rng)))
            .collect()
    }

    /// A short digest of everything but the load point, for cell keys: two cells with the
    /// same digest sent the same kind of requests.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let text = serde_json::to_string(self).unwrap_or_default();
        hex::encode(&sha2::Sha256::digest(text.as_bytes())[..4])
    }

    /// One line for reports: `prompt 128, output 64, poisson, 100 requests (+2 warm-up)`.
    pub fn describe(&self) -> String {
        let what = match &self.requests {
            Requests::Synthetic {
                prompt_tokens,
                output_tokens,
            } => format!("prompt {prompt_tokens}, output {output_tokens} tokens"),
            Requests::Dataset { path, .. } => format!("dataset {}", path.display()),
        };
        let prefix = if self.shared_prefix_tokens > 0 {
            format!(
                ", shared prefix {} tokens (prompt cache {})",
                self.shared_prefix_tokens,
                if self.cache_prompt { "on" } else { "off" }
            )
        } else {
            String::new()
        };
        format!(
            "{what}{prefix}, {} arrivals, {} requests (+{} warm-up), seed {}",
            self.arrivals.name(),
            self.requests_per_point,
            self.warmup_requests,
            self.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_hold_the_offered_rate_exactly() {
        for a in [
            Arrivals::Poisson,
            Arrivals::Constant,
            Arrivals::Gamma { burstiness: 0.5 },
        ] {
            let t = a.offsets_s(4.0, 100, 7);
            assert_eq!(t.len(), 100);
            assert!((t[99] - 25.0).abs() < 1e-9, "{a:?}: {}", t[99]);
            assert!(t.windows(2).all(|w| w[1] >= w[0]));
            assert_eq!(t, a.offsets_s(4.0, 100, 7), "seeded");
        }
        let c = Arrivals::Constant.offsets_s(2.0, 4, 0);
        assert_eq!(c, vec![0.5, 1.0, 1.5, 2.0]);
    }

    #[test]
    fn burstiness_spreads_the_gaps() {
        let cv = |a: Arrivals| {
            let t = a.offsets_s(10.0, 4000, 1);
            let gaps: Vec<f64> = std::iter::once(t[0])
                .chain(t.windows(2).map(|w| w[1] - w[0]))
                .collect();
            let s = crate::stats::summarize(&gaps).unwrap();
            s.sd / s.mean
        };
        let poisson = cv(Arrivals::Poisson);
        assert!((poisson - 1.0).abs() < 0.1, "{poisson}");
        let bursty = cv(Arrivals::Gamma { burstiness: 0.25 });
        assert!((bursty - 2.0).abs() < 0.3, "{bursty}"); // cv of gamma = 1/sqrt(k)
        assert!(cv(Arrivals::Constant) < 1e-9);
    }

    #[test]
    fn lengths_follow_their_distributions_within_bounds() {
        let w = |p: Dist, o: Dist| Workload {
            requests: Requests::Synthetic {
                prompt_tokens: p,
                output_tokens: o,
            },
            requests_per_point: 10,
            warmup_requests: 0,
            duration_s: None,
            shared_prefix_tokens: 0,
            cache_prompt: true,
            arrivals: Arrivals::Poisson,
            seed: 3,
            request_timeout_s: 60,
        };
        let n = Dist::Normal {
            mean: 512.0,
            sd: 128.0,
            min: 16,
            max: 700,
        };
        let l = Dist::Lognormal {
            mean: 200.0,
            sd: 100.0,
            min: 1,
            max: 100_000,
        };
        let v = w(n.clone(), l.clone()).draw_lengths(5000, 0);
        let (p, o): (Vec<f64>, Vec<f64>) = v.iter().map(|&(a, b)| (a as f64, b as f64)).unzip();
        assert!(v.iter().all(|&(a, _)| (16..=700).contains(&a)));
        let sp = crate::stats::summarize(&p).unwrap();
        let so = crate::stats::summarize(&o).unwrap();
        assert!((sp.mean - 505.0).abs() < 15.0, "{sp:?}"); // the cut at 700 lowers it a little
        assert!((so.mean - 200.0).abs() < 10.0, "{so:?}");
        assert!((so.sd - 100.0).abs() < 15.0, "{so:?}");
        let fixed = w(Dist::Fixed { value: 7 }, Dist::Uniform { min: 2, max: 4 });
        let v = fixed.draw_lengths(200, 1);
        assert!(v.iter().all(|&(a, b)| a == 7 && (2..=4).contains(&b)));
        assert_ne!(fixed.draw_lengths(50, 1), fixed.draw_lengths(50, 2));
        assert_eq!(fixed.max_tokens(), Some((7, 4)));
    }

    #[test]
    fn bad_parameters_are_refused_with_the_key() {
        assert!(Dist::Fixed { value: 0 }
            .check("prompt_tokens")
            .unwrap_err()
            .contains("prompt_tokens"));
        assert!(Dist::Uniform { min: 5, max: 4 }.check("x").is_err());
        assert!(Dist::Normal {
            mean: f64::NAN,
            sd: 1.0,
            min: 1,
            max: 2
        }
        .check("x")
        .is_err());
        assert!(Dist::Fixed {
            value: MAX_TOKENS + 1
        }
        .check("x")
        .is_err());
        assert!(Load::Rate(f64::NAN).check().is_err());
        assert!(Load::Rate(-1.0).check().is_err());
        assert!(Load::Rate(1e9).check().is_err());
        assert!(Load::Concurrency(0).check().is_err());
        assert!(Load::Rate(0.5).check().is_ok());
        assert_eq!(Load::Rate(0.5).tag(), "r0.5/s");
        assert_eq!(Load::Rate(2.0).tag(), "r2/s");
    }
}
