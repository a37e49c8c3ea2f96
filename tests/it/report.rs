//! Charts and report.html from a fixture report: the real H200 run committed under reports/,
//! with one cell turned into a failed one; and the same run with constructed quality figures.

use std::path::Path;

use crate::common::{stderr, Scratch};
use quantbench::quality::QualityStats;
use quantbench::report;
use quantbench::results::{self, CellQuality, CellResult, CellStatus, Report};

fn fixture() -> Report {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/h200-2026-11-28/matrix/results.json");
    let mut r = results::read_json(&path).unwrap();
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
    let s = Scratch::new();
    let r = fixture();
    std::fs::write(
        s.path().join("results.json"),
        serde_json::to_string(&r).unwrap(),
    )
    .unwrap();
    let out = s.cmd().arg("report").arg(s.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(s.path().join("report.html").exists());
    assert!(s.path().join("tradeoff.png").exists());
    // and the CSV and Markdown views, from the same results.json (which it leaves as it is)
    let csv = std::fs::read_to_string(s.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), r.cells.len() + 1);
    assert!(std::fs::read_to_string(s.path().join("summary.md"))
        .unwrap()
        .contains("| model |"));
    let json = std::fs::read_to_string(s.path().join("results.json")).unwrap();
    assert_eq!(json, serde_json::to_string(&r).unwrap());

    let out = s
        .cmd()
        .args(["report", "/nonexistent-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not a run folder"));
}

/// The same 7B cell placed three ways, as a two-GPU run would report it: the real one-GPU cell
/// of the fixture as `split_mode = "none"`, a copy of it as a layer split over two GPUs with
/// per-GPU memory, and a row split that failed. (Rendering test: the numbers of the copies are
/// made up here, not measured.)
fn multi_gpu_fixture() -> Report {
    use quantbench::config::{SplitMode, TensorSplit};
    use quantbench::gpu::DeviceVram;
    let mut r = fixture();
    let base = r.cells[12].clone();
    assert_eq!(
        (base.model.as_str(), base.quant.to_string().as_str()),
        ("llama-7b", "F16")
    );
    let mut none = base.clone();
    none.params.split_mode = SplitMode::None;
    none.devices_used = vec!["CUDA0".into()];
    let vram = base.vram_bytes.unwrap();
    let dev = |i: u32, b: u64| DeviceVram {
        device: format!("CUDA{i}"),
        nvml_index: i,
        pci_bus_id: format!("00000000:{:02X}:00.0", 0x1b + i),
        name: "NVIDIA H200".into(),
        after_load_bytes: Some(b),
        after_warmup_bytes: Some(b),
        peak_bytes: Some(b),
    };
    if let Some(g) = none.gpu.as_mut() {
        g.per_device = vec![dev(0, vram), dev(1, 0)];
    }
    let mut layer = base.clone();
    layer.index = 100;
    layer.params.split_mode = SplitMode::Layer;
    layer.params.tensor_split = TensorSplit(vec![1.0, 1.0]);
    layer.devices_used = vec!["CUDA0".into(), "CUDA1".into()];
    layer.device = Some("2× NVIDIA H200".into());
    if let Some(g) = layer.gpu.as_mut() {
        g.per_device = vec![dev(0, vram / 2 + (300 << 20)), dev(1, vram / 2)];
    }
    if let Some(s) = layer.metrics.get_mut("decode_tok_s") {
        s.mean *= 0.9;
    }
    let mut row = CellResult::failed(
        &quantbench::plan::Cell {
            index: 101,
            model_index: 2,
            model: base.model.clone(),
            label: base.label.clone(),
            quant: base.quant,
            params: quantbench::plan::CellParams {
                split_mode: SplitMode::Row,
                ..base.params.clone()
            },
        },
        base.origin.clone(),
        "llama.cpp aborted (made up for the test)".into(),
    );
    row.params.tensor_split = TensorSplit::default();
    r.cells = vec![none, layer, row];
    r
}

#[test]
fn multi_gpu_placements_are_reported_per_gpu() {
    let r = multi_gpu_fixture();
    let csv = report::csv::Csv;
    let text = report::Format::render(&csv, &r).unwrap();
    let mut rdr = ::csv::Reader::from_reader(text.as_bytes());
    let head: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let col = |n: &str| {
        head.iter()
            .position(|h| h == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    let rows: Vec<::csv::StringRecord> = rdr.records().map(|x| x.unwrap()).collect();
    let get = |i: usize, n: &str| rows[i][col(n)].to_string();
    assert_eq!(get(0, "split_mode"), "none");
    assert_eq!(get(1, "split_mode"), "layer");
    assert_eq!(get(1, "tensor_split"), "1/1");
    assert_eq!(get(2, "split_mode"), "row");
    assert_eq!(
        (get(0, "n_gpus"), get(1, "n_gpus"), get(2, "n_gpus")),
        ("1".into(), "2".into(), "".into())
    );
    assert_eq!(get(1, "gpus"), "CUDA0/CUDA1");
    let per: Vec<u64> = get(1, "vram_per_gpu_bytes")
        .split('/')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(per.len(), 2);
    assert_eq!(
        get(1, "vram_max_gpu_bytes"),
        per.iter().max().unwrap().to_string()
    );
    // the new columns come after every older one: old CSV readers keep their positions
    assert!(col("started_at") < col("split_mode"));
    // and the quality columns, added later, after them
    assert_eq!(col("vram_max_gpu_bytes") + 1, col("ppl"));
    assert_eq!(col("quality_error") + 1, col("quality_s"));
    // then the load columns
    assert_eq!(col("quality_s") + 1, col("n_parallel"));
    // and the host after them
    assert_eq!(col("usd_per_mtok") + 1, col("host"));

    let md = report::Format::render(&report::md::Markdown, &r).unwrap();
    assert!(md.contains("## Multi-GPU placements"), "{md}");
    assert!(
        md.contains("| llama-7b | F16 | sm layer ts 1/1 | CUDA0 + CUDA1 | CUDA0 "),
        "{md}"
    );
    assert!(md.contains("| -10.0% |"), "decode vs 1 GPU: {md}");
    assert!(md.contains("| llama-7b | F16 | sm row | FAILED |"), "{md}");
    assert!(
        md.contains("per GPU"),
        "GPU table has a per-GPU column: {md}"
    );
    assert!(md.contains("llama-7b [sm none mg 0] | F16 | ok"), "{md}");

    let dir = tempfile::tempdir().unwrap();
    report::write_visuals(&r, dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("<h2>Multi-GPU placements</h2>"));
    assert!(html.contains("CUDA0 + CUDA1"));
    assert!(html.contains("2× NVIDIA H200"));
}

/// Constructed quality figures (made up for the test, not measured): a KLD of `kld` with the
/// other statistics derived from it; 0 is the reference itself.
fn stats(kld: f64) -> QualityStats {
    QualityStats {
        tokens: 8160,
        ppl: 31.25 * (1.0 + kld),
        ppl_err: 0.5,
        ppl_ref: 31.25,
        ppl_ref_err: 0.5,
        ppl_ratio: 1.0 + kld,
        ppl_ratio_err: kld / 10.0,
        ln_ppl_ratio: kld,
        ln_ppl_ratio_err: kld / 10.0,
        kld_mean: kld,
        kld_mean_err: kld / 50.0,
        kld_median: kld * 0.8,
        kld_p99: kld * 6.0,
        kld_p999: kld * 11.0,
        kld_max: kld * 23.0,
        top1_agree: 1.0 - kld * 4.0,
        top1_agree_err: kld / 5.0,
        dp_mean: -kld / 100.0,
        dp_mean_err: kld / 1000.0,
        dp_rms: kld / 2.0,
        dp_rms_err: kld / 200.0,
    }
}

/// The fixture with quality on its tg128 cells: F16 is the reference of each model (KLD 0),
/// Q8_0 and Q4_K_M have constructed figures, and gpt2 Q4_K_M (the failed cell) has a quality
/// error. The tg50 cells have no quality.
fn quality_fixture() -> Report {
    let mut r = fixture();
    for (i, c) in r.cells.iter_mut().enumerate() {
        if c.params.n_gen != 128 {
            continue;
        }
        let scale = [1.0, 1.5, 2.0][i / 6];
        let kld = match c.quant.to_string().as_str() {
            "F16" => 0.0,
            "Q8_0" => 0.0012345 * scale,
            _ => 0.0234567 * scale,
        };
        let failed = c.status == CellStatus::Failed;
        c.quality = Some(CellQuality {
            stats: (!failed).then(|| stats(kld)),
            quality_ref: format!(
                "F16 ({}-F16.gguf, sha256 {}, synthetic weights)",
                c.model,
                "ab12".repeat(16)
            ),
            quality_corpus: "wiki <test>.txt (sha256 0123456789abcdef0123)".into(),
            quality_error: failed.then(|| "the reference could not be loaded (made up)".into()),
            quality_s: Some(2.5),
        });
    }
    r
}

#[test]
fn quality_is_in_summary_md_where_it_was_measured() {
    let r = quality_fixture();
    let md = report::Format::render(&report::md::Markdown, &r).unwrap();
    assert!(md.contains("\n## Quality\n"), "{md}");
    assert!(md.contains("| model | quant | tokens | PPL | PPL ratio | KLD mean |"));
    // gpt2-medium Q8_0: KLD 0.0012345 × 1.5, its figures with 4 significant digits
    let row = "| gpt2-medium | Q8_0 | 8160 | 31.31 | 1.0019 ± 0.0002 | 0.001852 ± 0.000037 \
               | 0.01111 | 0.04259 | 99.3 ± 0.0% | 0.09259% | F16 (gpt2-medium-F16.gguf, sha256 \
               ab12ab12ab12, synthetic weights) | wiki &lt;test&gt;.txt (sha256 0123456789ab) |";
    assert!(md.contains(row), "{md}");
    assert!(
        md.contains("| llama-7b | F16 | 8160 | 31.25 | 1.0000 ± 0.0000 | 0 ± 0 | 0 | 0 | 100.0 ± 0.0% | 0% |"),
        "the reference: {md}"
    );
    assert!(
        md.contains(
            "| gpt2 | Q4_K_M | not measured: the reference could not be loaded (made up) | – |"
        ),
        "a failed test shows its reason: {md}"
    );
    let start = md.find("\n## Quality\n").unwrap();
    let end = start + 1 + md[start + 1..].find("\n## ").unwrap();
    let section = &md[start..end];
    assert_eq!(
        section.matches("| gpt2-medium | Q8_0 |").count(),
        1,
        "tg50 has no quality: {section}"
    );
    assert_eq!(
        section
            .matches("these figures describe random models")
            .count(),
        1
    );

    // summary.md is the one without quality plus the Quality section
    let plain = report::Format::render(&report::md::Markdown, &fixture()).unwrap();
    assert_eq!(format!("{}{}", &md[..start], &md[end..]), plain);
}

#[test]
fn quality_is_in_report_html_and_its_chart() {
    let r = quality_fixture();
    let dir = tempfile::tempdir().unwrap();
    let files = report::write_visuals(&r, dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("<h2>Quality</h2>"));
    assert!(
        html.contains("<td>0.001852 ± 0.000037</td>"),
        "escaped values"
    );
    assert!(html.contains("wiki &lt;test&gt;.txt (sha256 0123456789ab)"));
    assert!(!html.contains("wiki <test>"), "HTML-escaped");
    assert!(html.contains("<tr class=\"failed\"><td class=\"l\">gpt2</td><td class=\"l\">Q4_K_M</td><td>not measured: the reference"));
    assert!(html.contains("these figures describe random models"));

    let specs = report::charts::specs(&r);
    assert_eq!(specs.len(), 7);
    let (_, _, size) = specs.iter().find(|s| s.0 == "quality_tradeoff").unwrap();
    let png = dir.path().join("quality_tradeoff.png");
    let svg = dir.path().join("quality_tradeoff.svg");
    assert!(files.contains(&png) && files.contains(&svg));
    let (w, h, colours) = decode(&png);
    assert_eq!((w, h), *size);
    assert!(colours > 8, "not blank ({colours} colours)");
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(svg_text.starts_with("<svg") && svg_text.contains("llama-7b·Q4_K_M"));
    assert!(svg_text.contains("KLD 0: the reference itself"));
    assert_eq!(html.matches("data:image/png;base64,").count(), 7);
    assert!(html.contains("<figcaption>Quality / speed and memory trade-off</figcaption>"));
}

#[test]
fn without_quality_nothing_changes() {
    let r = fixture();
    let md = report::Format::render(&report::md::Markdown, &r).unwrap();
    assert!(!md.contains("Quality"), "{md}");
    let dir = tempfile::tempdir().unwrap();
    report::write_visuals(&r, dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(!html.contains("<h2>Quality</h2>"));
    assert!(!dir.path().join("quality_tradeoff.png").exists());
    assert!(report::charts::specs(&r)
        .iter()
        .all(|s| s.0 != "quality_tradeoff"));

    // one cell with quality statistics is no trade-off: the table, but no chart
    let mut one = quality_fixture();
    for c in &mut one.cells {
        if c.quant.to_string() != "Q8_0" || c.model != "gpt2" {
            c.quality = None;
        }
    }
    assert_eq!(report::charts::specs(&one).len(), 6);
    let md = report::Format::render(&report::md::Markdown, &one).unwrap();
    assert!(md.contains("## Quality"));
}

#[test]
fn huge_finite_figures_are_drawn_in_bounded_time() {
    // a tampered results.json: mean and sd of 1e308 are each finite, their sum is not; the
    // throughput chart's axis became infinite and drawing never ended
    let mut r = fixture();
    for c in r.cells.iter_mut() {
        if let Some(m) = c.metrics.get_mut("decode_tok_s") {
            m.mean = 1e308;
            m.sd = 1e308;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(report::write_visuals(&r, &path).map(|_| ()));
    });
    let done = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("drawing the charts did not end within 120 s");
    done.unwrap();
    assert!(dir.path().join("report.html").is_file());
}
