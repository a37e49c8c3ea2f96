//! Charts and report.html from a fixture report: the real H200 run committed under reports/,
//! with one cell turned into a failed one.

use std::path::Path;

use assert_cmd::Command;
use quantbench::report::{self, CellResult, CellStatus, Report};

fn fixture() -> Report {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/h200-2026-11-28/matrix/results.json");
    let mut r = report::read_json(&path).unwrap();
    // a failed cell must be shown as failed, not dropped
    let c = r.cells[4].clone();
    r.cells[4] = CellResult::failed(
        &quantbench::plan::Cell {
            index: c.index,
            model_index: 0,
            model: c.model.clone(),
            label: c.label.clone(),
            quant: c.quant,
            params: c.params.clone(),
        },
        c.origin.clone(),
        "worker killed by signal 6 (SIGABRT: llama.cpp aborted): injected for the test".into(),
    );
    r
}

/// Decodes a PNG: (width, height, number of distinct colours).
fn decode(p: &Path) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    for chunk in buf[..info.buffer_size()].chunks(px).step_by(7) {
        colours.insert(chunk.to_vec());
        if colours.len() > 64 {
            break;
        }
    }
    (info.width, info.height, colours.len())
}

#[test]
fn every_chart_renders_and_the_page_is_self_contained() {
    let r = fixture();
    let dir = tempfile::tempdir().unwrap();
    let files = report::write_visuals(&r, dir.path()).unwrap();
    let specs = report::charts::specs(&r);
    assert_eq!(specs.len(), 6);
    for (stem, _, (w, h)) in &specs {
        let png = dir.path().join(format!("{stem}.png"));
        let svg = dir.path().join(format!("{stem}.svg"));
        assert!(files.contains(&png) && files.contains(&svg), "{stem}");
        let (pw, ph, colours) = decode(&png);
        assert_eq!((pw, ph), (*w, *h), "{stem} has the expected size");
        assert!(colours > 8, "{stem} is not blank ({colours} colours)");
        let svg_text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            svg_text.starts_with("<svg") && svg_text.len() > 2000,
            "{stem}.svg"
        );
    }
    for name in [
        "memory_comparison",
        "throughput_comparison",
        "latency_comparison",
        "efficiency_heatmap",
    ] {
        assert!(specs.iter().any(|s| s.0 == name), "{name}");
    }

    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    for c in &r.cells {
        let row = format!(
            "<td class=\"l\">{}</td><td class=\"l\">{}</td><td>{} / {}</td>",
            c.label, c.quant, c.params.n_prompt, c.params.n_gen
        );
        assert!(
            html.contains(&row),
            "the page names cell {} {} {}",
            c.model,
            c.quant,
            c.params.n_gen
        );
    }
    assert!(
        html.contains("injected for the test"),
        "failed cells are listed with their reason"
    );
    assert!(
        html.contains("NVIDIA H200") && html.contains("580.159.04"),
        "environment"
    );
    assert!(html.contains("Synthetic weights"));
    assert_eq!(html.matches("data:image/png;base64,").count(), 6);
    // nothing the browser would fetch
    let lower = html.to_lowercase();
    for bad in [
        "http://", "https://", "<script", "<link", "@import", "url(", "src=\"//",
    ] {
        assert!(!lower.contains(bad), "report.html contains {bad:?}");
    }
    assert!(html.contains("name=\"viewport\""), "phone-friendly");
    let n = r
        .cells
        .iter()
        .filter(|c| c.status == CellStatus::Failed)
        .count();
    assert_eq!(n, 1);
}

#[test]
fn the_report_command_regenerates_a_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let r = fixture();
    std::fs::write(
        dir.path().join("results.json"),
        serde_json::to_string(&r).unwrap(),
    )
    .unwrap();
    let out = Command::cargo_bin("quantbench")
        .unwrap()
        .arg("report")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("report.html").exists());
    assert!(dir.path().join("tradeoff.png").exists());

    let out = Command::cargo_bin("quantbench")
        .unwrap()
        .args(["report", "/nonexistent-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a run folder"));
}
