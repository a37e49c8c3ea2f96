//! The serving keys of models.toml: `[workload]` (and a `[[model]]`'s own `workload` table
//! over it), `serve`, `endpoint`/`api_key_env`/`model_name`, and the per-request targets of
//! `[slo]`. Every error names the file, line and column, as the rest of the config.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Cx, Limit, OneOrMany};
use crate::traffic::{self, Arrivals, Dist, Load, Requests, Workload};

/// Ranges of the workload's integers.
pub mod limits {
    use super::Limit;
    use crate::traffic;
    pub const REQUESTS: Limit = Limit::new("requests", 1, traffic::MAX_REQUESTS as i64);
    pub const WARMUP_REQUESTS: Limit = Limit::new("warmup_requests", 0, 1000);
    pub const SHARED_PREFIX: Limit =
        Limit::new("shared_prefix_tokens", 0, traffic::MAX_TOKENS as i64);
    pub const CONCURRENCY: Limit = Limit::new("concurrency", 1, traffic::MAX_CONCURRENCY as i64);
    pub const DURATION_S: Limit = Limit::new("duration_s", 1, 7 * 24 * 3600);
    pub const REQUEST_TIMEOUT_S: Limit = Limit::new("request_timeout_s", 1, 24 * 3600);
    pub const SEED: Limit = Limit::new("seed", 0, i64::MAX);
}

/// `[workload]` as written.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkload {
    requests: Option<Spanned<i64>>,
    warmup_requests: Option<Spanned<i64>>,
    prompt_tokens: Option<Spanned<toml::Value>>,
    output_tokens: Option<Spanned<toml::Value>>,
    dataset: Option<Spanned<String>>,
    shared_prefix_tokens: Option<Spanned<i64>>,
    cache_prompt: Option<Spanned<bool>>,
    arrivals: Option<Spanned<String>>,
    burstiness: Option<Spanned<toml::Value>>,
    rate: Option<Spanned<toml::Value>>,
    concurrency: Option<Spanned<OneOrMany>>,
    duration_s: Option<Spanned<i64>>,
    seed: Option<Spanned<i64>>,
    request_timeout_s: Option<Spanned<i64>>,
}

impl RawWorkload {
    /// `self`'s keys over `base`'s.
    pub(super) fn over(&self, base: &RawWorkload) -> RawWorkload {
        macro_rules! pick {
            ($($f:ident),*) => { RawWorkload { $($f: self.$f.clone().or_else(|| base.$f.clone()),)* } };
        }
        let mut w = pick!(
            requests,
            warmup_requests,
            prompt_tokens,
            output_tokens,
            dataset,
            shared_prefix_tokens,
            cache_prompt,
            arrivals,
            burstiness,
            rate,
            concurrency,
            duration_s,
            seed,
            request_timeout_s
        );
        // a model's own load replaces the file's, whichever kind either is
        if self.rate.is_some() || self.concurrency.is_some() {
            w.rate = self.rate.clone();
            w.concurrency = self.concurrency.clone();
        }
        // a model's own dataset replaces the file's lengths and the other way round
        if self.dataset.is_some() {
            w.prompt_tokens = None;
            w.output_tokens = None;
        } else if self.prompt_tokens.is_some() || self.output_tokens.is_some() {
            w.dataset = None;
        }
        w
    }
}

/// A model's serving workload and the load points it is measured at.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeSpec {
    pub workload: Workload,
    /// Each is a separate cell.
    pub loads: Vec<Load>,
}

impl Cx<'_> {
    /// Resolves a workload table (already merged over the file's `[workload]`).
    pub(super) fn serve_spec(&self, r: &RawWorkload) -> Result<ServeSpec, ConfigError> {
        let int = |v: &Option<Spanned<i64>>, l: &Limit, default: i64| -> Result<i64, ConfigError> {
            match v {
                Some(x) => l.check(*x.get_ref()).map_err(|m| self.err(x.span(), m)),
                None => Ok(default),
            }
        };
        let requests = match (&r.dataset, &r.prompt_tokens, &r.output_tokens) {
            (Some(d), p, o) => {
                if let Some(x) = p.as_ref().or(o.as_ref()) {
                    return Err(self.err(
                        x.span(),
                        "dataset gives the prompts and output lengths: leave out prompt_tokens \
                         and output_tokens"
                            .into(),
                    ));
                }
                self.dataset(d)?
            }
            (None, p, o) => Requests::Synthetic {
                prompt_tokens: self.dist(p.as_ref(), "prompt_tokens", 128)?,
                output_tokens: self.dist(o.as_ref(), "output_tokens", 64)?,
            },
        };
        let workload = Workload {
            requests,
            requests_per_point: int(&r.requests, &limits::REQUESTS, 100)? as u32,
            warmup_requests: int(&r.warmup_requests, &limits::WARMUP_REQUESTS, 2)? as u32,
            duration_s: match &r.duration_s {
                Some(_) => Some(int(&r.duration_s, &limits::DURATION_S, 0)? as u64),
                None => None,
            },
            shared_prefix_tokens: int(&r.shared_prefix_tokens, &limits::SHARED_PREFIX, 0)? as u32,
            cache_prompt: r.cache_prompt.as_ref().is_none_or(|b| *b.get_ref()),
            arrivals: self.arrivals(r)?,
            seed: int(&r.seed, &limits::SEED, 0)? as u64,
            request_timeout_s: int(&r.request_timeout_s, &limits::REQUEST_TIMEOUT_S, 300)? as u64,
        };
        Ok(ServeSpec {
            workload,
            loads: self.loads(r)?,
        })
    }

    /// `prompt_tokens` / `output_tokens`: a number, or `{dist = "normal", mean, sd, min, max}`
    /// (`uniform` takes min and max; `fixed` a value).
    fn dist(
        &self,
        v: Option<&Spanned<toml::Value>>,
        key: &str,
        default: u32,
    ) -> Result<Dist, ConfigError> {
        let Some(v) = v else {
            return Ok(Dist::Fixed { value: default });
        };
        let bad = |m: String| self.err(v.span(), m);
        let d = match v.get_ref() {
            toml::Value::Integer(n) if *n < 1 => {
                return Err(bad(format!("{key} must be at least 1 token, not {n}")))
            }
            toml::Value::Integer(n) => Dist::Fixed {
                value: u32::try_from(*n)
                    .ok()
                    .filter(|v| *v <= traffic::MAX_TOKENS)
                    .ok_or_else(|| {
                        bad(format!(
                            "{key} = {n}: use 1 to {} tokens",
                            traffic::MAX_TOKENS
                        ))
                    })?,
            },
            toml::Value::Table(t) => self.dist_table(t, key, &bad)?,
            _ => {
                return Err(bad(format!(
                    "{key} takes a number of tokens or a table, e.g. {key} = 512 or \
                     {key} = {{dist = \"normal\", mean = 512, sd = 128, min = 16, max = 2048}}"
                )))
            }
        };
        d.check(key).map_err(bad)?;
        Ok(d)
    }

    /// A distribution table: `{dist = "normal", mean, sd, min, max}`, `{dist = "uniform", min,
    /// max}`, `{dist = "fixed", value}`; normal and log-normal without `max` go up to mean + 4 sd.
    fn dist_table(
        &self,
        t: &toml::Table,
        key: &str,
        bad: &dyn Fn(String) -> ConfigError,
    ) -> Result<Dist, ConfigError> {
        for k in t.keys() {
            if !["dist", "value", "mean", "sd", "min", "max"].contains(&k.as_str()) {
                return Err(bad(format!(
                    "{key}: unknown key {k:?}; a distribution takes dist, mean, sd, min, max (or value)"
                )));
            }
        }
        let num = |k: &str| -> Result<Option<f64>, ConfigError> {
            match t.get(k) {
                None => Ok(None),
                Some(toml::Value::Integer(i)) => Ok(Some(*i as f64)),
                Some(toml::Value::Float(f)) => Ok(Some(*f)),
                Some(_) => Err(bad(format!("{key}: {k} must be a number"))),
            }
        };
        let whole = |k: &str| -> Result<Option<u32>, ConfigError> {
            match num(k)? {
                None => Ok(None),
                Some(x) if x.fract() == 0.0 && (0.0..=traffic::MAX_TOKENS as f64).contains(&x) => {
                    Ok(Some(x as u32))
                }
                Some(x) => Err(bad(format!(
                    "{key}: {k} = {x} must be a whole number of tokens up to {}",
                    traffic::MAX_TOKENS
                ))),
            }
        };
        let need = |k: &str, x: Option<f64>| {
            x.ok_or_else(|| bad(format!("{key}: this distribution needs {k}")))
        };
        let dist = match t.get("dist") {
            None => "fixed",
            Some(toml::Value::String(s)) => s.as_str(),
            Some(_) => return Err(bad(format!("{key}: dist must be a string"))),
        };
        Ok(match dist {
            "fixed" => Dist::Fixed {
                value: whole("value")?.ok_or_else(|| bad(format!("{key}: fixed needs value")))?,
            },
            "uniform" => Dist::Uniform {
                min: whole("min")?.ok_or_else(|| bad(format!("{key}: uniform needs min")))?,
                max: whole("max")?.ok_or_else(|| bad(format!("{key}: uniform needs max")))?,
            },
            "normal" | "lognormal" => {
                let (mean, sd) = (need("mean", num("mean")?)?, need("sd", num("sd")?)?);
                let min = whole("min")?.unwrap_or(1);
                let max = match whole("max")? {
                    Some(m) => m,
                    None => (mean + 4.0 * sd)
                        .ceil()
                        .clamp(1.0, traffic::MAX_TOKENS as f64) as u32,
                };
                if dist == "normal" {
                    Dist::Normal { mean, sd, min, max }
                } else {
                    Dist::Lognormal { mean, sd, min, max }
                }
            }
            other => {
                return Err(bad(format!(
                "{key}: dist = {other:?}: use \"fixed\", \"uniform\", \"normal\" or \"lognormal\""
            )))
            }
        })
    }

    /// `dataset`: a readable file (relative to models.toml) holding at least one request; its
    /// content hash is part of the cells' identity.
    fn dataset(&self, d: &Spanned<String>) -> Result<Requests, ConfigError> {
        use sha2::Digest;
        if d.get_ref().trim().is_empty() {
            return Err(self.err(d.span(), "dataset must name a file".into()));
        }
        let path: PathBuf = self.beside_config(d.get_ref());
        let meta = std::fs::metadata(&path)
            .map_err(|e| self.err(d.span(), format!("dataset {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(self.err(
                d.span(),
                format!("dataset {}: not a regular file", path.display()),
            ));
        }
        if meta.len() > 1 << 30 {
            return Err(self.err(
                d.span(),
                format!("dataset {}: larger than 1 GiB", path.display()),
            ));
        }
        let bytes = std::fs::read(&path)
            .map_err(|e| self.err(d.span(), format!("dataset {}: {e}", path.display())))?;
        let text = String::from_utf8_lossy(&bytes);
        let first = text.trim_start().chars().next();
        let ok = match first {
            None => Err("is empty".to_string()),
            Some('[') => serde_json::from_str::<Vec<serde_json::Value>>(&text)
                .map_err(|e| format!("is not a JSON array of conversations: {e}"))
                .and_then(|v| {
                    if v.is_empty() {
                        Err("is an empty array".into())
                    } else {
                        Ok(())
                    }
                }),
            Some('{') => text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .try_for_each(|(i, l)| {
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(l)
                        .map(|_| ())
                        .map_err(|e| format!("line {} is not a JSON object: {e}", i + 1))
                }),
            Some(_) => Err(
                "is neither JSONL ({\"prompt\": …, \"output_tokens\": …} per line) nor a ShareGPT \
                 JSON array"
                    .into(),
            ),
        };
        ok.map_err(|m| self.err(d.span(), format!("dataset {}: {m}", path.display())))?;
        Ok(Requests::Dataset {
            path,
            sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        })
    }

    fn arrivals(&self, r: &RawWorkload) -> Result<Arrivals, ConfigError> {
        let burst = match &r.burstiness {
            None => None,
            Some(b) => {
                let x = match b.get_ref() {
                    toml::Value::Integer(i) => *i as f64,
                    toml::Value::Float(f) => *f,
                    _ => f64::NAN,
                };
                if !(x.is_finite() && x > 0.0 && x <= 1000.0) {
                    return Err(self.err(
                        b.span(),
                        "burstiness must be a number above 0 (below 1: burstier than Poisson), \
                         e.g. 0.5"
                            .into(),
                    ));
                }
                Some((x, b.span()))
            }
        };
        let kind = r
            .arrivals
            .as_ref()
            .map_or("poisson", |a| a.get_ref().as_str());
        let span = r.arrivals.as_ref().map_or(0..0, |a| a.span());
        match (kind, burst) {
            ("poisson", None) => Ok(Arrivals::Poisson),
            ("constant", None) => Ok(Arrivals::Constant),
            ("gamma", Some((b, _))) => Ok(Arrivals::Gamma { burstiness: b }),
            ("gamma", None) => Err(self.err(
                span,
                "arrivals = \"gamma\" needs burstiness (e.g. 0.5: burstier than Poisson)".into(),
            )),
            ("poisson" | "constant", Some((_, s))) => {
                Err(self.err(s, "burstiness applies to arrivals = \"gamma\" only".into()))
            }
            (other, _) => Err(self.err(
                span,
                format!("arrivals = {other:?}: use \"poisson\", \"constant\" or \"gamma\""),
            )),
        }
    }

    /// `rate` (requests/s, `"max"`, or a list) or `concurrency` (users, or a list); one load
    /// point each. Neither: one user.
    fn loads(&self, r: &RawWorkload) -> Result<Vec<Load>, ConfigError> {
        let mut loads = Vec::new();
        match (&r.rate, &r.concurrency) {
            (Some(rate), Some(c)) => {
                return Err(self.err(
                    c.span().start.min(rate.span().start)..c.span().end,
                    "set rate (open loop) or concurrency (closed loop), not both".into(),
                ))
            }
            (Some(rate), None) => {
                let values = match rate.get_ref() {
                    toml::Value::Array(a) => a.clone(),
                    v => vec![v.clone()],
                };
                if values.is_empty() {
                    return Err(self.err(rate.span(), "rate must not be an empty list".into()));
                }
                for v in values {
                    let load = match &v {
                        toml::Value::Integer(i) => Load::Rate(*i as f64),
                        toml::Value::Float(f) => Load::Rate(*f),
                        toml::Value::String(s) if s == "max" => Load::MaxRate,
                        _ => {
                            return Err(self.err(
                                rate.span(),
                                format!(
                                    "rate = {v}: use a number of requests per second, \"max\" \
                                     (the highest rate that meets [slo]) or a list of them"
                                ),
                            ))
                        }
                    };
                    load.check().map_err(|m| self.err(rate.span(), m))?;
                    if loads.contains(&load) {
                        return Err(
                            self.err(rate.span(), format!("rate {} is listed twice", load.tag()))
                        );
                    }
                    loads.push(load);
                }
            }
            (None, Some(c)) => {
                for n in self.int_list(c, &limits::CONCURRENCY)? {
                    loads.push(Load::Concurrency(n));
                }
            }
            (None, None) => loads.push(Load::Concurrency(1)),
        }
        Ok(loads)
    }

    /// `endpoint` and its companions: an http(s) URL without credentials, the name of the
    /// environment variable holding the key (not the key).
    pub(super) fn endpoint_source(
        &self,
        url: &Spanned<String>,
        api_key_env: Option<&Spanned<String>>,
        model_name: Option<&Spanned<String>>,
    ) -> Result<super::Source, ConfigError> {
        let u = url::Url::parse(url.get_ref()).map_err(|e| {
            self.err(
                url.span(),
                format!(
                    "endpoint {:?}: not a URL ({e}); e.g. http://127.0.0.1:8080/v1",
                    url.get_ref()
                ),
            )
        })?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err(self.err(
                url.span(),
                "endpoint must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8080/v1".into(),
            ));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(self.err(
                url.span(),
                "endpoint must not carry credentials: put the key in an environment variable \
                 and name it with api_key_env"
                    .into(),
            ));
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err(self.err(
                url.span(),
                "endpoint must not have a query or fragment".into(),
            ));
        }
        let key_env = match api_key_env {
            Some(k) => {
                let s = k.get_ref();
                let plain = !s.is_empty()
                    && s.len() <= 128
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !s.starts_with(|c: char| c.is_ascii_digit());
                if !plain {
                    // never echo it: it may be the key itself
                    return Err(self.err(
                        k.span(),
                        "api_key_env names the environment variable that holds the key (e.g. \
                         \"OPENAI_API_KEY\"), not the key"
                            .into(),
                    ));
                }
                Some(s.clone())
            }
            None => None,
        };
        Ok(super::Source::Endpoint {
            url: u.as_str().trim_end_matches('/').to_string(),
            api_key_env: key_env,
            model_name: model_name.map(|m| m.get_ref().clone()),
        })
    }
}
