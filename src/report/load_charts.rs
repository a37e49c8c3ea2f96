//! The charts of a load sweep: generation throughput and memory against the number of
//! sequences decoded together (B = `n_parallel`, on a log-2 axis), and decode speed against the
//! tokens already in the context (`n_depth`). A chart is drawn only where the run swept its
//! parameter: at least two distinct values among the measured cells. One line per model ×
//! quant and per every other parameter that varies (the cell's key without the swept part);
//! failed cells are not plotted and are named under the legend. Never prints.

use std::collections::BTreeSet;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::charts::{local, memory_basis, quant_color, short, Err2, FONT};
use crate::plan::{join_tags, load_tag, Cell, CellParams};
use crate::results::{CellResult, CellStatus, Report};

/// The stems of the load charts, in the order of [`specs`].
pub const STEMS: [&str; 3] = [
    "throughput_vs_parallel",
    "memory_vs_parallel",
    "decode_vs_depth",
];

/// What the line styles of the throughput chart mean.
const THROUGHPUT_STYLES: [(&str, bool); 2] = [
    ("aggregate, all sequences: throughput_tok_s", false),
    ("per sequence: decode_tok_s", true),
];

/// What the line styles of the depth chart mean.
const DEPTH_STYLES: [(&str, bool); 2] = [
    ("generation test: decode_tok_s", false),
    ("llama-bench's tg: tg_tok_s", true),
];

/// Height of one legend row, pixels.
const ROW: i32 = 24;

/// The parameter a load chart puts on its x axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    /// `n_parallel`, sequences decoded together (llama-batched-bench's B).
    Parallel,
    /// `n_depth`, tokens in the context before measuring (llama-bench's `-d`).
    Depth,
}

impl Sweep {
    /// The swept parameter of a cell (B is at least 1).
    pub fn value(self, p: &CellParams) -> u32 {
        match self {
            Sweep::Parallel => p.n_parallel.max(1),
            Sweep::Depth => p.n_depth,
        }
    }

    /// Where `v` lies on the x axis: log 2 of B, the depth itself.
    fn pos(self, v: u32) -> f64 {
        match self {
            Sweep::Parallel => f64::from(v.max(1)).log2(),
            Sweep::Depth => f64::from(v),
        }
    }

    /// The parameters with the swept one at its plain value (one sequence, empty context).
    fn without(self, p: &CellParams) -> CellParams {
        let mut p = p.clone();
        match self {
            Sweep::Parallel => p.n_parallel = 1,
            Sweep::Depth => p.n_depth = 0,
        }
        p
    }

    /// The load of a line beyond the swept parameter, in short form: `pps d 4096`, `np 4`.
    fn other_load(self, p: &CellParams) -> Option<String> {
        match self {
            Sweep::Parallel => join_tags(&[
                p.shared_prompt.then(|| "pps".to_string()),
                load_tag(1, p.n_depth, false),
            ]),
            Sweep::Depth => load_tag(p.n_parallel, 0, p.shared_prompt),
        }
    }

    fn x_desc(self) -> &'static str {
        match self {
            Sweep::Parallel => "B = n_parallel, sequences decoded together (log2 scale)",
            Sweep::Depth => "n_depth, tokens in the context before measuring",
        }
    }
}

/// The distinct values of the swept parameter among the measured cells, ascending.
pub fn swept_values(r: &Report, s: Sweep) -> Vec<u32> {
    let v: BTreeSet<u32> = r
        .cells
        .iter()
        .filter(|c| c.status == CellStatus::Ok)
        .map(|c| s.value(&c.params))
        .collect();
    v.into_iter().collect()
}

/// Whether the run swept `s`: at least two distinct values among its measured cells.
pub fn swept(r: &Report, s: Sweep) -> bool {
    swept_values(r, s).len() >= 2
}

/// One line of a load chart: the measured cells that differ only in the swept parameter.
pub struct Line<'a> {
    /// `model quant`, the key fields that differ between lines, the placement and other load.
    pub label: String,
    pub quant: String,
    /// Ascending in the swept parameter.
    pub cells: Vec<&'a CellResult>,
    color: RGBColor,
    /// Which line of its quant this is: picks the shade and the marker.
    variant: usize,
}

/// The identity of a cell's line: its `--resume` key with the swept parameter at its plain
/// value (and a shared prompt, which the key only names with several sequences).
fn line_key(c: &CellResult, s: Sweep) -> String {
    let pps = if s == Sweep::Parallel && c.params.shared_prompt {
        ":pps"
    } else {
        ""
    };
    Cell {
        index: c.index,
        model_index: 0,
        model: c.model.clone(),
        label: c.label.clone(),
        quant: c.quant,
        params: s.without(&c.params),
    }
    .key()
        + pps
}

/// The fixed fields of a line key after model and quant (`pp512`, `tg128`, `ngl99`, …).
fn key_fields(key: &str, c: &CellResult) -> Vec<String> {
    let rest = key
        .strip_prefix(&format!("{}:{}:", c.model, c.quant))
        .unwrap_or(key);
    rest.split(':').take(10).map(String::from).collect()
}

/// The lines of a load chart over `s`, in report order: measured cells grouped by everything
/// but the swept parameter, each line coloured by its quant.
/// The lines a chart draws: those with at least two values of the swept parameter (a model
/// measured at one B, as the depth cells of a matrix that sweeps B elsewhere, is no curve).
pub fn plotted(r: &Report, s: Sweep) -> Vec<Line<'_>> {
    let mut l = lines(r, s);
    l.retain(|line| {
        let mut v: Vec<u32> = line.cells.iter().map(|c| s.value(&c.params)).collect();
        v.dedup();
        v.len() >= 2
    });
    l
}

pub fn lines(r: &Report, s: Sweep) -> Vec<Line<'_>> {
    let mut keys: Vec<String> = Vec::new();
    let mut groups: Vec<Vec<&CellResult>> = Vec::new();
    for c in r.cells.iter().filter(|c| c.status == CellStatus::Ok) {
        let k = line_key(c, s);
        match keys.iter().position(|x| *x == k) {
            Some(i) => groups[i].push(c),
            None => {
                keys.push(k);
                groups.push(vec![c]);
            }
        }
    }
    let fields: Vec<Vec<String>> = keys
        .iter()
        .zip(&groups)
        .map(|(k, g)| key_fields(k, g[0]))
        .collect();
    let varies = |j: usize| fields.iter().any(|f| f.get(j) != fields[0].get(j));
    let quants = quant_order(r);
    let mut out: Vec<Line> = Vec::new();
    for (mut cells, f) in groups.into_iter().zip(&fields) {
        cells.sort_by_key(|c| s.value(&c.params));
        let c = cells[0];
        let mut label = format!("{} {}", c.model, c.quant);
        for (_, v) in f.iter().enumerate().filter(|(j, _)| varies(*j)) {
            label += &format!(" {v}");
        }
        if let Some(t) = join_tags(&[c.params.placement_tag(), s.other_load(&c.params)]) {
            label += &format!(" [{t}]");
        }
        let quant = c.quant.to_string();
        let qi = quants.iter().position(|q| *q == quant).unwrap_or(0);
        let variant = out.iter().filter(|l| l.quant == quant).count();
        out.push(Line {
            label,
            color: shade(quant_color(&quant, qi), variant),
            quant,
            cells,
            variant,
        });
    }
    out
}

/// The quants of the report in order of appearance (the colour index of the other charts).
fn quant_order(r: &Report) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for c in &r.cells {
        let q = c.quant.to_string();
        if !v.contains(&q) {
            v.push(q);
        }
    }
    v
}

/// The colour of a quant's `variant`-th line: the quant's own, darker, lighter, in turn.
fn shade(c: RGBColor, variant: usize) -> RGBColor {
    let (k, toward) = match variant % 3 {
        0 => (0.0, 0.0),
        1 => (0.45, 0.0),
        _ => (0.45, 255.0),
    };
    let f = |x: u8| (f64::from(x) + (toward - f64::from(x)) * k).round() as u8;
    RGBColor(f(c.0), f(c.1), f(c.2))
}

/// The failed cells, named as in the other charts: `model quant [placement load]`.
fn failed_names(r: &Report) -> Vec<String> {
    r.failed_cells()
        .iter()
        .map(|c| format!("{} {}{}", c.model, c.quant, c.placement_suffix()))
        .collect()
}

/// At most this many failed cells are named under a legend.
const MAX_FAILED: usize = 8;

/// The width of the legend strip right of the panels: its longest text.
fn strip_width(lines: &[Line], styles: &[(&str, bool)], failed: &[String]) -> u32 {
    let longest = lines
        .iter()
        .map(|l| l.label.chars().count())
        .chain(styles.iter().map(|s| s.0.chars().count()))
        .chain(failed.iter().take(MAX_FAILED).map(|f| f.chars().count()))
        .max()
        .unwrap_or(0);
    (60 + 8 * longest as u32).clamp(240, 560)
}

/// The rows of the legend strip: lines, styles, failed cells, with the gaps between them.
fn strip_rows(lines: usize, styles: usize, failed: usize) -> u32 {
    let failed_rows = if failed == 0 {
        0
    } else {
        2 + failed.min(MAX_FAILED + 1)
    };
    (lines + styles + 1 + failed_rows) as u32
}

/// The load charts a report has (stem, title, pixel size): the two B charts where the run
/// swept `n_parallel`, the depth chart where it swept `n_depth`.
pub fn specs(r: &Report) -> Vec<(&'static str, &'static str, (u32, u32))> {
    let failed = failed_names(r);
    let size = |s: Sweep, styles: &[(&str, bool)], panels: u32| {
        let l = plotted(r, s);
        let h = 130 + ROW as u32 * strip_rows(l.len(), styles.len(), failed.len());
        (panels * 1000 + strip_width(&l, styles, &failed), h.max(720))
    };
    let mut out = Vec::new();
    if swept(r, Sweep::Parallel) {
        out.push((
            STEMS[0],
            "Throughput vs parallel sequences",
            size(Sweep::Parallel, &THROUGHPUT_STYLES, 1),
        ));
        out.push((
            STEMS[1],
            "Memory vs parallel sequences",
            size(Sweep::Parallel, &[], 2),
        ));
    }
    if swept(r, Sweep::Depth) {
        out.push((
            STEMS[2],
            "Decode speed vs context depth",
            size(Sweep::Depth, &DEPTH_STYLES, 1),
        ));
    }
    out
}

/// Draws the load chart `stem` (one of [`STEMS`]).
pub fn draw<DB: DrawingBackend>(
    stem: &str,
    a: &DrawingArea<DB, Shift>,
    r: &Report,
) -> Result<(), Err2<DB>> {
    let device = r.device_description();
    match stem {
        "throughput_vs_parallel" => {
            let agg = |c: &CellResult| c.mean("throughput_tok_s");
            let seq = |c: &CellResult| c.mean("decode_tok_s");
            let p = Panel {
                title: format!("Generation throughput vs parallel sequences — {device}"),
                y_desc: "tokens/s (mean over repetitions)".into(),
                metrics: vec![(&agg, false), (&seq, true)],
            };
            load_chart(a, r, Sweep::Parallel, &[p], &THROUGHPUT_STYLES)
        }
        "memory_vs_parallel" => memory_vs_parallel(a, r, &device),
        _ => {
            let decode = |c: &CellResult| c.mean("decode_tok_s");
            let tg = |c: &CellResult| c.mean("tg_tok_s");
            let p = Panel {
                title: format!("Decode speed vs context depth — {device}"),
                y_desc: "tokens/s per sequence (mean over repetitions)".into(),
                metrics: vec![(&decode, false), (&tg, true)],
            };
            load_chart(a, r, Sweep::Depth, &[p], &DEPTH_STYLES)
        }
    }
}

/// Bytes in the unit that suits `max` (GiB, MiB or KiB): the divisor and the unit's name.
fn byte_unit(max: u64) -> (f64, &'static str) {
    if max >= 1 << 30 {
        (1073741824.0, "GiB")
    } else if max >= 1 << 20 {
        (1048576.0, "MiB")
    } else {
        (1024.0, "KiB")
    }
}

/// Memory (left) and KV cache (right) against B.
fn memory_vs_parallel<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    r: &Report,
    device: &str,
) -> Result<(), Err2<DB>> {
    let mem = |c: &CellResult| c.mem_bytes;
    let kv = |c: &CellResult| c.memory.as_ref().map(|m| m.kv_bytes);
    let max = |f: &dyn Fn(&CellResult) -> Option<u64>| {
        r.cells
            .iter()
            .filter(|c| c.status == CellStatus::Ok)
            .filter_map(f)
            .max()
            .unwrap_or(0)
    };
    let (mem_div, mem_unit) = byte_unit(max(&mem));
    let (kv_div, kv_unit) = byte_unit(max(&kv));
    let mem_v = |c: &CellResult| mem(c).map(|b| b as f64 / mem_div);
    let kv_v = |c: &CellResult| kv(c).map(|b| b as f64 / kv_div);
    let basis = if memory_basis(r).starts_with("device") {
        "VRAM per process (NVML)"
    } else {
        "host RSS of the worker"
    };
    let panels = [
        Panel {
            title: format!("Memory vs parallel sequences — {device}"),
            y_desc: format!("mem_bytes: {basis}, {mem_unit}"),
            metrics: vec![(&mem_v, false)],
        },
        Panel {
            title: "KV cache vs parallel sequences".into(),
            y_desc: format!("memory.kv_bytes: KV cache buffers, {kv_unit}"),
            metrics: vec![(&kv_v, false)],
        },
    ];
    load_chart(a, r, Sweep::Parallel, &panels, &[])
}

/// A cell's figure on a panel's y axis.
type Value<'a> = &'a dyn Fn(&CellResult) -> Option<f64>;

/// One panel of a load chart: its caption, the y axis' description, and the figures drawn
/// for every line, each with whether its line is dashed.
struct Panel<'a> {
    title: String,
    y_desc: String,
    metrics: Vec<(Value<'a>, bool)>,
}

/// A load chart: its panels side by side, the legend strip at the right.
fn load_chart<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    r: &Report,
    s: Sweep,
    panels: &[Panel],
    styles: &[(&str, bool)],
) -> Result<(), Err2<DB>> {
    let lines = plotted(r, s);
    let failed = failed_names(r);
    let sw = strip_width(&lines, styles, &failed);
    let (w, _) = a.dim_in_pixel();
    let (plot, strip) = a.split_horizontally(w.saturating_sub(sw));
    let areas = plot.split_evenly((1, panels.len().max(1)));
    for (p, area) in panels.iter().zip(&areas) {
        panel(area, &lines, s, p)?;
    }
    legend_strip(&strip, &lines, styles, &failed)
}

/// A chart on linear axes (the x axis in [`Sweep::pos`]'s units).
type Linear<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One panel: axes from 0 up to the highest figure, the swept values as x ticks, a line per
/// [`Line`] and figure, every point marked (filled on solid lines, hollow on dashed ones).
fn panel<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    lines: &[Line],
    s: Sweep,
    p: &Panel,
) -> Result<(), Err2<DB>> {
    let xs: BTreeSet<u32> = lines
        .iter()
        .flat_map(|l| l.cells.iter().map(|c| s.value(&c.params)))
        .collect();
    let xs: Vec<u32> = xs.into_iter().collect();
    let y_max = lines
        .iter()
        .flat_map(|l| l.cells.iter())
        .flat_map(|c| p.metrics.iter().filter_map(|(v, _)| v(c)))
        .fold(0.0, f64::max);
    let y_top = if y_max > 0.0 { y_max * 1.12 } else { 1.0 };
    let (x0, x1) = x_range(s, &xs);
    let mut chart = ChartBuilder::on(a)
        .caption(&p.title, (FONT, 24).into_font().style(FontStyle::Bold))
        .margin(16)
        .margin_right(28)
        .x_label_area_size(70)
        .y_label_area_size(90)
        .build_cartesian_2d(x0..x1, 0f64..y_top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(p.y_desc.as_str())
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .y_label_formatter(&|v| short(*v))
        .draw()?;
    x_ticks(a, &mut chart, s, &xs)?;
    for l in lines {
        for &(value, dashed) in &p.metrics {
            let pts: Vec<(f64, f64)> = l
                .cells
                .iter()
                .filter_map(|c| Some((s.pos(s.value(&c.params)), value(c)?)))
                .collect();
            draw_line(a, &mut chart, l, &pts, dashed)?;
        }
    }
    Ok(())
}

/// The x range of a panel: the swept values' positions with a margin.
fn x_range(s: Sweep, xs: &[u32]) -> (f64, f64) {
    let lo = xs.first().map_or(0.0, |&v| s.pos(v));
    let hi = xs.last().map_or(1.0, |&v| s.pos(v));
    let pad = if hi > lo { (hi - lo) * 0.06 } else { 1.0 };
    (lo - pad, hi + pad)
}

/// A light vertical grid line and a label under the axis at each swept value, skipping a
/// label that would touch the one before it; the axis' description under them.
fn x_ticks<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    chart: &mut Linear<'_, DB>,
    s: Sweep,
    xs: &[u32],
) -> Result<(), Err2<DB>> {
    let y = chart.y_range();
    let grid = BLACK.mix(0.15).stroke_width(1);
    let font = (FONT, 15).into_font().color(&BLACK);
    let mut right_of_last = i32::MIN;
    for &v in xs {
        let x = s.pos(v);
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, y.start), (x, y.end)],
            grid,
        )))?;
        let text = v.to_string();
        let half = 5 * text.chars().count() as i32;
        let (px, py) = local(a, chart.backend_coord(&(x, y.start)));
        if px - half < right_of_last + 10 {
            continue;
        }
        right_of_last = px + half;
        let pos = Pos::new(HPos::Center, VPos::Top);
        a.draw(&Text::new(text, (px, py + 8), font.pos(pos)))?;
    }
    let (l, r) = (chart.x_range().start, chart.x_range().end);
    let (px, py) = local(a, chart.backend_coord(&((l + r) / 2.0, y.start)));
    let pos = Pos::new(HPos::Center, VPos::Top);
    let desc = (FONT, 18).into_font().color(&BLACK).pos(pos);
    a.draw(&Text::new(s.x_desc(), (px, py + 36), desc))
}

/// One figure of a line: solid or dashed, each point marked.
fn draw_line<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    chart: &mut Linear<'_, DB>,
    l: &Line,
    pts: &[(f64, f64)],
    dashed: bool,
) -> Result<(), Err2<DB>> {
    let style = l.color.stroke_width(2);
    if dashed {
        chart.draw_series(DashedLineSeries::new(pts.to_vec(), 9, 6, style))?;
    } else {
        chart.draw_series(LineSeries::new(pts.to_vec(), style))?;
    }
    for p in pts {
        marker(
            a,
            local(a, chart.backend_coord(p)),
            l.variant,
            l.color,
            !dashed,
        )?;
    }
    Ok(())
}

/// A point's marker at pixel `(x, y)` of `a`: circle, triangle, square or cross by `variant`,
/// filled or hollow.
fn marker<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
    variant: usize,
    color: RGBColor,
    filled: bool,
) -> Result<(), Err2<DB>> {
    let shape = |style: ShapeStyle| -> Result<(), Err2<DB>> {
        match variant % 4 {
            0 => a.draw(&Circle::new((x, y), 5, style)),
            1 => a.draw(&TriangleMarker::new((x, y), 7, style)),
            2 => a.draw(&Rectangle::new([(x - 5, y - 5), (x + 5, y + 5)], style)),
            _ => a.draw(&Cross::new((x, y), 6, color.stroke_width(3))),
        }
    };
    if filled {
        shape(color.filled())
    } else {
        shape(WHITE.filled())?;
        shape(color.stroke_width(2))
    }
}

/// The legend right of the panels: a row per line (its colour, marker and label), what solid
/// and dashed lines are, and the failed cells (not plotted) in red.
fn legend_strip<DB: DrawingBackend>(
    strip: &DrawingArea<DB, Shift>,
    lines: &[Line],
    styles: &[(&str, bool)],
    failed: &[String],
) -> Result<(), Err2<DB>> {
    let left = Pos::new(HPos::Left, VPos::Center);
    let font = (FONT, 15).into_font().color(&BLACK).pos(left);
    let mut y = 80;
    for l in lines {
        strip.draw(&PathElement::new(
            vec![(8, y), (40, y)],
            l.color.stroke_width(2),
        ))?;
        marker(strip, (24, y), l.variant, l.color, true)?;
        strip.draw(&Text::new(l.label.clone(), (50, y), font.clone()))?;
        y += ROW;
    }
    y += ROW / 2;
    for &(name, dashed) in styles {
        let grey = BLACK.mix(0.7);
        if dashed {
            for x in [8, 21, 34] {
                strip.draw(&PathElement::new(
                    vec![(x, y), (x + 7, y)],
                    grey.stroke_width(2),
                ))?;
            }
        } else {
            strip.draw(&PathElement::new(
                vec![(8, y), (40, y)],
                grey.stroke_width(2),
            ))?;
        }
        marker(strip, (24, y), 0, RGBColor(80, 80, 80), !dashed)?;
        strip.draw(&Text::new(name, (50, y), font.clone()))?;
        y += ROW;
    }
    failed_rows(strip, failed, y + ROW / 2)
}

/// The failed cells under the legend from height `y`, in red: at most [`MAX_FAILED`] named.
fn failed_rows<DB: DrawingBackend>(
    strip: &DrawingArea<DB, Shift>,
    failed: &[String],
    mut y: i32,
) -> Result<(), Err2<DB>> {
    if failed.is_empty() {
        return Ok(());
    }
    let left = Pos::new(HPos::Left, VPos::Center);
    let red = (FONT, 15).into_font().color(&RED).pos(left);
    let bold = (FONT, 15)
        .into_font()
        .style(FontStyle::Bold)
        .color(&RED)
        .pos(left);
    strip.draw(&Text::new("FAILED (not plotted):", (8, y), bold))?;
    for f in failed.iter().take(MAX_FAILED) {
        y += ROW;
        strip.draw(&Text::new(f.clone(), (8, y), red.clone()))?;
    }
    if failed.len() > MAX_FAILED {
        y += ROW;
        let more = format!("and {} more", failed.len() - MAX_FAILED);
        strip.draw(&Text::new(more, (8, y), red))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FlashAttn, GpuLayers, Sampling, SplitMode};
    use crate::protocol::MemoryMeasurement;
    use crate::quant::Quant;
    use crate::results::{BuildInfo, Environment, RunStatus, Serving};
    use crate::stats::Summary;

    fn params(n_parallel: u32, n_depth: u32) -> CellParams {
        CellParams {
            serve: None,
            prompt: "p".into(),
            n_prompt: 32,
            n_gen: 16,
            n_batch: 512,
            n_ubatch: 512,
            n_gpu_layers: GpuLayers::N(0),
            flash_attn: FlashAttn::Auto,
            type_k: "f16".into(),
            type_v: "f16".into(),
            n_threads: 4,
            repetitions: 2,
            warmup: 1,
            timeout_s: 60,
            sampling: Sampling::Backend,
            split_mode: SplitMode::default(),
            main_gpu: 0,
            tensor_split: Default::default(),
            rpc: Default::default(),
            devices: Default::default(),
            quality: None,
            n_parallel,
            n_depth,
            shared_prompt: false,
        }
    }

    fn summary(v: f64) -> Summary {
        Summary {
            n: 2,
            mean: v,
            sd: v / 50.0,
            median: v,
            min: v,
            max: v,
        }
    }

    /// A cell (figures made up): measured with throughput growing with B and per-sequence
    /// speed falling with B and depth, or failed.
    fn cell(model: &str, q: &str, p: CellParams, ok: bool) -> CellResult {
        let (b, d) = (f64::from(p.n_parallel), f64::from(p.n_depth));
        let c = Cell {
            index: 0,
            model_index: 0,
            model: model.into(),
            label: model.into(),
            quant: Quant::parse(q).unwrap(),
            params: p,
        };
        let mut r = CellResult::failed(&c, None, "made up for the test".into());
        if ok {
            r.status = CellStatus::Ok;
            r.error = None;
            let seq = 400.0 / (1.0 + 0.15 * b) / (1.0 + d / 1000.0);
            for (m, v) in [
                ("throughput_tok_s", seq * b),
                ("decode_tok_s", seq),
                ("tg_tok_s", seq * 1.05),
            ] {
                r.metrics.insert(m.into(), summary(v));
            }
            r.mem_basis = Some("host_rss".into());
            r.mem_bytes = Some((300 << 20) + (b as u64) * (6 << 20));
            r.memory = Some(MemoryMeasurement {
                kv_bytes: (b as u64) * (3 << 20),
                ..Default::default()
            });
        }
        r.index = r.key.len();
        r
    }

    fn report(cells: Vec<CellResult>) -> Report {
        Report {
            schema_version: 1,
            run_id: "test".into(),
            status: RunStatus::Complete,
            started_at: String::new(),
            finished_at: None,
            wall_s: None,
            command: Vec::new(),
            config: "models.toml".into(),
            quantbench: BuildInfo::current(),
            environment: Environment {
                cpu: "test CPU".into(),
                ..Default::default()
            },
            synthetic_weights: true,
            unlocked: false,
            serving: Serving::default(),
            shard: None,
            merged_from: Vec::new(),
            tune: None,
            cells,
        }
    }

    /// tiny and small × F16 and Q8_0 × B 1, 2, 4, 8 × depth 0, 128; tiny Q8_0 B 8 d 128
    /// failed.
    fn sweep_report() -> Report {
        let mut cells = Vec::new();
        for m in ["tiny", "small"] {
            for q in ["F16", "Q8_0"] {
                for b in [1, 2, 4, 8] {
                    for d in [0, 128] {
                        let ok = !(m == "tiny" && q == "Q8_0" && b == 8 && d == 128);
                        cells.push(cell(m, q, params(b, d), ok));
                    }
                }
            }
        }
        report(cells)
    }

    fn stems(r: &Report) -> Vec<&'static str> {
        specs(r).into_iter().map(|s| s.0).collect()
    }

    #[test]
    fn load_charts_are_drawn_only_where_the_run_swept_the_parameter() {
        let plain = report(vec![
            cell("tiny", "F16", params(1, 0), true),
            cell("tiny", "Q8_0", params(1, 0), true),
        ]);
        assert!(stems(&plain).is_empty());
        // one value measured, the other failed: not a sweep
        let one_ok = report(vec![
            cell("tiny", "F16", params(1, 512), true),
            cell("tiny", "F16", params(4, 0), false),
        ]);
        assert_eq!(swept_values(&one_ok, Sweep::Parallel), vec![1]);
        assert!(stems(&one_ok).is_empty());
        let parallel = report(vec![
            cell("tiny", "F16", params(1, 512), true),
            cell("tiny", "F16", params(4, 512), true),
        ]);
        assert_eq!(stems(&parallel), STEMS[..2].to_vec());
        let depth = report(vec![
            cell("tiny", "F16", params(2, 0), true),
            cell("tiny", "F16", params(2, 4096), true),
        ]);
        assert_eq!(stems(&depth), vec!["decode_vs_depth"]);
        assert_eq!(stems(&sweep_report()), STEMS.to_vec());
        // and in the list of every chart, before the latency distribution
        let all: Vec<&str> = super::super::charts::specs(&sweep_report())
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(&all[all.len() - 4..all.len() - 1], &STEMS[..]);
        assert_eq!(all.last(), Some(&"latency_distribution"));
        assert_eq!(super::super::charts::specs(&plain).len(), 6);
    }

    #[test]
    fn one_line_per_model_quant_and_other_parameter() {
        let r = sweep_report();
        let b = lines(&r, Sweep::Parallel);
        let labels: Vec<&str> = b.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "tiny F16",
                "tiny F16 [d 128]",
                "tiny Q8_0",
                "tiny Q8_0 [d 128]",
                "small F16",
                "small F16 [d 128]",
                "small Q8_0",
                "small Q8_0 [d 128]",
            ]
        );
        let bs = |l: &Line| -> Vec<u32> { l.cells.iter().map(|c| c.params.n_parallel).collect() };
        assert_eq!(bs(&b[0]), [1, 2, 4, 8]);
        assert_eq!(bs(&b[3]), [1, 2, 4], "the failed cell is not plotted");
        assert!(b[1].cells.iter().all(|c| c.params.n_depth == 128));
        // a quant's lines differ in shade and marker; its first line has the quant's colour
        assert_eq!(b[0].color, quant_color("F16", 0));
        assert_ne!(b[0].color, b[1].color);
        assert_eq!((b[0].variant, b[1].variant, b[4].variant), (0, 1, 2));

        let d = lines(&r, Sweep::Depth);
        assert_eq!(d.len(), 16, "2 models × 2 quants × 4 B");
        assert_eq!(d[1].label, "tiny F16 [np 2]");
        let depths: Vec<u32> = d[0].cells.iter().map(|c| c.params.n_depth).collect();
        assert_eq!(depths, [0, 128]);
    }

    #[test]
    fn lines_name_the_key_fields_that_differ() {
        let mut tg64 = params(1, 0);
        tg64.n_gen = 64;
        let mut pps = params(2, 0);
        pps.shared_prompt = true;
        let r = report(vec![
            cell("tiny", "F16", params(1, 0), true),
            cell("tiny", "F16", params(4, 0), true),
            cell("tiny", "F16", tg64.clone(), true),
            cell("tiny", "F16", Sweep::Parallel.without(&tg64), true),
            cell("tiny", "F16", pps, true),
        ]);
        // one B only: no curve
        assert_eq!(plotted(&r, Sweep::Parallel).len(), 1);
        let labels: Vec<String> = lines(&r, Sweep::Parallel)
            .into_iter()
            .map(|l| l.label)
            .collect();
        assert_eq!(
            labels,
            ["tiny F16 tg16", "tiny F16 tg64", "tiny F16 tg16 [pps]"]
        );
    }

    #[test]
    fn load_charts_render() {
        let r = sweep_report();
        let dir = tempfile::tempdir().unwrap();
        let files = super::super::charts::write_all(&r, dir.path()).unwrap();
        for (stem, _, (w, h)) in specs(&r) {
            let f = files.iter().find(|f| f.stem == stem).unwrap();
            let d = png::Decoder::new(std::io::BufReader::new(
                std::fs::File::open(&f.png).unwrap(),
            ));
            let info = d.read_info().unwrap().info().clone();
            assert_eq!((info.width, info.height), (w, h), "{stem}");
            let svg = std::fs::read_to_string(&f.svg).unwrap();
            assert!(svg.contains("tiny Q8_0 [d 128]") || stem == "decode_vs_depth");
            assert!(svg.contains("FAILED (not plotted):"), "{stem}");
        }
    }
}
