//! Tests of the code's shape, run with the unit tests: modules import only modules declared
//! before them in `lib.rs` (no cycles), every module is in that list, no function is longer
//! than [`MAX_FN_LINES`], and the Markdown documents' relative links resolve and point nowhere
//! outside the repository. They read the files, so they fail on the commit that breaks a rule.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The longest function allowed, in lines from its signature to its closing brace.
const MAX_FN_LINES: usize = 100;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules in the order `lib.rs` declares them.
fn layer_order() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The top-level module a file belongs to: `src/compare/view.rs` → `compare`.
fn top_module(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The code of a file without comments (doc links are not imports) and string literals.
fn code_only(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut l = line;
        if let Some(i) = l.find("//") {
            l = &l[..i];
        }
        let mut in_str = false;
        let mut prev = ' ';
        for c in l.chars() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// The top-level modules a piece of code names through `crate::`, including every first
/// segment of a `use crate::{a, b::c}` group.
fn crate_refs(code: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let preceded_by_ident = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[i + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !item.is_empty() {
                            refs.push(std::mem::take(&mut item));
                        }
                        at_start = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 && at_start {
                    if c.is_alphanumeric() || c == '_' {
                        item.push(c);
                    } else if !item.is_empty() {
                        refs.push(std::mem::take(&mut item));
                        at_start = false;
                    }
                }
            }
            if !item.is_empty() {
                refs.push(item);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            refs.push(name);
        }
    }
    refs.retain(|r| r != "self" && !r.is_empty());
    refs
}

#[test]
fn crate_refs_reads_paths_and_groups() {
    let code = "use crate::a::B;\nuse crate::{c, d::{E, F}, self};\nx = crate::g::h();\nmycrate::z";
    assert_eq!(crate_refs(code), ["a", "c", "d", "g"]);
}

#[test]
fn every_module_is_in_the_layer_list() {
    let order = layer_order();
    for f in rust_files(&src()) {
        let m = top_module(&f);
        if m == "lib" || m == "main" || m == "structure" {
            continue;
        }
        assert!(
            order.contains(&m),
            "{} belongs to module `{m}`, which src/lib.rs does not declare with `pub mod`",
            f.display()
        );
    }
}

#[test]
fn no_module_imports_one_above_it() {
    let order = layer_order();
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut upward = Vec::new();
    for f in rust_files(&src()) {
        let m = top_module(&f);
        let Some(&own) = rank.get(m.as_str()) else {
            continue;
        };
        let code = code_only(&std::fs::read_to_string(&f).unwrap());
        for r in crate_refs(&code) {
            match rank.get(r.as_str()) {
                Some(&other) if other > own => upward.push(format!(
                    "{}: `{m}` imports `{r}`, which lib.rs declares above it",
                    f.display()
                )),
                _ => {}
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(
        upward.is_empty(),
        "a module may only use modules declared before it in src/lib.rs:\n{}",
        upward.join("\n")
    );
}

/// Functions longer than `max` lines: (file, line, name, length). A function starts at a line
/// whose code begins with `fn` (after `pub`, `const`, `unsafe`, …) and ends at the first line
/// that is its indentation followed by `}` (rustfmt's layout).
fn long_functions(file: &Path, max: usize) -> Vec<(PathBuf, usize, String, usize)> {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = &l[..l.len() - t.len()];
        let mut words = t.split_whitespace().peekable();
        while let Some(w) = words.peek() {
            if w.starts_with("pub") || ["const", "async", "unsafe", "extern", "\"C\""].contains(w) {
                words.next();
            } else {
                break;
            }
        }
        if words.next() != Some("fn") || t.ends_with(';') {
            continue;
        }
        let name: String = words
            .next()
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{indent}}}");
        if let Some(end) = (i + 1..lines.len()).find(|&j| lines[j] == close) {
            let n = end - i + 1;
            if n > max {
                out.push((file.to_path_buf(), i + 1, name, n));
            }
        }
    }
    out
}

#[test]
fn long_functions_are_found() {
    let dir = std::env::temp_dir().join(format!("qb-structure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("x.rs");
    let body = "    let x = 1;\n".repeat(5);
    std::fs::write(
        &f,
        format!("pub fn long() {{\n{body}}}\nfn short() {{\n}}\n"),
    )
    .unwrap();
    let found = long_functions(&f, 4);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].1, found[0].2.as_str(), found[0].3),
        (1, "long", 7)
    );
}

#[test]
fn no_function_is_longer_than_the_limit() {
    let long: Vec<String> = rust_files(&src())
        .iter()
        .flat_map(|f| long_functions(f, MAX_FN_LINES))
        .map(|(f, line, name, n)| format!("{}:{line}: fn {name} has {n} lines", f.display()))
        .collect();
    assert!(
        long.is_empty(),
        "split these into steps named after what they do (at most {MAX_FN_LINES} lines):\n{}",
        long.join("\n")
    );
}

/// Every Markdown file of the repository: what git tracks or would track (not what it ignores:
/// build outputs, packages in `dist/`, local run folders); without git, every one outside
/// `target/`, `dist/` and hidden folders.
fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let git = std::process::Command::new("git")
        .current_dir(dir)
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "-z",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success());
    match git {
        Some(o) => {
            let mut out: Vec<PathBuf> = o
                .stdout
                .split(|&b| b == 0)
                .map(|f| dir.join(String::from_utf8_lossy(f).as_ref()))
                .filter(|p| p.extension().is_some_and(|e| e == "md") && p.is_file())
                .collect();
            out.sort();
            out
        }
        None => markdown_files_walked(dir),
    }
}

fn markdown_files_walked(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" || name == "dist" {
            continue;
        }
        if p.is_dir() {
            out.extend(markdown_files_walked(&p));
        } else if name.ends_with(".md") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The targets of `[text](target)` links in Markdown text, outside code spans and blocks.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        // drop inline code spans
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            out.push(rest[..end].trim().to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn link_targets_are_found_outside_code() {
    let md = "see [a](docs/a.md) and `[b](no.md)`\n```\n[c](no.md)\n```\n[d](x.md#part)";
    assert_eq!(link_targets(md), ["docs/a.md", "x.md#part"]);
}

#[test]
fn markdown_links_resolve_inside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root_abs = root.canonicalize().unwrap();
    let mut bad = Vec::new();
    for f in markdown_files(root) {
        let text = std::fs::read_to_string(&f).unwrap();
        let rel = f.strip_prefix(root).unwrap().display().to_string();
        for t in link_targets(&text) {
            if t.is_empty() || t.starts_with('#') || t.contains("://") || t.starts_with("mailto:") {
                continue;
            }
            let path = t.split('#').next().unwrap();
            let target = f.parent().unwrap().join(path);
            match target.canonicalize() {
                Ok(p) if p.starts_with(&root_abs) => {}
                Ok(_) => bad.push(format!("{rel}: link ({t}) leaves the repository")),
                Err(_) => bad.push(format!("{rel}: link ({t}) does not resolve")),
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
