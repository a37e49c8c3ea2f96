//! llama.cpp's own tools as oracles: quantbench and `llama-perplexity`, `llama-bench` and
//! `llama-batched-bench` (built from the same llama.cpp sources by
//! `scripts/build-llama-server.sh`; `scripts/test` names their folder in
//! `QUANTBENCH_LLAMA_TOOLS`) measure the same tiny files with the same corpus, context, threads
//! and sizes, and the figures must agree:
//!
//! - quality: every figure llama-perplexity prints, to the digits it prints, once the one
//!   systematic difference is accounted for (its base run stores the reference's
//!   log-probabilities as 16-bit integers; the bound is computed from that file);
//! - speed and load: the same configuration and token counts, and rates within a factor that
//!   holds on a busy machine (the quiet-machine ratios, target within 2%, are for a report
//!   measured on a quiet machine: not yet written, issue 23).
//!
//! The tools run in a folder holding links to the backend modules quantbench loaded (its
//! `environment.llama.modules`), so both sides run the same kernels.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::common::{cells, corpus, json, stderr, Scratch};

/// The folder of the oracle binaries.
fn tools() -> PathBuf {
    let dir = std::env::var_os("QUANTBENCH_LLAMA_TOOLS").unwrap_or_else(|| {
        panic!(
            "QUANTBENCH_LLAMA_TOOLS is not set: run the tests with scripts/test (it builds \
             llama-bench, llama-perplexity and llama-batched-bench with \
             scripts/build-llama-server.sh), or set it to the folder that script prints"
        )
    });
    PathBuf::from(dir)
}

/// The oracle tools, run from a folder of links to the backend modules of a quantbench report.
struct Oracle {
    bin: PathBuf,
    modules: tempfile::TempDir,
}

impl Oracle {
    fn new(report: &Value) -> Self {
        let modules = tempfile::tempdir().unwrap();
        let loaded = report["environment"]["llama"]["modules"]
            .as_array()
            .unwrap();
        assert!(!loaded.is_empty(), "the report names no backend module");
        for m in loaded {
            let m = Path::new(m.as_str().unwrap());
            std::os::unix::fs::symlink(m, modules.path().join(m.file_name().unwrap())).unwrap();
        }
        Oracle {
            bin: tools(),
            modules,
        }
    }

    /// llama-perplexity's output and log (the figures go to one, the final estimate to the
    /// other).
    fn perplexity(&self, args: &[&str]) -> String {
        let out = self.run("llama-perplexity", args);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Runs `tool` with `args`; fails the test with its output unless it succeeds.
    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let out = std::process::Command::new(self.bin.join(tool))
            .args(args)
            .current_dir(self.modules.path())
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// The figures of one llama-perplexity run: each printed line's first number (and the one
/// after `±` where there is one), by the line's label.
fn printed(log: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in log.lines() {
        let Some((label, rest)) = line.split_once(':') else {
            continue;
        };
        let label = label.split_whitespace().collect::<Vec<_>>().join(" ");
        let number = |s: &str| s.trim().trim_end_matches('%').trim().parse::<f64>().ok();
        let mut parts = rest.split('±');
        if let Some(v) = parts.next().and_then(number) {
            out.push((label.clone(), v));
            if let Some(e) = parts.next().and_then(number) {
                out.push((format!("{label} err"), e));
            }
        }
    }
    out
}

fn figure(figures: &[(String, f64)], label: &str) -> f64 {
    figures
        .iter()
        .find(|(l, _)| l == label)
        .unwrap_or_else(|| panic!("llama-perplexity printed no {label:?}; it printed {figures:?}"))
        .1
}

/// What the base file of `llama-perplexity --kl-divergence-base` (the reference's
/// log-probabilities of every scored position as 16-bit integers: a `scale` and `min_log_prob`
/// per position, then `round((logit - min_logit) / scale)`) changes in the figures of the KL
/// run, read from the file itself.
#[derive(Debug)]
struct Storage {
    /// Scored positions.
    tokens: usize,
    /// The largest step of a stored log-probability: each is within half of it.
    max_scale: f64,
    /// Per position, `Σ exp(stored log p) − 1` over the entries the KL sum uses (above −16):
    /// to first order what the rounding adds to that position's KL divergence (the exact
    /// distribution sums to 1). Their mean and largest magnitude.
    mean_norm_error: f64,
    max_norm_error: f64,
    /// Positions whose two largest stored log-probabilities are within one step: their top
    /// token may differ from the exact reference's.
    top_ties: usize,
}

fn storage(path: &Path) -> Storage {
    let b = std::fs::read(path).unwrap();
    assert_eq!(
        &b[..8],
        b"_logits_",
        "{} is not a KL base file",
        path.display()
    );
    let int = |at: usize| i32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let (n_ctx, n_vocab, n_chunk) = (int(8), int(12), int(16));
    let nv = 2 * n_vocab.div_ceil(2) + 4;
    let per_chunk = n_ctx - 1 - n_ctx / 2;
    let mut at = 20 + 4 * n_ctx * n_chunk;
    let mut s = Storage {
        tokens: per_chunk * n_chunk,
        max_scale: 0.0,
        mean_norm_error: 0.0,
        max_norm_error: 0.0,
        top_ties: 0,
    };
    for _ in 0..s.tokens {
        let rec = &b[at..at + 2 * nv];
        at += 2 * nv;
        let f = |i: usize| f32::from_le_bytes(rec[i..i + 4].try_into().unwrap());
        let (scale, min_log_prob) = (f(0), f(4));
        let values: Vec<u16> = rec[8..8 + 2 * n_vocab]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let sum: f64 = values
            .iter()
            .map(|&v| scale * f32::from(v) + min_log_prob)
            .filter(|&lp| lp > -16.0)
            .map(|lp| f64::from(lp).exp())
            .sum();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        if sorted[n_vocab - 1] - sorted[n_vocab - 2] <= 1 {
            s.top_ties += 1;
        }
        s.max_scale = s.max_scale.max(f64::from(scale));
        s.mean_norm_error += (sum - 1.0) / s.tokens as f64;
        s.max_norm_error = s.max_norm_error.max((sum - 1.0).abs());
    }
    assert_eq!(at, b.len(), "{}: unexpected length", path.display());
    s
}

/// Asserts `ours` is `theirs` (as printed, `digits` after the point) within half a printed unit
/// plus `bound`.
fn agree(what: &str, ours: f64, theirs: f64, digits: i32, bound: f64) {
    let tol = 0.5 * 10f64.powi(-digits) + bound;
    assert!(
        (ours - theirs).abs() <= tol,
        "{what}: quantbench {ours} vs llama-perplexity {theirs} (allowed {tol:e})"
    );
}

/// Every quant's quality figures equal llama-perplexity's KL-divergence run on the same
/// files, corpus, context and chunks.
#[test]
fn quality_figures_equal_llama_perplexity() {
    let s = Scratch::new();
    std::fs::write(s.path().join("corpus.txt"), corpus(1)).unwrap();
    s.config(
        "schema = 1\n[defaults]\nquants = [\"F16\", \"Q8_0\", \"Q4_K_M\", \"Q2_K\"]\nn_gen = 4\n\
         n_prompt = 8\nrepetitions = 1\nwarmup = 0\nquality = true\nquality_ctx = 128\n\
         quality_chunks = 4\nquality_corpus = \"corpus.txt\"\n\
         [[model]]\nname = \"tiny\"\nsynthetic = \"tiny-llama\"\n",
    );
    let out = s.run(&["--no-plots"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&s.run_dir().join("results.json"));
    let oracle = Oracle::new(&report);
    let file = |c: &Value| c["origin"]["path"].as_str().unwrap().to_string();
    let by_quant = |q: &str| cells(&report).iter().find(|c| c["quant"] == q).unwrap();
    let base = s.path().join("base.kld");
    let (f16_file, base_file) = (file(by_quant("F16")), base.to_str().unwrap());
    let corpus_file = s.path().join("corpus.txt");
    let log = oracle.perplexity(&[
        "-m",
        &f16_file,
        "-f",
        corpus_file.to_str().unwrap(),
        "-c",
        "128",
        "--chunks",
        "4",
        "-t",
        "2",
        "--kl-divergence-base",
        base_file,
    ]);
    let st = storage(&base);
    // the reference's own perplexity, before storage: "Final estimate: PPL = 2177.8872 +/- …"
    let final_ppl: f64 = log
        .lines()
        .find_map(|l| l.split("Final estimate: PPL = ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("llama-perplexity printed no final estimate");
    let f16 = &by_quant("F16")["quality"];
    agree("F16 ppl", f16["ppl"].as_f64().unwrap(), final_ppl, 4, 0.0);
    for q in ["Q8_0", "Q4_K_M", "Q2_K"] {
        let cell = by_quant(q);
        let log = oracle.perplexity(&[
            "-m",
            &file(cell),
            "--kl-divergence-base",
            base_file,
            "--kl-divergence",
            "-t",
            "2",
        ]);
        let figures = printed(&log);
        assert!(
            figures.iter().any(|(l, _)| l == "Mean KLD"),
            "{q}: llama-perplexity printed no statistics:\n{log}"
        );
        same_quality(q, &cell["quality"], &figures, &st);
    }
}

/// One quant's figures against llama-perplexity's printed ones. The bounds beyond the printed
/// digits, all from the base file:
/// - its reference log-probabilities are within `scale/2` of the exact ones, so
///   `ln PPL(base)` (and the ratio) within `max_scale/2`;
/// - each position's KL divergence is off by `Σ p·e` (the rounding `e` of each stored
///   log-probability, weighted by its probability: the storage's normalisation error, read from
///   the file) plus `Σ p·e·ln(p/q)`, at most `max_scale/2 · √(2·KLD)` for close distributions;
/// - `PPL(Q)` only by llama-perplexity's 32-bit per-token `nll` (relative 1e-6);
/// - the reference's probability of the next token (in `Δp`) within a relative `max_scale/2`;
/// - the top token may differ at positions whose two best stored values tie.
fn same_quality(q: &str, ours: &Value, theirs: &[(String, f64)], st: &Storage) {
    let v = |k: &str| {
        ours[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{q}: no {k}: {ours}"))
    };
    assert_eq!(
        ours["tokens"].as_u64(),
        Some(st.tokens as u64),
        "{q}: scored tokens"
    );
    let half_step = st.max_scale / 2.0;
    let ppl = v("ppl");
    agree(
        &format!("{q} PPL(Q)"),
        ppl,
        figure(theirs, "Mean PPL(Q)"),
        6,
        ppl * 1e-6,
    );
    let ppl_ref = v("ppl_ref");
    let base_bound = ppl_ref * half_step;
    agree(
        &format!("{q} PPL(base)"),
        ppl_ref,
        figure(theirs, "Mean PPL(base)"),
        6,
        base_bound,
    );
    let ratio_bound = v("ppl_ratio") * (half_step + 2e-6);
    let ratio = figure(theirs, "Mean PPL(Q)/PPL(base)");
    agree(
        &format!("{q} ppl_ratio"),
        v("ppl_ratio"),
        ratio,
        6,
        ratio_bound,
    );
    let ln_ratio = figure(theirs, "Mean ln(PPL(Q)/PPL(base))");
    agree(
        &format!("{q} ln_ppl_ratio"),
        v("ln_ppl_ratio"),
        ln_ratio,
        6,
        half_step + 2e-6,
    );
    let kld_bound = |kld: f64| st.max_norm_error + half_step * (2.0 * kld.max(0.0)).sqrt();
    let mean_bound = st.mean_norm_error.abs() + half_step * (2.0 * v("kld_max")).sqrt();
    agree(
        &format!("{q} kld_mean"),
        v("kld_mean"),
        figure(theirs, "Mean KLD"),
        6,
        mean_bound,
    );
    for (key, label) in [
        ("kld_max", "Maximum KLD"),
        ("kld_p99", "99.0% KLD"),
        ("kld_median", "Median KLD"),
    ] {
        let bound = kld_bound(v(key));
        agree(
            &format!("{q} {key}"),
            v(key),
            figure(theirs, label),
            6,
            bound,
        );
    }
    let ties = st.top_ties as f64 / st.tokens as f64;
    let top1 = figure(theirs, "Same top p") / 100.0;
    agree(&format!("{q} top1_agree"), v("top1_agree"), top1, 5, ties);
    let dp_rms = figure(theirs, "RMS Δp") / 100.0;
    agree(&format!("{q} dp_rms"), v("dp_rms"), dp_rms, 5, half_step);
}

/// The rows of a run's results.csv, as maps from column name to value.
fn csv_rows(dir: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut rdr = csv::Reader::from_path(dir.join("results.csv")).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            header
                .iter()
                .cloned()
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect()
}

/// llama-bench's `flash_attn` (`-1` auto, `0` off, `1` on) as quantbench names it.
fn fa_name(v: &Value) -> &'static str {
    match v.as_i64() {
        Some(-1) => "auto",
        Some(0) => "off",
        Some(1) => "on",
        _ => panic!("llama-bench flash_attn {v}"),
    }
}

/// Asserts that `ours` and `theirs` are within a factor `f` of each other: loose enough for a
/// busy machine, tight enough to catch a test that measures something else (a lost thread,
/// sampling inside tg, a rate off by the number of sequences).
fn within_factor(what: &str, ours: f64, theirs: f64, f: f64) {
    assert!(
        agree_within(ours, theirs, f),
        "{what}: quantbench {ours:.1} vs llama.cpp's tool {theirs:.1} tok/s (more than {f}× apart)"
    );
}

/// Whether `ours` and `theirs` are within a factor `f` of each other.
fn agree_within(ours: f64, theirs: f64, f: f64) -> bool {
    ours > 0.0 && theirs > 0.0 && ours / theirs < f && theirs / ours < f
}

/// Rounds of a speed comparison at most: on a busy machine the best sample of each side comes
/// closer to the machine's speed with every round, so the rounds go on (interleaved) until the
/// best figures agree, at least [`MIN_ROUNDS`] and at most this many; a systematic difference
/// never agrees.
const MAX_ROUNDS: usize = 8;
const MIN_ROUNDS: usize = 2;

/// The speed oracles one at a time: two of them measuring at once on a small machine would
/// each be the other's busy machine.
static SPEED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A cell's pp and tg against llama-bench on the same file, threads, sizes and repetitions,
/// run interleaved (rounds until they agree, [`MAX_ROUNDS`] at most): the same configuration,
/// token counts and number of samples in every round, and rates within a factor of 3 (the best
/// sample of each side, the one least slowed by whatever else the machine runs).
#[test]
fn pp_and_tg_agree_with_llama_bench() {
    let s = Scratch::new();
    s.config(
        "schema = 1\n[defaults]\nquants = [\"F16\", \"Q4_K_M\"]\nn_prompt = 256\nn_gen = 32\n\
         repetitions = 3\nwarmup = 1\nn_threads = 2\nn_gpu_layers = 99\n\
         [[model]]\nname = \"tiny\"\nsynthetic = \"tiny-llama\"\n",
    );
    let mut best: std::collections::BTreeMap<(String, &str), (f64, f64)> = Default::default();
    let mut oracle = None;
    let _one = SPEED.lock().unwrap_or_else(|e| e.into_inner());
    for round in 0..MAX_ROUNDS {
        let out = s.run(&["--no-plots", "--out", &format!("r{round}")]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let dir = s.run_dir_in(&format!("r{round}"));
        let report = json(&dir.join("results.json"));
        let oracle = oracle.get_or_insert_with(|| Oracle::new(&report));
        for row in csv_rows(&dir) {
            let file = row["file"].clone();
            let out = oracle.run(
                "llama-bench",
                &[
                    "-m", &file, "-p", "256", "-n", "32", "-r", "3", "-t", "2", "-ngl", "99", "-b",
                    "2048", "-ub", "512", "-fa", "auto", "-ctk", "f16", "-ctv", "f16", "-o",
                    "json",
                ],
            );
            let tests: Value = serde_json::from_slice(&out.stdout).unwrap();
            for t in tests.as_array().unwrap() {
                let (test, ours) = if t["n_gen"] == 0 {
                    ("pp", "pp_tok_s")
                } else {
                    ("tg", "tg_tok_s")
                };
                same_bench_configuration(&row, t, test);
                let theirs = t["samples_ts"].as_array().unwrap();
                let their_best = theirs
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .fold(0.0, f64::max);
                let our_best: f64 = cells(&report)
                    .iter()
                    .find(|c| c["origin"]["path"] == file.as_str())
                    .unwrap()["samples"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x[ours].as_f64().unwrap())
                    .fold(0.0, f64::max);
                let b = best.entry((row["quant"].clone(), test)).or_default();
                *b = (b.0.max(our_best), b.1.max(their_best));
            }
        }
        if round + 1 >= MIN_ROUNDS && best.values().all(|(o, t)| agree_within(*o, *t, 3.0)) {
            break;
        }
    }
    assert_eq!(best.len(), 4, "{best:?}");
    for ((quant, test), (ours, theirs)) in &best {
        within_factor(&format!("{quant} {test}"), *ours, *theirs, 3.0);
    }
}

/// One llama-bench test (`pp` or `tg`) against the quantbench cell of the same file: the same
/// model, context parameters, tokens and number of samples.
fn same_bench_configuration(
    row: &std::collections::BTreeMap<String, String>,
    t: &Value,
    test: &str,
) {
    let file = &row["file"];
    for key in [
        "model_size",
        "model_n_params",
        "n_batch",
        "n_ubatch",
        "n_threads",
        "n_gpu_layers",
    ] {
        assert_eq!(row[key], t[key].to_string(), "{file} {test}: {key}");
    }
    for key in ["type_k", "type_v"] {
        assert_eq!(row[key], t[key].as_str().unwrap(), "{file} {test}: {key}");
    }
    assert_eq!(
        row["flash_attn"],
        fa_name(&t["flash_attn"]),
        "{file} {test}"
    );
    let tokens = if test == "pp" { "n_prompt" } else { "n_gen" };
    assert_eq!(
        row[tokens],
        t[tokens].to_string(),
        "{file} {test}: {tokens}"
    );
    let samples = t["samples_ts"].as_array().unwrap().len();
    assert_eq!(
        row["repetitions"],
        samples.to_string(),
        "{file} {test}: samples"
    );
}

/// Cells of several sequences against llama-batched-bench (`-kvu`: one unified cache, as
/// quantbench's) on the same file, B, prompt and generation lengths, batch sizes and threads:
/// the same configuration and KV cells, and S_PP / S_TG within a factor of 3 of
/// `pp_throughput_tok_s` / `throughput_tok_s` (the best of interleaved rounds until they agree,
/// [`MAX_ROUNDS`] at most).
#[test]
fn load_agrees_with_llama_batched_bench() {
    let s = Scratch::new();
    s.config(
        "schema = 1\n[defaults]\nquants = [\"Q8_0\"]\nn_prompt = 32\nn_gen = 32\nn_parallel = [2, 4]\n\
         repetitions = 2\nwarmup = 1\nn_threads = 2\nn_gpu_layers = 99\n\
         [[model]]\nname = \"tiny\"\nsynthetic = \"tiny-llama\"\n",
    );
    let mut best: std::collections::BTreeMap<String, [f64; 4]> = Default::default();
    let mut oracle = None;
    let _one = SPEED.lock().unwrap_or_else(|e| e.into_inner());
    for round in 0..MAX_ROUNDS {
        let out = s.run(&["--no-plots", "--out", &format!("r{round}")]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let dir = s.run_dir_in(&format!("r{round}"));
        let report = json(&dir.join("results.json"));
        let oracle = oracle.get_or_insert_with(|| Oracle::new(&report));
        let rows = csv_rows(&dir);
        let n_ctx = rows
            .iter()
            .map(|r| r["n_ctx"].parse::<u32>().unwrap())
            .max()
            .unwrap();
        let out = oracle.run(
            "llama-batched-bench",
            &[
                "-m",
                &rows[0]["file"],
                "-c",
                &n_ctx.to_string(),
                "-b",
                "2048",
                "-ub",
                "512",
                "-npp",
                "32",
                "-ntg",
                "32",
                "-npl",
                "2,4",
                "-kvu",
                "-t",
                "2",
                "-ngl",
                "99",
                "-fa",
                "auto",
                "--output-format",
                "jsonl",
            ],
        );
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{}", String::from_utf8_lossy(&out.stdout));
        for t in &lines {
            let b = t["pl"].to_string();
            let row = rows.iter().find(|r| r["n_parallel"] == b).unwrap();
            for (ours, theirs) in [
                ("n_prompt", "pp"),
                ("n_gen", "tg"),
                ("n_batch", "n_batch"),
                ("n_ubatch", "n_ubatch"),
                ("n_threads", "n_threads"),
            ] {
                assert_eq!(
                    row[ours],
                    t[theirs].to_string(),
                    "B = {b}: {ours} vs {theirs}"
                );
            }
            // the KV cells both sides fill: B × (prompt + generated), llama-batched-bench's
            // n_kv; quantbench's n_ctx is llama.cpp's context as created (llama_n_ctx), which
            // llama.cpp may pad beyond what was asked
            let num = |k: &str| row[k].parse::<u64>().unwrap();
            let cells = num("n_parallel") * (num("n_prompt") + num("n_gen"));
            assert_eq!(t["n_kv"].as_u64(), Some(cells), "B = {b}: n_kv");
            assert!(
                num("n_ctx") >= cells,
                "B = {b}: n_ctx {} < {cells}",
                row["n_ctx"]
            );
            let e = best.entry(b).or_default();
            let num = |k: &str| row[k].parse::<f64>().unwrap();
            let tb = |k: &str| t[k].as_f64().unwrap();
            *e = [
                e[0].max(num("throughput_tok_s_max")),
                e[1].max(tb("speed_tg")),
                e[2].max(num("pp_throughput_tok_s_max")),
                e[3].max(tb("speed_pp")),
            ];
        }
        let agreed = best.values().all(|[tg, s_tg, pp, s_pp]| {
            agree_within(*tg, *s_tg, 3.0) && agree_within(*pp, *s_pp, 3.0)
        });
        if round + 1 >= MIN_ROUNDS && agreed {
            break;
        }
    }
    for (b, [tg, s_tg, pp, s_pp]) in &best {
        within_factor(&format!("B = {b} S_TG"), *tg, *s_tg, 3.0);
        within_factor(&format!("B = {b} S_PP"), *pp, *s_pp, 3.0);
    }
}
