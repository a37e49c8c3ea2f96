//! The Serving section of summary.md and report.html (which cell is cheapest per token while
//! every sequence still gets the SLO), on reports constructed from the committed H200 run, and
//! on a real run of the tiny model with an SLO nothing meets; the cost arithmetic.
use crate::common;

use std::path::Path;

use crate::common::{json, stderr, Scratch, TINY};
use quantbench::config::{Cost, Slo};
use quantbench::report::{self, Format};
use quantbench::results::{self, CellResult, CellStatus, Report, Serving};
use quantbench::stats::Summary;

/// Sets a cell's mean of `metric` (made up for the test, not measured).
fn set(c: &mut CellResult, metric: &str, mean: f64) {
    c.metrics.insert(
        metric.into(),
        Summary {
            n: 5,
            mean,
            sd: mean / 100.0,
            median: mean,
            min: mean,
            max: mean,
        },
    );
}

/// The committed H200 report's llama-7b tg128 cells turned into a load test (the figures are
/// made up): Q4_K_M with one sequence (256 tok/s) and with 16 (1000 tok/s, 60 per sequence,
/// TTFT 300 ms), Q8_0 with 64 (2500 tok/s but 15 per sequence), F16 with 32 at depth 4096
/// (TTFT 1500 ms), and a failed cell. Priced at $3.5/h, SLO 20 tok/s and 1000 ms, a load
/// of 10M tokens per hour.
fn load_fixture() -> Report {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/h200-2026-11-28/matrix/results.json");
    let mut r = results::read_json(&path).unwrap();
    let pick = |r: &Report, q: &str| {
        r.cells
            .iter()
            .find(|c| c.model == "llama-7b" && c.quant.to_string() == q && c.params.n_gen == 128)
            .unwrap()
            .clone()
    };
    let cell = |q: &str, b: u32, depth: u32, (tput, seq, ttft): (f64, f64, f64)| {
        let mut c = pick(&r, q);
        c.params.n_parallel = b;
        c.params.n_depth = depth;
        set(&mut c, "throughput_tok_s", tput);
        set(&mut c, "decode_tok_s", seq);
        set(&mut c, "ttft_ms", ttft);
        c
    };
    let mut failed = cell("Q4_K_M", 128, 0, (9000.0, 70.0, 100.0));
    failed.status = CellStatus::Failed;
    failed.error = Some("out of memory (made up)".into());
    r.cells = vec![
        cell("Q4_K_M", 1, 0, (256.0, 256.0, 10.8)),
        cell("Q4_K_M", 16, 0, (1000.0, 60.0, 300.0)),
        cell("Q8_0", 64, 0, (2500.0, 15.0, 800.0)),
        cell("F16", 32, 4096, (1800.0, 40.0, 1500.0)),
        failed,
    ];
    r.serving = Serving {
        cost: Cost {
            usd_per_hour: Some(3.5),
        },
        slo: Slo {
            min_seq_tok_s: Some(20.0),
            max_ttft_ms: Some(1000.0),
            ..Default::default()
        },
        tokens_per_hour: Some(1e7),
    };
    r.price_cells();
    r
}

/// The Serving section of summary.md, up to the next section.
fn serving_section(md: &str) -> &str {
    let start = md
        .find("\n## Serving\n")
        .unwrap_or_else(|| panic!("no Serving section: {md}"));
    let end = md[start + 1..]
        .find("\n## ")
        .map_or(md.len(), |e| start + 1 + e);
    &md[start..end]
}

#[test]
fn cost_arithmetic() {
    let sv = load_fixture().serving;
    // $3.5 per hour at 1000 tok/s: 3.6M tokens per hour, 0.9722 $ per million
    let u = sv.usd_per_mtok(1000.0).unwrap();
    assert!((u - 3.5 / 3.6).abs() < 1e-12, "{u}");
    assert_eq!(format!("{u:.4}"), "0.9722");
    assert_eq!(sv.usd_per_mtok(0.0), None);
    // 10M tokens per hour: 3 copies at 1000 tok/s (3.6M each), 11 at 256, 1 at 2800
    assert_eq!(sv.copies_needed(1000.0), Some(3));
    assert_eq!(sv.copies_needed(256.0), Some(11));
    assert_eq!(sv.copies_needed(2800.0), Some(1));
    let no_load = Serving {
        tokens_per_hour: None,
        ..sv
    };
    assert_eq!(no_load.copies_needed(1000.0), None);
    let r = load_fixture();
    assert!((r.cells[1].usd_per_mtok.unwrap() - 0.97222).abs() < 1e-4);
}

#[test]
fn the_cheapest_cell_meeting_the_slo_is_named() {
    let r = load_fixture();
    let md = report::md::Markdown.render(&r).unwrap();
    let s = serving_section(&md);
    assert!(
        s.contains("every sequence decodes at least 20 tok/s"),
        "{s}"
    );
    assert!(s.contains("within 1000 ms"), "{s}");
    assert!(s.contains("Price: $3.50 per hour"), "{s}");
    assert!(
        s.contains("usd_per_hour / (throughput_tok_s × 3600 / 1e6)"),
        "{s}"
    );
    assert!(
        s.contains("Load: 10000000 generated tokens per hour"),
        "{s}"
    );
    assert!(
        s.contains(
            "**Cheapest cell meeting the SLO: llama-7b Q4_K_M [np 16]**: $0.9722 per 1M \
             generated tokens, 1000.0 tok/s over 16 sequences, each decoding 60.0 tok/s with its \
             first token in 300.0 ms; 3 copies serve the load for $10.50 per hour."
        ),
        "{s}"
    );
    assert!(s.contains(
        "| model | quant | cell | B | all seqs tok/s | per-seq decode tok/s | TTFT ms | $/1M tok | copies needed |"
    ));
    let rows: Vec<&str> = s.lines().filter(|l| l.starts_with("| llama-7b")).collect();
    assert_eq!(
        rows,
        [
            "| llama-7b | Q4_K_M | np 16 | 16 | 1000.0 | 60.0 | 300.0 | 0.9722 | 3 |",
            "| llama-7b | Q4_K_M | – | 1 | 256.0 | 256.0 | 10.8 | 3.798 | 11 |",
        ],
        "cheapest first; too slow per sequence (Q8_0 np 64), too late a first token (F16 \
         d 4096) and failed cells left out: {s}"
    );

    // without an SLO every measured cell is ranked, by throughput
    let mut open = r.clone();
    open.serving.slo = Slo::default();
    let md = report::md::Markdown.render(&open).unwrap();
    let s = serving_section(&md);
    assert!(s.contains("No SLO was given"), "{s}");
    let rows: Vec<&str> = s.lines().filter(|l| l.starts_with("| llama-7b")).collect();
    assert_eq!(rows.len(), 4, "{s}");
    assert!(rows[0].starts_with("| llama-7b | Q8_0 | np 64 | 64 | 2500.0 |"));
    assert!(rows[1].starts_with("| llama-7b | F16 | np 32 d 4096 | 32 | 1800.0 |"));
    assert!(
        s.contains("**Cheapest cell: llama-7b Q8_0 [np 64]**"),
        "{s}"
    );

    // without a price: no price column, ranked by throughput all the same
    let mut free = r.clone();
    free.serving.cost = Cost::default();
    for c in &mut free.cells {
        c.usd_per_mtok = None;
    }
    let md = report::md::Markdown.render(&free).unwrap();
    let s = serving_section(&md);
    assert!(s.contains("No price was given"), "{s}");
    assert!(!s.contains("$/1M tok"), "{s}");
    assert!(
        s.contains("**Highest throughput meeting the SLO: llama-7b Q4_K_M [np 16]**"),
        "{s}"
    );
}

#[test]
fn an_slo_no_cell_meets_is_said_plainly() {
    let mut r = load_fixture();
    r.serving.slo.min_seq_tok_s = Some(1000.0);
    let md = report::md::Markdown.render(&r).unwrap();
    let s = serving_section(&md);
    assert!(s.contains("**No cell meets the SLO** (every sequence decodes at least 1000 tok/s and its first token comes within 1000 ms)"), "{s}");
    assert!(
        s.contains(
            "The closest of the 4 measured cells is **llama-7b Q4_K_M** (256.0 tok/s over 1 \
             sequence): each sequence decodes 256.0 tok/s, below 1000."
        ),
        "the cell nearest the SLO: {s}"
    );
    assert!(!s.contains("| model |"), "no empty table: {s}");

    // a cell missing both targets says both
    r.serving.slo.max_ttft_ms = Some(1.0);
    let md = report::md::Markdown.render(&r).unwrap();
    let s = serving_section(&md);
    assert!(s.contains("**No cell meets the SLO**"), "{s}");
    assert!(s.contains("its first token takes"), "{s}");

    // and the page says it too, as bad news, without a table
    let dir = tempfile::tempdir().unwrap();
    report::write_visuals(&r, dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(
        html.contains("<h2>Serving</h2>")
            && html.contains("<p class=\"bad\"><b>No cell meets the SLO</b>"),
        "{html}"
    );
}

#[test]
fn the_page_has_the_serving_table() {
    let r = load_fixture();
    let dir = tempfile::tempdir().unwrap();
    report::write_visuals(&r, dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("<h2>Serving</h2>"));
    assert!(html.contains(
        "<p class=\"good\"><b>Cheapest cell meeting the SLO: llama-7b Q4_K_M [np 16]</b>"
    ));
    assert!(html.contains("<code>[cost] usd_per_hour</code>"), "{html}");
    assert!(html.contains(
        "<tr class=\"\"><td class=\"l\">llama-7b</td><td class=\"l\">Q4_K_M</td>\
         <td class=\"l\">np 16</td><td>16</td><td>1000.0</td><td>60.0</td><td>300.0</td>\
         <td>0.9722</td><td>3</td></tr>"
    ));
    // the Results table has the aggregate and price columns too, as summary.md's
    assert!(
        html.contains("<th>all seqs tok/s</th><th>$/1M tok</th>"),
        "{html}"
    );
    let lower = html.to_lowercase();
    for bad in ["http://", "https://", "<script"] {
        assert!(!lower.contains(bad), "{bad}");
    }

    // a report with one sequence per cell and no price, SLO or load has no Serving section
    let mut plain = r;
    plain.serving = Serving::default();
    for c in &mut plain.cells {
        c.params.n_parallel = 1;
    }
    let md = report::md::Markdown.render(&plain).unwrap();
    assert!(!md.contains("## Serving"), "{md}");
}

#[test]
fn a_real_run_that_misses_its_slo_says_so() {
    let s = Scratch::new();
    s.config(&format!(
        "{TINY}quants = [\"Q8_0\"]\nn_gen = 4\nn_parallel = [1, 4]\n\
         [slo]\nmin_seq_tok_s = 1e9\nmax_ttft_ms = 1000\n"
    ));
    let out = s.run(&[
        "-r",
        "1",
        "--no-plots",
        "--usd-per-hour",
        "3.5",
        "--tokens-per-hour",
        "1e6",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = s.run_dir();
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    let section = serving_section(&md);
    assert!(section.contains("**No cell meets the SLO**"), "{section}");
    assert!(section.contains("The closest of the 2 measured cells is **tiny Q8_0"));
    assert!(section.contains("Price: $3.50 per hour"), "{section}");
    let report = json(&dir.join("results.json"));
    assert_eq!(report["serving"]["usd_per_hour"], 3.5);
    for c in common::cells(&report) {
        let t = c["metrics"]["throughput_tok_s"]["mean"].as_f64().unwrap();
        let u = c["usd_per_mtok"].as_f64().unwrap();
        assert!((u - 3.5 / (t * 3600.0 / 1e6)).abs() <= 1e-9 * u, "{c}");
    }
}
