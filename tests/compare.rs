//! `quantbench compare` and `run --baseline` on real runs of the `tiny` matrix.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use assert_cmd::Command;
use serde_json::Value;

const TINY: &str =
    "schema = 1\n[defaults]\nn_gen = 16\nn_prompt = 32\nrepetitions = 5\nwarmup = 1\n\
                    [[model]]\nname = \"tiny\"\nsynthetic = \"tiny\"\n";

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// Two runs made back to back on this machine.
    a: PathBuf,
    b: PathBuf,
}

fn qb(root: &Path) -> Command {
    let mut c = Command::cargo_bin("quantbench").unwrap();
    c.current_dir(root)
        .env("QUANTBENCH_CACHE", root.join("cache"))
        .env_remove("QUANTBENCH_FAULT");
    c
}

/// The two real runs, made once, one after the other (nothing else runs llama.cpp meanwhile).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::write(root.join("models.toml"), TINY).unwrap();
        let mut runs = Vec::new();
        for name in ["a", "b"] {
            let out = qb(&root).args(["run", "--out", name]).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let d = std::fs::read_dir(root.join(name))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            runs.push(d);
        }
        let b = runs.pop().unwrap();
        let a = runs.pop().unwrap();
        Fixture {
            _dir: dir,
            root,
            a,
            b,
        }
    })
}

fn compare(root: &Path, base: &Path, cur: &Path, extra: &[&str]) -> Output {
    qb(root)
        .arg("compare")
        .arg(base)
        .arg(cur)
        .args(extra)
        .output()
        .unwrap()
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

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn load(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Run B's results.json with constructed samples of a known spread: every repetition's
/// decode_tok_s replaced by the cell's mean × (1 ± 1%), whatever the machine did meanwhile.
/// Tests of the gate's logic compare these, so a busy machine cannot change their verdicts.
fn tame() -> Value {
    let f = fixture();
    let mut r = load(&f.b.join("results.json"));
    for c in r["cells"].as_array_mut().unwrap() {
        let mean = c["metrics"]["decode_tok_s"]["mean"].as_f64().unwrap();
        for (i, s) in c["samples"].as_array_mut().unwrap().iter_mut().enumerate() {
            let wiggle = [1.0, 1.01, 0.99, 1.005, 0.995][i % 5];
            s["decode_tok_s"] = Value::from(mean * wiggle);
        }
    }
    r
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
    let p = f.root.join(format!("scaled-{tag}.json"));
    std::fs::write(&p, serde_json::to_string(&r).unwrap()).unwrap();
    p
}

/// Whether two real runs' comparison is a verdict, not a failure to compare: on a busy machine
/// (CI's 2-core VMs, another suite beside this one) two runs of one build differ by any amount —
/// a 1 ms prompt test was measured 10× slower under load — so whether they regress is for the
/// gate study (reports/gate-study-*), not for a test; that they are joined and compared is.
fn is_a_verdict(out: &Output) -> bool {
    matches!(out.status.code(), Some(0 | 1))
}

#[test]
fn two_real_runs_are_joined_cell_by_cell() {
    let f = fixture();
    let out = compare(
        &f.root,
        &f.a.join("results.json"),
        &f.b.join("results.json"),
        &["--format", "json"],
    );
    assert!(is_a_verdict(&out), "{}", err(&out));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cells = cmp["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 3);
    for c in cells {
        assert!(
            ["unchanged", "improved", "regressed"].contains(&c["verdict"].as_str().unwrap()),
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
    let base = f.root.join("tame.json");
    std::fs::write(&base, serde_json::to_string(&tame()).unwrap()).unwrap();
    // CPU cells: the default threshold of decode_tok_s is 25%
    let out = compare(&f.root, &base, &scaled(0.5, "slow"), &["--format", "md"]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("**3 regressions"), "{md}");
    assert!(
        md.contains("| decode_tok_s |") && md.contains("REGRESSED"),
        "{md}"
    );
    // regressions first in the table on stderr
    let table = err(&out);
    let first = table.lines().find(|l| l.starts_with("tiny")).unwrap();
    assert!(first.contains("REGRESSED"), "{table}");

    let out = compare(&f.root, &base, &scaled(1.02, "noise"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    // a 50% improvement is one
    let out = compare(&f.root, &base, &scaled(1.5, "fast"), &["--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cmp["improvements"], 3, "{cmp}");
    assert_eq!(cmp["regressions"], 0);
    // thresholds from the command line and from models.toml
    let out = compare(
        &f.root,
        &base,
        &scaled(0.5, "slow"),
        &["--threshold", "decode_tok_s=60"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    let out = compare(
        &f.root,
        &base,
        &scaled(0.8, "slow20"),
        &["--threshold", "decode_tok_s=10"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    std::fs::write(
        f.root.join("lenient.toml"),
        format!("{TINY}[compare]\ndecode_tok_s = 60\n"),
    )
    .unwrap();
    let out = compare(
        &f.root,
        &base,
        &scaled(0.5, "slow"),
        &["--config", "lenient.toml"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
}

#[test]
fn a_regression_must_survive_the_confirmation_runs() {
    let f = fixture();
    let base = f.root.join("tame-c.json");
    std::fs::write(&base, serde_json::to_string(&tame()).unwrap()).unwrap();
    let slow = scaled(0.5, "slow-c");
    // re-measured slow again: confirmed
    let out = compare(
        &f.root,
        &base,
        &slow,
        &["--confirm-with", slow.to_str().unwrap(), "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cmp["regressions"], 3);
    assert_eq!(cmp["confirm_runs"], 1);
    // re-measured at the baseline's speed: a one-off, not a regression
    let out = compare(
        &f.root,
        &base,
        &slow,
        &["--confirm-with", base.to_str().unwrap(), "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cmp["regressions"], 0);
    let decode = metric_of(&cmp, "decode_tok_s");
    assert_eq!(decode["verdict"], "unconfirmed");
    assert_eq!(decode["confirmations"].as_array().unwrap().len(), 1);
    assert!(err(&out).contains("unconfirmed"), "{}", err(&out));
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
    let nan = f.root.join("nan.csv");
    std::fs::write(&nan, w.into_inner().unwrap()).unwrap();
    let out = compare(&f.root, &nan, &cur, &[]);
    assert_eq!(out.status.code(), Some(2), "no panic: {}", err(&out));
    let e = err(&out);
    assert!(
        e.contains("nan.csv")
            && e.contains("tiny Q8_0")
            && e.contains("decode_tok_s")
            && e.contains("NaN"),
        "{e}"
    );
    // samples whose mean overflows
    let mut r = load(&cur);
    for s in r["cells"][0]["samples"].as_array_mut().unwrap() {
        s["decode_tok_s"] = Value::from(1.0e308);
    }
    let huge = f.root.join("huge.json");
    std::fs::write(&huge, serde_json::to_string(&r).unwrap()).unwrap();
    let out = compare(&f.root, &huge, &cur, &[]);
    assert_eq!(out.status.code(), Some(2), "no panic: {}", err(&out));
    assert!(
        err(&out).contains("huge.json") && err(&out).contains("overflow"),
        "{}",
        err(&out)
    );
    let out = compare(&f.root, &cur, &huge, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    // and run --baseline checks it before measuring anything
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("models.toml"), TINY).unwrap();
    let out = Command::cargo_bin("quantbench")
        .unwrap()
        .current_dir(dir.path())
        .env("QUANTBENCH_CACHE", f.root.join("cache"))
        .args(["run", "--baseline"])
        .arg(&nan)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(err(&out).contains("decode_tok_s"), "{}", err(&out));
    assert!(!dir.path().join("reports").exists(), "nothing was measured");
}

#[test]
fn reports_from_different_devices_are_not_comparable() {
    let f = fixture();
    let mut r = load(&f.b.join("results.json"));
    for c in r["cells"].as_array_mut().unwrap() {
        c["device"] = Value::from("NVIDIA H200");
        c["backend"] = Value::from("CUDA");
        for s in c["samples"].as_array_mut().unwrap() {
            s["decode_tok_s"] = Value::from(s["decode_tok_s"].as_f64().unwrap() * 0.5);
        }
    }
    let p = f.root.join("gpu.json");
    std::fs::write(&p, serde_json::to_string(&r).unwrap()).unwrap();
    let out = compare(
        &f.root,
        &f.a.join("results.json"),
        &p,
        &["--format", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "a different device is no regression: {}",
        err(&out)
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
    let csv = f.b.join("results.csv");
    let out = compare(&f.root, &csv, &f.b.join("results.json"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    let out = compare(&f.root, &csv, &scaled(0.2, "slow-csv"), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    // and a CSV current against a JSON baseline, and a run folder, across the two real runs
    let out = compare(
        &f.root,
        &f.a,
        &f.b.join("results.csv"),
        &["--format", "json"],
    );
    assert!(is_a_verdict(&out), "{}", err(&out));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cmp["cells"].as_array().unwrap().len(), 3);
    assert!(!err(&out).contains("not comparable") && !err(&out).contains("missing"));
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
        let p = f.root.join(name);
        std::fs::write(&p, text).unwrap();
        let out = compare(&f.root, &p, &cur, &[]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let e = err(&out);
        assert!(
            e.contains("reading the baseline") && e.contains(want),
            "{name}: {e}"
        );
    }
    let out = compare(&f.root, &f.root.join("nope.json"), &cur, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(err(&out).contains("cannot read"), "{}", err(&out));
}

#[test]
fn run_with_baseline_gates_and_saves() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("models.toml"), TINY).unwrap();
    let q = || {
        let mut c = Command::cargo_bin("quantbench").unwrap();
        c.current_dir(dir.path())
            .env("QUANTBENCH_CACHE", f.root.join("cache"))
            .env_remove("QUANTBENCH_FAULT");
        c
    };
    // a baseline a thousand times as fast as this machine: the run regresses, and so does every
    // confirmation re-run, however busy the machine is (ten times was not enough: under load a
    // run's repetitions spread so widely that Welch's test found no significance, p = 0.066)
    let fast = scaled(1000.0, "fast-baseline");
    let out = q()
        .args(["run", "--only", "tiny:Q8_0", "--baseline"])
        .arg(&fast)
        .args(["--save-baseline", "base/baseline.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("REGRESSED"));
    assert!(
        err(&out).contains("confirming: 1 cell regressed"),
        "{}",
        err(&out)
    );
    assert!(err(&out).contains("not saved as the baseline"));
    assert!(!dir.path().join("base/baseline.json").exists());
    let run_dir = std::fs::read_dir(dir.path().join("reports"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(run_dir.join("comparison.md").exists() && run_dir.join("comparison.json").exists());
    // the re-runs are in the run folder and in the comparison
    for k in [1, 2] {
        let rerun = load(&run_dir.join(format!("confirm-{k}.json")));
        assert_eq!(rerun["cells"].as_array().unwrap().len(), 1);
    }
    let cmp = load(&run_dir.join("comparison.json"));
    assert_eq!(cmp["confirm_runs"], 2);
    assert!(cmp["cells"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["verdict"] == "regressed" && m["confirmations"].as_array().unwrap().len() == 2));

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
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    let saved = load(&dir.path().join("base/baseline.json"));
    assert_eq!(saved["schema_version"], 1);

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
    let set = f.root.join("baseline-set");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::copy(scaled(1.0, "first"), set.join("a.json")).unwrap();
    std::fs::copy(scaled(0.97, "second"), set.join("b.json")).unwrap();
    std::fs::copy(scaled(1.03, "third"), set.join("c.json")).unwrap();
    let out = compare(
        &f.root,
        &set,
        &scaled(0.4, "much-slower"),
        &["--format", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cmp["base_runs"], 3);
    let decode = metric_of(&cmp, "decode_tok_s");
    assert_eq!(decode["method"], "between_runs");
    assert_eq!(decode["verdict"], "regressed");
    // an empty folder is an unreadable baseline
    let empty = f.root.join("empty-set");
    std::fs::create_dir_all(&empty).unwrap();
    let out = compare(&f.root, &empty, &f.b.join("results.json"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(err(&out).contains("holds no report"), "{}", err(&out));
}
