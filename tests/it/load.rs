//! Throughput under load on the `tiny` synthetic model with real llama.cpp: several sequences
//! in one context (llama-batched-bench's definitions), a context that already holds tokens,
//! sweeps of several parameters, the price per token, and bad load settings.

use crate::common::{cells, json, stderr, Scratch};
use serde_json::Value;

/// The tiny model's Q8_0 with `defaults`, over small sizes and 2 repetitions unless they set
/// their own.
fn config(defaults: &str) -> String {
    let mut d = String::from("quants = [\"Q8_0\"]\n");
    for (key, value) in [
        ("n_gen", "16"),
        ("n_prompt", "32"),
        ("repetitions", "2"),
        ("warmup", "1"),
    ] {
        if !defaults.lines().any(|l| l.starts_with(&format!("{key} ="))) {
            d += &format!("{key} = {value}\n");
        }
    }
    format!(
        "schema = 1\n[defaults]\n{d}{defaults}\n[[model]]\nname = \"tiny\"\nsynthetic = \"tiny\"\n"
    )
}

fn run_ok(s: &Scratch, args: &[&str]) -> Value {
    let out = s.run(args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    json(&s.run_dir().join("results.json"))
}

fn cell(r: &Value, pred: impl Fn(&Value) -> bool) -> &Value {
    let c = cells(r).iter().find(|c| pred(&c["params"])).unwrap();
    assert_eq!(c["status"], "ok", "{c}");
    c
}

fn mean(c: &Value, metric: &str) -> f64 {
    c["metrics"][metric]["mean"].as_f64().unwrap()
}

#[test]
fn parallel_sequences_raise_throughput_and_memory() {
    let s = Scratch::new();
    // one thread and the best of 10 repetitions: what holds on a busy 2-core machine (5 were
    // not enough with the whole suite and a default run beside it)
    s.config(&config(
        "n_parallel = [1, 4]\nn_threads = 1\nrepetitions = 10\nn_gen = 32",
    ));
    let best = |c: &Value| {
        c["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["throughput_tok_s"].as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    // Four sequences decoded together: more tokens per second in all, each step a batch of 4.
    // A busy machine can slow every repetition of one cell (seen in CI: the whole suite and
    // other builds beside it), so the run is repeated, up to 3 times, until the best of the
    // four-sequence cell is above the best of the one-sequence cell; batching that does not
    // raise throughput fails all three.
    let mut tries = Vec::new();
    let (r, dir) = loop {
        let name = format!("try{}", tries.len() + 1);
        let out = s.run(&["--usd-per-hour", "3.5", "--out", &name]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let r = json(&s.run_dir_in(&name).join("results.json"));
        let (b1, b4) = (
            best(cell(&r, |p| p["n_parallel"] == 1)),
            best(cell(&r, |p| p["n_parallel"] == 4)),
        );
        tries.push((b1, b4));
        if b4 > b1 {
            break (r, s.run_dir_in(&name));
        }
        assert!(
            tries.len() < 3,
            "best throughput (1 sequence, 4 sequences) in tok/s, per run: {tries:?}"
        );
    };
    let one = cell(&r, |p| p["n_parallel"] == 1);
    let four = cell(&r, |p| p["n_parallel"] == 4);
    // one sequence: the aggregate is the tg speed itself
    assert_eq!(mean(one, "throughput_tok_s"), mean(one, "tg_tok_s"));
    let t4 = mean(four, "throughput_tok_s");
    for s in four["samples"].as_array().unwrap() {
        let (tg, all) = (
            s["tg_tok_s"].as_f64().unwrap(),
            s["throughput_tok_s"].as_f64().unwrap(),
        );
        assert!(
            (all - 4.0 * tg).abs() <= 1e-6 * all,
            "S_TG = B × n_gen / t_tg: {s}"
        );
    }
    // llama.cpp's counters saw the same steps (as prompt evaluation: batches of 4 tokens)
    let llama = mean(four, "throughput_tok_s_llama");
    assert!(
        llama > 0.0 && llama >= 0.5 * t4 && llama <= 2.0 * t4,
        "{llama} vs {t4}"
    );
    // the context holds 4 × (32 + 32) tokens, and the KV cache grows with it
    assert!(
        four["n_ctx"].as_u64().unwrap() >= 4 * 64,
        "{}",
        four["n_ctx"]
    );
    let kv = |c: &Value| c["memory"]["kv_bytes"].as_u64().unwrap();
    assert!(kv(four) > kv(one), "KV {} vs {}", kv(four), kv(one));
    // the price per token from the aggregate throughput: $3.5/h
    let usd = four["usd_per_mtok"].as_f64().unwrap();
    assert!(
        (usd - 3.5 / (t4 * 3600.0 / 1e6)).abs() <= 1e-9 * usd,
        "{usd}"
    );
    assert_eq!(r["serving"]["usd_per_hour"], 3.5);
    // keys and tables tell the cells apart
    assert!(
        four["key"].as_str().unwrap().ends_with(":np4"),
        "{}",
        four["key"]
    );
    assert!(
        !one["key"].as_str().unwrap().contains(":np"),
        "{}",
        one["key"]
    );
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    assert!(
        col("n_parallel") > col("quality_s"),
        "appended after the older columns"
    );
    assert!(col("throughput_tok_s") < col("usd_per_mtok"));
}

#[test]
fn a_shared_prompt_is_decoded_once() {
    let s = Scratch::new();
    s.config(&config("n_parallel = 4\nshared_prompt = true"));
    let r = run_ok(&s, &[]);
    let c = cell(&r, |p| p["n_parallel"] == 4);
    assert!(
        c["key"].as_str().unwrap().ends_with(":np4pps"),
        "{}",
        c["key"]
    );
    // S_PP counts the one prompt's tokens (llama-batched-bench -pps): pp_tok_s × 1
    for s in c["samples"].as_array().unwrap() {
        let (pp, all) = (
            s["pp_tok_s"].as_f64().unwrap(),
            s["pp_throughput_tok_s"].as_f64().unwrap(),
        );
        assert!((all - pp).abs() <= 1e-6 * all, "{s}");
    }
    // the context: 32 prompt tokens once, 4 × 16 generated
    assert!(c["n_ctx"].as_u64().unwrap() >= 32 + 4 * 16);
}

#[test]
fn depth_fills_the_context_before_measuring() {
    let s = Scratch::new();
    s.config(&config("n_depth = [0, 512]\nn_parallel = [1, 2]"));
    let r = run_ok(&s, &[]);
    let flat = cell(&r, |p| p["n_depth"] == 0 && p["n_parallel"] == 1);
    let deep = cell(&r, |p| p["n_depth"] == 512 && p["n_parallel"] == 1);
    let deep2 = cell(&r, |p| p["n_depth"] == 512 && p["n_parallel"] == 2);
    assert!(flat["n_ctx"].as_u64().unwrap() < 512);
    assert!(deep["n_ctx"].as_u64().unwrap() >= 512 + 48);
    // with two sequences the depth is one shared prefix: 512 + 2 × 48
    assert!(deep2["n_ctx"].as_u64().unwrap() >= 512 + 96);
    assert!(deep["key"].as_str().unwrap().ends_with(":d512"));
    assert!(deep2["key"].as_str().unwrap().ends_with(":np2d512"));
    for c in [deep, deep2] {
        assert!(mean(c, "decode_tok_s") > 0.0 && mean(c, "tg_tok_s") > 0.0);
    }
}

#[test]
fn a_sweep_of_three_parameters_is_their_product() {
    let s = Scratch::new();
    s.config(&config(
        "repetitions = 1\nwarmup = 0\nn_gen = 4\nn_prompt = 8\nn_batch = [64, 128]\n\
         flash_attn = [\"on\", \"off\"]\ntype_k = [\"f16\", \"q8_0\"]",
    ));
    let r = run_ok(&s, &[]);
    let c = cells(&r);
    assert_eq!(c.len(), 8);
    let keys: std::collections::HashSet<&str> =
        c.iter().map(|c| c["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 8, "{keys:?}");
    assert!(c.iter().all(|c| c["status"] == "ok"), "{c:?}");
    // and the command line's lists replace the file's
    let out = s.run(&["--n-parallel", "1,2,4", "--out", "cli"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&s.run_dir_in("cli").join("results.json"));
    assert_eq!(cells(&r).len(), 24);
}

#[test]
fn bad_load_settings_are_config_errors_or_failed_cells() {
    let s = Scratch::new();
    for (defaults, expect) in [
        ("n_parallel = 0", "n_parallel = 0 is out of range"),
        ("n_parallel = [1, 300]", "at most 256 sequences"),
        ("n_parallel = [4, 4]", "n_parallel 4 is listed twice"),
        ("type_k = \"q9_9\"", "use one of f32, f16"),
        ("n_depth = -1", "n_depth = -1 is out of range"),
        ("flash_attn = []", "flash_attn must not be an empty list"),
    ] {
        s.config(&config(defaults));
        let out = s.run(&[]);
        assert_eq!(out.status.code(), Some(2), "{defaults}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expect),
            "{defaults}: {}",
            stderr(&out)
        );
    }
    let out = s.run(&["--n-parallel", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("n_parallel = 0 is out of range"),
        "{}",
        stderr(&out)
    );
    // llama.cpp refuses a quantized V cache without flash attention: that cell fails with the
    // reason, the others are measured
    s.config(&config(
        "repetitions = 1\ntype_v = [\"f16\", \"q8_0\"]\nflash_attn = \"off\"",
    ));
    let out = s.run(&["--out", "fa"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let r = json(&s.run_dir_in("fa").join("results.json"));
    let failed = cells(&r)
        .iter()
        .find(|c| c["params"]["type_v"] == "q8_0")
        .unwrap();
    assert_eq!(failed["status"], "failed");
    let why = failed["error"].as_str().unwrap();
    assert!(
        why.contains("needs flash attention") && why.contains("flash_attn = \"on\""),
        "{why}"
    );
    assert!(!why.contains("KV cache of"), "not a memory problem: {why}");
    assert!(cells(&r)
        .iter()
        .any(|c| c["params"]["type_v"] == "f16" && c["status"] == "ok"));
    // fewer batch slots than sequences: llama.cpp would abort; the cell says what to set
    s.config(&config("repetitions = 1\nn_parallel = 8\nn_batch = 4"));
    let out = s.run(&["--out", "nb"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let r = json(&s.run_dir_in("nb").join("results.json"));
    let why = cells(&r)[0]["error"].as_str().unwrap().to_string();
    assert!(why.contains("n_batch = 4 is below n_parallel = 8"), "{why}");
}

#[test]
fn a_context_beyond_the_training_length_is_a_note_or_a_clear_failure() {
    let s = Scratch::new();
    // tiny-llama (rotary positions) was trained for 4096 tokens: measured, with a note
    s.config(
        &config("repetitions = 1\nwarmup = 0\nn_depth = 4100")
            .replace("\"tiny\"\n", "\"tiny-llama\"\n"),
    );
    let r = run_ok(&s, &[]);
    let c = cell(&r, |p| p["n_depth"] == 4100);
    let notes = c["warnings"].to_string();
    assert!(
        notes.contains("beyond the 4096 the model was trained for"),
        "{notes}"
    );
    // tiny (GPT-2, learned positions for 1024): llama.cpp would abort; the cell fails saying why
    s.config(&config("repetitions = 1\nwarmup = 0\nn_depth = 1200"));
    let out = s.run(&["--out", "gpt2"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let r = json(&s.run_dir_in("gpt2").join("results.json"));
    let why = cells(&r)[0]["error"].as_str().unwrap().to_string();
    assert!(
        why.contains("learned position embeddings for 1024 positions"),
        "{why}"
    );
}
