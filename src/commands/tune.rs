//! `quantbench tune`: the configuration of one model that meets the user's targets with the
//! highest quality, found with few measurements, every probe recorded in an ordinary run
//! folder.
//!
//! The search: each quant's quality is measured once (its KLD against the reference) and
//! quants over `--max-kld` are dropped before any speed probe; the rest are tried from the
//! highest quality down, and the first whose best configuration meets every target wins (a
//! lower quality can only win where a higher one cannot). A quant's best configuration: on a
//! GPU the most layers that fit the memory budget — the capacity model's estimate, checked by
//! measuring and bisected down when the estimate was optimistic (speed grows with layers) —
//! with an f16 and a q8_0 KV cache; on the CPU the f16 cache, and q8_0 where memory is the
//! miss. Probes are short (`--probe-repetitions`); the winner is measured again with the
//! model's full repetitions, and confirmed once more when it meets a target by less than 5%.
//! The decisions themselves are `crate::tune`'s.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::run::Session;
use super::{exit, Ctx};
use crate::cli::{Cli, Command, RunArgs, TuneArgs, TuneFormat};
use crate::config::{self, FlashAttn, GpuLayers, Matrix, ModelSpec, Source};
use crate::plan::{Cell, CellParams};
use crate::quant::Quant;
use crate::results::{CellResult, CellStatus};
use crate::tune::{meets, Outcome, Probe, Targets};

/// A target met by less than this (relative) is confirmed by measuring again.
const NEAR: f64 = 0.05;

pub fn run(ctx: &Ctx, args: &TuneArgs) -> Result<u8> {
    let matrix = config::load(&args.config)?;
    let targets = targets(args, &matrix.tune);
    if targets.is_empty() {
        bail!(
            "no target: give at least one of --min-tok-s, --max-ttft-ms, --max-kld, --memory, \
             --rate (or [tune] in {})",
            args.config.display()
        );
    }
    let mi = pick_model(
        &matrix,
        args.model.as_deref().or(matrix.tune.model.as_deref()),
    )?;
    let model = matrix.models[mi].clone();
    if matches!(model.source, Source::Endpoint { .. }) {
        bail!(
            "model {:?} is an endpoint: tune chooses files and settings of a model quantbench runs",
            model.name
        );
    }
    if targets.rate.is_some() && !matrix.slo.requests().has_target() {
        bail!("--rate needs per-request targets in [slo] (max_ttft_ms, max_tpot_ms or max_e2e_ms) to judge the served probes by");
    }
    let from = read_from(&args.from)?;
    let mut tm = matrix.clone();
    tm.models = vec![model.clone()];
    let base = base_cells(&tm, &targets)?;
    let Some(session) = Session::open(ctx, run_args(args)?, tm.clone())? else {
        ctx.printer.line("interrupted before anything was measured");
        return Ok(crate::signals::exit_code());
    };
    let mut s = Search::new(
        ctx,
        session,
        tm,
        model,
        targets,
        base,
        from,
        args.probe_repetitions,
    );
    s.search()?;
    let mut outcome = s.outcome();
    let interrupted = s.session.interrupted();
    if interrupted {
        // a search cut short has no answer: its best probe was not confirmed
        outcome.recommendation = None;
        outcome.met = false;
    }
    let mut session = s.session;
    session.report.tune = Some(outcome.clone());
    let report = session.finish()?;
    if interrupted {
        let dir = args
            .resume
            .clone()
            .unwrap_or_else(|| args.out.join(&report.run_id));
        ctx.printer.line(&format!(
            "interrupted before the search ended: no recommendation; every probe measured so far \
             is in {d}, and `quantbench tune --resume {d}` continues the search",
            d = dir.display()
        ));
        if args.format == TuneFormat::Json {
            let mut v = json(&outcome, &dir);
            v["interrupted"] = serde_json::json!(true);
            ctx.printer.stdout(&serde_json::to_string_pretty(&v)?);
        }
    } else {
        print(ctx, args, &outcome, &report)?;
    }
    Ok(if interrupted {
        crate::signals::exit_code()
    } else if outcome.met {
        exit::OK
    } else {
        exit::CELLS_FAILED
    })
}

/// The command line's targets over the file's `[tune]`.
fn targets(a: &TuneArgs, t: &config::TuneTable) -> Targets {
    Targets {
        min_tok_s: a.min_tok_s.or(t.min_tok_s),
        max_ttft_ms: a.max_ttft_ms.or(t.max_ttft_ms),
        max_kld: a.max_kld.or(t.max_kld),
        memory_bytes: a.memory.or(t.memory),
        n_ctx: a.n_ctx.or(t.n_ctx),
        rate: a.rate.or(t.rate),
    }
}

/// The model to tune: the one named, or the file's only model.
fn pick_model(m: &Matrix, name: Option<&str>) -> Result<usize> {
    let names: Vec<&str> = m.models.iter().map(|m| m.name.as_str()).collect();
    match name {
        Some(n) => names.iter().position(|x| *x == n).with_context(|| {
            format!(
                "--model {n:?} is not in the file; its models: {}",
                names.join(", ")
            )
        }),
        None if names.len() == 1 => Ok(0),
        None => bail!(
            "the file has {} models: name the one to tune with --model (or [tune] model): {}",
            names.len(),
            names.join(", ")
        ),
    }
}

/// The `run` options of the search's run folder.
fn run_args(a: &TuneArgs) -> Result<RunArgs> {
    let mut argv: Vec<String> = ["quantbench", "run", "-c"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.push(a.config.display().to_string());
    argv.extend(["--out".into(), a.out.display().to_string()]);
    if let Some(r) = &a.resume {
        argv.extend(["--resume".into(), r.display().to_string()]);
    }
    for (on, flag) in [
        (a.offline, "--offline"),
        (a.no_lock, "--no-lock"),
        (a.no_plots, "--no-plots"),
    ] {
        if on {
            argv.push(flag.into());
        }
    }
    match <Cli as clap::Parser>::try_parse_from(argv)?.command {
        Command::Run(r) => Ok(r),
        _ => unreachable!("a run command line"),
    }
}

/// Cells of earlier run folders (`--from`), by key.
fn read_from(dirs: &[PathBuf]) -> Result<HashMap<String, CellResult>> {
    let mut out = HashMap::new();
    for d in dirs {
        let file = if d.is_dir() {
            d.join("results.json")
        } else {
            d.clone()
        };
        let r =
            crate::results::read_json(&file).with_context(|| format!("--from {}", d.display()))?;
        for c in r.cells.into_iter().filter(|c| c.status == CellStatus::Ok) {
            out.insert(c.key.clone(), c);
        }
    }
    Ok(out)
}

/// One cell per quant of the model at its file's settings (the first of its sweeps), its
/// context `n_ctx` deep when a context is asked for.
fn base_cells(m: &Matrix, t: &Targets) -> Result<BTreeMap<Quant, Cell>> {
    let cells = crate::plan::expand(m, &crate::plan::Overrides::default())?;
    let mut out = BTreeMap::new();
    for mut c in cells.into_iter().filter(|c| c.params.serve.is_none()) {
        if out.contains_key(&c.quant) {
            continue;
        }
        if let Some(n) = t.n_ctx {
            let own = c.params.n_prompt + c.params.n_gen;
            if n < own {
                bail!("--n-ctx {n} is below the cell's own prompt and generation ({own} tokens)");
            }
            c.params.n_depth = n - own;
        }
        c.params.quality = None;
        out.insert(c.quant, c);
    }
    if out.is_empty() {
        bail!("the model has no quant to tune");
    }
    Ok(out)
}

/// The state of a search.
struct Search<'a> {
    ctx: &'a Ctx,
    session: Session<'a>,
    /// The matrix of the model alone (nominal sizes, the file's [workload]).
    matrix: Matrix,
    model: ModelSpec,
    targets: Targets,
    base: BTreeMap<Quant, Cell>,
    from: HashMap<String, CellResult>,
    probe_reps: u32,
    probes: Vec<Probe>,
    steps: Vec<String>,
    kld: HashMap<Quant, f64>,
    next_index: usize,
    grid: usize,
}

impl<'a> Search<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &'a Ctx,
        session: Session<'a>,
        matrix: Matrix,
        model: ModelSpec,
        targets: Targets,
        base: BTreeMap<Quant, Cell>,
        from: HashMap<String, CellResult>,
        probe_reps: u32,
    ) -> Self {
        let next_index = session
            .report
            .cells
            .iter()
            .map(|c| c.index + 1)
            .max()
            .unwrap_or(0);
        Search {
            ctx,
            session,
            matrix,
            model,
            targets,
            base,
            from,
            probe_reps,
            probes: Vec::new(),
            steps: Vec::new(),
            kld: HashMap::new(),
            next_index,
            grid: 0,
        }
    }

    fn step(&mut self, s: String) {
        self.ctx.printer.line(&format!("tune: {s}"));
        self.steps.push(s);
    }

    /// Whether the cells run on a GPU (any registered).
    fn gpu(&self) -> bool {
        !self
            .session
            .report
            .environment
            .llama
            .llama_gpus()
            .is_empty()
    }

    /// A cell of `quant` at the base settings with `set` applied, a new index.
    fn cell(&mut self, quant: Quant, set: &dyn Fn(&mut CellParams)) -> Cell {
        let mut c = self.base[&quant].clone();
        set(&mut c.params);
        c.index = self.next_index;
        self.next_index += 1;
        c
    }

    /// Measures `cells` (those an earlier folder or this one holds are taken from there) and
    /// returns their probes, in order.
    fn measure(&mut self, cells: Vec<Cell>, full: bool) -> Result<Vec<Probe>> {
        let (known, todo): (Vec<Cell>, Vec<Cell>) = cells
            .iter()
            .cloned()
            .partition(|c| self.from.contains_key(&c.key()));
        let mut results: Vec<CellResult> =
            known.iter().map(|c| self.from[&c.key()].clone()).collect();
        if !todo.is_empty() && !self.session.interrupted() {
            results.extend(self.session.measure(&todo, full)?);
        }
        let probes: Vec<Probe> = cells
            .iter()
            .filter_map(|c| results.iter().find(|r| r.key == c.key()))
            .map(|r| self.probe(r, full))
            .collect();
        self.probes.extend(probes.iter().cloned());
        Ok(probes)
    }

    fn probe(&self, r: &CellResult, full: bool) -> Probe {
        let kld = crate::report::quality_stats(r)
            .map(|q| q.kld_mean)
            .or_else(|| self.kld.get(&r.quant).copied());
        Probe {
            key: r.key.clone(),
            quant: r.quant,
            params: r.params.clone(),
            ok: r.status == CellStatus::Ok,
            error: r.error.clone(),
            full,
            decode_tok_s: r.mean("decode_tok_s"),
            decode_tok_s_sd: r.metrics.get("decode_tok_s").map(|s| s.sd),
            ttft_ms: r.mean("ttft_ms"),
            mem_bytes: r.mem_bytes,
            kld_mean: kld,
            slo_met: r.serving.as_ref().and_then(|s| s.summary.slo_met),
        }
    }
}

impl Search<'_> {
    /// The whole search: quality, then the quants from the best down until one meets the
    /// targets.
    fn search(&mut self) -> Result<()> {
        let kv_options = 2;
        let layer_options = if self.gpu() {
            self.n_layer()?.map_or(1, |n| n as usize + 2)
        } else {
            1
        };
        self.grid = self.base.len() * kv_options * layer_options;
        let order = self.quality_order()?;
        for q in order {
            if self.session.interrupted() {
                self.step(
                    "interrupted: `quantbench tune --resume DIR` continues the search".into(),
                );
                break;
            }
            if let Some(winner) = self.try_quant(q)? {
                if self.finalize(winner)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The quants in quality order (lowest KLD first, else the most precise first), those over
    /// the KLD budget left out. Quality is measured once per quant, with a short speed probe
    /// of the base settings in the same cell.
    fn quality_order(&mut self) -> Result<Vec<Quant>> {
        let mut quants: Vec<Quant> = self.base.keys().copied().collect();
        quants.sort_by_key(|q| crate::tune::precision_rank(*q));
        let synthetic = matches!(self.model.source, Source::Synthetic { .. });
        if self.targets.max_kld.is_none() && synthetic {
            self.step(format!(
                "no quality budget and synthetic weights: quants ranked by precision ({})",
                names(&quants)
            ));
            return Ok(quants);
        }
        let reference = self
            .model
            .params
            .quality_ref
            .or_else(|| Quant::most_precise(&quants));
        let Some(reference) = reference else {
            bail!("no reference to measure quality against: add the model's F16 (or BF16/F32) to its quants, or set quality_ref");
        };
        let p = &self.model.params;
        let qp = crate::plan::QualityParams {
            reference,
            corpus: p.quality_corpus.clone(),
            n_ctx: p.quality_ctx,
            chunks: p.quality_chunks.unwrap_or(8),
            ref_devices: p.quality_ref_devices.clone(),
        };
        let reps = self.probe_reps;
        let mut cells = Vec::new();
        for q in quants.clone() {
            let ngl = self.gpu_layers_guess(q, "f16");
            let qp = qp.clone();
            cells.push(self.cell(q, &move |c| {
                c.quality = Some(qp.clone());
                c.repetitions = reps;
                if let Some(n) = ngl {
                    c.n_gpu_layers = n;
                }
            }));
        }
        self.step(format!(
            "quality: each quant's KLD against {reference}, once ({} cells)",
            cells.len()
        ));
        for p in self.measure(cells, false)? {
            if let Some(k) = p.kld_mean {
                self.kld.insert(p.quant, k);
            }
        }
        let missing: Vec<Quant> = quants
            .iter()
            .copied()
            .filter(|q| !self.kld.contains_key(q))
            .collect();
        if !missing.is_empty() && self.targets.max_kld.is_some() {
            self.step(format!(
                "no KLD for {} (its quality test failed): left out",
                names(&missing)
            ));
        }
        let mut order: Vec<Quant> = quants
            .into_iter()
            .filter(|q| self.kld.contains_key(q) || self.targets.max_kld.is_none())
            .collect();
        order.sort_by(|a, b| {
            let k = |q: &Quant| self.kld.get(q).copied().unwrap_or(f64::INFINITY);
            k(a).total_cmp(&k(b))
                .then(crate::tune::precision_rank(*a).cmp(&crate::tune::precision_rank(*b)))
        });
        if let Some(max) = self.targets.max_kld {
            let over: Vec<Quant> = order
                .iter()
                .copied()
                .filter(|q| self.kld[q] > max)
                .collect();
            if !over.is_empty() {
                self.step(format!(
                    "over the KLD budget of {max}: {} (not probed for speed)",
                    names(&over)
                ));
            }
            order.retain(|q| self.kld[q] <= max);
        }
        self.step(format!("candidates, best quality first: {}", names(&order)));
        Ok(order)
    }

    /// The best configuration of `q` (the fastest that fits), if it meets the targets.
    fn try_quant(&mut self, q: Quant) -> Result<Option<Probe>> {
        let mut best: Option<Probe> = None;
        for kv in ["f16", "q8_0"] {
            let p = if self.gpu() {
                self.most_layers(q, kv)?
            } else {
                self.cpu_probe(q, kv)?
            };
            let Some(p) = p else { continue };
            let done = meets(&self.targets, &p);
            if best
                .as_ref()
                .is_none_or(|b| crate::tune::better(&p, b).is_lt() && done)
            {
                best = Some(p.clone());
            }
            // q8_0 is tried where f16 misses (memory, or too few layers on the GPU)
            if done && (!self.gpu() || p.params.n_gpu_layers == GpuLayers::All) {
                break;
            }
        }
        let Some(best) = best else {
            self.step(format!("{q}: no configuration could be measured"));
            return Ok(None);
        };
        let mut best = best;
        if meets(&self.targets, &best) && self.targets.rate.is_some() {
            best = self.served(&best)?;
        }
        let verdict = if meets(&self.targets, &best) {
            "meets the targets"
        } else {
            "misses"
        };
        self.step(format!(
            "{q}: best configuration {} {verdict}",
            describe(&best)
        ));
        Ok(meets(&self.targets, &best).then_some(best))
    }

    /// The CPU: the base settings with a `kv` cache (q8_0 only where f16 missed memory).
    fn cpu_probe(&mut self, q: Quant, kv: &str) -> Result<Option<Probe>> {
        if kv != "f16" {
            let f16_missed_memory = self.probes.iter().any(|p| {
                p.quant == q
                    && p.params.type_k == "f16"
                    && crate::tune::margins(&self.targets, p)
                        .iter()
                        .any(|m| m.target == "memory" && !m.met)
            });
            if !f16_missed_memory {
                return Ok(None);
            }
        }
        let reps = self.probe_reps;
        let kv = kv.to_string();
        let c = self.cell(q, &move |c| {
            c.repetitions = reps;
            (c.type_k, c.type_v) = (kv.clone(), kv.clone());
            if kv != "f16" {
                c.flash_attn = FlashAttn::On;
            }
        });
        Ok(self.measure(vec![c], false)?.pop())
    }

    /// Measures the winner of a quant again with the full repetitions (and once more when a
    /// target is met by less than [`NEAR`]); whether it still meets the targets.
    fn finalize(&mut self, p: Probe) -> Result<bool> {
        let reps = self.model.params.repetitions;
        let mut last = None;
        for round in 0..2 {
            let params = p.params.clone();
            let c = self.cell(p.quant, &move |c| {
                *c = CellParams {
                    repetitions: reps,
                    ..params.clone()
                };
            });
            let measured = self.measure(vec![c], true)?.pop();
            if self.session.interrupted() {
                // what came back is not a full measurement of this round
                return Ok(false);
            }
            let Some(full) = measured else {
                return Ok(false);
            };
            let near = crate::tune::margins(&self.targets, &full)
                .iter()
                .any(|m| m.met && m.margin < NEAR);
            let ok = meets(&self.targets, &full);
            self.step(format!(
                "{}: full measurement ({reps} repetitions) {}",
                full.quant,
                if ok { "confirms it" } else { "misses a target" }
            ));
            last = Some(ok);
            if !(ok && near) || round == 1 {
                break;
            }
            self.step("within 5% of a target: measured once more".into());
        }
        Ok(last == Some(true))
    }

    /// A served probe of `p`'s configuration at the target rate: whether `[slo]` holds.
    fn served(&mut self, p: &Probe) -> Result<Probe> {
        let rate = self.targets.rate.expect("asked");
        let spec = self
            .model
            .serve
            .clone()
            .unwrap_or_else(|| self.matrix.workload.clone());
        let params = p.params.clone();
        let c = self.cell(p.quant, &move |c| {
            *c = CellParams {
                prompt: String::new(),
                n_prompt: 0,
                n_gen: 0,
                repetitions: 0,
                warmup: 0,
                n_depth: 0,
                serve: Some(crate::plan::ServeParams {
                    workload: spec.workload.clone(),
                    load: crate::traffic::Load::Rate(rate),
                    searched_slo: None,
                }),
                ..params.clone()
            };
        });
        self.step(format!(
            "{}: served at {rate} requests/s under the workload",
            p.quant
        ));
        let served = self.measure(vec![c], false)?.pop();
        let mut out = p.clone();
        out.slo_met = Some(served.and_then(|s| s.slo_met) == Some(true));
        Ok(out)
    }
}

/// The GPU side: how many layers fit the budget, by the capacity model and by measuring.
impl Search<'_> {
    /// The file size and shape of `q`: its file when it was obtained, else the nominal ones of
    /// a synthetic preset.
    fn size_and_shape(&self, q: Quant) -> Option<(u64, crate::capacity::Shape)> {
        let origin = self
            .session
            .report
            .cells
            .iter()
            .filter(|c| c.quant == q)
            .find_map(|c| c.origin.clone());
        if let Some(o) = origin {
            let meta = std::fs::File::open(&o.path)
                .ok()
                .and_then(|mut f| crate::gguf::read_metadata(&mut f).ok())?;
            return crate::capacity::Shape::from_metadata(&meta).map(|s| (o.size_bytes, s));
        }
        crate::acquire::nominal(&self.matrix, 0, q)
    }

    fn n_layer(&self) -> Result<Option<u64>> {
        Ok(self
            .base
            .keys()
            .find_map(|q| self.size_and_shape(*q))
            .map(|(_, s)| s.n_layer))
    }

    /// The memory budget: `--memory`, else the free memory of the GPUs.
    fn budget(&self) -> u64 {
        self.targets.memory_bytes.unwrap_or_else(|| {
            self.session
                .report
                .environment
                .llama
                .llama_gpus()
                .iter()
                .map(|d| d.memory_free_bytes)
                .sum()
        })
    }

    /// Estimated device memory of `q` with `layers` of its `n_layer + 1` offloadable layers
    /// (the output layer last) on the GPU and a `kv` cache.
    fn estimate(&self, q: Quant, kv: &str, layers: u64) -> Option<u64> {
        let (size, shape) = self.size_and_shape(q)?;
        let p = &self.base[&q].params;
        let n_ctx = u64::from(p.context_tokens(0)?);
        let e = crate::capacity::estimate(size, &shape, n_ctx, u64::from(p.n_ubatch), kv, kv, true);
        let all = shape.n_layer + 1;
        let share = layers.min(all) as f64 / all as f64;
        let kv_share = layers.min(shape.n_layer) as f64 / shape.n_layer.max(1) as f64;
        Some(
            (e.weights_bytes as f64 * share + e.kv_bytes as f64 * kv_share) as u64
                + e.compute_bytes
                + e.overhead_bytes,
        )
    }

    /// The most layers the estimate fits in the budget (`None`: no shape known).
    fn estimated_layers(&self, q: Quant, kv: &str) -> Option<u64> {
        let n = self.size_and_shape(q)?.1.n_layer + 1;
        let budget = self.budget();
        Some(
            (0..=n)
                .rev()
                .find(|&k| self.estimate(q, kv, k).is_some_and(|e| e <= budget))
                .unwrap_or(0),
        )
    }

    /// `n_gpu_layers` for `layers` (all of them: `"all"`).
    fn layers(&self, q: Quant, layers: u64) -> GpuLayers {
        match self.size_and_shape(q) {
            Some((_, s)) if layers > s.n_layer => GpuLayers::All,
            _ => GpuLayers::N(layers as u32),
        }
    }

    /// The quality cells' placement on a GPU: the most layers the estimate fits.
    fn gpu_layers_guess(&self, q: Quant, kv: &str) -> Option<GpuLayers> {
        if !self.gpu() {
            return None;
        }
        self.estimated_layers(q, kv).map(|k| self.layers(q, k))
    }

    /// The fastest configuration of `q` with a `kv` cache on the GPU: the most layers that fit
    /// the budget, measured — first where the estimate puts the limit, then bisecting down
    /// while a probe fails or holds more memory than the budget.
    fn most_layers(&mut self, q: Quant, kv: &str) -> Result<Option<Probe>> {
        let Some(top) = self.estimated_layers(q, kv) else {
            return Ok(None);
        };
        let budget = self.budget();
        let reps = self.probe_reps;
        let probe_at = |s: &mut Self, k: u64| -> Result<Option<Probe>> {
            let ngl = s.layers(q, k);
            let kv = kv.to_string();
            let c = s.cell(q, &move |c| {
                c.repetitions = reps;
                c.n_gpu_layers = ngl;
                (c.type_k, c.type_v) = (kv.clone(), kv.clone());
                if kv != "f16" {
                    c.flash_attn = FlashAttn::On;
                }
            });
            Ok(s.measure(vec![c], false)?.pop())
        };
        let fits = |p: &Option<Probe>| {
            p.as_ref()
                .is_some_and(|p| p.ok && p.mem_bytes.is_none_or(|m| m <= budget))
        };
        let first = probe_at(self, top)?;
        if fits(&first) {
            return Ok(first);
        }
        self.step(format!(
            "{q} kv {kv}: {top} layers do not fit after all: bisecting"
        ));
        let (mut lo, mut hi) = (0u64, top.saturating_sub(1));
        let mut best = None;
        while lo <= hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let p = probe_at(self, mid)?;
            if fits(&p) {
                best = p;
                lo = mid + 1;
            } else if mid == 0 {
                break;
            } else {
                hi = mid - 1;
            }
        }
        Ok(best)
    }
}

/// Quant names joined: `F16, Q8_0`.
fn names(q: &[Quant]) -> String {
    q.iter()
        .map(|q| q.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A probe's configuration and figures in one line.
fn describe(p: &Probe) -> String {
    let f = |v: Option<f64>| v.map_or("–".into(), |x| crate::report::md::sig(x, 4));
    format!(
        "(ngl {}, kv {}, fa {}): {} tok/s, TTFT {} ms, {}",
        p.params.n_gpu_layers,
        p.params.type_k,
        p.params.flash_attn.name(),
        f(p.decode_tok_s),
        f(p.ttft_ms),
        p.mem_bytes.map_or("–".into(), crate::report::md::bytes)
    )
}

impl Search<'_> {
    /// The answer, with the command and the models.toml entry of the recommendation.
    fn outcome(&self) -> Outcome {
        let mut o = Outcome {
            model: self.model.name.clone(),
            targets: self.targets.clone(),
            measured_cells: self
                .probes
                .iter()
                .filter(|p| !self.from.contains_key(&p.key))
                .count(),
            grid_cells: self.grid,
            probes: self.probes.clone(),
            steps: self.steps.clone(),
            ..Default::default()
        };
        o.decide();
        if let Some(r) = &o.recommendation {
            let file = self
                .session
                .report
                .cells
                .iter()
                .find(|c| c.key == r.key)
                .and_then(|c| c.origin.as_ref())
                .map(|o| o.path.clone())
                .unwrap_or_default();
            let np = r.params.n_parallel.max(1);
            let slot = r.params.context_tokens(0).unwrap_or(0) / np;
            o.command = Some(crate::serving::server::command_line(
                "llama-server",
                &file,
                &r.params,
                slot,
            ));
            o.file = Some(file);
            o.toml_entry = Some(toml_entry(&self.model, r));
        }
        o
    }
}

/// The models.toml entry that pins the recommended configuration (so the nightly gate
/// watches it).
fn toml_entry(m: &ModelSpec, r: &Probe) -> String {
    let source = match &m.source {
        Source::Synthetic { preset, seed } => {
            format!(
                "synthetic = \"{}\"{}",
                preset.name,
                if *seed != 0 {
                    format!("\nseed = {seed}")
                } else {
                    String::new()
                }
            )
        }
        Source::Path { template, .. } => format!("path = {:?}", template),
        Source::Hf {
            repo,
            revision,
            file,
            ..
        } => format!(
            "hf = {repo:?}\nrevision = {revision:?}{}",
            file.as_ref()
                .map_or(String::new(), |f| format!("\nfile = {f:?}"))
        ),
        Source::Endpoint { url, .. } => format!("endpoint = {url:?}"),
    };
    let p = &r.params;
    let mut s = format!(
        "[[model]]\nname = \"{}-tuned\"\n{source}\nquants = [\"{}\"]\nn_gpu_layers = {}\nflash_attn = \"{}\"\ntype_k = \"{}\"\ntype_v = \"{}\"\nn_batch = {}\nn_ubatch = {}\nn_threads = {}\n",
        m.name,
        r.quant,
        match p.n_gpu_layers {
            GpuLayers::All => "\"all\"".to_string(),
            GpuLayers::N(n) => n.to_string(),
        },
        p.flash_attn.name(),
        p.type_k,
        p.type_v,
        p.n_batch,
        p.n_ubatch,
        p.n_threads
    );
    if p.n_depth > 0 {
        s += &format!("n_depth = {}\n", p.n_depth);
    }
    if p.n_parallel > 1 {
        s += &format!("n_parallel = {}\n", p.n_parallel);
    }
    s
}

/// The answer on stderr, and with `--format json` one object on stdout.
fn print(ctx: &Ctx, args: &TuneArgs, o: &Outcome, report: &crate::results::Report) -> Result<()> {
    let dir = args
        .resume
        .clone()
        .unwrap_or_else(|| args.out.join(&report.run_id));
    ctx.printer
        .line(&crate::report::tune_section::text(o, &dir));
    if args.format == TuneFormat::Json {
        ctx.printer
            .stdout(&serde_json::to_string_pretty(&json(o, &dir))?);
    }
    Ok(())
}

/// The `--format json` object.
fn json(o: &Outcome, dir: &Path) -> serde_json::Value {
    let rec = o.recommendation.as_ref().map(|r| {
        let mut v = serde_json::to_value(&r.params).unwrap_or_default();
        v["quant"] = serde_json::json!(r.quant);
        v["file"] = serde_json::json!(o.file);
        v["key"] = serde_json::json!(r.key);
        v["decode_tok_s"] = serde_json::json!(r.decode_tok_s);
        v["ttft_ms"] = serde_json::json!(r.ttft_ms);
        v["kld_mean"] = serde_json::json!(r.kld_mean);
        v["mem_bytes"] = serde_json::json!(r.mem_bytes);
        v["command"] = serde_json::json!(o.command);
        v["models_toml"] = serde_json::json!(o.toml_entry);
        v
    });
    let met: serde_json::Map<String, serde_json::Value> = o
        .margins
        .iter()
        .map(|m| (m.target.clone(), serde_json::json!({"value": m.value, "limit": m.limit, "met": m.met, "margin": if m.margin.is_finite() { Some(m.margin) } else { None }})))
        .collect();
    serde_json::json!({
        "model": o.model,
        "recommendation": rec,
        "met": {"all": o.met, "targets": met},
        "closest": o.closest,
        "measured_cells": o.measured_cells,
        "grid_cells": o.grid_cells,
        "pareto": o.probes.iter().filter(|p| o.pareto.contains(&p.key)).collect::<Vec<_>>(),
        "probes": o.probes,
        "steps": o.steps,
        "run_dir": dir,
    })
}
