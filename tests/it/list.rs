//! `quantbench list` on the tiny synthetic model: the number of cells and the run's estimated
//! duration before anything runs, the memory estimate at each cell's context (n_parallel
//! sequences), and the most sequences that fit a memory budget.

use crate::common::{stderr, Scratch, TINY};
use serde_json::Value;

/// `list --format json` with `args`, parsed.
fn plan(s: &Scratch, args: &[&str]) -> Value {
    let out = s
        .cmd()
        .args(["list", "--format", "json"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn list_counts_cells_and_estimates_the_duration() {
    let s = Scratch::empty();
    s.config(&format!("{TINY}n_parallel = [1, 64]\n"));
    let out = s.cmd().arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let mut lines = err.lines();
    assert!(lines.next().unwrap().starts_with("6 cells from "), "{err}");
    let duration = lines.next().unwrap();
    assert!(
        duration.starts_with("estimated duration: ~") && duration.contains("rough"),
        "{err}"
    );
    assert!(
        duration.contains("fetching or deriving 3 model files not cached yet"),
        "two cells share each file: {err}"
    );
    assert!(err.contains("max B") && err.contains("~time"), "{err}");
    assert!(err.contains("tiny [np 64]"), "{err}");

    let p = plan(&s, &[]);
    assert_eq!(p["n_cells"], 6);
    let rows = p["cells"].as_array().unwrap();
    let total: f64 = rows
        .iter()
        .map(|r| r["estimated_s"].as_f64().unwrap())
        .sum();
    let estimated = p["duration"]["estimated_s"].as_f64().unwrap();
    assert!(estimated > 0.0 && (estimated - total).abs() < 1e-6, "{p}");
    assert!(p["duration"]["note"]
        .as_str()
        .unwrap()
        .contains("not a measurement"));
    assert_eq!(p["duration"]["files_not_cached"], 3);
    // more sequences: more work
    assert!(rows[1]["estimated_s"].as_f64() > rows[0]["estimated_s"].as_f64());
    for r in rows {
        assert_eq!(r["max_parallel"], 256, "tiny fits 256 sequences: {r}");
    }
}

#[test]
fn the_kv_cache_is_estimated_for_every_sequence() {
    let s = Scratch::new();
    s.config(&format!(
        "{TINY}quants = [\"Q8_0\"]\nn_parallel = [1, 64]\nn_depth = [0, 100]\n"
    ));
    let p = plan(&s, &[]);
    let rows = p["cells"].as_array().unwrap();
    let find = |b: u64, d: u64| {
        rows.iter()
            .find(|r| r["n_parallel"] == b && r["n_depth"] == d)
            .unwrap_or_else(|| panic!("np {b} d {d}: {p}"))
    };
    let kv = |r: &Value| r["estimate"]["kv_bytes"].as_u64().unwrap();
    // n_prompt 32 + n_gen 8 per sequence, the depth once
    assert_eq!(find(1, 0)["n_ctx"], 40);
    assert_eq!(find(64, 0)["n_ctx"], 64 * 40);
    assert_eq!(find(64, 100)["n_ctx"], 100 + 64 * 40);
    assert_eq!(kv(find(64, 0)), 64 * kv(find(1, 0)));
    assert_eq!(kv(find(1, 100)), 140 * kv(find(1, 0)) / 40);
    assert_eq!(find(64, 100)["load"], "np 64 d 100");
}

#[test]
fn max_parallel_is_the_most_sequences_that_fit() {
    let s = Scratch::new();
    s.config(&format!("{TINY}quants = [\"Q8_0\"]\n"));
    // a budget (counted as a GPU's, with its 512 MiB runtime overhead) that fits some
    // sequences of 40 tokens but not 256
    let budget = "560MiB";
    let p = plan(&s, &["--device-memory", budget]);
    let b = p["cells"][0]["max_parallel"].as_u64().unwrap();
    assert!((2..256).contains(&b), "{p}");
    let at = |n: u64| {
        let n = n.to_string();
        plan(&s, &["--device-memory", budget, "--n-parallel", &n])["cells"][0].clone()
    };
    assert_eq!(at(b)["fits"], true, "{b} sequences fit");
    assert_eq!(at(b + 1)["fits"], false, "{} do not", b + 1);
    assert_eq!(at(b + 1)["max_parallel"], b, "the same at any n_parallel");
    // nothing fits: 0
    let p = plan(&s, &["--device-memory", "100MiB"]);
    assert_eq!(p["cells"][0]["max_parallel"], 0, "{p}");
    let out = s
        .cmd()
        .args(["list", "--device-memory", budget])
        .output()
        .unwrap();
    let err = stderr(&out);
    let row = err.lines().find(|l| l.contains("tiny ")).unwrap();
    assert!(
        row.split_whitespace().any(|w| w == b.to_string()),
        "the table shows max B {b}: {err}"
    );
}

#[test]
fn cells_llama_cpp_would_refuse_are_flagged_before_running() {
    let s = Scratch::new();
    s.config(&format!(
        "{TINY}n_parallel = [1, 8]\nn_batch = 4\ntype_v = [\"f16\", \"q8_0\"]\nflash_attn = \"off\"\n"
    ));
    let p = plan(&s, &[]);
    let rows = p["cells"].as_array().expect("cells");
    let refused: Vec<&str> = rows.iter().filter_map(|r| r["refused"].as_str()).collect();
    // B = 8 with 4 batch slots (both V types) and q8_0 V without flash attention (B = 1)
    assert!(
        refused
            .iter()
            .any(|r| r.contains("n_batch = 4 is below n_parallel = 8")),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|r| r.contains("needs flash attention")),
        "{refused:?}"
    );
    assert!(
        rows.iter().any(|r| r["refused"].is_null()),
        "f16 V at B = 1 runs"
    );
    let out = s.cmd().arg("list").output().unwrap();
    assert!(
        stderr(&out).contains("will fail: n_batch = 4"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn command_line_lists_refuse_repeats_and_say_what_a_key_takes() {
    let s = Scratch::new();
    s.config(TINY);
    let out = s
        .cmd()
        .args(["list", "--n-parallel", "4,4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("n_parallel 4 is listed twice"),
        "{}",
        stderr(&out)
    );
    s.config(&format!("{TINY}n_parallel = 4.5\n"));
    let out = s.cmd().arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected a whole number or a list of them"),
        "{}",
        stderr(&out)
    );
}
