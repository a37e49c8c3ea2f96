//! Bad input, second runs, hangs, kills and full disks, end to end on the `tiny` model with real
//! llama.cpp: each test is a probe of the hardening review that failed on the code before it.
use crate::common;

use std::path::Path;
use std::time::Duration;

use crate::common::{cells, json, stderr, Scratch, TINY};
use serde_json::Value;

/// Every line of a results.jsonl is a whole JSON object.
fn assert_whole_lines(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    for l in text.lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}"));
    }
}

#[test]
fn command_line_overrides_are_checked_like_the_config() {
    let s = Scratch::new();
    s.config(TINY);
    for (args, msg) in [
        (
            &["-r", "0"][..],
            "repetitions = 0 is out of range: use a value from 1 to 1000",
        ),
        (&["--threads", "0"][..], "n_threads = 0 is out of range"),
        (
            &["--warmup", "1000000"][..],
            "warmup = 1000000 is out of range",
        ),
        (
            &["--n-gen", "4294967295"][..],
            "n_gen = 4294967295 is out of range",
        ),
    ] {
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(msg), "{args:?}: {}", stderr(&out));
        // the same value in models.toml says the same
        let key = msg.split(" = ").next().unwrap();
        let value = msg.split(" = ").nth(1).unwrap().split(' ').next().unwrap();
        s.config(&format!("{TINY}{key} = {value}\n"));
        let out = s.run(&[]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains(msg),
            "models.toml {key}: {}",
            stderr(&out)
        );
        s.config(TINY);
    }
    assert!(!s.path().join("reports").exists(), "nothing was measured");
}

#[test]
fn resume_refuses_a_folder_of_another_plan_and_changes_nothing() {
    let s = Scratch::new();
    s.config(TINY);
    let out = s.run(&["-r", "1", "--only", "tiny:F16", "--no-plots"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = s.run_dir();
    let before: Vec<(String, Vec<u8>)> =
        ["results.json", "results.jsonl", "results.csv", "summary.md"]
            .iter()
            .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
            .collect();
    // another config: the measured cell is not in its plan
    s.config(&TINY.replace("n_gen = 8", "n_gen = 9"));
    let resume = [
        "-r",
        "1",
        "--only",
        "tiny:F16",
        "--resume",
        dir.to_str().unwrap(),
    ];
    let out = s.run(&resume);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not in this plan") && err.contains("tiny:F16:pp32:tg8"),
        "{err}"
    );
    assert!(err.contains("nothing in the folder was changed"), "{err}");
    for (f, bytes) in before {
        assert_eq!(std::fs::read(dir.join(&f)).unwrap(), bytes, "{f} changed");
    }
    // a folder another quantbench is writing (a run, a --resume) is refused too
    s.config(TINY);
    let f = std::fs::File::create(dir.join(".quantbench.lock")).unwrap();
    f.lock().unwrap();
    let out = s.run(&resume);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another quantbench is writing this run folder"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_run_started_with_sighup_ignored_survives_it() {
    // `nohup quantbench run &`: SIGHUP (a closed terminal) must not stop it
    let s = Scratch::new();
    s.config(TINY);
    let mut child = common::isolate(&mut std::process::Command::new("sh"), s.path(), &s.cache())
        .arg("-c")
        .arg(format!(
            "trap '' HUP; exec '{}' run -r 1 --no-plots",
            common::bin().display()
        ))
        .stderr(std::fs::File::create(s.path().join("run.log")).unwrap())
        .spawn()
        .unwrap();
    common::wait_for(120, "the first cell", || {
        common::has_a_cell(&s.path().join("reports"))
    });
    common::signal(child.id(), 1);
    let status = common::wait_bounded(&mut child, 300);
    let log = std::fs::read_to_string(s.path().join("run.log")).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    let report = json(&s.run_dir().join("results.json"));
    assert_eq!(report["status"], "complete");
    assert_eq!(cells(&report).len(), 3);
}

#[test]
fn save_baseline_is_checked_before_measuring() {
    let s = Scratch::new();
    s.config(TINY);
    std::fs::write(s.path().join("blocker"), b"a file, not a folder").unwrap();
    let out = s.run(&["--save-baseline", "blocker/base.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--save-baseline blocker/base.json") && err.contains("blocker"),
        "{err}"
    );
    assert!(!s.path().join("reports").exists(), "nothing was measured");
}

#[test]
fn list_never_blocks_and_names_files_that_are_not_gguf() {
    let s = Scratch::new();
    s.config(
        "schema = 1\n[[model]]\nname = \"mine\"\npath = \"m-{QUANT}.gguf\"\n\
         quants = [\"F16\", \"Q8_0\", \"Q4_K_M\"]\n",
    );
    let fifo = s.path().join("m-F16.gguf");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(s.path().join("m-Q8_0.gguf"), b"").unwrap();
    std::fs::write(s.path().join("m-Q4_K_M.gguf"), b"hello, not a model").unwrap();
    let out = s
        .cmd()
        .args(["list", "--format", "json"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "list must not hang: {}",
        stderr(&out)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = plan["cells"].as_array().unwrap();
    let problems: Vec<&str> = rows
        .iter()
        .map(|r| r["problem"].as_str().unwrap_or(""))
        .collect();
    assert!(problems[0].contains("not a regular file"), "{problems:?}");
    assert!(problems[1].contains("empty file"), "{problems:?}");
    assert!(problems[2].contains("not a GGUF file"), "{problems:?}");
    assert!(rows.iter().all(|r| r["cached"] == false), "{rows:?}");
    let out = s
        .cmd()
        .arg("list")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(stderr(&out).contains("BAD"), "{}", stderr(&out));
}

#[test]
fn workers_hanging_before_the_cell_or_after_their_result_are_stopped() {
    let s = Scratch::new();
    s.config(&common::tiny_and_stuck(5));
    // a worker stuck initialising (driver, backend) never starts its cell
    let out = s
        .cmd()
        .args(["run", "-r", "1", "--no-plots"])
        .env("QUANTBENCH_FAULT", "hang-init@stuck")
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = json(&s.run_dir().join("results.json"));
    assert_eq!(cells(&report)[0]["status"], "ok");
    let e = cells(&report)[1]["error"].as_str().unwrap();
    assert!(
        e.contains("timed out after 5 s") && e.contains("before it started"),
        "{e}"
    );

    // a worker stuck while logging without pause is stopped at the deadline too
    let out = s
        .cmd()
        .args(["run", "-r", "1", "--no-plots", "--out", "chatty"])
        .env("QUANTBENCH_FAULT", "hang-log@stuck")
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let d = s.run_dir_in("chatty");
    let e = cells(&json(&d.join("results.json")))[1]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains("timed out after 5 s"), "{e}");

    // a worker stuck in teardown after its result: the result counts, the run goes on
    let out = s
        .cmd()
        .args([
            "run",
            "-r",
            "1",
            "--no-plots",
            "--out",
            "teardown",
            "--only",
            "tiny",
        ])
        .env("QUANTBENCH_FAULT", "hang-exit@tiny")
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let d = s.run_dir_in("teardown");
    let report = json(&d.join("results.json"));
    assert_eq!(cells(&report).len(), 1);
    assert_eq!(
        cells(&report)[0]["status"],
        "ok",
        "the result reported before the hang counts"
    );
}

#[test]
fn stale_partial_files_are_cleaned_on_the_next_run() {
    let s = Scratch::new();
    s.config(TINY);
    let out = s.cmd().arg("fetch").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = s.path().join("cache/synthetic/tiny-seed0-w1");
    assert!(dir.is_dir());
    // what a killed synthetic write or quantization (pid long gone) leaves behind
    let stale = dir.join("tiny-Q8_0.gguf.partial-99999999");
    std::fs::write(&stale, b"half a file").unwrap();
    let out = s.cmd().arg("fetch").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stale.exists(), "the stale partial file was removed");
}

#[test]
fn a_torn_log_line_and_a_full_disk_lose_nothing() {
    let s = Scratch::new();
    s.config(TINY);
    let out = s
        .cmd()
        .args(["run", "-r", "1", "--no-plots"])
        .env("QUANTBENCH_FAULT", "error@tiny:Q4_K_M")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let dir = s.run_dir();
    let jsonl = dir.join("results.jsonl");
    // a crash mid-write left half a line
    let mut text = std::fs::read_to_string(&jsonl).unwrap();
    text.push_str("{\"type\":\"cell\",\"cell\":{\"ind");
    std::fs::write(&jsonl, text).unwrap();

    // the disk is full: every write of results.json fails with ENOSPC
    let tmp = dir.join("results.json.tmp");
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    let d = dir.to_str().unwrap();
    let out = s.run(&["-r", "1", "--no-plots", "--resume", d]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("No space left on device")
            && err.contains("free some disk space")
            && err.contains(&format!("quantbench run --resume {d}")),
        "{err}"
    );
    assert_whole_lines(&jsonl);
    let _ = std::fs::remove_file(&tmp);

    // space again: the resumption measures the failed cell and keeps the others
    let out = s.run(&["-r", "1", "--no-plots", "--resume", d]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_whole_lines(&jsonl);
    let report = json(&dir.join("results.json"));
    assert_eq!(cells(&report).len(), 3);
    assert!(cells(&report).iter().all(|c| c["status"] == "ok"));
    assert!(!tmp.exists());
}

#[test]
fn a_second_run_waits_for_the_measurement_lock() {
    let s = Scratch::new();
    s.config(TINY);
    let cache = s.cache();
    std::fs::create_dir_all(&cache).unwrap();
    // another run holds the lock, as a nightly job would
    let hold = || {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(cache.join("measure.lock"))
            .unwrap();
        f.lock().unwrap();
        std::fs::write(
            cache.join("measure.lock"),
            r#"{"pid":4242,"command":"quantbench run (nightly)","since":"2026-12-01T02:00:00Z"}"#,
        )
        .unwrap();
        f
    };
    let held = hold();
    let log = s.path().join("second.log");
    let mut child = s
        .process()
        .args(["run", "-r", "1", "--only", "tiny:F16", "--no-plots"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    common::wait_for(180, "the second run to say it waits", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("another run is measuring"))
    });
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("pid 4242")
            && said.contains("quantbench run (nightly)")
            && said.contains("--no-lock"),
        "{said}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "it waits while the lock is held"
    );
    let report = json(&s.run_dir().join("results.json"));
    assert!(cells(&report).is_empty(), "nothing measured while waiting");
    drop(held);
    let status = common::wait_bounded(&mut child, 300);
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let report = json(&s.run_dir().join("results.json"));
    assert_eq!(cells(&report)[0]["status"], "ok");
    assert!(report.get("unlocked").is_none(), "measured under the lock");

    // --no-lock measures anyway, and the report says so
    let _held = hold();
    let out = s
        .cmd()
        .args([
            "run",
            "-r",
            "1",
            "--only",
            "tiny:F16",
            "--no-plots",
            "--no-lock",
            "--out",
            "nolock",
        ])
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let d = s.run_dir_in("nolock");
    assert_eq!(json(&d.join("results.json"))["unlocked"], true);
}

#[test]
fn a_binary_replaced_during_a_run_keeps_serving_its_workers() {
    // an upgrade (or a rebuild) while a nightly run measures: the run's later workers must
    // still start, from the binary the run started with
    let s = Scratch::new();
    s.config(TINY);
    let exe = s.path().join("qb");
    std::fs::copy(common::bin(), &exe).unwrap();
    let mut child = common::isolate(&mut std::process::Command::new(&exe), s.path(), &s.cache())
        .args(["run", "-r", "1", "--no-plots"])
        .stderr(std::fs::File::create(s.path().join("run.log")).unwrap())
        .spawn()
        .unwrap();
    common::wait_for(120, "the first cell", || {
        common::has_a_cell(&s.path().join("reports"))
    });
    std::fs::remove_file(&exe).unwrap();
    std::fs::write(&exe, b"#!/bin/sh\nexit 99\n").unwrap();
    let status = common::wait_bounded(&mut child, 300);
    let log = std::fs::read_to_string(s.path().join("run.log")).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    let report = json(&s.run_dir().join("results.json"));
    assert!(cells(&report).iter().all(|c| c["status"] == "ok"), "{log}");
}
