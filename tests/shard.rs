//! A matrix spread over several machines: `run --shard I/N` measures a deterministic part,
//! `merge` joins the parts into one report, naming cells no part measured; `compare` reads the
//! joined report.

mod common;

use std::collections::BTreeSet;

use common::{cells, json, stderr, Scratch, TINY};

fn keys(dir: &std::path::Path) -> BTreeSet<String> {
    let r = json(&dir.join("results.json"));
    cells(&r)
        .iter()
        .map(|c| c["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn shards_merged_give_the_whole_matrix_and_a_missing_one_is_named() {
    let s = Scratch::new();
    s.config(&format!(
        "{TINY}repetitions = 1\nwarmup = 0\nn_parallel = [1, 2]\n"
    ));
    let whole = s.run(&["--no-plots", "--out", "whole"]);
    assert_eq!(whole.status.code(), Some(0), "{}", stderr(&whole));
    let whole = keys(&s.run_dir_in("whole"));
    assert_eq!(whole.len(), 6);
    let mut parts = Vec::new();
    for i in 1..=3 {
        let out = format!("part{i}");
        let o = s.run(&["--no-plots", "--shard", &format!("{i}/3"), "--out", &out]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let dir = s.run_dir_in(&out);
        assert_eq!(json(&dir.join("results.json"))["shard"]["count"], 3);
        parts.push(dir);
    }
    // the parts do not overlap, and together they are the matrix
    let sizes: Vec<usize> = parts.iter().map(|p| keys(p).len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 6, "{sizes:?}");
    let merge = |dirs: &[&std::path::PathBuf], out: &str| {
        s.cmd()
            .arg("merge")
            .args(dirs)
            .args(["--out", out])
            .output()
            .unwrap()
    };
    let o = merge(&[&parts[0], &parts[1], &parts[2]], "merged");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let merged = s.path().join("merged");
    assert_eq!(keys(&merged), whole);
    for f in [
        "results.csv",
        "summary.md",
        "report.html",
        "throughput_vs_parallel.png",
    ] {
        assert!(merged.join(f).is_file(), "{f}");
    }
    // one shard left out: its cells are named
    let o = merge(&[&parts[0], &parts[2]], "two");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    for k in keys(&parts[1]) {
        assert!(err.contains(&k), "{k} not named: {err}");
    }
    // a folder twice: the duplicate cells are refused, naming them
    let o = merge(&[&parts[0], &parts[0]], "dup");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is in both"), "{}", stderr(&o));
    // and compare reads the joined report as any other
    let o = s
        .cmd()
        .args(["compare"])
        .arg(s.run_dir_in("whole"))
        .arg(&merged)
        .output()
        .unwrap();
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("not in the baseline"),
        "{}",
        stderr(&o)
    );
}
