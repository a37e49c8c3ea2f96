//! Serving cells: a llama-server started for the cell (or an endpoint quantbench did not
//! start) driven by a workload of requests arriving over time, measured per request as its
//! users would see it. Runs inside a worker process, like the in-process cells: the cell's
//! deadline, signals and the worker's death end the server with it.
//!
//! Never prints; the requests' prompts are made here (token ids for a server quantbench
//! started, text for an endpoint), the HTTP side is `client`, the pacing `driver`, the
//! process `server`, the figures `serving_stats`.

pub mod client;
pub mod driver;
pub mod server;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use self::client::{Endpoint, Prompt, Request};
use self::driver::{Pacing, Point};
use crate::engine::Vocab;
use crate::plan::{Cell, ServeParams};
use crate::protocol::{ServeJob, ServeTarget, ServingMeasurement};
use crate::serving_stats::{summarize_point, PointSummary, RateSearch, RequestRecord, RequestSlo};
use crate::traffic::{Load, Requests, Workload};

/// Tokens of context per slot beyond the longest prompt and output (BOS, the template of a
/// chat endpoint).
const SLOT_MARGIN: u32 = 16;
/// Relative width at which the saturation search stops bisecting.
pub const SEARCH_TOLERANCE: f64 = 0.05;
/// Most probes of one search.
pub const SEARCH_MAX_PROBES: u32 = 14;

/// Progress of a serving cell: (phase, done, total).
pub type Progress<'a> = dyn FnMut(&str, u32, u32) + 'a;

/// What the worker knows about the cell's machine, for the server's command and telemetry.
pub struct CellEnv<'a> {
    /// Backend module files the worker loaded: the server gets the same.
    pub modules: &'a [std::path::PathBuf],
    pub stop: &'a AtomicBool,
    /// The cell's deadline (from the worker's start): the search stops early before it.
    pub deadline: Instant,
    /// GPU energy counter reader over the cell's GPUs (millijoules), when there is one.
    pub energy_mj: &'a dyn Fn() -> Option<u64>,
    /// Device memory of a process (bytes, all watched GPUs), when there is NVML.
    pub vram_of: &'a dyn Fn(u32) -> Option<u64>,
}

/// A dataset entry: a prompt and the output length to ask for.
#[derive(Clone, Debug)]
struct Entry {
    prompt: String,
    output_tokens: u32,
}

/// Measures one serving cell.
pub fn measure(
    cell: &Cell,
    sp: &ServeParams,
    job: &ServeJob,
    model_path: &Path,
    cx: &CellEnv<'_>,
    progress: &mut Progress<'_>,
) -> Result<ServingMeasurement> {
    match &job.target {
        ServeTarget::Managed {
            bin,
            version,
            pinned,
        } => {
            let server = Managed {
                bin,
                version,
                pinned: *pinned,
            };
            managed(cell, sp, job, model_path, &server, cx, progress)
        }
        ServeTarget::Endpoint {
            base,
            api_key_env,
            model,
        } => {
            let api_key =
                match api_key_env {
                    Some(var) => Some(std::env::var(var).map_err(|_| {
                        anyhow::anyhow!("api_key_env names {var}, which is not set")
                    })?),
                    None => None,
                };
            let base = base.trim_end_matches('/').to_string();
            let model = match model {
                Some(m) => m.clone(),
                None => first_model(&base, api_key.as_deref())?,
            };
            let ep = Endpoint {
                base: base.clone(),
                model,
                api_key,
                llama_server: false,
            };
            let source = PromptSource::new(&sp.workload, None)?;
            let mut m = ServingMeasurement {
                target: base,
                workload: sp.workload.describe(),
                ..Default::default()
            };
            Driver::new(&ep, sp, job.slo, &source, cell, cx).run(progress, &mut m)?;
            Ok(m)
        }
    }
}

/// The llama-server binary of a cell, as the job names it.
struct Managed<'a> {
    bin: &'a Path,
    version: &'a str,
    pinned: bool,
}

/// A cell on a llama-server started for it: prompts of exact lengths (token ids), the context
/// per slot they need, the server started and stopped; the server dying fails the cell.
fn managed(
    cell: &Cell,
    sp: &ServeParams,
    job: &ServeJob,
    model_path: &Path,
    server: &Managed<'_>,
    cx: &CellEnv<'_>,
    progress: &mut Progress<'_>,
) -> Result<ServingMeasurement> {
    let vocab = Vocab::load(model_path)
        .with_context(|| format!("reading the vocabulary of {}", model_path.display()))?;
    let source = PromptSource::new(&sp.workload, Some(&vocab))?;
    let slot_ctx = source.max_len() + SLOT_MARGIN;
    if vocab.learned_positions() && slot_ctx > vocab.n_ctx_train() {
        bail!(
            "a request needs up to {slot_ctx} tokens of context (prompt, output and a margin of \
             {SLOT_MARGIN}), beyond the {} positions this model learned: shorten \
             prompt_tokens/output_tokens",
            vocab.n_ctx_train()
        );
    }
    let limit = cx.deadline.saturating_duration_since(Instant::now());
    progress("load", 0, 1);
    let t = Instant::now();
    let mut srv = server::Server::start(
        server.bin,
        model_path,
        &cell.params,
        slot_ctx,
        cx.modules,
        job.first_port,
        limit,
        cx.stop,
    )?;
    let mut m = ServingMeasurement {
        target: "llama-server".into(),
        server_version: Some(server.version.to_string()),
        server_pinned: Some(server.pinned),
        command: Some(server::command_line(
            "llama-server",
            model_path,
            &cell.params,
            slot_ctx,
        )),
        workload: sp.workload.describe(),
        slot_ctx,
        ready_s: Some(t.elapsed().as_secs_f64()),
        ..Default::default()
    };
    let ep = Endpoint {
        base: format!("{}/v1", srv.base_url()),
        model: "quantbench".into(),
        api_key: None,
        llama_server: true,
    };
    let run = Driver::new(&ep, sp, job.slo, &source, cell, cx).run(progress, &mut m);
    (m.server_rss_bytes, m.server_rss_peak_bytes) = srv.rss();
    m.server_vram_bytes = (cx.vram_of)(srv.pid);
    if srv.has_exited() {
        bail!(
            "llama-server {} during the workload; its log ends:\n{}",
            srv.exit_description().unwrap_or_else(|| "ended".into()),
            srv.log_tail()
        );
    }
    srv.stop();
    run?;
    Ok(m)
}

/// The model an endpoint serves first (`GET /v1/models`).
fn first_model(base: &str, key: Option<&str>) -> Result<String> {
    let agent = client::agent(Duration::from_secs(15));
    let mut req = agent.get(&format!("{base}/models"));
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let resp = req.call().map_err(|e| {
        anyhow::anyhow!(
            "the endpoint {base} does not answer /models: {}",
            client::one_line(&e.to_string(), 200)
        )
    })?;
    let v: serde_json::Value = resp
        .into_json()
        .with_context(|| format!("{base}/models did not answer JSON"))?;
    v.pointer("/data/0/id")
        .and_then(|x| x.as_str())
        .map(String::from)
        .with_context(|| format!("{base}/models lists no model: name one with `model_name`"))
}

/// Sends a cell's workload: the warm-up, then its load point or the search's probes.
struct Driver<'a> {
    ep: &'a Endpoint,
    sp: &'a ServeParams,
    slo: RequestSlo,
    source: &'a PromptSource,
    cell: &'a Cell,
    cx: &'a CellEnv<'a>,
    agent: ureq::Agent,
    timeout: Duration,
}

impl<'a> Driver<'a> {
    fn new(
        ep: &'a Endpoint,
        sp: &'a ServeParams,
        slo: RequestSlo,
        source: &'a PromptSource,
        cell: &'a Cell,
        cx: &'a CellEnv<'a>,
    ) -> Self {
        let timeout = Duration::from_secs(sp.workload.request_timeout_s.max(1));
        Driver {
            ep,
            sp,
            slo,
            source,
            cell,
            cx,
            agent: client::agent(timeout),
            timeout,
        }
    }

    /// Warm-up, then the point(s); fills `m` with the summaries and the records.
    fn run(&self, progress: &mut Progress<'_>, m: &mut ServingMeasurement) -> Result<()> {
        let warm_e2e = self.warm_up(progress)?;
        let energy0 = (self.cx.energy_mj)();
        match self.sp.load {
            Load::MaxRate => self.search(&warm_e2e, progress, m),
            load => {
                progress("requests", 0, self.sp.workload.requests_per_point);
                let (s, recs) = self.point(0, load);
                m.points.push(s.clone());
                m.summary = s;
                m.requests = recs;
            }
        }
        if let (Some(e0), Some(e1)) = (energy0, (self.cx.energy_mj)()) {
            let done: u32 = m.points.iter().map(|p| p.completed).sum();
            if done > 0 && e1 >= e0 {
                m.energy_j_per_request = Some((e1 - e0) as f64 / 1000.0 / done as f64);
            }
        }
        Ok(())
    }

    /// One user, requests of the workload's kind, left out of every figure; their latencies.
    fn warm_up(&self, progress: &mut Progress<'_>) -> Result<Vec<f64>> {
        let warm = self
            .source
            .requests(u64::MAX, self.sp.workload.warmup_requests as usize);
        if warm.is_empty() {
            return Ok(Vec::new());
        }
        progress("warmup", 0, warm.len() as u32);
        let point = Point {
            requests: &warm,
            pacing: Pacing::Closed { users: 1 },
            duration: None,
            timeout: self.timeout,
            probe: 0,
        };
        let recs = driver::run(&self.agent, self.ep, &point, self.cx.stop);
        if let Some(bad) = recs.iter().find(|r| !r.ok()) {
            bail!(
                "the warm-up request failed: {}",
                bad.error.as_deref().unwrap_or("no answer")
            );
        }
        Ok(recs.iter().filter_map(|r| r.e2e_ms).collect())
    }

    /// Probe `probe` (0 for a plain point) at `load`: its summary and records.
    fn point(&self, probe: u32, load: Load) -> (PointSummary, Vec<RequestRecord>) {
        let w = &self.sp.workload;
        let reqs = self
            .source
            .requests(u64::from(probe), w.requests_per_point as usize);
        let (pacing, rate, users) = match load {
            Load::Rate(r) => {
                let seed = w.seed.wrapping_add(u64::from(probe));
                let offsets_s = w.arrivals.offsets_s(r, reqs.len(), seed);
                (Pacing::Open { offsets_s }, Some(r), None)
            }
            Load::Concurrency(c) => (Pacing::Closed { users: c }, None, Some(c)),
            Load::MaxRate => (Pacing::Closed { users: 1 }, None, Some(1)),
        };
        let point = Point {
            requests: &reqs,
            pacing,
            duration: w.duration_s.map(Duration::from_secs),
            timeout: self.timeout,
            probe,
        };
        let recs = driver::run(&self.agent, self.ep, &point, self.cx.stop);
        (summarize_point(&recs, rate, users, &self.slo), recs)
    }

    /// The highest rate that meets the SLO: a first guess from the warm-up (the rate the slots
    /// sustain one request at a time), doubled or halved until bracketed, then bisected.
    fn search(&self, warm_e2e: &[f64], progress: &mut Progress<'_>, m: &mut ServingMeasurement) {
        let e2e_s = if warm_e2e.is_empty() {
            1.0
        } else {
            warm_e2e.iter().sum::<f64>() / warm_e2e.len() as f64 / 1000.0
        };
        let slots = f64::from(self.cell.params.n_parallel.max(1));
        let first = (slots / e2e_s.max(1e-3)).clamp(0.01, crate::traffic::MAX_RATE / 2.0);
        let mut search = RateSearch::new(SEARCH_TOLERANCE, first / 64.0, SEARCH_MAX_PROBES);
        let started = Instant::now();
        let mut probe = 0u32;
        while let Some(rate) = search.next(first) {
            if self.cx.stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            // stop before the cell's deadline cuts it: keep what was found
            let left = self.cx.deadline.saturating_duration_since(Instant::now());
            if probe > 0 && left < started.elapsed() / probe * 2 {
                m.notes.push(format!(
                    "the search stopped after {probe} probes, before the cell's timeout_s: the \
                     maximum is within [{}, {}] requests/s",
                    search.held.map_or("0".into(), crate::traffic::fmt_num),
                    search.failed.map_or("?".into(), crate::traffic::fmt_num)
                ));
                break;
            }
            progress("probe", probe, SEARCH_MAX_PROBES);
            let (s, recs) = self.point(probe + 1, Load::Rate(rate));
            search.record(rate, s.slo_met == Some(true));
            m.points.push(s);
            m.requests.extend(recs);
            probe += 1;
        }
        if let Some(short) = m.points.iter().find(|p| {
            p.e2e_ms
                .as_ref()
                .is_some_and(|e| p.duration_s < 5.0 * e.mean / 1000.0)
        }) {
            m.notes.push(format!(
                "a probe of {} requests lasted {:.2} s, less than 5 times its mean request \
                 latency: too short for a queue to build up at rates the server cannot sustain; \
                 raise `requests` so that probes last longer",
                short.requests, short.duration_s
            ));
        }
        m.max_rate_req_s = Some(search.held.unwrap_or(0.0));
        let rate_of = |p: &PointSummary| p.offered_rate_req_s.unwrap_or(0.0);
        m.summary = match search.held {
            Some(h) => m.points.iter().find(|p| p.offered_rate_req_s == Some(h)),
            None => m
                .points
                .iter()
                .min_by(|a, b| rate_of(a).total_cmp(&rate_of(b))),
        }
        .cloned()
        .unwrap_or_default();
    }
}

/// Makes the prompts of every point from the workload: random tokens (a server quantbench
/// started: exact lengths, token ids), random words (an endpoint: lengths as the server
/// counts them), or a dataset's prompts.
struct PromptSource {
    workload: Workload,
    /// Token ids are drawn below this (a managed server); `None`: text prompts.
    n_vocab: Option<u32>,
    /// The shared prefix, identical in every request.
    prefix: Prompt,
    dataset: Vec<Entry>,
    /// Prompt token counts of the dataset's entries (a managed server: counted exactly).
    dataset_tokens: Vec<u32>,
}

/// Words of random prompts sent to an endpoint (common English words: about one token each
/// in most vocabularies).
const WORDS: &[&str] = &[
    "time",
    "year",
    "people",
    "way",
    "day",
    "man",
    "thing",
    "woman",
    "life",
    "child",
    "world",
    "school",
    "state",
    "family",
    "student",
    "group",
    "country",
    "problem",
    "hand",
    "part",
    "place",
    "case",
    "week",
    "company",
    "system",
    "program",
    "question",
    "work",
    "government",
    "number",
    "night",
    "point",
    "home",
    "water",
    "room",
    "mother",
    "area",
    "money",
    "story",
    "fact",
    "month",
    "lot",
    "right",
    "study",
    "book",
    "eye",
    "job",
    "word",
    "business",
    "issue",
    "side",
    "kind",
    "head",
    "house",
    "service",
    "friend",
    "father",
    "power",
    "hour",
    "game",
    "line",
    "end",
    "member",
    "law",
    "car",
    "city",
    "name",
    "team",
    "minute",
    "idea",
    "kid",
    "body",
    "back",
    "parent",
    "face",
    "others",
    "level",
    "office",
    "door",
    "health",
    "person",
    "art",
    "war",
    "history",
    "party",
    "result",
    "change",
    "morning",
    "reason",
    "research",
];

impl PromptSource {
    fn new(w: &Workload, vocab: Option<&Vocab>) -> Result<Self> {
        let n_vocab = vocab.map(|v| v.n_vocab());
        let mut rng = Pcg64Mcg::seed_from_u64(w.seed ^ 0x9e37_79b9);
        let prefix = match n_vocab {
            Some(nv) => Prompt::Tokens(
                (0..w.shared_prefix_tokens)
                    .map(|_| rng.random_range(0..nv) as i32)
                    .collect(),
            ),
            None => Prompt::Text(words(&mut rng, w.shared_prefix_tokens)),
        };
        let (dataset, dataset_tokens) = match &w.requests {
            Requests::Synthetic { .. } => (Vec::new(), Vec::new()),
            Requests::Dataset { path, .. } => {
                let entries = read_dataset(path, vocab)?;
                let tokens = entries
                    .iter()
                    .map(|e| match vocab {
                        Some(v) => v.tokenize(&e.prompt).len() as u32,
                        None => (e.prompt.len() as u32).div_ceil(4),
                    })
                    .collect();
                (entries, tokens)
            }
        };
        Ok(PromptSource {
            workload: w.clone(),
            n_vocab,
            prefix,
            dataset,
            dataset_tokens,
        })
    }

    /// The longest prompt plus output any request asks for (tokens).
    fn max_len(&self) -> u32 {
        match self.workload.max_tokens() {
            Some((p, o)) => p + o,
            None => self
                .dataset
                .iter()
                .zip(&self.dataset_tokens)
                .map(|(e, &t)| t + self.workload.shared_prefix_tokens + e.output_tokens)
                .max()
                .unwrap_or(0),
        }
    }

    /// The `n` requests of point `point` (each point draws its own prompts, so no prompt is
    /// in the server's cache from an earlier point; `u64::MAX` is the warm-up).
    fn requests(&self, point: u64, n: usize) -> Vec<Request> {
        let w = &self.workload;
        let mut rng = Pcg64Mcg::seed_from_u64(w.seed.wrapping_mul(31).wrapping_add(point));
        let with_prefix = |body: Prompt| match (&self.prefix, body) {
            (Prompt::Tokens(p), Prompt::Tokens(b)) => Prompt::Tokens([p.as_slice(), &b].concat()),
            (Prompt::Text(p), Prompt::Text(b)) if !p.is_empty() => Prompt::Text(format!("{p} {b}")),
            (_, b) => b,
        };
        if self.dataset.is_empty() {
            return w
                .draw_lengths(n, point)
                .into_iter()
                .map(|(p, o)| {
                    let body = match self.n_vocab {
                        Some(nv) => {
                            Prompt::Tokens((0..p).map(|_| rng.random_range(0..nv) as i32).collect())
                        }
                        None => Prompt::Text(words(&mut rng, p)),
                    };
                    Request {
                        prompt: with_prefix(body),
                        prompt_tokens: p + w.shared_prefix_tokens,
                        output_tokens: o,
                        cache_prompt: w.cache_prompt,
                    }
                })
                .collect();
        }
        // a dataset: entries in an order shuffled per point, cycling when more are needed
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        (0..n)
            .map(|k| {
                let i = order[k % order.len()];
                let e = &self.dataset[i];
                Request {
                    prompt: with_prefix(Prompt::Text(e.prompt.clone())),
                    prompt_tokens: self.dataset_tokens[i] + w.shared_prefix_tokens,
                    output_tokens: e.output_tokens,
                    cache_prompt: w.cache_prompt,
                }
            })
            .collect()
    }
}

/// `n` random words, a random number first (so two prompts never share a beginning).
fn words(rng: &mut Pcg64Mcg, n: u32) -> String {
    if n == 0 {
        return String::new();
    }
    let mut s = format!("{}", rng.random_range(100_000..999_999u32));
    for _ in 1..n {
        s.push(' ');
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    s
}

/// Reads a dataset: JSONL of `{"prompt": …, "output_tokens": …}`, or ShareGPT conversations
/// (a JSON array, or one per line, of `{"conversations": [{"from": "human", "value": …},
/// {"from": "gpt", "value": …}, …]}`: the first human turn is the prompt, the length of the
/// answer after it the output length — counted with the model's tokenizer when there is one,
/// else a quarter of its characters).
fn read_dataset(path: &Path, vocab: Option<&Vocab>) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the workload dataset {}", path.display()))?;
    let items: Vec<serde_json::Value> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON array of conversations", path.display()))?
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))
            })
            .collect::<Result<_>>()?
    };
    let mut out = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let at = || format!("{} entry {}", path.display(), i + 1);
        if let Some(conv) = v.get("conversations").and_then(|c| c.as_array()) {
            let turn = |k: usize| {
                conv.get(k)
                    .and_then(|t| t.get("value"))
                    .and_then(|x| x.as_str())
            };
            let (Some(prompt), Some(answer)) = (turn(0), turn(1)) else {
                continue; // vLLM also skips conversations of fewer than two turns
            };
            let output_tokens = match vocab {
                Some(v) => v.tokenize(answer).len() as u32,
                None => (answer.len() as u32).div_ceil(4),
            }
            .max(1);
            out.push(Entry {
                prompt: prompt.to_string(),
                output_tokens,
            });
        } else {
            let prompt = v
                .get("prompt")
                .and_then(|p| p.as_str())
                .with_context(|| format!("{}: no \"prompt\" string", at()))?;
            let output_tokens = v
                .get("output_tokens")
                .and_then(|o| o.as_u64())
                .with_context(|| format!("{}: no \"output_tokens\" number", at()))?;
            if output_tokens == 0 || output_tokens > crate::traffic::MAX_TOKENS as u64 {
                bail!(
                    "{}: output_tokens must be 1 to {}",
                    at(),
                    crate::traffic::MAX_TOKENS
                );
            }
            out.push(Entry {
                prompt: prompt.to_string(),
                output_tokens: output_tokens as u32,
            });
        }
    }
    if out.is_empty() {
        bail!("{}: no usable request in the dataset", path.display());
    }
    Ok(out)
}
