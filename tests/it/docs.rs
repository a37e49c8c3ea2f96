//! The documentation held to the code: every flag of every subcommand is documented and every
//! documented flag exists (for the commands the docs name); every models.toml key the parser
//! accepts is documented, and a default the docs give as a value is the code's (a file that
//! sets the key to it means the same as one that leaves it out); the exit-code table is the
//! code's constants; CONTRIBUTING's module and test lists are the code's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::CommandFactory;
use quantbench::cli::Cli;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Items still to be documented by work in progress elsewhere (the serving cells: their
/// models.toml keys and flags land with docs/serving.md). Each entry must be undocumented:
/// once its docs exist the test says to remove it from here.
const PENDING: &[&str] = &[];

/// A Markdown table: its header cells and rows of cells (code spans keep their `|`).
struct Table {
    doc: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Splits a table line into cells, leaving `\|` and `|` inside code spans in their cell.
fn cells(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut cur, mut code, mut prev) = (String::new(), false, ' ');
    for ch in line.trim().trim_start_matches('|').chars() {
        match ch {
            '`' => {
                code = !code;
                cur.push(ch);
            }
            '|' if !code && prev != '\\' => out.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(ch),
        }
        prev = ch;
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// Every table of the Markdown files `docs`.
fn tables(docs: &[&str]) -> Vec<Table> {
    let mut out = Vec::new();
    for doc in docs {
        let text = read(doc);
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i + 1 < lines.len() {
            if lines[i].starts_with('|') && lines[i + 1].starts_with("|---") {
                let mut t = Table {
                    doc: doc.to_string(),
                    header: cells(lines[i]),
                    rows: Vec::new(),
                };
                i += 2;
                while i < lines.len() && lines[i].starts_with('|') {
                    t.rows.push(cells(lines[i]));
                    i += 1;
                }
                out.push(t);
            } else {
                i += 1;
            }
        }
    }
    out
}

/// The code spans of a cell: `` `a`, `b` `` → `a`, `b`.
fn spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// The flags a text names: `--name` and `-x` at the start of each code span.
fn flags_in(cell: &str) -> Vec<String> {
    spans(cell)
        .iter()
        .filter_map(|s| {
            let f: String = s
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (f.starts_with('-') && f.len() > 1).then_some(f)
        })
        .collect()
}

/// Every subcommand (not hidden) with its flags (`--long` and `-s`), the global ones included.
fn cli_flags() -> BTreeMap<String, BTreeSet<String>> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = BTreeMap::new();
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let mut flags = BTreeSet::new();
        for a in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            if matches!(a.get_id().as_str(), "help" | "version") {
                continue;
            }
            if let Some(l) = a.get_long() {
                flags.insert(format!("--{l}"));
            }
            if let Some(s) = a.get_short() {
                flags.insert(format!("-{s}"));
            }
        }
        out.insert(sub.get_name().to_string(), flags);
    }
    out
}

/// The subcommands' own documents (beside docs/config.md): where their flags may be documented.
fn own_doc(sub: &str) -> Option<&'static str> {
    match sub {
        "compare" => Some("docs/gate.md"),
        "merge" => Some("docs/cluster.md"),
        "rpc-server" => Some("docs/rpc.md"),
        "tune" => Some("docs/tune.md"),
        _ => None,
    }
}

/// The commands an option table row of docs/config.md applies to: its `commands` column, or
/// for the overrides table (`option | models.toml key`) `run` and `list`.
fn row_commands(t: &Table, row: &[String]) -> Vec<String> {
    let all: Vec<String> = cli_flags().into_keys().collect();
    match t.header.iter().position(|h| h == "commands") {
        Some(i) if row[i].trim() == "all" => all,
        Some(i) => row[i].split(',').map(|c| c.trim().to_string()).collect(),
        None => vec!["run".into(), "list".into()],
    }
}

#[test]
fn every_flag_is_documented_and_every_documented_flag_exists() {
    let cli = cli_flags();
    // what docs/config.md's option tables say each command takes
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for t in tables(&["docs/config.md"]) {
        if t.header.first().map(String::as_str) != Some("option") {
            continue;
        }
        for row in &t.rows {
            for cmd in row_commands(&t, row) {
                for f in flags_in(&row[0]) {
                    match cli.get(&cmd) {
                        Some(have) if have.contains(&f) => {}
                        Some(_) => problems.push(format!(
                            "{}: `{f}` is documented for `{cmd}`, which has no such flag",
                            t.doc
                        )),
                        None => problems.push(format!("{}: no subcommand `{cmd}`", t.doc)),
                    }
                    documented.entry(cmd.clone()).or_default().insert(f);
                }
            }
        }
    }
    for (sub, flags) in &cli {
        let own = own_doc(sub).map(read).unwrap_or_default();
        for f in flags {
            let in_table = documented.get(sub).is_some_and(|d| d.contains(f));
            let in_own = own.contains(&format!("`{f}")) || own.contains(&format!(" {f} "));
            let pending = PENDING.contains(&f.as_str());
            if pending && (in_table || in_own) {
                problems.push(format!("`{f}` is documented now: remove it from PENDING"));
            } else if !pending && !in_table && !in_own {
                problems.push(format!(
                    "`quantbench {sub} {f}` is not documented: add it to an option table of \
                     docs/config.md{}",
                    own_doc(sub).map_or(String::new(), |d| format!(" or to {d}"))
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The keys a table of models.toml accepts, from the parser's own "allowed keys" message for an
/// unknown key placed in it (`before` the key, `after` it).
fn parser_keys(before: &str, after: &str) -> Vec<String> {
    let text = format!("schema = 1\n{before}zzz_not_a_key = 1\n{after}");
    let e = quantbench::config::parse(&text, std::path::Path::new("m.toml")).unwrap_err();
    let list = e
        .message
        .split("allowed keys here: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no key list in {e}"));
    list.split(", ").map(String::from).collect()
}

const MODEL: &str = "[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\n";

/// Every key of models.toml by table: `""` top level, then `defaults`, `model`, `cost`, `slo`,
/// `workload`.
fn all_keys() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (table, before, after) in [
        ("", "", MODEL),
        ("defaults", "[defaults]\n", MODEL),
        ("cost", "[cost]\n", MODEL),
        ("slo", "[slo]\n", MODEL),
        ("workload", "[workload]\n", MODEL),
        ("model", MODEL, ""),
    ] {
        for k in parser_keys(before, after) {
            out.push((table, k));
        }
    }
    out
}

/// Models a key of `[[model]]` can be tried on (the keys of one source need that source).
const SOURCES: &[&str] = &[
    "name = \"a\"\nsynthetic = \"tiny\"\n",
    "name = \"a\"\nhf = \"o/r\"\nfile = \"m-{quant}.gguf\"\n",
    "name = \"a\"\npath = \"/m/x-{quant}.gguf\"\n",
];

/// Whether setting `key = value` in `table` parses to the same matrix as leaving it out, on
/// some model source where both parse; `Err` with what differed.
fn default_holds(table: &str, key: &str, value: &str) -> Result<(), String> {
    let path = std::path::Path::new("/m/models.toml");
    let mut tried = Vec::new();
    for source in SOURCES {
        let (without, with) = if table == "model" {
            (
                format!("schema = 1\n[[model]]\n{source}"),
                format!("schema = 1\n[[model]]\n{source}{key} = {value}\n"),
            )
        } else {
            (
                format!("schema = 1\n[[model]]\n{source}"),
                format!("schema = 1\n[{table}]\n{key} = {value}\n[[model]]\n{source}"),
            )
        };
        match (
            quantbench::config::parse(&without, path),
            quantbench::config::parse(&with, path),
        ) {
            (Ok(a), Ok(b)) if a == b => return Ok(()),
            (Ok(_), Ok(_)) => tried.push("it parses to another matrix".to_string()),
            (_, Err(e)) => tried.push(format!("it is refused: {}", e.message)),
            (Err(_), _) => {}
        }
    }
    tried.dedup();
    Err(tried.join("; "))
}

#[test]
fn every_models_toml_key_is_documented_with_the_codes_default() {
    let config_md = read("docs/config.md");
    let mut problems = Vec::new();
    // the documented rows of each key: (doc, default column) where the table has one
    let mut rows: BTreeMap<String, Option<String>> = BTreeMap::new();
    // the keys of `[workload]` are documented with the served cells
    for t in tables(&["docs/config.md", "docs/serving.md"]) {
        let Some(first) = t.header.first() else {
            continue;
        };
        if !first.ends_with("key") {
            continue;
        }
        let default = t.header.iter().position(|h| h == "default");
        for row in &t.rows {
            for k in spans(&row[0]) {
                let k = k.trim_start_matches('[').trim_end_matches(']').to_string();
                rows.insert(k, default.map(|i| row[i].clone()));
            }
        }
    }
    let mut seen = BTreeSet::new();
    for (table, key) in all_keys() {
        let id = match table {
            "defaults" | "model" => key.clone(),
            t => format!("{t}.{key}"),
        };
        if !seen.insert(id) {
            continue; // a measurement key of both [defaults] and [[model]]
        }
        let pending = PENDING.contains(&key.as_str())
            || (table == "workload" && PENDING.contains(&"[workload]"));
        // keys of a TOML example block count too ([cost], [slo])
        let in_example =
            config_md.contains(&format!("\n{key} ")) || config_md.contains(&format!("\n{key}="));
        let documented = rows.contains_key(&key) || in_example;
        if pending {
            if documented && table != "workload" {
                problems.push(format!("`{key}` is documented now: remove it from PENDING"));
            }
            continue;
        }
        if !documented {
            problems.push(format!(
                "models.toml key `{key}` ({}) is not in docs/config.md",
                if table.is_empty() { "top level" } else { table }
            ));
            continue;
        }
        let Some(Some(default)) = rows.get(&key) else {
            continue; // a table without defaults (top level), or an example block
        };
        let literal = spans(default);
        let is_value = |v: &str| toml::from_str::<toml::Table>(&format!("x = {v}")).is_ok();
        if literal.len() != 1
            || default.trim() != format!("`{}`", literal[0])
            || !is_value(&literal[0])
        {
            continue; // said in words ("every core the process may use") or by another key's name
        }
        if let Err(why) = default_holds(table, &key, &literal[0]) {
            problems.push(format!(
                "docs/config.md gives `{key}` the default `{}`, but {why}",
                literal[0]
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The exit codes the code defines, with the signals' (128 + SIGINT, SIGTERM, SIGHUP).
fn exit_codes() -> BTreeSet<u8> {
    use quantbench::commands::exit;
    [
        exit::OK,
        exit::REGRESSION,
        exit::FATAL,
        exit::CELLS_FAILED,
        exit::INCONCLUSIVE,
        exit::INTERRUPTED,
        128 + libc::SIGTERM as u8,
        128 + libc::SIGHUP as u8,
    ]
    .into()
}

#[test]
fn the_exit_code_tables_are_the_codes_constants() {
    let t = tables(&["docs/troubleshooting.md"])
        .into_iter()
        .find(|t| t.header.first().map(String::as_str) == Some("code"))
        .expect("docs/troubleshooting.md has an exit-code table");
    let documented: BTreeSet<u8> = t
        .rows
        .iter()
        .flat_map(|r| {
            r[0].split('/')
                .map(|c| {
                    c.trim()
                        .parse::<u8>()
                        .unwrap_or_else(|_| panic!("code {c:?}"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        documented,
        exit_codes(),
        "docs/troubleshooting.md's exit codes"
    );
    // the short lists: `quantbench --help` and the README
    let help = Cli::command().render_long_help().to_string();
    let readme = read("README.md");
    let short = |text: &str| -> String {
        let at = text.find("Exit codes:").expect("an exit-code list");
        text[at..]
            .chars()
            .take(600)
            .collect::<String>()
            .replace('\n', " ")
    };
    for (what, list) in [("--help", short(&help)), ("README.md", short(&readme))] {
        for c in exit_codes().into_iter().filter(|&c| c < 128) {
            assert!(
                list.contains(&format!(": {c} ")) || list.contains(&format!("· {c} ")),
                "{what}'s exit codes do not name {c}: {list}"
            );
        }
        assert!(list.contains("128 + the signal"), "{what}: {list}");
    }
}

/// The module names of `src/lib.rs`, in order.
fn lib_modules() -> Vec<String> {
    read("src/lib.rs")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

#[test]
fn contributings_module_and_test_lists_are_the_codes() {
    let t = tables(&["CONTRIBUTING.md"]);
    let layers = t
        .iter()
        .find(|t| t.header.first().map(String::as_str) == Some("layer"))
        .expect("CONTRIBUTING.md has the layer table");
    let listed: BTreeSet<String> = layers
        .rows
        .iter()
        .flat_map(|r| spans(&r[1]))
        .filter(|m| !m.ends_with(".rs"))
        .collect();
    let modules: BTreeSet<String> = lib_modules().into_iter().collect();
    assert_eq!(
        listed, modules,
        "CONTRIBUTING.md's layer table against the modules of src/lib.rs"
    );
    let tests = t
        .iter()
        .find(|t| t.header.first().map(String::as_str) == Some("file"))
        .expect("CONTRIBUTING.md has the test table");
    let listed: BTreeSet<String> = tests.rows.iter().flat_map(|r| spans(&r[0])).collect();
    let mut files: BTreeSet<String> = std::fs::read_dir(root().join("tests/it"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".rs") && f != "main.rs" && f != "common.rs")
        .map(|f| format!("tests/it/{f}"))
        .collect();
    files.insert("src/".into()); // "unit tests in `src/`"
    assert_eq!(
        listed, files,
        "CONTRIBUTING.md's test table against tests/it/"
    );
}

/// Facts the docs and the code once disagreed on, each checked on both sides.
#[test]
fn the_fixed_disagreements_stay_fixed() {
    let mut cmd = Cli::command();
    cmd.build();
    let help_of = |sub: &str, arg: &str| -> String {
        let s = cmd.find_subcommand(sub).unwrap();
        let a = s.get_arguments().find(|a| a.get_id() == arg).unwrap();
        a.get_long_help().or(a.get_help()).unwrap().to_string()
    };
    // a worker process per cell (src/coordinator.rs starts one for each job)
    let worker = cmd
        .find_subcommand("worker")
        .unwrap()
        .get_about()
        .unwrap()
        .to_string();
    assert!(worker.contains("one worker process per cell"), "{worker}");
    assert!(read("docs/architecture.md").contains("one per cell"));
    // the cache folder: $QUANTBENCH_CACHE, $XDG_CACHE_HOME/quantbench, ~/.cache/quantbench
    let cache = help_of("run", "cache_dir");
    assert!(
        cache.contains("$XDG_CACHE_HOME/quantbench, else ~/.cache/quantbench"),
        "{cache}"
    );
    assert!(read("docs/environment.md")
        .contains("`$XDG_CACHE_HOME/quantbench`, else `~/.cache/quantbench`"));
    // shards are dealt by a cost from the matrix alone
    let shard = help_of("run", "shard");
    assert!(shard.contains("nominal sizes and rates"), "{shard}");
    assert!(read("docs/config.md").contains("`list`'s duration model at nominal sizes and rates"));
    // hub attempts: the first and QUANTBENCH_HUB_RETRIES more
    if std::env::var_os("QUANTBENCH_HUB_RETRIES").is_none() {
        let r = quantbench::acquire::hub::HubConfig::from_env(false).retries;
        let config = read("docs/config.md").replace("\n  ", " ");
        assert!(
            config.contains(&format!("({} attempts: the first and {r} retries", r + 1)),
            "docs/config.md's hub attempts vs {r} retries"
        );
        assert!(read("docs/environment.md").contains(&format!(
            "| `QUANTBENCH_HUB_RETRIES` | attempts after the first on connection errors, 429 and 5xx | `{r}` |"
        )));
    }
    // exit code 2 also ends a run stopped by an I/O error
    let help = Cli::command()
        .render_long_help()
        .to_string()
        .replace('\n', " ");
    let readme = read("README.md").replace('\n', " ");
    for (what, text) in [
        ("--help", help),
        ("README.md", readme),
        ("docs/troubleshooting.md", read("docs/troubleshooting.md")),
    ] {
        assert!(
            text.contains("I/O error"),
            "{what} does not say exit 2 ends a run stopped by an I/O error"
        );
    }
}
