//! End-to-end tests of the real CLI on the `tiny` synthetic model with real llama.cpp (CPU).
use crate::common;

use crate::common::{cells, json, stderr, stdout, Scratch, TINY};
use serde_json::Value;

/// The CSV columns the README's metric and output tables name.
const CONTRACT_COLUMNS: &[&str] = &[
    "model",
    "quant",
    "status",
    "error",
    "model_size",
    "model_n_params",
    "n_prompt",
    "n_gen",
    "n_batch",
    "n_ubatch",
    "n_gpu_layers",
    "flash_attn",
    "type_k",
    "type_v",
    "load_s",
    "ctx_s",
    "ttft_ms",
    "decode_tok_s",
    "itl_ms_p50",
    "itl_ms_p90",
    "itl_ms_p99",
    "pp_tok_s",
    "tg_tok_s",
    "vram_bytes",
    "vram_source",
    "weights_gpu_bytes",
    "weights_host_bytes",
    "kv_bytes",
    "compute_bytes",
    "efficiency_tok_s_per_gb",
    "energy_j_per_tok",
    "bw_util",
    "file_sha256",
    "synthetic",
    "backend",
    "device",
];

#[test]
fn tiny_matrix_end_to_end() {
    let s = Scratch::new();
    s.config(TINY);
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("TEST 1/3") && err.contains("TEST 3/3"),
        "{err}"
    );
    assert!(err.contains("decode"), "{err}");

    let dir = s.run_dir();
    for f in ["results.jsonl", "results.json", "results.csv", "summary.md"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }

    let report = json(&dir.join("results.json"));
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["status"], "complete");
    assert_eq!(report["synthetic_weights"], true);
    assert!(report["environment"]["llama"]["llama_version"].is_string());
    assert!(report["quantbench"]["git_commit"].is_string());
    let cells = cells(&report);
    assert_eq!(cells.len(), 3);
    let quants: Vec<&str> = cells.iter().map(|c| c["quant"].as_str().unwrap()).collect();
    assert_eq!(quants, ["F16", "Q8_0", "Q4_K_M"]);
    let mut sizes = Vec::new();
    for c in cells {
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(c["backend"], "CPU");
        assert_eq!(c["origin"]["synthetic"], true);
        assert_eq!(c["origin"]["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(c["mem_basis"], "host_rss");
        assert!(c["vram_bytes"].is_null());
        assert!(
            c["gpu"]["unavailable_reason"].is_string(),
            "GPU fields need a reason"
        );
        assert!(c["memory"]["weights_host_bytes"].as_u64().unwrap() > 0);
        assert!(c["memory"]["kv_bytes"].as_u64().unwrap() > 0);
        assert!(c["load_s"].as_f64().unwrap() > 0.0);
        sizes.push(c["model_info"]["size_bytes"].as_u64().unwrap());

        // decode_tok_s of every repetition agrees with its per-token timestamps
        let samples = c["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 3);
        let mut rates = Vec::new();
        for r in samples {
            let t: Vec<f64> = r["token_ms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(t.len(), 8);
            assert!(t.windows(2).all(|w| w[1] > w[0]), "timestamps increase");
            assert_eq!(r["ttft_ms"].as_f64().unwrap(), t[0]);
            let expect = 7.0 / ((t[7] - t[0]) / 1e3);
            let got = r["decode_tok_s"].as_f64().unwrap();
            assert!((got - expect).abs() / expect < 1e-9, "{got} vs {expect}");
            rates.push(got);
            for k in ["pp_tok_s", "tg_tok_s"] {
                assert!(r[k].as_f64().unwrap() > 0.0);
            }
        }
        let mean = rates.iter().sum::<f64>() / 3.0;
        let m = c["metrics"]["decode_tok_s"]["mean"].as_f64().unwrap();
        assert!((m - mean).abs() / mean < 1e-9);
        assert!(c["itl_ms_p99"].as_f64().unwrap() >= c["itl_ms_p50"].as_f64().unwrap());
        // llama.cpp's own counters saw the same tg as our clock, give or take
        let tg = c["metrics"]["tg_tok_s"]["mean"].as_f64().unwrap();
        let tg_llama = c["metrics"]["tg_tok_s_llama"]["mean"].as_f64().unwrap();
        assert!((tg_llama / tg - 1.0).abs() < 0.5, "{tg} vs {tg_llama}");
    }
    assert!(
        sizes[0] > sizes[1] && sizes[1] > sizes[2],
        "F16 > Q8_0 > Q4_K_M: {sizes:?}"
    );

    let mut rdr = csv::Reader::from_path(dir.join("results.csv")).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    for col in CONTRACT_COLUMNS {
        assert!(
            header.iter().any(|h| h == col),
            "CSV lacks {col}: {header:?}"
        );
    }
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 3);
    let status = header.iter().position(|h| h == "status").unwrap();
    assert!(rows.iter().all(|r| &r[status] == "ok"));

    let jsonl = std::fs::read_to_string(dir.join("results.jsonl")).unwrap();
    let types: Vec<String> = jsonl
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types, ["run", "cell", "cell", "cell", "end"]);
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("| tiny | Q4_K_M | ok |"), "{md}");
    assert!(md.contains("synthetic weights"));
}

#[test]
fn every_format_parses_on_stdout() {
    let s = Scratch::new();
    s.config(TINY);
    let base = ["--only", "tiny:Q8_0", "-r", "1", "--warmup", "0"];
    let run = |fmt: &str| {
        let mut args = base.to_vec();
        args.extend(["--format", fmt]);
        let out = s.run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let j: Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(j["schema_version"], 1);
    assert_eq!(cells(&j).len(), 1);
    let c = run("csv");
    let mut rdr = csv::Reader::from_reader(c.as_bytes());
    assert_eq!(rdr.records().count(), 1);
    let m = run("md");
    assert!(m.starts_with("# quantbench run"), "{m}");
    assert!(m.contains("| tiny | Q8_0 | ok |"), "{m}");
    let t = s.run(&base);
    assert!(t.stdout.is_empty(), "table format writes nothing on stdout");
}

#[test]
fn broken_files_fail_their_cells_and_the_rest_runs() {
    let s = Scratch::new();
    let models = s.path().join("models");
    std::fs::create_dir(&models).unwrap();
    std::fs::write(models.join("junk-F16.gguf"), b"this is not a model").unwrap();
    // a GGUF header promising far more than the file holds
    let mut trunc = b"GGUF".to_vec();
    trunc.extend(3u32.to_le_bytes());
    trunc.extend(1000u64.to_le_bytes());
    trunc.extend(1000u64.to_le_bytes());
    trunc.extend([7u8; 64]);
    std::fs::write(models.join("trunc-F16.gguf"), trunc).unwrap();
    s.config(&format!(
        "{TINY}quants = [\"F16\"]\n\
         [[model]]\nname = \"junk\"\npath = \"models/junk-{{QUANT}}.gguf\"\nquants = [\"F16\"]\n\
         [[model]]\nname = \"trunc\"\npath = \"models/trunc-{{QUANT}}.gguf\"\nquants = [\"F16\"]\n\
         [[model]]\nname = \"gone\"\npath = \"models/gone-{{QUANT}}.gguf\"\nquants = [\"F16\"]\n"
    ));
    let out = s.run(&["-r", "1"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = json(&s.run_dir().join("results.json"));
    let by_name = |n: &str| {
        cells(&report)
            .iter()
            .find(|c| c["model"] == n)
            .unwrap_or_else(|| panic!("no cell {n}"))
            .clone()
    };
    assert_eq!(by_name("tiny")["status"], "ok");
    for (name, why) in [
        ("junk", "not a GGUF file"),
        // caught before llama.cpp sees it: the header claims more than the file holds
        ("trunc", "damaged GGUF header"),
        ("gone", "not found"),
    ] {
        let c = by_name(name);
        assert_eq!(c["status"], "failed");
        let e = c["error"].as_str().unwrap();
        assert!(e.contains(why), "{name}: {e}");
    }
    let csv = std::fs::read_to_string(s.run_dir().join("results.csv")).unwrap();
    assert_eq!(
        csv.lines().filter(|l| l.contains(",failed,")).count(),
        3,
        "{csv}"
    );
}

#[test]
fn config_typo_exits_2_with_position() {
    let s = Scratch::new();
    s.config("schema = 1\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\nquant = [\"F16\"]\n");
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("models.toml:5:1:"), "{err}");
    assert!(err.contains("did you mean \"quants\""), "{err}");
    assert!(
        !s.path().join("reports").exists(),
        "nothing written for a bad config"
    );

    let out = s
        .cmd()
        .args(["run", "--config", "nope.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nope.toml: file not found"));
}

#[test]
fn a_crashing_worker_fails_one_cell_only() {
    let s = Scratch::new();
    s.config(TINY);
    let out = s
        .cmd()
        .args(["run", "-r", "1"])
        .env("QUANTBENCH_FAULT", "crash@tiny:Q8_0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = json(&s.run_dir().join("results.json"));
    let status: Vec<&str> = cells(&report)
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["ok", "failed", "ok"]);
    let e = cells(&report)[1]["error"].as_str().unwrap();
    assert!(
        e.contains("signal 6") && e.contains("injected crash"),
        "{e}"
    );
    assert_eq!(report["status"], "complete");
}

#[test]
fn a_hanging_worker_is_stopped_at_the_timeout() {
    let s = Scratch::new();
    // only the hanging model gets the short timeout: on a loaded machine a healthy tiny cell
    // may take longer than 3 s with its worker start-up
    s.config(&common::tiny_and_stuck(3));
    let out = s
        .cmd()
        .args(["run", "-r", "1"])
        .env("QUANTBENCH_FAULT", "hang@stuck")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = json(&s.run_dir().join("results.json"));
    let c = cells(&report);
    assert_eq!(c[0]["status"], "ok");
    assert_eq!(c[1]["status"], "failed");
    assert!(c[1]["error"]
        .as_str()
        .unwrap()
        .contains("timed out after 3 s"));
}

#[test]
fn resume_keeps_measured_cells_and_reruns_failed_ones() {
    let s = Scratch::new();
    s.config(TINY);
    let out = s
        .cmd()
        .args(["run", "-r", "1"])
        .env("QUANTBENCH_FAULT", "error@tiny:Q4_K_M")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let dir = s.run_dir();
    let first = json(&dir.join("results.json"));
    assert!(cells(&first)[2]["error"]
        .as_str()
        .unwrap()
        .contains("injected error"));

    let out = s.run(&["-r", "1", "--resume", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resuming: 2 of 3"),
        "{}",
        stderr(&out)
    );
    let second = json(&dir.join("results.json"));
    let c = cells(&second);
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|c| c["status"] == "ok"));
    // the cells measured before are kept as they were
    assert_eq!(c[0]["samples"], cells(&first)[0]["samples"]);
    assert_eq!(c[1]["samples"], cells(&first)[1]["samples"]);
}

#[test]
fn signals_write_valid_reports_and_exit_128_plus_the_signal() {
    // Ctrl-C, and what cron, systemd, CI runners and Kubernetes send (SIGTERM), and a closed
    // terminal (SIGHUP): reports written, marked interrupted, an end event, how to resume
    for (sig, name, code) in [(2, "SIGINT", 130), (15, "SIGTERM", 143), (1, "SIGHUP", 129)] {
        let s = Scratch::new();
        s.config(TINY);
        let log = s.path().join("run.log");
        let mut child = s
            .process()
            .env("QUANTBENCH_FAULT", "hang@tiny:Q8_0")
            .args(["run", "-r", "1"])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // wait until the first cell is in the report, then interrupt during the hanging cell
        common::wait_for(120, "the first cell", || {
            common::has_a_cell(&s.path().join("reports"))
        });
        std::thread::sleep(std::time::Duration::from_millis(500));
        common::signal(child.id(), sig);
        let status = common::wait_bounded(&mut child, 120);
        let err = std::fs::read_to_string(&log).unwrap();
        assert_eq!(status.code(), Some(code), "{name}: {err}");
        assert!(
            err.contains("--resume") && err.contains(&format!("interrupted by {name}")),
            "{name}: {err}"
        );
        let dir = s.run_dir();
        let report = json(&dir.join("results.json"));
        assert_eq!(report["status"], "interrupted", "{name}");
        assert_eq!(cells(&report).len(), 1);
        assert_eq!(cells(&report)[0]["status"], "ok");
        let log = std::fs::read_to_string(dir.join("results.jsonl")).unwrap();
        let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
        assert_eq!(last["type"], "end", "{name}: {log}");
        assert_eq!(last["status"], "interrupted");
    }
}

#[test]
fn list_and_fetch() {
    let s = Scratch::empty();
    s.config(TINY);
    let out = s.cmd().arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("3 cells") && err.contains("Q4_K_M") && err.contains("no"),
        "{err}"
    );

    let out = s.cmd().arg("fetch").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = s.cmd().args(["list", "--format", "json"]).output().unwrap();
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = plan["cells"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["cached"] == true), "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["fits"] == true && r["copies"].as_u64().unwrap() > 1));
    assert_eq!(plan["memory"]["kind"], "host");
    let out = s
        .cmd()
        .args(["list", "--device-memory", "48GB"])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("44.7 GiB (--device-memory)"),
        "{}",
        stderr(&out)
    );
    assert!(
        !s.path().join("reports").exists(),
        "fetch and list measure nothing"
    );
}

#[test]
fn cold_loads_and_the_verbose_log() {
    let s = Scratch::new();
    s.config(TINY);
    let out = s.run(&[
        "-v",
        "--cold",
        "--only",
        "tiny:F16",
        "-r",
        "1",
        "--no-plots",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("  | ") && err.contains("llama"),
        "-v shows llama.cpp's log: {err}"
    );
    let report = json(&s.run_dir().join("results.json"));
    assert_eq!(cells(&report)[0]["load_cold"], true);
    // without -v the log stays hidden
    let quiet = s.run(&[
        "--only",
        "tiny:F16",
        "-r",
        "1",
        "--no-plots",
        "--out",
        "quiet",
    ]);
    assert!(!stderr(&quiet).contains("  | "), "{}", stderr(&quiet));
}

#[test]
fn split_modes_are_matrix_parameters() {
    let s = Scratch::new();
    s.config(
        r#"
schema = 1
[defaults]
n_gen = 4
n_prompt = 16
repetitions = 1
warmup = 0

[[model]]
name = "tiny"
synthetic = "tiny"
quants = ["Q8_0"]
split_mode = ["none", "layer", "row", "tensor"]
main_gpu = [0, 1]
tensor_split = [1]
"#,
    );
    // list shows each placement as its own cell
    let out = s.cmd().arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listing = stderr(&out);
    assert!(listing.contains("5 cells"), "{listing}");
    assert!(listing.contains("tiny [sm none mg 1]"), "{listing}");

    let out = s.run(&[]);
    let err = stderr(&out);
    // on this CPU-only machine `tensor` cannot run; the others run on the CPU
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("sm row ts 1"),
        "the TEST line names the placement: {err}"
    );
    let dir = s.run_dir();
    let report = json(&dir.join("results.json"));
    let modes: Vec<(String, u64, String)> = cells(&report)
        .iter()
        .map(|c| {
            (
                c["params"]["split_mode"].as_str().unwrap().to_string(),
                c["params"]["main_gpu"].as_u64().unwrap(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        modes,
        [
            ("none".to_string(), 0, "ok".to_string()),
            ("none".into(), 1, "ok".into()),
            ("layer".into(), 0, "ok".into()),
            ("row".into(), 0, "ok".into()),
            ("tensor".into(), 0, "failed".into()),
        ]
    );
    let tensor = &cells(&report)[4];
    assert!(
        tensor["error"]
            .as_str()
            .unwrap()
            .contains("needs at least one GPU"),
        "{tensor}"
    );
    for c in &cells(&report)[..4] {
        assert_eq!(
            c["devices_used"].as_array().unwrap().len(),
            0,
            "CPU run: no GPU holds weights"
        );
        assert!(c["metrics"]["decode_tok_s"]["mean"].as_f64().unwrap() > 0.0);
    }
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let head: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    for c in [
        "split_mode",
        "main_gpu",
        "tensor_split",
        "n_gpus",
        "vram_per_gpu_bytes",
    ] {
        assert!(head.iter().any(|h| h == c), "{c}");
    }
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("## Multi-GPU placements"), "{md}");
    assert!(md.contains("| tiny | Q8_0 | sm row ts 1 | CPU |"), "{md}");

    // a run compared with itself joins each placement with its own cell
    let out = s
        .cmd()
        .args(["compare"])
        .arg(dir.join("results.json"))
        .arg(dir.join("results.csv"))
        .output()
        .unwrap();
    let text = stdout(&out) + &stderr(&out);
    // one repetition per cell: too few for the gate to test a speed change, so inconclusive
    // (exit 4), never a regression
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.contains("inconclusive: too few repetitions to test"),
        "{text}"
    );
    assert!(
        !text.contains("not in"),
        "every cell found its match: {text}"
    );
    assert!(
        text.contains("sm none mg 1"),
        "cells are named with their placement: {text}"
    );
}
