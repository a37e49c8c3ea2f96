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
    // a crash mid-write left half a line, cut inside a multi-byte character of generated text
    let mut bytes = std::fs::read(&jsonl).unwrap();
    bytes.extend_from_slice("{\"type\":\"cell\",\"cell\":{\"text\":\"caf".as_bytes());
    bytes.push("é".as_bytes()[0]);
    std::fs::write(&jsonl, bytes).unwrap();

    // the disk is full: every write of results.json fails with ENOSPC
    let d = dir.to_str().unwrap();
    let out = s
        .cmd()
        .args(["run", "-r", "1", "--no-plots", "--resume", d])
        .env("QUANTBENCH_FAULT_DISK_FULL", "results.json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("No space left on device")
            && err.contains("free some disk space")
            && err.contains(&format!("quantbench run --resume {d}")),
        "{err}"
    );
    assert_whole_lines(&jsonl);

    // space again: the resumption measures the failed cell and keeps the others
    let out = s.run(&["-r", "1", "--no-plots", "--resume", d]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_whole_lines(&jsonl);
    let report = json(&dir.join("results.json"));
    assert_eq!(cells(&report).len(), 3);
    assert!(cells(&report).iter().all(|c| c["status"] == "ok"));
    let partials: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-") || n.ends_with(".tmp"))
        .collect();
    assert!(partials.is_empty(), "{partials:?}");
}

#[test]
fn a_second_run_waits_for_the_machine_wide_lock_whatever_its_cache() {
    let s = Scratch::new();
    s.config(TINY);
    // the machine's lock folder (/run/lock in real life), not the cache: a run with a cache of
    // its own (another user, a CI job) waits all the same
    let machine = s.path().join("machine");
    std::fs::create_dir_all(&machine).unwrap();
    let lock = machine.join("quantbench-measure.lock");
    // another run holds the lock, as a nightly job would
    let hold = || {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&lock)
            .unwrap();
        f.lock().unwrap();
        std::fs::write(
            &lock,
            r#"{"pid":4242,"command":"quantbench run (nightly)\u001b[2J","since":"2026-12-01T02:00:00Z"}"#,
        )
        .unwrap();
        f
    };
    let held = hold();
    let log = s.path().join("second.log");
    let mut child = s
        .process()
        .args(["run", "-r", "1", "--only", "tiny:F16", "--no-plots"])
        .env("QUANTBENCH_LOCK_DIR", &machine)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    common::wait_for(180, "the second run to say it waits", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("another run is measuring"))
    });
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("pid 4242")
            && said.contains("quantbench run (nightly)\\u{1b}[2J")
            && !said.contains('\u{1b}')
            && said.contains("--no-lock")
            && said.contains(&lock.display().to_string()),
        "the holder, its escape sequence escaped: {said}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "it waits while the lock is held"
    );
    assert!(
        !s.path().join("reports").exists(),
        "nothing measured while waiting, not even the CPU self-test"
    );
    // quantizing waits too: a fetch of a fresh cache holds its quantization
    let fetch_log = s.path().join("fetch.log");
    let mut fetch = common::process(s.path(), &s.path().join("other-cache"))
        .arg("fetch")
        .env("QUANTBENCH_LOCK_DIR", &machine)
        .stderr(std::fs::File::create(&fetch_log).unwrap())
        .spawn()
        .unwrap();
    common::wait_for(180, "the fetch to say its quantization waits", || {
        std::fs::read_to_string(&fetch_log).is_ok_and(|t| t.contains("quantizing waits"))
    });
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
    let status = common::wait_bounded(&mut fetch, 300);
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&fetch_log).unwrap()
    );

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
        .env("QUANTBENCH_LOCK_DIR", &machine)
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let d = s.run_dir_in("nolock");
    assert_eq!(json(&d.join("results.json"))["unlocked"], true);
}

#[test]
fn two_fetches_on_one_fresh_cache_both_succeed() {
    // they used to collide on one temporary name for the hash record (5 of 10 trials)
    for trial in 0..3 {
        let s = Scratch::new();
        s.config(TINY);
        let cache = s.path().join(format!("cache-{trial}"));
        let spawn = |name: &str| {
            common::process(s.path(), &cache)
                .arg("fetch")
                .stderr(std::fs::File::create(s.path().join(name)).unwrap())
                .spawn()
                .unwrap()
        };
        let (mut a, mut b) = (spawn("a.log"), spawn("b.log"));
        for (child, name) in [(&mut a, "a.log"), (&mut b, "b.log")] {
            let status = common::wait_bounded(child, 300);
            let log = std::fs::read_to_string(s.path().join(name)).unwrap();
            assert_eq!(status.code(), Some(0), "trial {trial}, {name}: {log}");
        }
    }
}

#[test]
fn a_cache_memo_that_cannot_be_written_is_a_warning() {
    let s = Scratch::new();
    s.config(TINY);
    // the hash records' folder cannot be made (a file stands there): the cells still run
    std::fs::create_dir_all(s.cache()).unwrap();
    std::fs::write(s.cache().join("hashes"), b"in the way").unwrap();
    let out = s.run(&["-r", "1", "--only", "tiny:Q8_0", "--no-plots"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("was not remembered"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        cells(&json(&s.run_dir().join("results.json")))[0]["status"],
        "ok"
    );
}

#[test]
fn hostile_names_and_labels_are_neutralised_in_the_csv_and_escaped_on_the_terminal() {
    let s = Scratch::new();
    let label = "=HYPERLINK(\"http://evil.example\",\"x\")\nline two\u{202e}fdp";
    s.config(&format!(
        "schema = 1\n[defaults]\nn_gen = 8\nn_prompt = 32\nrepetitions = 1\nwarmup = 0\n\
         [[model]]\nname = \"-tiny\"\nlabel = {}\nsynthetic = \"tiny\"\nquants = [\"Q8_0\"]\n",
        toml_string(label)
    ));
    let out = s.run(&["--no-plots"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains('\u{202e}') && err.contains("\\u{202e}") && err.contains("\\nline two"),
        "labels escaped on the terminal: {err}"
    );
    let dir = s.run_dir();
    let text = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let head: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let row: Vec<String> = rdr
        .records()
        .next()
        .unwrap()
        .unwrap()
        .iter()
        .map(String::from)
        .collect();
    let col = |n: &str| row[head.iter().position(|h| h == n).unwrap()].clone();
    assert_eq!(col("model"), "'-tiny");
    assert!(col("label").starts_with("'=HYPERLINK("), "{}", col("label"));
    for c in &row {
        assert!(
            !c.starts_with(['=', '+', '@', '\t', '\r'])
                && (!c.starts_with('-') || c.parse::<f64>().is_ok()),
            "a cell a spreadsheet would evaluate: {c:?}"
        );
    }
    assert!(
        col("decode_tok_s").parse::<f64>().is_ok(),
        "numbers stay numbers"
    );
    // compare reads the neutralised CSV back: the cell joins its JSON twin
    let out = s
        .cmd()
        .arg("compare")
        .arg(dir.join("results.csv"))
        .arg(dir.join("results.json"))
        .args(["--format", "json"])
        .output()
        .unwrap();
    // one repetition on each side: the gate cannot judge the speed (inconclusive, exit 4)
    assert!(matches!(out.status.code(), Some(0 | 4)), "{}", stderr(&out));
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cells = cmp["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1, "joined, not missing + new: {cmp}");
    assert_eq!(cells[0]["model"], "-tiny", "{cmp}");
}

#[test]
fn a_failure_reason_stays_one_line_of_summary_md_and_is_no_html() {
    // the reason of a failed cell carries text a config or a server chose (here a file name;
    // a hub's reason phrase or error header the same way): in summary.md it must stay on its
    // line, and a Markdown viewer must not render it as HTML
    let s = Scratch::new();
    s.config(
        "schema = 1\n[defaults]\nn_gen = 8\nn_prompt = 32\nrepetitions = 1\nwarmup = 0\n\
         [[model]]\nname = \"m\"\npath = \"x|<img src=x onerror=alert(1)>\\ny.gguf\"\n\
         quants = [\"Q8_0\"]\n",
    );
    let out = s.run(&["--no-plots"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let md = std::fs::read_to_string(s.run_dir().join("summary.md")).unwrap();
    assert!(!md.contains("<img"), "{md}");
    let line = md
        .lines()
        .find(|l| l.starts_with("- m Q8_0: "))
        .unwrap_or_else(|| panic!("{md}"));
    assert!(
        line.contains("x\\|&lt;img src=x onerror=alert(1)&gt; y.gguf"),
        "{line}"
    );
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
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

#[test]
fn a_full_disk_while_drawing_charts_is_an_error_with_the_command_to_redo_them() {
    let s = Scratch::new();
    s.config(TINY);
    let out = s
        .cmd()
        .args(["run", "-r", "1", "--only", "tiny:F16"])
        .env("QUANTBENCH_FAULT_DISK_FULL", "throughput_comparison.png")
        .output()
        .unwrap();
    let dir = s.run_dir();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let id = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains("No space left on device")
            && err.contains("quantbench report ")
            && err.contains(&format!("{id}`")),
        "{err}"
    );
    assert!(
        !dir.join("throughput_comparison.png").exists(),
        "no truncated chart under its name"
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".partial-")), "{names:?}");
    assert_eq!(cells(&json(&dir.join("results.json")))[0]["status"], "ok");
    // the command it names draws them
    let out = s.cmd().arg("report").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.join("throughput_comparison.png").exists());
    // a machine without the NVIDIA driver says so plainly, not in the loader's words
    let report = json(&dir.join("results.json"));
    let gpu = &report["environment"]["gpu"];
    if gpu["gpus"].as_array().is_none_or(|g| g.is_empty()) {
        let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
        if gpu["unavailable_reason"] == "none (no NVIDIA driver)" {
            assert!(!html.contains("libloading") && !html.contains("cannot open shared object"));
            assert!(html.contains("none (no NVIDIA driver)"));
        }
    }
}

#[test]
fn absurd_inputs_are_refused_before_measuring() {
    let s = Scratch::new();
    s.config(TINY);
    for (args, msg) in [
        (&["--usd-per-hour", "1e308"][..], "at most"),
        (&["--tokens-per-hour", "1e300"][..], "at most"),
    ] {
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(msg), "{args:?}: {}", stderr(&out));
    }
    s.config(&format!("{TINY}[cost]\nusd_per_hour = 1e308\n"));
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("usd_per_hour"), "{}", stderr(&out));
    // a list that multiplies the matrix past 10,000 cells: refused, with list's estimate
    let n_gen: Vec<String> = (2..3402).map(|n| n.to_string()).collect();
    s.config(&TINY.replace("n_gen = 8", &format!("n_gen = [{}]", n_gen.join(", "))));
    let t = std::time::Instant::now();
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("10200 cells")
            && err.contains("more than the 10000")
            && err.contains("estimates ~")
            && err.contains("--yes"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert!(!s.path().join("reports").exists(), "nothing was measured");
}

#[test]
fn merge_refuses_parts_of_two_matrices() {
    let s = Scratch::new();
    s.config(TINY);
    let out = s.run(&["-r", "1", "--no-plots", "--shard", "1/2", "--out", "a"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a = s.run_dir_in("a");
    // the other part of another matrix (one more cell in its plan)
    let mut r = json(&a.join("results.json"));
    r["shard"]["index"] = Value::from(2);
    r["shard"]["plan_keys"]
        .as_array_mut()
        .unwrap()
        .push(Value::from("tiny:Q6_K:pp32:tg8"));
    for c in r["cells"].as_array_mut().unwrap() {
        let k = c["key"].as_str().unwrap().replace(":pp32", ":pp33");
        c["key"] = Value::from(k);
    }
    let b = s.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("results.json"), serde_json::to_string(&r).unwrap()).unwrap();
    let out = s
        .cmd()
        .arg("merge")
        .arg(&a)
        .arg(&b)
        .args(["--out", "merged"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("another matrix"), "{}", stderr(&out));
    assert!(!s.path().join("merged").exists());
}

#[test]
fn damaged_model_files_are_not_called_cached_and_a_damaged_synthetic_file_is_rewritten() {
    use sha2::{Digest, Sha256};
    use std::io::{Seek, SeekFrom, Write};
    let s = Scratch::new();
    s.config(TINY);
    let out = s.cmd().arg("fetch").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = s.cache().join("synthetic/tiny-seed0-w1");
    let f16 = dir.join("tiny-F16.gguf");
    let good = hex::encode(Sha256::digest(std::fs::read(&f16).unwrap()));
    // a file cut short (an interrupted copy), and a header that claims 2^40 tensors
    let q8 = std::fs::read(dir.join("tiny-Q8_0.gguf")).unwrap();
    std::fs::write(s.path().join("m-Q8_0.gguf"), &q8[..q8.len() / 2]).unwrap();
    let mut crafted = b"GGUF\x03\x00\x00\x00".to_vec();
    crafted.extend_from_slice(&(1u64 << 40).to_le_bytes());
    crafted.extend_from_slice(&0u64.to_le_bytes());
    crafted.resize(4096, 0);
    std::fs::write(s.path().join("m-Q4_K_M.gguf"), crafted).unwrap();
    // bytes of the synthetic F16 overwritten in place: the same size
    std::thread::sleep(Duration::from_millis(20));
    let mut f = std::fs::OpenOptions::new().write(true).open(&f16).unwrap();
    f.seek(SeekFrom::Start(q8.len() as u64 / 2)).unwrap();
    f.write_all(&[0xAA; 64]).unwrap();
    drop(f);
    s.config(
        "schema = 1\n[defaults]\nn_gen = 8\nn_prompt = 32\nrepetitions = 1\nwarmup = 0\n\
         [[model]]\nname = \"tiny\"\nsynthetic = \"tiny\"\nquants = [\"F16\"]\n\
         [[model]]\nname = \"mine\"\npath = \"m-{QUANT}.gguf\"\nquants = [\"Q8_0\", \"Q4_K_M\"]\n",
    );
    let out = s.cmd().args(["list", "--format", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = plan["cells"].as_array().unwrap();
    let problem = |i: usize| rows[i]["problem"].as_str().unwrap_or("").to_string();
    assert!(
        problem(0).contains("changed since quantbench wrote it"),
        "{rows:?}"
    );
    assert!(problem(1).contains("truncated"), "{rows:?}");
    assert!(problem(2).contains("damaged GGUF header"), "{rows:?}");
    assert!(rows.iter().all(|r| r["cached"] == false), "{rows:?}");
    // the run writes the synthetic file again and fails the damaged local files' cells
    let out = s.run(&["--no-plots"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("writing it again"),
        "{}",
        stderr(&out)
    );
    let report = json(&s.run_dir().join("results.json"));
    let c = &cells(&report)[0];
    assert_eq!(c["status"], "ok", "{c}");
    assert_eq!(c["origin"]["sha256"], good.as_str());
    assert!(cells(&report)[1]["error"]
        .as_str()
        .unwrap()
        .contains("truncated"));
}
