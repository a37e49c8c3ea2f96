//! `quantbench compare` and `run --baseline` on real runs of the `tiny` matrix.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use crate::common::{json, stderr, stdout, Scratch};
use serde_json::Value;

const TINY: &str =
    "schema = 1\n[defaults]\nn_gen = 16\nn_prompt = 32\nrepetitions = 5\nwarmup = 1\n\
                    [[model]]\nname = \"tiny\"\nsynthetic = \"tiny\"\n";

struct Fixture {
    scratch: Scratch,
    /// Two runs made back to back on this machine.
    a: PathBuf,
    b: PathBuf,
}

impl Fixture {
    /// The fixture's folder, where the comparisons run.
    fn root(&self) -> &Path {
        self.scratch.path()
    }
}

/// The two real runs, made once, one after the other (nothing else runs llama.cpp meanwhile).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let scratch = Scratch::new();
        scratch.config(TINY);
        let mut runs = Vec::new();
        for name in ["a", "b"] {
            let out = scratch.run(&["--out", name]);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            runs.push(scratch.run_dir_in(name));
        }
        let b = runs.pop().unwrap();
        let a = runs.pop().unwrap();
        Fixture { scratch, a, b }
    })
}

/// `quantbench compare` in the fixture's folder.
fn compare(base: &Path, cur: &Path, extra: &[&str]) -> Output {
    fixture()
        .scratch
        .cmd()
        .arg("compare")
        .arg(base)
        .arg(cur)
        .args(extra)
        .output()
        .unwrap()
}

/// One metric of the cell of `quant` in a JSON comparison.
fn metric_in(cmp: &Value, quant: &str, name: &str) -> Value {
    cmp["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["quant"] == quant)
        .unwrap()["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == name)
        .unwrap_or_else(|| panic!("{quant} {name}: {cmp}"))
        .clone()
}

/// The first cell's result for one metric in a JSON comparison.
fn metric_of(cmp: &Value, name: &str) -> Value {
    cmp["cells"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == name)
        .unwrap()
        .clone()
}

/// Run B's results.json with constructed samples of a known spread ([`tamed`]).
fn tame() -> Value {
    tamed(json(&fixture().b.join("results.json")))
}

/// A real report as if measured on a quiet machine: no `disturbance`, and every repetition's
/// timings (decode, tg, pp, TTFT and the token times behind the inter-token latency) replaced
/// by the cell's mean × (1 ± 1%), whatever the machine did meanwhile. Tests of the gate's logic
/// compare these, so a busy machine cannot change their verdicts.
fn tamed(mut r: Value) -> Value {
    for c in r["cells"].as_array_mut().unwrap() {
        c.as_object_mut().unwrap().remove("disturbance");
        let mean = |c: &Value, m: &str| c["metrics"][m]["mean"].as_f64();
        let means: Vec<(&str, Option<f64>)> = ["decode_tok_s", "tg_tok_s", "pp_tok_s", "ttft_ms"]
            .into_iter()
            .map(|m| (m, mean(c, m)))
            .collect();
        for (i, s) in c["samples"].as_array_mut().unwrap().iter_mut().enumerate() {
            let wiggle = [1.0, 1.01, 0.99, 1.005, 0.995][i % 5];
            for (m, v) in &means {
                if let Some(v) = v {
                    s[*m] = Value::from(v * wiggle);
                }
            }
            if let (Some(decode), Some(ttft)) = (means[0].1, means[3].1) {
                let n = s["token_ms"].as_array().map_or(0, Vec::len);
                let step = 1000.0 / decode * wiggle;
                let times: Vec<f64> = (0..n).map(|k| ttft * wiggle + k as f64 * step).collect();
                s["token_ms"] = Value::from(times);
            }
        }
    }
    r
}

/// A results.csv as if measured on a quiet machine: the timing metrics' standard deviations
/// 1% of their means, no `disturbed`.
fn tamed_csv(text: &str) -> String {
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let head: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let col = |n: &str| head.iter().position(|h| h == n);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&head).unwrap();
    for rec in rdr.records() {
        let mut row: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        for m in ["decode_tok_s", "tg_tok_s", "pp_tok_s", "ttft_ms"] {
            if let (Some(i), Some(j)) = (col(m), col(&format!("{m}_sd"))) {
                if let Ok(v) = row[i].parse::<f64>() {
                    row[j] = (v * 0.01).to_string();
                }
            }
        }
        if let Some(i) = col("disturbed") {
            row[i].clear();
        }
        w.write_record(&row).unwrap();
    }
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

/// The quality run's report, tamed ([`tamed`]), written to `name`.
fn tamed_quality_run(name: &str) -> PathBuf {
    let (s, dir) = quality_run();
    let p = s.path().join(name);
    let r = tamed(json(&dir.join("results.json")));
    std::fs::write(&p, serde_json::to_string(&r).unwrap()).unwrap();
    p
}

/// The tamed run B with every decode sample scaled by `k`.
fn scaled(k: f64, tag: &str) -> PathBuf {
    let f = fixture();
    let mut r = tame();
    for c in r["cells"].as_array_mut().unwrap() {
        for s in c["samples"].as_array_mut().unwrap() {
            let v = s["decode_tok_s"].as_f64().unwrap();
            s["decode_tok_s"] = Value::from(v * k);
        }
    }
    let p = f.root().join(format!("scaled-{tag}.json"));
    std::fs::write(&p, serde_json::to_string(&r).unwrap()).unwrap();
    p
}

/// Whether two real runs' comparison is a verdict, not a failure to compare: on a busy machine
/// (CI's 2-core VMs, another suite beside this one) two runs of one build differ by any amount —
/// a 1 ms prompt test was measured 10× slower under load — so whether they regress is for the
/// gate study (reports/gate-study-*), not for a test; that they are joined and compared is.
fn is_a_verdict(out: &Output) -> bool {
    matches!(out.status.code(), Some(0 | 1 | 4))
}

#[test]
fn two_real_runs_are_joined_cell_by_cell() {
    let f = fixture();
    let out = compare(
        &f.a.join("results.json"),
        &f.b.join("results.json"),
        &["--format", "json"],
    );
    assert!(is_a_verdict(&out), "{}", stderr(&out));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cells = cmp["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 3);
    for c in cells {
        assert!(
            ["unchanged", "improved", "regressed", "inconclusive"]
                .contains(&c["verdict"].as_str().unwrap()),
            "comparable: {c}"
        );
        let metrics: Vec<&str> = c["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["metric"].as_str().unwrap())
            .collect();
        for m in [
            "decode_tok_s",
            "tg_tok_s",
            "pp_tok_s",
            "ttft_ms",
            "load_s",
            "mem_bytes",
        ] {
            assert!(metrics.contains(&m), "{m} compared: {metrics:?}");
        }
    }
}

#[test]
fn a_50_percent_slowdown_is_a_regression_and_2_percent_is_noise() {
    let f = fixture();
    let base = f.root().join("tame.json");
    std::fs::write(&base, serde_json::to_string(&tame()).unwrap()).unwrap();
    // CPU cells: the default threshold of decode_tok_s is 25%
    let out = compare(&base, &scaled(0.5, "slow"), &["--format", "md"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let md = stdout(&out);
    assert!(md.contains("**3 regressions"), "{md}");
    assert!(
        md.contains("| decode_tok_s |") && md.contains("REGRESSED"),
        "{md}"
    );
    // regressions first in the table on stderr
    let table = stderr(&out);
    let first = table.lines().find(|l| l.starts_with("tiny")).unwrap();
    assert!(first.contains("REGRESSED"), "{table}");

    let out = compare(&base, &scaled(1.02, "noise"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // a 50% improvement is one
    let out = compare(&base, &scaled(1.5, "fast"), &["--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cmp["improvements"], 3, "{cmp}");
    assert_eq!(cmp["regressions"], 0);
    // thresholds from the command line and from models.toml
    let out = compare(
        &base,
        &scaled(0.5, "slow"),
        &["--threshold", "decode_tok_s=60"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = compare(
        &base,
        &scaled(0.8, "slow20"),
        &["--threshold", "decode_tok_s=10"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    std::fs::write(
        f.root().join("lenient.toml"),
        format!("{TINY}[compare]\ndecode_tok_s = 60\n"),
    )
    .unwrap();
    let out = compare(&base, &scaled(0.5, "slow"), &["--config", "lenient.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_regression_must_survive_the_confirmation_runs() {
    let f = fixture();
    let base = f.root().join("tame-c.json");
    std::fs::write(&base, serde_json::to_string(&tame()).unwrap()).unwrap();
    let slow = scaled(0.5, "slow-c");
    // re-measured slow again: confirmed
    let out = compare(
        &base,
        &slow,
        &["--confirm-with", slow.to_str().unwrap(), "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cmp["regressions"], 3);
    assert_eq!(cmp["confirm_runs"], 1);
    // re-measured at the baseline's speed: a one-off, not a regression
    let out = compare(
        &base,
        &slow,
        &["--confirm-with", base.to_str().unwrap(), "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cmp["regressions"], 0);
    let decode = metric_of(&cmp, "decode_tok_s");
    assert_eq!(decode["verdict"], "unconfirmed");
    assert_eq!(decode["confirmations"].as_array().unwrap().len(), 1);
    assert!(stderr(&out).contains("unconfirmed"), "{}", stderr(&out));
}

#[test]
fn values_that_are_not_finite_are_refused_naming_file_cell_and_column() {
    let f = fixture();
    let cur = f.b.join("results.json");
    // a spreadsheet wrote NaN into the CSV
    let csv = std::fs::read_to_string(f.b.join("results.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let head: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let k = head.iter().position(|h| h == "decode_tok_s").unwrap();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&head).unwrap();
    for (i, rec) in rdr.records().enumerate() {
        let mut row: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        if i == 1 {
            row[k] = "NaN".into();
        }
        w.write_record(&row).unwrap();
    }
    let nan = f.root().join("nan.csv");
    std::fs::write(&nan, w.into_inner().unwrap()).unwrap();
    let out = compare(&nan, &cur, &[]);
    assert_eq!(out.status.code(), Some(2), "no panic: {}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("nan.csv")
            && e.contains("tiny Q8_0")
            && e.contains("decode_tok_s")
            && e.contains("NaN"),
        "{e}"
    );
    // samples whose mean overflows
    let mut r = json(&cur);
    for s in r["cells"][0]["samples"].as_array_mut().unwrap() {
        s["decode_tok_s"] = Value::from(1.0e308);
    }
    let huge = f.root().join("huge.json");
    std::fs::write(&huge, serde_json::to_string(&r).unwrap()).unwrap();
    let out = compare(&huge, &cur, &[]);
    assert_eq!(out.status.code(), Some(2), "no panic: {}", stderr(&out));
    assert!(
        stderr(&out).contains("huge.json") && stderr(&out).contains("overflow"),
        "{}",
        stderr(&out)
    );
    let out = compare(&cur, &huge, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // and run --baseline checks it before measuring anything
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("models.toml"), TINY).unwrap();
    let out = common::command(dir.path(), &f.scratch.cache())
        .args(["run", "--baseline"])
        .arg(&nan)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("decode_tok_s"), "{}", stderr(&out));
    assert!(!dir.path().join("reports").exists(), "nothing was measured");
}

#[test]
fn reports_from_different_devices_are_not_comparable() {
    let f = fixture();
    let mut r = json(&f.b.join("results.json"));
    for c in r["cells"].as_array_mut().unwrap() {
        c["device"] = Value::from("NVIDIA H200");
        c["backend"] = Value::from("CUDA");
        for s in c["samples"].as_array_mut().unwrap() {
            s["decode_tok_s"] = Value::from(s["decode_tok_s"].as_f64().unwrap() * 0.5);
        }
    }
    let p = f.root().join("gpu.json");
    std::fs::write(&p, serde_json::to_string(&r).unwrap()).unwrap();
    let out = compare(&f.a.join("results.json"), &p, &["--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a different device is no regression: {}",
        stderr(&out)
    );
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    for c in cmp["cells"].as_array().unwrap() {
        assert_eq!(c["verdict"], "not_comparable");
        assert!(c["note"].as_str().unwrap().contains("device"), "{c}");
    }
}

#[test]
fn a_csv_baseline_works() {
    let f = fixture();
    // B's own CSV against B slowed down: the CSV's means, sds and repetitions feed Welch's test
    // (both tamed to a known spread: a busy machine's spread would make them inconclusive)
    let csv = f.root().join("tamed-b.csv");
    let text = std::fs::read_to_string(f.b.join("results.csv")).unwrap();
    std::fs::write(&csv, tamed_csv(&text)).unwrap();
    let out = compare(&csv, &scaled(1.0, "csv-own"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = compare(&csv, &scaled(0.2, "slow-csv"), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // and a CSV current against a JSON baseline, and a run folder, across the two real runs
    let out = compare(&f.a, &f.b.join("results.csv"), &["--format", "json"]);
    assert!(is_a_verdict(&out), "{}", stderr(&out));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cmp["cells"].as_array().unwrap().len(), 3);
    assert!(!stderr(&out).contains("not comparable") && !stderr(&out).contains("missing"));
}

#[test]
fn a_malformed_baseline_exits_2_with_a_clear_message() {
    let f = fixture();
    let cur = f.b.join("results.json");
    for (name, text, want) in [
        (
            "garbage.json",
            "{ not json",
            "is not a quantbench results.json",
        ),
        (
            "other.json",
            "{\"hello\": 1}",
            "is not a quantbench results.json",
        ),
        ("other.csv", "a,b\n1,2\n", "no `model` column"),
    ] {
        let p = f.root().join(name);
        std::fs::write(&p, text).unwrap();
        let out = compare(&p, &cur, &[]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let e = stderr(&out);
        assert!(
            e.contains("reading the baseline") && e.contains(want),
            "{name}: {e}"
        );
    }
    let out = compare(&f.root().join("nope.json"), &cur, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
}

#[test]
fn run_with_baseline_gates_and_saves() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("models.toml"), TINY).unwrap();
    let q = || common::command(dir.path(), &f.scratch.cache());
    // a baseline a thousand times as fast as this machine: the run regresses, and so does every
    // confirmation re-run, however busy the machine is (ten times was not enough: under load a
    // run's repetitions spread so widely that Welch's test found no significance, p = 0.066)
    // — unless the machine was so busy during the run and both re-runs that the gate cannot
    // tell (exit 4, each verdict saying so)
    let fast = scaled(1000.0, "fast-baseline");
    let out = q()
        .args(["run", "--only", "tiny:Q8_0", "--baseline"])
        .arg(&fast)
        .args(["--save-baseline", "base/baseline.json"])
        .output()
        .unwrap();
    let busy = out.status.code() == Some(4);
    if busy {
        assert!(
            stderr(&out).contains("the machine was busy"),
            "{}",
            stderr(&out)
        );
    } else {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("REGRESSED"));
    }
    assert!(
        stderr(&out).contains("confirming: 1 cell"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("not saved as the baseline"));
    assert!(!dir.path().join("base/baseline.json").exists());
    let run_dir = common::only_run_dir(&dir.path().join("reports"));
    assert!(run_dir.join("comparison.md").exists() && run_dir.join("comparison.json").exists());
    // the re-runs are in the run folder and in the comparison
    for k in [1, 2] {
        let rerun = json(&run_dir.join(format!("confirm-{k}.json")));
        assert_eq!(rerun["cells"].as_array().unwrap().len(), 1);
    }
    let cmp = json(&run_dir.join("comparison.json"));
    assert_eq!(cmp["confirm_runs"], 2);
    let decided = if busy { "inconclusive" } else { "regressed" };
    assert!(cmp["cells"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["verdict"] == decided && m["confirmations"].as_array().unwrap().len() == 2));

    // no baseline given: the run is saved as the next one
    let out = q()
        .args([
            "run",
            "--only",
            "tiny:Q8_0",
            "--save-baseline",
            "base/baseline.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // ... unless the machine was busy while its cell was timed: a disturbed cell would make
    // every later comparison with it inconclusive, so such a run is no baseline
    let newest = std::fs::read_dir(dir.path().join("reports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("results.json").exists())
        .max()
        .unwrap();
    let ran = json(&newest.join("results.json"));
    let disturbed = ran["cells"][0]["disturbance"]["disturbed"].as_str();
    let path = dir.path().join("base/baseline.json");
    match disturbed {
        None => {
            let saved = json(&path);
            assert_eq!(saved["schema_version"], 1);
            assert_eq!(saved["run_id"], ran["run_id"]);
        }
        Some(why) => {
            assert!(
                !path.exists(),
                "a disturbed run ({why}) saved as the baseline"
            );
            assert!(
                stderr(&out).contains("1 cell measured while the machine was busy"),
                "{}",
                stderr(&out)
            );
        }
    }

    // a bad baseline is a setup error: nothing is measured
    std::fs::write(dir.path().join("bad.json"), "nope").unwrap();
    let before = std::fs::read_dir(dir.path().join("reports"))
        .unwrap()
        .count();
    let out = q()
        .args(["run", "--baseline", "bad.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        std::fs::read_dir(dir.path().join("reports"))
            .unwrap()
            .count(),
        before
    );
}

#[test]
fn a_folder_of_baseline_runs_tests_against_their_spread() {
    let f = fixture();
    // three baseline runs of a known spread (±3%), not three real runs of a busy machine
    let set = f.root().join("baseline-set");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::copy(scaled(1.0, "first"), set.join("a.json")).unwrap();
    std::fs::copy(scaled(0.97, "second"), set.join("b.json")).unwrap();
    std::fs::copy(scaled(1.03, "third"), set.join("c.json")).unwrap();
    let out = compare(&set, &scaled(0.4, "much-slower"), &["--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cmp["base_runs"], 3);
    let decode = metric_of(&cmp, "decode_tok_s");
    assert_eq!(decode["method"], "between_runs");
    assert_eq!(decode["verdict"], "regressed");
    // an empty folder is an unreadable baseline
    let empty = f.root().join("empty-set");
    std::fs::create_dir_all(&empty).unwrap();
    let out = compare(&empty, &f.b.join("results.json"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("holds no report"), "{}", stderr(&out));
}

/// The tiny matrix with the quality test: F16 (the reference) and Q4_K_M scored on a corpus file.
const QUALITY: &str = "schema = 1\n[defaults]\nquants = [\"F16\", \"Q4_K_M\"]\nn_gen = 4\n\
     n_prompt = 8\nrepetitions = 3\nwarmup = 0\nquality = true\nquality_ctx = 64\n\
     quality_chunks = 4\nquality_corpus = \"corpus.txt\"\n\
     [[model]]\nname = \"tiny\"\nsynthetic = \"tiny\"\n";

/// A real run with the quality test, made once, in a folder of its own.
fn quality_run() -> &'static (Scratch, PathBuf) {
    static Q: OnceLock<(Scratch, PathBuf)> = OnceLock::new();
    Q.get_or_init(|| {
        let s = Scratch::new();
        std::fs::write(s.path().join("corpus.txt"), common::corpus(7)).unwrap();
        s.config(QUALITY);
        let out = s.run(&["--out", "q"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let dir = s.run_dir_in("q");
        (s, dir)
    })
}

/// The quality run's results.json with the Q4_K_M cell's KLD multiplied by `k` and given a
/// small standard error (1% of the original KLD), written to `name`.
fn with_kld(k: f64, name: &str) -> PathBuf {
    let (s, dir) = quality_run();
    let mut r = tamed(json(&dir.join("results.json")));
    for c in r["cells"].as_array_mut().unwrap() {
        if c["quant"] == "Q4_K_M" {
            let q = &mut c["quality"];
            let kld = q["kld_mean"].as_f64().unwrap();
            assert!(kld > 0.0, "{q}");
            q["kld_mean"] = Value::from(kld * k);
            q["kld_mean_err"] = Value::from(kld * 0.01);
        }
    }
    let p = s.path().join(name);
    std::fs::write(&p, serde_json::to_string(&r).unwrap()).unwrap();
    p
}

/// `quantbench compare BASE CUR --format json` in the quality run's folder: exit code and
/// comparison.
fn compare_quality(base: &Path, cur: &Path) -> (Option<i32>, Value) {
    let out = quality_run()
        .0
        .cmd()
        .args(["compare", "--format", "json"])
        .arg(base)
        .arg(cur)
        .output()
        .unwrap();
    let cmp =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    (out.status.code(), cmp)
}

/// The comparison's cell of `quant`.
fn cell_of<'a>(cmp: &'a Value, quant: &str) -> &'a Value {
    cmp["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["quant"] == quant)
        .unwrap()
}

/// The verdicts of a cell's metrics by name.
fn verdicts(cell: &Value) -> Vec<(String, String)> {
    cell["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap().to_string();
            (s("metric"), s("verdict"))
        })
        .collect()
}

#[test]
fn a_doubled_kld_is_a_regression() {
    let base = with_kld(1.0, "kld-base.json");
    let doubled = with_kld(2.0, "kld-doubled.json");
    let (code, cmp) = compare_quality(&base, &doubled);
    assert_eq!(code, Some(1), "{cmp}");
    // the same speed figures on both sides: the KLD is the only regression
    assert_eq!(cmp["regressions"], 1, "{cmp}");
    let q4 = cell_of(&cmp, "Q4_K_M");
    assert_eq!(q4["verdict"], "regressed");
    let kld = q4["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "kld_mean")
        .unwrap();
    assert_eq!(kld["verdict"], "regressed", "{kld}");
    assert_eq!(kld["method"], "z_test");
    assert!((kld["change_pct"].as_f64().unwrap() - 100.0).abs() < 1e-6);
    assert!(verdicts(q4).contains(&("top1_agree".into(), "unchanged".into())));
    // the reference against itself: KLD 0 both sides, unchanged
    let f16 = cell_of(&cmp, "F16");
    assert!(verdicts(f16).contains(&("kld_mean".into(), "unchanged".into())));
    // the table says so too
    let out = quality_run()
        .0
        .cmd()
        .arg("compare")
        .args([&base, &doubled])
        .args(["--format", "md"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let md = stdout(&out);
    let row = md.lines().find(|l| l.contains("| kld_mean |")).unwrap();
    assert!(row.contains("Q4_K_M") && row.contains("REGRESSED"), "{md}");
    assert!(
        md.contains("Quality metrics (kld_mean, top1_agree)"),
        "{md}"
    );
    // the (tamed) real report against itself: compared, unchanged
    let real = tamed_quality_run("real-tamed.json");
    let (code, cmp) = compare_quality(&real, &real);
    assert_eq!(code, Some(0), "{cmp}");
    let q4 = verdicts(cell_of(&cmp, "Q4_K_M"));
    assert!(
        q4.contains(&("kld_mean".into(), "unchanged".into())),
        "{q4:?}"
    );
    assert!(q4.contains(&("top1_agree".into(), "unchanged".into())));
}

#[test]
fn a_csv_baseline_carries_the_quality_errors() {
    let (s, dir) = quality_run();
    let text = tamed_csv(&std::fs::read_to_string(dir.join("results.csv")).unwrap());
    let csv_path = s.path().join("tamed.csv");
    std::fs::write(&csv_path, &text).unwrap();
    // the CSV against its own JSON: the quality columns join and agree
    let (code, cmp) = compare_quality(&csv_path, &tamed_quality_run("csv-own.json"));
    assert_eq!(code, Some(0), "{cmp}");
    let q4 = cell_of(&cmp, "Q4_K_M");
    assert_eq!(q4["note"], Value::Null, "{q4}");
    assert!(verdicts(q4).contains(&("kld_mean".into(), "unchanged".into())));
    // the CSV with the small standard error of the doubled JSON, as the baseline
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let head: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let col = |n: &str| head.iter().position(|h| h == n).unwrap();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&head).unwrap();
    for rec in rdr.records() {
        let mut row: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        if row[col("quant")] == "Q4_K_M" {
            let kld: f64 = row[col("kld_mean")].parse().unwrap();
            row[col("kld_mean_err")] = (kld * 0.01).to_string();
        }
        w.write_record(&row).unwrap();
    }
    let base = s.path().join("kld-base.csv");
    std::fs::write(&base, w.into_inner().unwrap()).unwrap();
    let (code, cmp) = compare_quality(&base, &with_kld(2.0, "kld-doubled-csv.json"));
    assert_eq!(code, Some(1), "{cmp}");
    let q4 = verdicts(cell_of(&cmp, "Q4_K_M"));
    assert!(
        q4.contains(&("kld_mean".into(), "regressed".into())),
        "{q4:?}"
    );
}

#[test]
fn quality_on_another_corpus_is_not_compared() {
    let (s, dir) = quality_run();
    let mut r = json(&with_kld(2.0, "kld-doubled-corpus.json"));
    for c in r["cells"].as_array_mut().unwrap() {
        c["quality"]["quality_corpus"] = Value::from("other.txt (sha256 0000)");
    }
    let p = s.path().join("other-corpus.json");
    std::fs::write(&p, serde_json::to_string(&r).unwrap()).unwrap();
    let _ = dir;
    let (code, cmp) = compare_quality(&tamed_quality_run("corpus-base.json"), &p);
    assert_eq!(code, Some(0), "no verdict, no regression: {cmp}");
    let q4 = cell_of(&cmp, "Q4_K_M");
    assert_eq!(q4["verdict"], "unchanged", "speed still compares: {q4}");
    assert!(
        q4["note"].as_str().unwrap().contains("another corpus"),
        "{q4}"
    );
    let names: Vec<String> = verdicts(q4).into_iter().map(|(m, _)| m).collect();
    assert!(names.contains(&"decode_tok_s".to_string()), "{names:?}");
    assert!(!names.contains(&"kld_mean".to_string()), "{names:?}");
}

#[test]
fn run_with_a_quality_baseline_gates_on_kld() {
    let (s, _) = quality_run();
    // a baseline whose KLD is half this build's (small errors): the run regresses on kld_mean,
    // a deterministic figure that the speed-only confirmation re-runs leave standing
    let half = with_kld(0.5, "kld-half.json");
    let out = s
        .cmd()
        .args([
            "run",
            "--only",
            "tiny:Q4_K_M",
            "--out",
            "gate",
            "--confirm",
            "1",
        ])
        .arg("--baseline")
        .arg(&half)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let cmp = json(&s.run_dir_in("gate").join("comparison.json"));
    let q4 = cell_of(&cmp, "Q4_K_M");
    let kld = q4["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "kld_mean")
        .unwrap();
    assert_eq!(kld["verdict"], "regressed", "{kld}");
    assert!(kld.get("confirmations").is_none(), "{kld}");
    assert!(stderr(&out).contains("kld_mean"), "{}", stderr(&out));
}

/// A cell measured while other processes keep every core busy (the injected fault `busy`:
/// one spinning process per core, real llama.cpp measuring beside them): the cell says so in
/// every report, and the gate calls its speed inconclusive — exit 4, not 0 or 1 — whatever
/// the speed: even a baseline a thousand times as fast is not called a regression, and the
/// confirmation re-runs (busy too) confirm nothing.
#[test]
fn a_cell_measured_on_a_busy_machine_is_inconclusive() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("models.toml"), TINY).unwrap();
    let q = || {
        let mut c = common::command(dir.path(), &f.scratch.cache());
        c.env("QUANTBENCH_FAULT", "busy");
        c
    };
    // 40 repetitions: the timed span must pass disturbance::MIN_TIMED_S (0.2 s) to be judged
    // (5 took 72 ms in a CI-like run, and the cell was not judged at all); not part of the key
    let out = q()
        .args([
            "run",
            "--only",
            "tiny:Q8_0",
            "--out",
            "busy",
            "--no-plots",
            "-r",
            "40",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = common::only_run_dir(&dir.path().join("busy"));
    let r = json(&run.join("results.json"));
    let d = &r["cells"][0]["disturbance"];
    assert!(
        stderr(&out).contains("BUSY     the machine was busy"),
        "{d}\n{}",
        stderr(&out)
    );
    assert!(d["other_cpu_pct"].as_f64().unwrap() >= 10.0, "{d}");
    assert!(
        d["disturbed"]
            .as_str()
            .unwrap()
            .starts_with("other processes used"),
        "{d}"
    );
    let csv = std::fs::read_to_string(run.join("results.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(header.last(), Some(&"disturbed"), "appended last");
    assert!(std::fs::read_to_string(run.join("summary.md"))
        .unwrap()
        .contains("## Disturbed cells"));
    // compare: inconclusive with the reason, exit 4; a CSV baseline carries it too
    let base = scaled(1000.0, "fast-busy");
    for cur in [run.join("results.json"), run.join("results.csv")] {
        let out = compare(&base, &cur, &["--format", "json"]);
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(cmp["regressions"], 0);
        let decode = metric_in(&cmp, "Q8_0", "decode_tok_s");
        assert_eq!(decode["verdict"], "inconclusive", "{decode}");
        assert!(decode["reason"]
            .as_str()
            .unwrap()
            .starts_with("the machine was busy during this run: other processes used"));
        let mem = metric_in(&cmp, "Q8_0", "mem_bytes");
        assert_ne!(
            mem["verdict"], "inconclusive",
            "memory does not depend on a busy CPU: {mem}"
        );
    }
    // run --baseline: the re-runs wait (2 s in tests) for a quiet machine, are busy too, and
    // confirm nothing
    let out = q()
        .args([
            "run",
            "--only",
            "tiny:Q8_0",
            "--no-plots",
            "--confirm",
            "1",
            "--baseline",
        ])
        .arg(&base)
        .output()
        .unwrap();
    // The re-run is busy too (the fault spins beside every cell), so it confirms nothing:
    // exit 4. Where the spinners did not get the CPU while the re-run was timed (other tests
    // beside it), the re-run counts as quiet and decides: against a baseline 1000 times
    // faster that is a regression, exit 1, and it must say that a quiet re-run decided.
    let err = stderr(&out);
    match out.status.code() {
        Some(4) => assert!(err.contains("inconclusive"), "{err}"),
        Some(1) => assert!(
            err.contains("decided by 1 re-run on a quiet machine"),
            "{err}"
        ),
        c => panic!("exit {c:?}: {err}"),
    }
    assert!(
        err.contains("confirming: 1 cell regressed or measured on a busy machine"),
        "{err}"
    );
}

#[test]
fn a_csv_value_that_is_not_a_number_and_a_row_given_twice_are_named() {
    let f = fixture();
    let text = std::fs::read_to_string(f.b.join("results.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let head: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let k = head.iter().position(|h| h == "decode_tok_s").unwrap();
    let mut rows: Vec<Vec<String>> = rdr
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    // a spreadsheet's error value in row 2 (the header is row 1), the last row pasted twice
    rows[0][k] = "#N/A".into();
    rows.push(rows.last().unwrap().clone());
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&head).unwrap();
    for r in &rows {
        w.write_record(r).unwrap();
    }
    let edited = f.root().join("edited.csv");
    std::fs::write(&edited, w.into_inner().unwrap()).unwrap();
    let out = compare(&edited, &f.b.join("results.json"), &[]);
    assert!(is_a_verdict(&out), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("edited.csv: row 2, column decode_tok_s: \"#N/A\" is not a number"),
        "{e}"
    );
    let n = rows.len() + 1;
    assert!(
        e.contains(&format!(
            "edited.csv: row {} and row {n} are the same cell",
            n - 1
        )) && e.contains("the later one is used"),
        "{e}"
    );
}

#[test]
fn hostile_text_in_a_csv_stays_one_cell_of_the_markdown_table() {
    // a model name with a table separator, a line break and HTML: `compare --format md` is
    // pasted into PR comments, where it must not add rows or run as HTML
    let f = fixture();
    let text = std::fs::read_to_string(f.b.join("results.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let head: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let k = head.iter().position(|h| h == "model").unwrap();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&head).unwrap();
    for r in rdr.records() {
        let mut r: Vec<String> = r.unwrap().iter().map(String::from).collect();
        r[k] = "a|b<script>x</script>\n| injected | row |".into();
        w.write_record(&r).unwrap();
    }
    let hostile = f.root().join("hostile.csv");
    std::fs::write(&hostile, w.into_inner().unwrap()).unwrap();
    let out = compare(&hostile, &hostile, &["--format", "md"]);
    assert!(is_a_verdict(&out), "{}", stderr(&out));
    let md = stdout(&out);
    assert!(!md.contains("<script>"), "{md}");
    assert!(!md.lines().any(|l| l.starts_with("| injected")), "{md}");
    // every row of the table: 10 cells, so 11 separators that are not escaped
    let unescaped = |l: &str| {
        let b = l.as_bytes();
        (0..b.len())
            .filter(|&i| b[i] == b'|' && (i == 0 || b[i - 1] != b'\\'))
            .count()
    };
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
    assert!(rows.len() > 2, "{md}");
    assert!(rows.iter().all(|l| unescaped(l) == 11), "{md}");
    assert!(md.contains("a\\|b&lt;script&gt;"), "{md}");
}
