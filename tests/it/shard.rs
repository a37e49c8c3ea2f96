//! A matrix spread over several machines: `run --shard I/N` measures a deterministic part,
//! `merge` joins the parts into one report, naming cells no part measured; `compare` reads the
//! joined report.

use std::collections::BTreeSet;

use crate::common::{cells, json, stderr, Scratch, TINY};

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
    // a verdict: unchanged, regressed, or inconclusive (one repetition per cell: exit 4)
    assert!(matches!(o.status.code(), Some(0 | 1 | 4)), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("not in the baseline"),
        "{}",
        stderr(&o)
    );
}

/// Sets the host of a run folder's report: `environment.hostname`, and each cell's `host`
/// (removed with `None`, as in a report written before cells recorded their host). A
/// constructed input: the two parts really ran on this machine.
fn set_host(dir: &std::path::Path, env_host: &str, cell_host: Option<&str>) {
    let p = dir.join("results.json");
    let mut r = json(&p);
    r["environment"]["hostname"] = env_host.into();
    for c in r["cells"].as_array_mut().unwrap() {
        let c = c.as_object_mut().unwrap();
        match cell_host {
            Some(h) => c.insert("host".into(), h.into()),
            None => c.remove("host"),
        };
    }
    std::fs::write(&p, serde_json::to_string_pretty(&r).unwrap()).unwrap();
}

/// report.html's Results table.
fn results_html(html: &str) -> &str {
    let start = html.find("<h2>Results</h2>").unwrap();
    let end = start + html[start..].find("</table>").unwrap();
    &html[start..end]
}

/// The header line of summary.md's results table (the first table).
fn results_header(md: &str) -> String {
    md.lines()
        .find(|l| l.starts_with("| model |"))
        .unwrap()
        .to_string()
}

#[test]
fn cells_keep_their_host_and_a_merge_across_hosts_names_them() {
    let s = Scratch::new();
    s.config(&format!(
        "{TINY}repetitions = 1\nwarmup = 0\nn_gen = 4\nquants = [\"F16\", \"Q8_0\"]\n"
    ));
    let mut parts = Vec::new();
    for i in 1..=2 {
        let out = format!("part{i}");
        let o = s.run(&["--no-plots", "--shard", &format!("{i}/2"), "--out", &out]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        parts.push(s.run_dir_in(&out));
    }
    // a run records the machine of each cell: its environment's hostname
    let r = json(&parts[0].join("results.json"));
    let here = r["environment"]["hostname"].as_str().unwrap().to_string();
    assert!(!here.is_empty());
    for c in cells(&r) {
        assert_eq!(c["host"], here.as_str(), "{c}");
    }
    let merge = |dirs: &[&std::path::PathBuf], out: &str| {
        let o = s
            .cmd()
            .arg("merge")
            .args(dirs)
            .args(["--out", out])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        (s.path().join(out), stderr(&o))
    };
    let read = |d: &std::path::Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    let csv_hosts = |d: &std::path::Path| -> Vec<String> {
        let mut rdr = csv::Reader::from_path(d.join("results.csv")).unwrap();
        let head = rdr.headers().unwrap().clone();
        let col = |n: &str| head.iter().position(|h| h == n).unwrap();
        assert!(
            col("host") > col("usd_per_mtok"),
            "host after the older columns"
        );
        let host = col("host");
        rdr.records()
            .map(|r| r.unwrap()[host].to_string())
            .collect()
    };

    // one host: no host column in the tables, the folders listed under Machines
    let (one, _) = merge(&[&parts[0], &parts[1]], "one-host");
    let md = read(&one, "summary.md");
    assert!(!results_header(&md).contains("host"), "{md}");
    assert!(!md.contains(" hosts**"), "{md}");
    assert!(md.contains("## Machines"), "{md}");
    let html = read(&one, "report.html");
    assert!(!results_html(&html).contains(">host<"), "{html}");
    assert!(html.contains("<h2>Machines</h2>"), "{html}");
    assert_eq!(csv_hosts(&one), vec![here.clone(); 2]);

    // two hosts: part 1 as measured on gpu-a; part 2 from before cells recorded their host,
    // on gpu-b (merge gives its cells the folder's hostname)
    set_host(&parts[0], "gpu-a", Some("gpu-a"));
    set_host(&parts[1], "gpu-b", None);
    let (two, err) = merge(&[&parts[0], &parts[1]], "two-hosts");
    assert!(err.contains("2 hosts: gpu-a, gpu-b"), "{err}");
    let r = json(&two.join("results.json"));
    let hosts: BTreeSet<&str> = cells(&r)
        .iter()
        .map(|c| c["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, BTreeSet::from(["gpu-a", "gpu-b"]));
    let from = r["merged_from"].as_array().unwrap();
    assert_eq!(from.len(), 2);
    assert_eq!(from[0]["environment"]["hostname"], "gpu-a");
    assert_eq!(from[1]["environment"]["hostname"], "gpu-b");
    assert_eq!(from[1]["shard"], "2/2");
    let md = read(&two, "summary.md");
    let head = results_header(&md);
    assert!(head.starts_with("| model | quant | host |"), "{md}");
    for h in ["gpu-a", "gpu-b"] {
        assert!(
            md.contains(&format!("| {h} | ok |")),
            "{h} in the results table: {md}"
        );
        assert!(
            md.contains(&format!("{h} (1 cell)")),
            "{h} in the header: {md}"
        );
    }
    assert!(md.contains("## Machines"), "{md}");
    let html = read(&two, "report.html");
    let table = results_html(&html);
    assert!(table.contains("<th class=\"l\">host</th>"), "{html}");
    assert!(html.contains("<h2>Machines</h2>"), "{html}");
    for h in ["gpu-a", "gpu-b"] {
        assert!(
            table.contains(&format!("<td class=\"l\">{h}</td>")),
            "{h}: {html}"
        );
    }
    let mut got = csv_hosts(&two);
    got.sort();
    assert_eq!(got, ["gpu-a", "gpu-b"]);
}

/// A part is the same cells on every machine: with an empty model cache (the first part to run
/// on a fresh machine) and with every file already there (a machine that ran before, or a
/// shared cache that filled meanwhile). Before, the dealing used the cached files' real sizes
/// and estimates for the others, and the parts differed.
#[test]
fn a_part_holds_the_same_cells_whatever_is_cached() {
    let s = Scratch::empty();
    s.config(
        "schema = 1\n[defaults]\nn_gen = [4, 8]\nn_prompt = 8\nrepetitions = 1\nwarmup = 0\n\
         quants = [\"F16\", \"Q8_0\", \"Q4_K_M\"]\n\
         [[model]]\nname = \"tiny\"\nsynthetic = \"tiny\"\n\
         [[model]]\nname = \"tl\"\nsynthetic = \"tiny-llama\"\n",
    );
    let fresh = s.run(&["--no-plots", "--shard", "1/2", "--out", "fresh"]);
    assert_eq!(fresh.status.code(), Some(0), "{}", stderr(&fresh));
    let cached = s.run(&["--no-plots", "--shard", "1/2", "--out", "cached"]);
    assert_eq!(cached.status.code(), Some(0), "{}", stderr(&cached));
    assert_eq!(keys(&s.run_dir_in("fresh")), keys(&s.run_dir_in("cached")));
}
