//! `quantbench tune` on synthetic GPT-2 (CPU): the search's winner is the full grid's, found
//! with fewer cells; nothing meeting the targets is said with the closest configurations
//! (exit 3); bad targets are refused before anything runs (exit 2); the JSON object scripts
//! read.

use serde_json::Value;

use crate::common::{cells, json, stderr, stdout, Scratch};

/// GPT-2 (124M, synthetic) at three quants, small tests: F16 holds ~380 MiB of host memory,
/// Q8_0 and Q4_K_M ~210–240 MiB (what makes a memory budget choose).
const GPT2: &str = "schema = 1\n[defaults]\nquants = [\"F16\", \"Q8_0\", \"Q4_K_M\"]\nn_gen = 4\n\
    n_prompt = 8\nrepetitions = 1\nwarmup = 0\nquality_ctx = 32\nquality_chunks = 2\n\
    [[model]]\nname = \"gpt2\"\nsynthetic = \"gpt2\"\n";

fn tune(s: &Scratch, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = s
        .cmd()
        .arg("tune")
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let v = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
    (out.status.code(), v, stderr(&out))
}

#[test]
fn the_search_finds_the_full_grids_winner_with_fewer_cells() {
    let s = Scratch::new();
    s.config(GPT2);
    // the targets: quality within 0.05 nats, at least 2 tok/s, 300 MiB of memory (F16 does not fit)
    let targets = [
        "--max-kld",
        "0.05",
        "--min-tok-s",
        "2",
        "--memory",
        "300MiB",
    ];
    let (code, v, err) = tune(&s, &targets);
    assert_eq!(code, Some(0), "{err}");
    let rec = &v["recommendation"];
    assert_eq!(v["met"]["all"], true, "{v}");
    let measured = v["measured_cells"].as_u64().unwrap();
    let grid = v["grid_cells"].as_u64().unwrap();
    assert_eq!(grid, 6, "3 quants × 2 KV cache types on the CPU");
    assert!(measured < 12, "{measured}");
    for k in [
        "quant",
        "file",
        "n_gpu_layers",
        "type_k",
        "flash_attn",
        "n_threads",
        "decode_tok_s",
        "ttft_ms",
        "kld_mean",
        "mem_bytes",
        "command",
    ] {
        assert!(!rec[k].is_null(), "{k}: {rec}");
    }
    assert!(rec["command"]
        .as_str()
        .unwrap()
        .starts_with("llama-server -m "));
    assert!(rec["models_toml"]
        .as_str()
        .unwrap()
        .contains("quants = [\""));
    assert!(v["run_dir"].as_str().unwrap().contains("reports"));
    assert!(err.contains("RECOMMENDED"), "{err}");

    // the full grid: every quant × every KV cache type, measured, judged by the same rules.
    // The KLD is the quant's, measured once in a run of its own; the speed cells run without
    // the quality test, as tune's probes do (a worker that has just held the reference keeps
    // some of its memory, which would count against the budget in the next cell).
    let grid_run = |name: &str, extra: &str| -> Value {
        s.config(&format!("{GPT2}{extra}"));
        let out = s.cmd().args(["run", "--out", name]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        json(&s.run_dir_in(name).join("results.json"))
    };
    let kld: std::collections::HashMap<String, f64> =
        cells(&grid_run("grid-quality", "quality = true\n"))
            .iter()
            .filter_map(|c| {
                Some((
                    c["quant"].as_str()?.to_string(),
                    c["quality"]["kld_mean"].as_f64()?,
                ))
            })
            .collect();
    let mut probes = Vec::new();
    for kv in ["f16", "q8_0"] {
        let r = grid_run(
            &format!("grid-{kv}"),
            &format!(
                "type_k = \"{kv}\"\ntype_v = \"{kv}\"\nflash_attn = \"on\"\nquality = false\n"
            ),
        );
        for c in cells(&r) {
            let quant = c["quant"].as_str().unwrap().to_string();
            probes.push(quantbench::tune::Probe {
                key: c["key"].as_str().unwrap().into(),
                quant: quantbench::quant::Quant::parse(&quant).unwrap(),
                params: serde_json::from_value(c["params"].clone()).unwrap(),
                ok: c["status"] == "ok",
                error: None,
                full: false,
                decode_tok_s: c["metrics"]["decode_tok_s"]["mean"].as_f64(),
                decode_tok_s_sd: None,
                ttft_ms: c["metrics"]["ttft_ms"]["mean"].as_f64(),
                mem_bytes: c["mem_bytes"].as_u64(),
                kld_mean: kld.get(&quant).copied(),
                slo_met: None,
            });
        }
    }
    assert_eq!(probes.len(), 6);
    let mut grid = quantbench::tune::Outcome {
        targets: quantbench::tune::Targets {
            max_kld: Some(0.05),
            min_tok_s: Some(2.0),
            memory_bytes: Some(300 << 20),
            ..Default::default()
        },
        probes,
        ..Default::default()
    };
    grid.decide();
    let best = grid.recommendation.expect("the grid has a winner");
    // the same quant; the configuration among those of that quant meeting the targets (the
    // KV type changes the speed of this model by less than its noise)
    assert_eq!(rec["quant"], best.quant.name(), "{v}");
    assert!(
        grid.probes.iter().any(|p| p.quant == best.quant
            && p.params.type_k == rec["type_k"].as_str().unwrap()
            && quantbench::tune::meets(&grid.targets, p)),
        "tune: {rec}\ngrid: {:?}",
        grid.probes
            .iter()
            .map(|p| (
                p.quant.name(),
                &p.params.type_k,
                p.decode_tok_s,
                p.mem_bytes,
                p.kld_mean
            ))
            .collect::<Vec<_>>()
    );
}

#[test]
fn nothing_meeting_the_targets_names_the_closest_and_exits_3() {
    let s = Scratch::new();
    s.config(&GPT2.replace("synthetic = \"gpt2\"", "synthetic = \"tiny\""));
    // more speed than any quant gives on two cores
    let (code, v, err) = tune(&s, &["--min-tok-s", "1000000", "--memory", "8GB"]);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(v["met"]["all"], false);
    assert!(v["recommendation"].is_null());
    let closest = v["closest"].as_array().unwrap();
    assert!(!closest.is_empty());
    assert_eq!(v["met"]["targets"]["min_tok_s"]["met"], false);
    assert!(err.contains("NOTHING MEETS THE TARGETS"), "{err}");
    assert!(err.contains("min_tok_s") && err.contains("MISSES"), "{err}");
    // the run folder holds every probe, and a Tune section
    let md = std::fs::read_to_string(s.run_dir().join("summary.md")).unwrap();
    assert!(
        md.contains("## Tune") && md.contains("No configuration meets the targets"),
        "{md}"
    );
}

#[test]
fn bad_targets_are_refused_before_anything_runs() {
    let s = Scratch::new();
    s.config(&format!(
        "{GPT2}[[model]]\nname = \"other\"\nsynthetic = \"tiny\"\n"
    ));
    for (args, want) in [
        (vec!["--model", "gpt2"], "no target"),
        (
            vec!["--min-tok-s", "10"],
            "name the one to tune with --model",
        ),
        (
            vec!["--model", "nope", "--min-tok-s", "10"],
            "is not in the file",
        ),
        (
            vec!["--model", "gpt2", "--memory", "8 parsecs"],
            "unknown unit",
        ),
        (vec!["--model", "gpt2", "--memory", "0GB"], "above 0"),
        (vec!["--model", "gpt2", "--min-tok-s=-3"], "above 0"),
        (
            vec!["--model", "gpt2", "--rate", "2/s"],
            "needs per-request targets in [slo]",
        ),
    ] {
        let out = s.cmd().arg("tune").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(!s.path().join("reports").exists(), "{args:?}");
    }
    // memory sizes as people write them
    for ok in ["8GB", "8GiB", "8000MB", "8g", "1073741824"] {
        assert!(quantbench::config::parse_memory(ok).is_ok(), "{ok}");
    }
}

#[test]
fn an_interrupted_search_recommends_nothing_and_says_how_to_continue() {
    // SIGTERM once the first probe is measured, while the winner's full measurement (200
    // repetitions) runs: before the fix, tune printed "confirms it" and RECOMMENDED with the
    // probe's figures
    let s = Scratch::new();
    s.config(
        "schema = 1\n[defaults]\nquants = [\"Q8_0\"]\nn_gen = 64\nn_prompt = 8\n\
         repetitions = 200\nwarmup = 0\n[[model]]\nname = \"tiny\"\nsynthetic = \"tiny\"\n",
    );
    let log = s.path().join("tune.log");
    let mut child = s
        .process()
        .args([
            "tune",
            "--min-tok-s",
            "1",
            "--format",
            "json",
            "--out",
            "tu",
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::common::wait_for(180, "the first probe", || {
        crate::common::has_a_cell(&s.path().join("tu"))
    });
    crate::common::signal(child.id(), libc::SIGTERM);
    let status = crate::common::wait_bounded(&mut child, 120);
    let err = std::fs::read_to_string(&log).unwrap();
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(!err.contains("RECOMMENDED"), "{err}");
    assert!(!err.contains("confirms it"), "{err}");
    assert!(
        err.contains("interrupted before the search ended") && err.contains("--resume"),
        "{err}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["recommendation"].is_null(), "{v}");
    assert_eq!(v["interrupted"], true);
}
