//! The cluster recipes of docs/cluster.md and README.md's "Several machines", run as shown: each
//! block marked `<!-- recipe: NAME -->` is read from the document, its commands run with bash
//! (or the shell the scheduler would use) once per part with the variables the scheduler sets,
//! one part after another on this machine, each part with a cache of its own as on separate
//! machines, and `quantbench` on `PATH` being the binary under test; then the recipe's merge
//! runs, and the merged report must hold every cell of the matrix.
//!
//! The one substitution: the shared folder `/shared` becomes a temporary folder. The
//! schedulers are not run; the test stands in for them: Slurm's array tasks
//! (`SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT` from `#SBATCH --array`) and `sbatch --wrap`,
//! the Indexed Job's pods (`JOB_COMPLETION_INDEX` up to `completions`, the container's
//! `command`), GitHub's matrix jobs (`${{ matrix.shard }}` and `${{ strategy.job-total }}`
//! filled in as Actions does before the shell runs, `bash -e`) and its artifact actions (a
//! copy of the uploaded folder into the downloaded one).
use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{bin, cells, json, stderr, stdout};
use serde_json::Value;

/// The matrix every recipe runs: four cells of the tiny synthetic model, as short as a cell can
/// be (one repetition, four generated tokens).
const MATRIX: &str = r#"
schema = 1
[defaults]
n_gen = 4
n_prompt = 8
repetitions = 1
warmup = 0
quants = ["F16", "Q8_0"]
n_parallel = [1, 2]

[[model]]
name = "tiny"
synthetic = "tiny"
"#;
const MATRIX_CELLS: usize = 4;

/// A document of the repository.
fn doc(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The fenced block after `<!-- recipe: NAME -->` in `text`.
fn recipe(text: &str, name: &str) -> String {
    let marker = format!("<!-- recipe: {name} -->");
    let mut lines = text.lines().skip_while(|l| l.trim() != marker).skip(1);
    let fence = lines.next().unwrap_or_default();
    assert!(
        fence.starts_with("```"),
        "no fenced block after {marker}: {fence:?}"
    );
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    body.join("\n") + "\n"
}

/// The value of the first `key:` line of a YAML block (its comment cut off).
fn yaml_value(yaml: &str, key: &str) -> String {
    let prefix = format!("{key}:");
    yaml.lines()
        .map(|l| l.trim().trim_start_matches("- "))
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key}: in\n{yaml}"))
        .split(" #")
        .next()
        .unwrap()
        .trim()
        .to_string()
}

/// A scratch folder: `bin/quantbench` links to the binary under test, `shared/` stands for
/// `/shared`.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(bin(), dir.path().join("bin/quantbench")).unwrap();
        std::fs::create_dir_all(dir.path().join("shared")).unwrap();
        Site { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn shared(&self) -> PathBuf {
        self.path().join("shared")
    }
    /// A recipe's text with `/shared` replaced by this site's shared folder.
    fn localize(&self, text: &str) -> String {
        text.replace("/shared", self.shared().to_str().unwrap())
    }
    /// A folder of this site (created), e.g. a machine's working folder.
    fn folder(&self, name: &str) -> PathBuf {
        let d = self.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
    /// `program args…` run in `cwd` as on machine `machine` (a cache of its own), with
    /// `quantbench` on `PATH` and `vars` set; fails the test unless it exits 0.
    fn sh(&self, machine: &str, cwd: &Path, argv: &[&str], vars: &[(&str, String)]) {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]);
        let cache = self.folder(&format!("caches/{machine}"));
        common::isolate(&mut c, cwd, &cache);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.path().join("bin")];
        paths.extend(std::env::split_paths(&path));
        c.env("PATH", std::env::join_paths(paths).unwrap());
        for (k, _) in std::env::vars() {
            if k.starts_with("SLURM_") || k == "JOB_COMPLETION_INDEX" {
                c.env_remove(k);
            }
        }
        for (k, v) in vars {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{argv:?} with {vars:?} on {machine}\nstdout:\n{}\nstderr:\n{}",
            stdout(&o),
            stderr(&o)
        );
    }
}

/// The run folders under `dir` (one per part).
fn run_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("results.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// The cells of `config` as `list` plans them: (model, quant, n_parallel).
fn planned(site: &Site, config: &Path) -> BTreeSet<(String, String, u64)> {
    let o = common::process(site.path(), &site.path().join("caches/list"))
        .args(["list", "--format", "json", "-c"])
        .arg(config)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["n_cells"], MATRIX_CELLS);
    cells(&plan).iter().map(identity).collect()
}

fn identity(c: &Value) -> (String, String, u64) {
    let n_parallel = c["n_parallel"]
        .as_u64()
        .or_else(|| c["params"]["n_parallel"].as_u64())
        .unwrap();
    (
        c["model"].as_str().unwrap().to_string(),
        c["quant"].as_str().unwrap().to_string(),
        n_parallel,
    )
}

/// The merged report in `merged` holds every cell of `config`'s matrix once, measured, from
/// the `parts` run folders of a `count`-part matrix.
fn check_merged(site: &Site, config: &Path, merged: &Path, parts: &[PathBuf], count: usize) {
    assert_eq!(parts.len(), count, "one run folder per part: {parts:?}");
    let mut shards = BTreeSet::new();
    let mut plan_keys = BTreeSet::new();
    for p in parts {
        let r = json(&p.join("results.json"));
        assert_eq!(r["shard"]["count"], count, "{}", p.display());
        shards.insert(r["shard"]["index"].as_u64().unwrap());
        plan_keys.extend(
            r["shard"]["plan_keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string()),
        );
    }
    assert_eq!(shards, (1..=count as u64).collect(), "every part ran once");
    let r = json(&merged.join("results.json"));
    let got = cells(&r);
    assert_eq!(got.len(), MATRIX_CELLS, "{r}");
    let keys: BTreeSet<String> = got
        .iter()
        .map(|c| c["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, plan_keys, "the merged cells are the matrix's");
    let ids: BTreeSet<_> = got.iter().map(identity).collect();
    assert_eq!(
        ids,
        planned(site, config),
        "the merged cells are list's plan"
    );
    assert!(got.iter().all(|c| c["status"] == "ok"), "{r}");
    assert_eq!(r["merged_from"].as_array().unwrap().len(), count);
    for f in ["results.csv", "summary.md", "report.html"] {
        assert!(merged.join(f).is_file(), "{f}");
    }
}

#[test]
fn slurm_array_recipe_runs_as_shown() {
    let site = Site::new();
    let doc = doc("docs/cluster.md");
    let script = site.localize(&recipe(&doc, "slurm"));
    let array = script
        .lines()
        .find_map(|l| l.strip_prefix("#SBATCH --array="))
        .expect("#SBATCH --array=");
    let range = array.split('%').next().unwrap().trim();
    let (lo, hi) = range.split_once('-').expect("--array=0-N");
    let (lo, hi): (usize, usize) = (lo.parse().unwrap(), hi.parse().unwrap());
    assert_eq!(
        lo, 0,
        "the part is SLURM_ARRAY_TASK_ID + 1: the array starts at 0"
    );
    let count = hi - lo + 1;
    assert!(
        count <= MATRIX_CELLS,
        "the test's matrix has {MATRIX_CELLS} cells"
    );
    let shared = site.shared();
    std::fs::write(shared.join("models.toml"), MATRIX).unwrap();
    let sbatch = shared.join("quantbench.sbatch");
    std::fs::write(&sbatch, &script).unwrap();

    // the tasks: Slurm runs the script in the submission folder with the array's variables
    let submit_dir = site.folder("login");
    for id in lo..=hi {
        let vars = [
            ("SLURM_ARRAY_JOB_ID", "1000".to_string()),
            ("SLURM_ARRAY_TASK_ID", id.to_string()),
            ("SLURM_ARRAY_TASK_COUNT", count.to_string()),
            ("SLURM_ARRAY_TASK_MIN", lo.to_string()),
            ("SLURM_ARRAY_TASK_MAX", hi.to_string()),
        ];
        let node = format!("node{id}");
        site.sh(
            &node,
            &submit_dir,
            &["bash", sbatch.to_str().unwrap()],
            &vars,
        );
    }

    // the submission: the script above, then the merge job sbatch wraps in a sh script
    let submit = site.localize(&recipe(&doc, "slurm-submit"));
    assert!(
        submit.contains(&format!("sbatch --parsable {}", sbatch.display())),
        "{submit}"
    );
    let wrap = submit
        .split("--wrap='")
        .nth(1)
        .and_then(|w| w.split('\'').next())
        .expect("--wrap='…'");
    assert!(submit.contains("--dependency=afterany:$jobid"), "{submit}");
    site.sh("merge-node", &submit_dir, &["sh", "-c", wrap], &[]);
    let parts = run_dirs(&shared.join("runs"));
    check_merged(
        &site,
        &shared.join("models.toml"),
        &shared.join("merged"),
        &parts,
        count,
    );
}

#[test]
fn kubernetes_indexed_job_recipe_runs_as_shown() {
    let site = Site::new();
    let doc = doc("docs/cluster.md");
    let yaml = site.localize(&recipe(&doc, "kubernetes"));
    assert_eq!(yaml_value(&yaml, "completionMode"), "Indexed");
    let completions: usize = yaml_value(&yaml, "completions").parse().unwrap();
    assert!(completions <= MATRIX_CELLS);
    assert_eq!(yaml_value(&yaml, "restartPolicy"), "Never");
    // the container's command: a flow sequence of double-quoted strings (JSON's syntax)
    let command: Vec<String> = serde_json::from_str(&yaml_value(&yaml, "command")).unwrap();
    assert!(command[2].contains("quantbench run"), "{command:?}");
    let shared = site.shared();
    std::fs::write(shared.join("models.toml"), MATRIX).unwrap();
    for index in 0..completions {
        let argv: Vec<&str> = command.iter().map(String::as_str).collect();
        let pod = site.folder(&format!("pod{index}"));
        let vars = [("JOB_COMPLETION_INDEX", index.to_string())];
        site.sh(&format!("pod{index}"), &pod, &argv, &vars);
    }
    let merge = site.localize(&recipe(&doc, "kubernetes-merge"));
    site.sh(
        "merge-pod",
        &site.folder("merge-pod"),
        &["bash", "-c", &merge],
        &[],
    );
    let parts = run_dirs(&shared.join("runs"));
    check_merged(
        &site,
        &shared.join("models.toml"),
        &shared.join("merged"),
        &parts,
        completions,
    );
}

#[test]
fn github_actions_matrix_recipe_runs_as_shown() {
    let site = Site::new();
    let doc = doc("docs/cluster.md");
    let yaml = recipe(&doc, "github-actions");
    let shards: Vec<u64> = serde_json::from_str(&yaml_value(&yaml, "shard")).unwrap();
    assert!(shards.len() <= MATRIX_CELLS);
    let runs: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- run: "))
        .collect();
    let [part_run, merge_run] = runs[..] else {
        panic!("two run: steps, the part's and the merge's: {runs:?}")
    };
    assert!(part_run.starts_with("quantbench run"), "{part_run}");
    assert!(merge_run.starts_with("quantbench merge"), "{merge_run}");
    // the artifacts: uploaded from the part's folder under its name, downloaded into one
    let upload = yaml.split("actions/upload-artifact").nth(1).unwrap();
    let (artifact, uploaded) = (yaml_value(upload, "name"), yaml_value(upload, "path"));
    let download = yaml.split("actions/download-artifact").nth(1).unwrap();
    let downloaded = yaml_value(download, "path");

    let merge_ws = site.folder("merge-job");
    let total = shards.len().to_string();
    for (j, shard) in shards.iter().enumerate() {
        let fill = |s: &str| {
            let s = s
                .replace("${{ matrix.shard }}", &shard.to_string())
                .replace("${{ strategy.job-total }}", &total);
            assert!(
                !s.contains("${{"),
                "an expression the test does not fill: {s}"
            );
            s
        };
        // the checkout: the repository with its models.toml
        let ws = site.folder(&format!("part-job-{j}"));
        std::fs::write(ws.join("models.toml"), MATRIX).unwrap();
        let job = format!("runner{j}");
        site.sh(&job, &ws, &["bash", "-e", "-c", &fill(part_run)], &[]);
        let to = merge_ws.join(&downloaded).join(fill(&artifact));
        copy_dir(&ws.join(&uploaded), &to);
    }
    site.sh(
        "merge-runner",
        &merge_ws,
        &["bash", "-e", "-c", merge_run],
        &[],
    );
    let out = merge_run
        .split_whitespace()
        .skip_while(|w| *w != "--out")
        .nth(1)
        .expect("--out");
    let parts: Vec<PathBuf> = shards
        .iter()
        .flat_map(|s| {
            let name = artifact.replace("${{ matrix.shard }}", &s.to_string());
            run_dirs(&merge_ws.join(&downloaded).join(name))
        })
        .collect();
    check_merged(
        &site,
        &site.path().join("part-job-0/models.toml"),
        &merge_ws.join(out),
        &parts,
        shards.len(),
    );
}

/// README's short Slurm example: its `run` line once per task of a two-task array, in the
/// submission folder holding models.toml; its `merge` line once.
#[test]
fn readme_slurm_example_runs_as_shown() {
    let site = Site::new();
    let block = site.localize(&recipe(&doc("README.md"), "readme"));
    let line = |what: &str| {
        block
            .lines()
            .find(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("no {what} line in\n{block}"))
            .to_string()
    };
    let (run, merge) = (line("quantbench run"), line("quantbench merge"));
    let submit_dir = site.folder("login");
    std::fs::write(submit_dir.join("models.toml"), MATRIX).unwrap();
    let count = 2;
    for id in 0..count {
        let vars = [
            ("SLURM_ARRAY_TASK_ID", id.to_string()),
            ("SLURM_ARRAY_TASK_COUNT", count.to_string()),
        ];
        site.sh(
            &format!("node{id}"),
            &submit_dir,
            &["bash", "-c", &run],
            &vars,
        );
    }
    site.sh("merge-node", &submit_dir, &["bash", "-c", &merge], &[]);
    let shared = site.shared();
    check_merged(
        &site,
        &submit_dir.join("models.toml"),
        &shared.join("merged"),
        &run_dirs(&shared.join("runs")),
        count,
    );
}

/// `cp -r from to`: the folder's files, folders inside included.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
