//! Charts of a run, drawn with plotters into PNG and SVG files: memory, throughput, latency
//! (grouped bars per model × quant, error bars from the repetition samples), the efficiency
//! heatmap, the memory/speed trade-off with its Pareto front, the quality trade-off (KLD
//! against speed and memory, where cells were scored against a reference), and the per-token
//! latency distribution of every cell; where the run swept a load parameter, the charts of
//! [`super::load_charts`]. Failed cells are drawn as failed, never dropped.
//!
//! Text is rendered with DejaVu Sans from the `dejavu` crate (registered with plotters' ab_glyph
//! backend), so the PNGs look the same on a machine without any fonts installed. Never prints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::results::{CellResult, CellStatus, Report};
use crate::stats::percentile;

pub(super) const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in: registration cannot fail on a valid TTF.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// One chart file (both formats are written).
pub struct ChartFile {
    pub stem: &'static str,
    pub title: &'static str,
    pub png: PathBuf,
    pub svg: PathBuf,
}

/// Quant colours: the three default quants get fixed ones, others a palette.
pub(super) fn quant_color(q: &str, i: usize) -> RGBColor {
    match q {
        "F16" => RGBColor(31, 119, 180),
        "Q8_0" => RGBColor(255, 127, 14),
        "Q4_K_M" => RGBColor(44, 160, 44),
        _ => {
            let c = Palette99::pick(i + 3).to_rgba();
            RGBColor(c.0, c.1, c.2)
        }
    }
}

/// The x groups (a model, plus its cell label when a model has cells with several parameter
/// sets) and the series (quants), in report order.
struct Layout {
    groups: Vec<String>,
    series: Vec<String>,
    cells: BTreeMap<(usize, usize), usize>,
}

fn layout(r: &Report) -> Layout {
    let mut params_per_model: BTreeMap<&str, Vec<(u32, u32)>> = BTreeMap::new();
    for c in &r.cells {
        let v = params_per_model.entry(c.model.as_str()).or_default();
        let p = (c.params.n_prompt, c.params.n_gen);
        if !v.contains(&p) {
            v.push(p);
        }
    }
    let group_of = |c: &CellResult| {
        let shape = if params_per_model[c.model.as_str()].len() > 1 {
            format!(" pp{} tg{}", c.params.n_prompt, c.params.n_gen)
        } else {
            String::new()
        };
        format!("{}{shape}{}", c.model, c.placement_suffix())
    };
    let mut groups: Vec<String> = Vec::new();
    let mut series: Vec<String> = Vec::new();
    let mut cells = BTreeMap::new();
    for (i, c) in r.cells.iter().enumerate() {
        let g = group_of(c);
        let q = c.quant.to_string();
        if !groups.contains(&g) {
            groups.push(g.clone());
        }
        if !series.contains(&q) {
            series.push(q.clone());
        }
        let gi = groups.iter().position(|x| *x == g).expect("pushed");
        let si = series.iter().position(|x| *x == q).expect("pushed");
        cells.insert((gi, si), i);
    }
    Layout {
        groups,
        series,
        cells,
    }
}

/// A backend pixel position in the coordinates of `area` (which may not start at the origin).
pub(super) fn local<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
) -> (i32, i32) {
    let (x0, y0) = area.get_base_pixel();
    (x - x0, y - y0)
}

/// A bar: value, error interval, or failed.
struct BarValue {
    value: Option<f64>,
    err: Option<(f64, f64)>,
}

pub(super) type Err2<DB> = DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>;

fn de<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e:?}")
}

/// A chart on linear axes.
type Linear<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Grouped bars with error bars, labels under each group, a legend, and "failed" where a cell
/// failed.
#[allow(clippy::too_many_arguments)]
fn grouped_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    r: &Report,
    lay: &Layout,
    title: &str,
    y_desc: &str,
    value: &dyn Fn(&CellResult) -> BarValue,
    fmt_value: &dyn Fn(f64) -> String,
) -> Result<(), Err2<DB>> {
    let n_groups = lay.groups.len().max(1);
    let n_series = lay.series.len().max(1);
    let bars = Bars {
        r,
        lay,
        value,
        fmt_value,
        width: 0.8 / n_series as f64,
        y_max: bars_y_max(r, lay, value),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 26).into_font().style(FontStyle::Bold))
        .margin(16)
        .x_label_area_size(70)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..n_groups as f64, 0f64..bars.y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_desc)
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .y_label_formatter(&|v| fmt_value(*v))
        .draw()?;
    for (si, q) in lay.series.iter().enumerate() {
        bars.draw_series(&mut chart, si, q)?;
        bars.draw_labels(&mut chart, si)?;
    }
    group_labels(area, &chart, lay)?;
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// The top of a grouped-bar chart's y axis: the highest bar or whisker plus room for labels.
fn bars_y_max(r: &Report, lay: &Layout, value: &dyn Fn(&CellResult) -> BarValue) -> f64 {
    let mut y_max: f64 = 0.0;
    for &i in lay.cells.values() {
        let v = value(&r.cells[i]);
        let top = v.err.map_or(v.value.unwrap_or(0.0), |e| e.1);
        // a value that is not finite has no place on an axis (a tampered or overflowing
        // results.json: mean + sd of 1e308 is inf, and an infinite axis never finished drawing)
        if top.is_finite() {
            y_max = y_max.max(top);
        }
    }
    match y_max * 1.18 {
        top if y_max > 0.0 && top.is_finite() => top,
        _ if y_max > 0.0 => f64::MAX,
        _ => 1.0,
    }
}

/// What a grouped-bar chart draws: the cells' values, their format and the bars' geometry.
struct Bars<'a> {
    r: &'a Report,
    lay: &'a Layout,
    value: &'a dyn Fn(&CellResult) -> BarValue,
    fmt_value: &'a dyn Fn(f64) -> String,
    width: f64,
    y_max: f64,
}

impl Bars<'_> {
    /// The cells of series `si`, each with its group's index.
    fn cells(&self, si: usize) -> impl Iterator<Item = (usize, &CellResult)> + '_ {
        (0..self.lay.groups.len()).filter_map(move |gi| {
            self.lay
                .cells
                .get(&(gi, si))
                .map(|&ci| (gi, &self.r.cells[ci]))
        })
    }

    /// The bars of one quant (series `si`), with its legend entry.
    fn draw_series<DB: DrawingBackend>(
        &self,
        chart: &mut Linear<'_, DB>,
        si: usize,
        q: &str,
    ) -> Result<(), Err2<DB>> {
        let color = quant_color(q, si);
        let mut rects = Vec::new();
        for (gi, c) in self.cells(si) {
            let x0 = gi as f64 + 0.1 + si as f64 * self.width;
            if let (CellStatus::Ok, Some(y)) = (c.status, (self.value)(c).value) {
                rects.push(Rectangle::new(
                    [(x0, 0.0), (x0 + self.width * 0.92, y)],
                    color.filled(),
                ));
            }
        }
        chart
            .draw_series(rects)?
            .label(q)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        Ok(())
    }

    /// Error bars and value labels over the bars of series `si`, "FAILED" or "n/a" where a
    /// cell has no bar.
    fn draw_labels<DB: DrawingBackend>(
        &self,
        chart: &mut Linear<'_, DB>,
        si: usize,
    ) -> Result<(), Err2<DB>> {
        let y_max = self.y_max;
        for (gi, c) in self.cells(si) {
            let xc = gi as f64 + 0.1 + si as f64 * self.width + self.width * 0.46;
            let v = (self.value)(c);
            let (CellStatus::Ok, Some(y)) = (c.status, v.value) else {
                let label = if c.status == CellStatus::Failed {
                    "FAILED"
                } else {
                    "n/a"
                };
                chart.draw_series(std::iter::once(Text::new(
                    label,
                    (xc, y_max * 0.02),
                    (FONT, 14)
                        .into_font()
                        .style(FontStyle::Bold)
                        .transform(FontTransform::Rotate270)
                        .color(&RED)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                )))?;
                continue;
            };
            if let Some((lo, hi)) = v.err {
                chart.draw_series(std::iter::once(ErrorBar::new_vertical(
                    xc,
                    lo,
                    y,
                    hi,
                    BLACK.stroke_width(2),
                    10,
                )))?;
            }
            chart.draw_series(std::iter::once(Text::new(
                (self.fmt_value)(y),
                (xc, v.err.map_or(y, |e| e.1) + y_max * 0.012),
                (FONT, 13)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))?;
        }
        Ok(())
    }
}

/// Each group's name, centred under its bars.
fn group_labels<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Linear<'_, DB>,
    lay: &Layout,
) -> Result<(), Err2<DB>> {
    for (gi, g) in lay.groups.iter().enumerate() {
        let (px, py) = local(area, chart.backend_coord(&(gi as f64 + 0.5, 0.0)));
        area.draw(&Text::new(
            g.clone(),
            (px, py + 12),
            (FONT, 17)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    Ok(())
}

/// The legend of the series drawn with labels, at `pos`.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    pos: SeriesLabelPosition,
) -> Result<(), Err2<DB>> {
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 16))
        .draw()
}

fn sd_err(c: &CellResult, m: &str) -> BarValue {
    match c.metrics.get(m) {
        Some(s) => BarValue {
            value: Some(s.mean),
            // no whisker where mean ± sd leaves the finite numbers
            err: Some(((s.mean - s.sd).max(0.0), s.mean + s.sd))
                .filter(|(lo, hi)| lo.is_finite() && hi.is_finite()),
        },
        None => BarValue {
            value: None,
            err: None,
        },
    }
}

pub(super) fn short(v: f64) -> String {
    if v == 0.0 || v >= 100.0 || (v >= 1.0 && (v - v.round()).abs() < 1e-9) {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Bytes in GiB, the unit of the memory axes.
fn gib(b: u64) -> f64 {
    b as f64 / 1073741824.0
}

pub(super) fn memory_basis(r: &Report) -> &'static str {
    if r.cells
        .iter()
        .any(|c| c.mem_basis.as_deref() == Some("vram"))
    {
        "device memory per process (VRAM, NVML), GiB"
    } else {
        "host memory of the worker (RSS), GiB"
    }
}

fn memory<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    r: &Report,
    lay: &Layout,
) -> Result<(), Err2<DB>> {
    let title = format!(
        "Memory by model and quantization — {}",
        r.device_description()
    );
    grouped_bars(
        a,
        r,
        lay,
        &title,
        memory_basis(r),
        &|c| BarValue {
            value: c.mem_bytes.map(gib),
            err: None,
        },
        &|v| format!("{v:.2}"),
    )
}

fn throughput<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    r: &Report,
    lay: &Layout,
) -> Result<(), Err2<DB>> {
    let title = format!(
        "Decode speed (greedy sampling) — {}",
        r.device_description()
    );
    grouped_bars(
        a,
        r,
        lay,
        &title,
        "decode_tok_s, tokens/s (mean ± sd over repetitions)",
        &|c| sd_err(c, "decode_tok_s"),
        &short,
    )
}

fn latency<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    r: &Report,
    lay: &Layout,
) -> Result<(), Err2<DB>> {
    let (left, right) = a.split_horizontally(a.dim_in_pixel().0 / 2);
    grouped_bars(
        &left,
        r,
        lay,
        "Time to first token",
        "ttft_ms, ms (mean ± sd over repetitions)",
        &|c| sd_err(c, "ttft_ms"),
        &short,
    )?;
    grouped_bars(
        &right,
        r,
        lay,
        "Inter-token latency",
        "ITL, ms (bar: median; whisker: p90 to p99)",
        &|c| BarValue {
            value: c.itl_ms_p50,
            err: c.itl_ms_p90.zip(c.itl_ms_p99),
        },
        &short,
    )
}

/// Viridis-like colour ramp, 0..=1.
fn ramp(t: f64) -> RGBColor {
    const STOPS: [(f64, (u8, u8, u8)); 5] = [
        (0.0, (68, 1, 84)),
        (0.25, (59, 82, 139)),
        (0.5, (33, 145, 140)),
        (0.75, (94, 201, 98)),
        (1.0, (253, 231, 37)),
    ];
    let t = t.clamp(0.0, 1.0);
    for w in STOPS.windows(2) {
        let ((t0, c0), (t1, c1)) = (w[0], w[1]);
        if t <= t1 {
            let f = (t - t0) / (t1 - t0);
            let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * f) as u8;
            return RGBColor(mix(c0.0, c1.0), mix(c0.1, c1.1), mix(c0.2, c1.2));
        }
    }
    RGBColor(253, 231, 37)
}

/// The efficiency heatmap: decode tokens/s per GB, one tile per model × quant.
fn heatmap<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    r: &Report,
    lay: &Layout,
) -> Result<(), Err2<DB>> {
    let (nx, ny) = (lay.series.len().max(1), lay.groups.len().max(1));
    let range = efficiency_range(r);
    let basis = if memory_basis(r).starts_with("device") {
        "VRAM"
    } else {
        "host RSS"
    };
    let title = format!("Efficiency: decode tokens/s per GB of {basis}");
    let mut chart = ChartBuilder::on(a)
        .caption(title, (FONT, 26).into_font().style(FontStyle::Bold))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(220)
        .build_cartesian_2d(0f64..nx as f64, 0f64..ny as f64)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .draw()?;
    for (&(gi, si), &ci) in &lay.cells {
        heat_tile(&mut chart, &r.cells[ci], si, (ny - 1 - gi) as f64, range)?;
    }
    heat_axis_labels(a, &chart, lay)
}

/// The lowest and highest efficiency of the run (infinite when no cell has one).
fn efficiency_range(r: &Report) -> (f64, f64) {
    let vals: Vec<f64> = r
        .cells
        .iter()
        .filter_map(|c| c.efficiency_tok_s_per_gb)
        .collect();
    (
        vals.iter().copied().fold(f64::INFINITY, f64::min),
        vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// One tile of the heatmap at column `si`, row `y0`: coloured by where the cell's efficiency
/// falls in `(lo, hi)`, with the figure (or "FAILED", "n/a") on it.
fn heat_tile<DB: DrawingBackend>(
    chart: &mut Linear<'_, DB>,
    c: &CellResult,
    si: usize,
    y0: f64,
    (lo, hi): (f64, f64),
) -> Result<(), Err2<DB>> {
    let (fill, text, text_color) = match (c.status, c.efficiency_tok_s_per_gb) {
        (CellStatus::Ok, Some(v)) => {
            let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
            (ramp(t), short(v), if t > 0.6 { BLACK } else { WHITE })
        }
        (CellStatus::Failed, _) => (RGBColor(200, 200, 200), "FAILED".to_string(), RED),
        _ => (RGBColor(230, 230, 230), "n/a".to_string(), BLACK),
    };
    chart.draw_series(std::iter::once(Rectangle::new(
        [(si as f64 + 0.02, y0 + 0.04), (si as f64 + 0.98, y0 + 0.96)],
        fill.filled(),
    )))?;
    chart.draw_series(std::iter::once(Text::new(
        text,
        (si as f64 + 0.5, y0 + 0.5),
        (FONT, 22)
            .into_font()
            .style(FontStyle::Bold)
            .color(&text_color)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    )))?;
    Ok(())
}

/// The quants under the heatmap's columns and the groups left of its rows.
fn heat_axis_labels<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    chart: &Linear<'_, DB>,
    lay: &Layout,
) -> Result<(), Err2<DB>> {
    let ny = lay.groups.len().max(1);
    for (si, q) in lay.series.iter().enumerate() {
        let (px, py) = local(a, chart.backend_coord(&(si as f64 + 0.5, 0.0)));
        a.draw(&Text::new(
            q.clone(),
            (px, py + 10),
            (FONT, 18)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    for (gi, g) in lay.groups.iter().enumerate() {
        let (px, py) = local(a, chart.backend_coord(&(0.0, (ny - 1 - gi) as f64 + 0.5)));
        a.draw(&Text::new(
            g.clone(),
            (px - 12, py),
            (FONT, 18)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// Indices of the cells on the Pareto front: no other cell uses less or equal memory and
/// decodes at least as fast, with one of the two strictly better.
pub fn pareto(points: &[(f64, f64)]) -> Vec<usize> {
    (0..points.len())
        .filter(|&i| {
            let (m, d) = points[i];
            !points
                .iter()
                .enumerate()
                .any(|(j, &(m2, d2))| j != i && m2 <= m && d2 >= d && (m2 < m || d2 > d))
        })
        .collect()
}

/// A chart on log-log axes.
type LogLog<'a, DB> = ChartContext<'a, DB, Cartesian2d<LogCoord<f64>, LogCoord<f64>>>;

/// The memory / decode speed trade-off: one point per measured cell, the Pareto front drawn
/// and ringed, points labelled where there is room.
fn tradeoff<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    r: &Report,
    lay: &Layout,
) -> Result<(), Err2<DB>> {
    let (ok, pts) = tradeoff_points(r);
    let front = pareto(&pts);
    let (x, y) = log_bounds(&pts);
    let mut chart = ChartBuilder::on(a)
        .caption(
            "Trade-off: memory vs decode speed (ringed: Pareto-optimal)",
            (FONT, 26).into_font().style(FontStyle::Bold),
        )
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d((x.0..x.1).log_scale(), (y.0..y.1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(format!("{} (log scale)", memory_basis(r)))
        .y_desc("decode_tok_s, tokens/s (log scale)")
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .draw()?;
    draw_points(&mut chart, lay, &ok, &pts, std::slice::from_ref(&front))?;
    let unlabelled = label_points(a, &chart, &point_labels(&ok, " "), &pts, &front)?;
    unlabelled_note(a, unlabelled, "results")?;
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    let failed: Vec<String> = r
        .failed_cells()
        .iter()
        .map(|c| format!("{} {}{}", c.model, c.quant, c.placement_suffix()))
        .collect();
    if !failed.is_empty() {
        a.draw(&Text::new(
            format!("FAILED (not plotted): {}", failed.join(", ")),
            (110, 50),
            (FONT, 16).into_font().color(&RED),
        ))?;
    }
    Ok(())
}

/// "N crowded point(s) unlabelled" at the top right of `a`, where any are; `table` names the
/// table that has them all.
fn unlabelled_note<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    unlabelled: usize,
    table: &str,
) -> Result<(), Err2<DB>> {
    if unlabelled == 0 {
        return Ok(());
    }
    let (w, _) = a.dim_in_pixel();
    a.draw(&Text::new(
        format!("{unlabelled} crowded point(s) unlabelled: see the {table} table"),
        (w as i32 - 30, 62),
        (FONT, 14)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Top)),
    ))
}

/// The cells the trade-off can plot (measured, with memory and decode speed), and their
/// points: memory in GiB, decode tokens/s.
fn tradeoff_points(r: &Report) -> (Vec<&CellResult>, Vec<(f64, f64)>) {
    let ok: Vec<&CellResult> = r
        .cells
        .iter()
        .filter(|c| {
            c.status == CellStatus::Ok && c.mem_bytes.is_some() && c.mean("decode_tok_s").is_some()
        })
        .collect();
    let pts = ok
        .iter()
        .map(|c| {
            (
                gib(c.mem_bytes.unwrap_or(0)),
                c.mean("decode_tok_s").unwrap_or(0.0),
            )
        })
        .collect();
    (ok, pts)
}

/// The x and y ranges of the log-log trade-off: the points' span with a margin (models differ
/// by orders of magnitude in size and speed), or a default span without points.
fn log_bounds(pts: &[(f64, f64)]) -> ((f64, f64), (f64, f64)) {
    let fold = |f: fn(&(f64, f64)) -> f64, min: bool| {
        pts.iter()
            .map(f)
            .fold(if min { f64::INFINITY } else { 0.0 }, |a, b| {
                if min {
                    a.min(b)
                } else {
                    a.max(b)
                }
            })
    };
    let (x_lo, x_hi) = (fold(|p| p.0, true), fold(|p| p.0, false));
    let (y_lo, y_hi) = (fold(|p| p.1, true), fold(|p| p.1, false));
    let x = if x_lo.is_finite() && x_hi > 0.0 {
        (x_lo / 1.6, x_hi * 1.6)
    } else {
        (0.01, 10.0)
    };
    let y = if y_lo.is_finite() && y_hi > 0.0 {
        (y_lo / 1.6, y_hi * 1.6)
    } else {
        (1.0, 1000.0)
    };
    (x, y)
}

/// The line of each Pareto front, every point coloured by quant (one legend entry per quant),
/// and a ring around each Pareto-optimal point.
fn draw_points<DB: DrawingBackend>(
    chart: &mut LogLog<'_, DB>,
    lay: &Layout,
    ok: &[&CellResult],
    pts: &[(f64, f64)],
    fronts: &[Vec<usize>],
) -> Result<(), Err2<DB>> {
    for front in fronts {
        let mut front_pts: Vec<(f64, f64)> = front.iter().map(|&i| pts[i]).collect();
        front_pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart.draw_series(LineSeries::new(front_pts, BLACK.mix(0.5).stroke_width(2)))?;
    }
    for (si, q) in lay.series.iter().enumerate() {
        let color = quant_color(q, si);
        let mine: Vec<usize> = (0..ok.len())
            .filter(|&i| ok[i].quant.to_string() == *q)
            .collect();
        chart
            .draw_series(mine.iter().map(|&i| Circle::new(pts[i], 8, color.filled())))?
            .label(q.as_str())
            .legend(move |(x, y)| Circle::new((x + 7, y), 6, color.filled()));
    }
    chart.draw_series(
        fronts
            .iter()
            .flatten()
            .map(|&i| Circle::new(pts[i], 14, BLACK.stroke_width(2))),
    )?;
    Ok(())
}

/// The Pareto front of each model's cells separately (indices into `ok`, in `pareto`'s
/// orientation): a KLD is measured against that model's own reference, so cells of different
/// models do not dominate one another.
fn pareto_per_model(ok: &[&CellResult], points: &[(f64, f64)]) -> Vec<Vec<usize>> {
    let models: Vec<&str> = ok.iter().map(|c| c.model.as_str()).collect();
    pareto_grouped(&models, points)
}

/// The Pareto front of the points of each group (`group[i]` names point `i`'s), in the
/// groups' sorted order.
fn pareto_grouped(group: &[&str], points: &[(f64, f64)]) -> Vec<Vec<usize>> {
    let names: BTreeSet<&str> = group.iter().copied().collect();
    names
        .into_iter()
        .map(|m| {
            let mine: Vec<usize> = (0..group.len()).filter(|&i| group[i] == m).collect();
            let sub: Vec<(f64, f64)> = mine.iter().map(|&i| points[i]).collect();
            pareto(&sub).into_iter().map(|j| mine[j]).collect()
        })
        .collect()
}

/// The (model, quant) pairs that more than one plotted cell shares: their labels need the
/// number of generated tokens.
fn repeated_model_quants<'a>(ok: &[&'a CellResult]) -> BTreeSet<(&'a str, String)> {
    let mut seen = BTreeSet::new();
    let mut dup = BTreeSet::new();
    for c in ok {
        let k = (c.model.as_str(), c.quant.to_string());
        if !seen.insert(k.clone()) {
            dup.insert(k);
        }
    }
    dup
}

/// The label of each plotted cell: model, quant (joined by `sep`), the number of generated
/// tokens where several plotted cells share a model and quant, and the placement.
fn point_labels(ok: &[&CellResult], sep: &str) -> Vec<String> {
    let several = repeated_model_quants(ok);
    ok.iter()
        .map(|c| {
            let tag = if several.contains(&(c.model.as_str(), c.quant.to_string())) {
                format!(" tg{}", c.params.n_gen)
            } else {
                String::new()
            };
            format!("{}{sep}{}{tag}{}", c.model, c.quant, c.placement_suffix())
        })
        .collect()
}

/// Labels the points with `texts`: Pareto-optimal points first, each label put beside its
/// point where it overlaps no label already placed; crowded points stay unlabelled (the
/// results table has them all). Returns how many points stayed unlabelled.
fn label_points<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    chart: &LogLog<'_, DB>,
    texts: &[String],
    pts: &[(f64, f64)],
    front: &[usize],
) -> Result<usize, Err2<DB>> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|i| !front.contains(i));
    let mut placed: Vec<Rect> = Vec::new();
    let mut unlabelled = 0;
    for i in order {
        let text = &texts[i];
        let size = (text.chars().count() as i32 * 8, 16);
        match free_spot(&placed, local(a, chart.backend_coord(&pts[i])), size) {
            Some(r) => {
                placed.push(r);
                a.draw(&Text::new(
                    text.clone(),
                    (r.0, r.1),
                    (FONT, 14).into_font().color(&BLACK),
                ))?;
            }
            None => unlabelled += 1,
        }
    }
    Ok(unlabelled)
}

/// A label's box in pixels: left, top, right, bottom.
type Rect = (i32, i32, i32, i32);

/// The first place for a `w` × `h` label right of, left of, above or below the point at
/// `(px, py)` that overlaps none of `placed`.
fn free_spot(placed: &[Rect], (px, py): (i32, i32), (w, h): (i32, i32)) -> Option<Rect> {
    [
        (12, -h / 2),
        (-12 - w, -h / 2),
        (-w / 2, -12 - h),
        (-w / 2, 12),
    ]
    .into_iter()
    .map(|(dx, dy)| (px + dx, py + dy, px + dx + w, py + dy + h))
    .find(|r| {
        placed
            .iter()
            .all(|q| r.2 < q.0 || q.2 < r.0 || r.3 < q.1 || q.3 < r.1)
    })
}

/// What a panel of the quality trade-off puts against KLD.
#[derive(Clone, Copy, PartialEq)]
enum Against {
    Speed,
    Memory,
}

/// The quality trade-off: KLD against decode speed (left) and against memory (right), one
/// point per cell with quality statistics, each model's Pareto front drawn and ringed.
fn quality_tradeoff<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    r: &Report,
    lay: &Layout,
) -> Result<(), Err2<DB>> {
    let (left, right) = a.split_horizontally(a.dim_in_pixel().0 / 2);
    quality_panel(&left, r, lay, Against::Speed)?;
    quality_panel(&right, r, lay, Against::Memory)
}

/// The cells a quality panel plots (quality statistics and the panel's x value), with their
/// values: (decode tokens/s or memory in GiB, KLD mean).
fn quality_values(r: &Report, against: Against) -> (Vec<&CellResult>, Vec<(f64, f64)>) {
    let x = |c: &CellResult| match against {
        Against::Speed => c.mean("decode_tok_s"),
        Against::Memory => c.mem_bytes.map(gib),
    };
    r.cells
        .iter()
        .filter_map(|c| Some((c, (x(c)?, super::quality_stats(c)?.kld_mean))))
        .unzip()
}

/// Where a KLD of 0 (the reference) is drawn on the log axis: a tenth of the smallest
/// positive KLD, or 1e-4 when none is positive.
fn kld_zero_at(values: &[(f64, f64)]) -> f64 {
    let lo = values
        .iter()
        .map(|v| v.1)
        .filter(|k| *k > 0.0)
        .fold(f64::INFINITY, f64::min);
    if lo.is_finite() {
        lo / 10.0
    } else {
        1e-4
    }
}

/// Labels of the KLD axis: `1e-4` below 0.01, as the other axes above.
fn kld_tick(v: f64) -> String {
    if v < 0.01 {
        format!("{v:.0e}")
    } else {
        short(v)
    }
}

/// One panel of the quality trade-off: its caption, a strip with the key and the notes, the
/// chart. The Pareto front is computed on the true values (a reference's KLD is 0); KLD 0 is
/// drawn on a dashed line near the bottom of the log axis.
fn quality_panel<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    r: &Report,
    lay: &Layout,
    against: Against,
) -> Result<(), Err2<DB>> {
    let (ok, values) = quality_values(r, against);
    let fronts = pareto_per_model(
        &ok,
        &match against {
            Against::Speed => values.iter().map(|&(x, k)| (k, x)).collect::<Vec<_>>(),
            Against::Memory => values.iter().map(|&(x, k)| (k, -x)).collect(),
        },
    );
    let front: Vec<usize> = fronts.iter().flatten().copied().collect();
    let zero_at = kld_zero_at(&values);
    let pts: Vec<(f64, f64)> = values
        .iter()
        .map(|&(x, k)| (x, if k > 0.0 { k } else { zero_at }))
        .collect();
    let caption = match against {
        Against::Speed => "Quality vs decode speed (ringed: Pareto-optimal)",
        Against::Memory => "Quality vs memory (ringed: Pareto-optimal)",
    };
    let body = a
        .margin(10, 0, 0, 0)
        .titled(caption, (FONT, 26).into_font().style(FontStyle::Bold))?;
    let (strip, plot) = body.split_vertically(56);
    let mut chart = quality_axes(&plot, r, against, &pts)?;
    narrow_axis_labels(&plot, &mut chart)?;
    let zero = values.iter().any(|v| v.1 <= 0.0);
    if zero {
        kld_zero_line(&mut chart, zero_at)?;
    }
    draw_points(&mut chart, lay, &ok, &pts, &fronts)?;
    let unlabelled = label_points(&plot, &chart, &point_labels(&ok, "·"), &pts, &front)?;
    quality_key(&strip, lay, &ok, zero)?;
    quality_notes(&strip, r, unlabelled)
}

/// The log-log axes of a quality panel, spanning `pts`, with their descriptions.
fn quality_axes<'a, DB: DrawingBackend>(
    a: &'a DrawingArea<DB, Shift>,
    r: &Report,
    against: Against,
    pts: &[(f64, f64)],
) -> Result<LogLog<'a, DB>, Err2<DB>> {
    let (x, y) = log_bounds(pts);
    let x_desc = match against {
        Against::Speed => "decode_tok_s, tokens/s (log scale)".to_string(),
        Against::Memory => format!("{} (log scale)", memory_basis(r)),
    };
    let mut chart = ChartBuilder::on(a)
        .margin(20)
        .margin_top(6)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d((x.0..x.1).log_scale(), (y.0..y.1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("KLD mean vs the reference (log scale; lower is better)")
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| kld_tick(*v))
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .draw()?;
    Ok(chart)
}

/// The first line of a quality panel's strip: a dot per quant plotted, and the dashed line's
/// meaning where a reference is plotted.
fn quality_key<DB: DrawingBackend>(
    strip: &DrawingArea<DB, Shift>,
    lay: &Layout,
    ok: &[&CellResult],
    zero: bool,
) -> Result<(), Err2<DB>> {
    let font = (FONT, 16).into_font().color(&BLACK);
    let mut x = 110;
    for (si, q) in lay.series.iter().enumerate() {
        if !ok.iter().any(|c| c.quant.to_string() == *q) {
            continue;
        }
        strip.draw(&Circle::new((x, 16), 6, quant_color(q, si).filled()))?;
        strip.draw(&Text::new(q.clone(), (x + 12, 7), font.clone()))?;
        x += 36 + 9 * q.chars().count() as i32;
    }
    if zero {
        let grey = BLACK.mix(0.45).stroke_width(1);
        for dx in [0, 12, 24] {
            strip.draw(&PathElement::new(
                vec![(x + dx, 16), (x + dx + 7, 16)],
                grey,
            ))?;
        }
        let text = "KLD 0: the reference itself, drawn below the smallest KLD";
        strip.draw(&Text::new(text, (x + 40, 7), font))?;
    }
    Ok(())
}

/// The second line of a quality panel's strip: cells whose quality test failed (in red, not
/// plotted), and how many points stayed unlabelled.
fn quality_notes<DB: DrawingBackend>(
    strip: &DrawingArea<DB, Shift>,
    r: &Report,
    unlabelled: usize,
) -> Result<(), Err2<DB>> {
    let failed: Vec<String> = r
        .cells
        .iter()
        .filter(|c| c.quality.as_ref().is_some_and(|q| q.stats.is_none()))
        .map(|c| format!("{}·{}{}", c.model, c.quant, c.placement_suffix()))
        .collect();
    if !failed.is_empty() {
        let more = failed.len().saturating_sub(3);
        let mut names = failed[..failed.len().min(3)].join(", ");
        if more > 0 {
            names += &format!(" and {more} more");
        }
        let text = format!("quality not measured (not plotted): {names}");
        strip.draw(&Text::new(
            text,
            (110, 32),
            (FONT, 15).into_font().color(&RED),
        ))?;
    }
    if unlabelled > 0 {
        let (w, _) = strip.dim_in_pixel();
        strip.draw(&Text::new(
            format!("{unlabelled} crowded point(s) unlabelled: see the Quality table"),
            (w as i32 - 30, 32),
            (FONT, 15)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Top)),
        ))?;
    }
    Ok(())
}

/// Values m × 10^k (m = 1…9, or 1, 2, 5 where that leaves fewer) inside `lo..hi` when the
/// range holds no power of ten, which is all plotters labels on a log axis; empty otherwise.
fn narrow_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let k = lo.log10().floor();
    let decade = 10f64.powf(k);
    if decade * 10.0 <= hi || !(lo > 0.0 && hi.is_finite()) {
        return Vec::new();
    }
    let inside = |ms: &[f64]| -> Vec<f64> {
        ms.iter()
            .map(|m| m * decade)
            .filter(|v| *v > lo && *v < hi)
            .collect()
    };
    let all = inside(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    let few = inside(&[1.0, 2.0, 5.0]);
    if all.len() > 6 && !few.is_empty() {
        few
    } else {
        all
    }
}

/// A tick value as written: its one significant digit, in the exponent form below 0.01
/// when `exp_small`.
fn tick_text(v: f64, exp_small: bool) -> String {
    if exp_small && v < 0.01 {
        format!("{v:.0e}")
    } else {
        format!("{v:.*}", (-v.log10().floor()).max(0.0) as usize)
    }
}

/// Labels and light grid lines on the axes of a log-log chart whose range holds no power of
/// ten (plotters would leave the axis bare), e.g. the memory of a tiny model.
fn narrow_axis_labels<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    chart: &mut LogLog<'_, DB>,
) -> Result<(), Err2<DB>> {
    let (x, y) = (chart.x_range(), chart.y_range());
    let grid = BLACK.mix(0.15).stroke_width(1);
    let font = (FONT, 15).into_font().color(&BLACK);
    for v in narrow_ticks(x.start, x.end) {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(v, y.start), (v, y.end)],
            grid,
        )))?;
        let (px, py) = local(a, chart.backend_coord(&(v, y.start)));
        let pos = Pos::new(HPos::Center, VPos::Top);
        a.draw(&Text::new(tick_text(v, false), (px, py + 8), font.pos(pos)))?;
    }
    for v in narrow_ticks(y.start, y.end) {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x.start, v), (x.end, v)],
            grid,
        )))?;
        let (px, py) = local(a, chart.backend_coord(&(x.start, v)));
        let pos = Pos::new(HPos::Right, VPos::Center);
        a.draw(&Text::new(tick_text(v, true), (px - 8, py), font.pos(pos)))?;
    }
    Ok(())
}

/// The dashed line where KLD 0 (the reference itself) is drawn, across the chart.
fn kld_zero_line<DB: DrawingBackend>(
    chart: &mut LogLog<'_, DB>,
    zero_at: f64,
) -> Result<(), Err2<DB>> {
    let (x0, x1) = (chart.x_range().start, chart.x_range().end);
    let style = BLACK.mix(0.45).stroke_width(1);
    let n = 60;
    let step = (x1 / x0).powf(1.0 / f64::from(n));
    chart.draw_series((0..n).step_by(2).map(|i| {
        let xa = x0 * step.powi(i);
        PathElement::new(vec![(xa, zero_at), (xa * step, zero_at)], style)
    }))?;
    Ok(())
}

/// Inter-token latencies of a cell, all repetitions pooled (ms).
fn itls(c: &CellResult) -> Vec<f64> {
    c.samples
        .iter()
        .flat_map(crate::protocol::RepSample::inter_token_ms)
        .collect()
}

/// The per-token latency distribution: one box plot per cell, on a log axis.
fn distribution<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    r: &Report,
) -> Result<(), Err2<DB>> {
    let n = r.cells.len().max(1);
    let (lo, hi) = itl_bounds(r);
    let mut chart = ChartBuilder::on(a)
        .caption(
            "Per-token latency (box: p25–p75, line: median, whiskers: p5–p95, dot: p99)",
            (FONT, 24).into_font().style(FontStyle::Bold),
        )
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(260)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..n as f64)?;
    chart
        .configure_mesh()
        .y_labels(0)
        .disable_y_mesh()
        .x_desc("inter-token latency, ms (log scale)")
        .x_label_formatter(&|v| short(*v))
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .draw()?;
    for (i, c) in r.cells.iter().enumerate() {
        let y = (n - 1 - i) as f64 + 0.5;
        let (px, py) = local(a, chart.backend_coord(&(lo, y)));
        a.draw(&Text::new(
            format!(
                "{} {} pp{} tg{}{}",
                c.model,
                c.quant,
                c.params.n_prompt,
                c.params.n_gen,
                c.placement_suffix()
            ),
            (px - 12, py),
            (FONT, 15)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
        latency_box(&mut chart, c, i, y, lo)?;
    }
    Ok(())
}

/// The range of the distribution's log axis: all latencies with a margin, or a default.
fn itl_bounds(r: &Report) -> (f64, f64) {
    let all: Vec<f64> = r.cells.iter().flat_map(itls).filter(|v| *v > 0.0).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() && hi > lo {
        (lo / 1.3, hi * 1.3)
    } else {
        (0.01, 100.0)
    }
}

/// Cell `i`'s box plot at height `y` (whiskers p5–p95, box p25–p75, median line, p99 dot),
/// or "FAILED" / "no samples"; `lo` is the axis' left end.
fn latency_box<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<LogCoord<f64>, RangedCoordf64>>,
    c: &CellResult,
    i: usize,
    y: f64,
    lo: f64,
) -> Result<(), Err2<DB>> {
    let v = itls(c);
    if c.status == CellStatus::Failed || v.is_empty() {
        chart.draw_series(std::iter::once(Text::new(
            if c.status == CellStatus::Failed {
                "FAILED"
            } else {
                "no samples"
            },
            (lo * 1.1, y),
            (FONT, 15)
                .into_font()
                .style(FontStyle::Bold)
                .color(&RED)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        )))?;
        return Ok(());
    }
    let p = |q| percentile(&v, q).unwrap_or(0.0).max(lo);
    let color = quant_color(&c.quant.to_string(), i);
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(p(5.0), y), (p(95.0), y)],
        BLACK.stroke_width(1),
    )))?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(p(25.0), y - 0.3), (p(75.0), y + 0.3)],
        color.mix(0.7).filled(),
    )))?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(p(50.0), y - 0.34), (p(50.0), y + 0.34)],
        BLACK.stroke_width(3),
    )))?;
    chart.draw_series(std::iter::once(Circle::new((p(99.0), y), 4, RED.filled())))?;
    Ok(())
}

/// Draws one chart on any backend.
fn draw_on<DB: DrawingBackend>(
    stem: &str,
    area: &DrawingArea<DB, Shift>,
    r: &Report,
    lay: &Layout,
) -> Result<(), Err2<DB>> {
    area.fill(&WHITE)?;
    match stem {
        "memory_comparison" => memory(area, r, lay),
        "throughput_comparison" => throughput(area, r, lay),
        "latency_comparison" => latency(area, r, lay),
        "efficiency_heatmap" => heatmap(area, r, lay),
        "tradeoff" => tradeoff(area, r, lay),
        "quality_tradeoff" => quality_tradeoff(area, r, lay),
        s if super::load_charts::STEMS.contains(&s) => super::load_charts::draw(s, area, r),
        s if super::serving_charts::STEMS.contains(&s) => super::serving_charts::draw(s, area, r),
        super::tune_chart::STEM => super::tune_chart::draw(area, r),
        _ => distribution(area, r),
    }
}

/// The charts a report has, with their pixel sizes: the quality trade-off only where at
/// least two cells have quality statistics, the load charts (`load_charts`) only where the run
/// swept `n_parallel` or `n_depth`, both before the latency distribution.
pub fn specs(r: &Report) -> Vec<(&'static str, &'static str, (u32, u32))> {
    let lay = layout(r);
    let bars_w = (260 + 140 * lay.groups.len() as u32 * lay.series.len().max(1) as u32 / 2)
        .clamp(1000, 2400);
    let mut specs = vec![
        ("memory_comparison", "Memory", (bars_w, 700)),
        ("throughput_comparison", "Throughput", (bars_w, 700)),
        (
            "latency_comparison",
            "Latency",
            ((bars_w * 2).min(2800), 700),
        ),
        (
            "efficiency_heatmap",
            "Efficiency",
            (
                300 + 220 * lay.series.len() as u32,
                160 + 90 * lay.groups.len() as u32,
            ),
        ),
        ("tradeoff", "Memory / speed trade-off", (1200, 800)),
        (
            "latency_distribution",
            "Per-token latency distribution",
            (1400, 140 + 44 * r.cells.len() as u32),
        ),
    ];
    let scored = r
        .cells
        .iter()
        .filter(|c| super::quality_stats(c).is_some())
        .count();
    if scored >= 2 {
        specs.insert(
            5,
            (
                "quality_tradeoff",
                "Quality / speed and memory trade-off",
                (2200, 800),
            ),
        );
    }
    let at = specs.len() - 1;
    specs.splice(at..at, super::load_charts::specs(r));
    let at = specs.len() - 1;
    specs.splice(at..at, super::serving_charts::specs(r));
    specs.splice(0..0, super::tune_chart::specs(r));
    specs
}

/// Writes every chart of `r` into `dir` as PNG and SVG.
pub fn write_all(r: &Report, dir: &Path) -> Result<Vec<ChartFile>> {
    register_font();
    let lay = layout(r);
    let mut out = Vec::new();
    for (stem, title, size) in specs(r) {
        let png = dir.join(format!("{stem}.png"));
        let svg = dir.join(format!("{stem}.svg"));
        // drawn under temporary names, then renamed: a full disk never leaves a truncated
        // chart under its name
        let (png_tmp, svg_tmp) = (
            crate::fsutil::temp_name(&png),
            crate::fsutil::temp_name(&svg),
        );
        let drawn = (|| -> Result<()> {
            {
                let root = BitMapBackend::new(&png_tmp, size).into_drawing_area();
                draw_on(stem, &root, r, &lay).map_err(de)?;
                root.present().map_err(de)?;
            }
            let root = SVGBackend::new(&svg_tmp, size).into_drawing_area();
            draw_on(stem, &root, r, &lay).map_err(de)?;
            root.present().map_err(de)?;
            Ok(())
        })();
        if let Err(e) = drawn {
            let _ = std::fs::remove_file(&png_tmp);
            let _ = std::fs::remove_file(&svg_tmp);
            return Err(e.context(format!("drawing {}", png.display())));
        }
        let placed = crate::fsutil::replace_with(&png_tmp, &png)
            .and_then(|()| crate::fsutil::replace_with(&svg_tmp, &svg));
        if placed.is_err() {
            // the SVG's temporary file is left when the PNG could not be placed
            let _ = std::fs::remove_file(&svg_tmp);
        }
        placed?;
        out.push(ChartFile {
            stem,
            title,
            png,
            svg,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_model_has_its_own_front() {
        // (KLD, speed): b's cells would all be dominated by a's reference in one front
        let group = ["a", "b", "a", "b", "b"];
        let pts = [
            (0.0, 100.0),
            (0.5, 20.0),
            (0.1, 120.0),
            (0.0, 10.0),
            (0.6, 15.0),
        ];
        assert_eq!(pareto(&pts), vec![0, 2]);
        assert_eq!(pareto_grouped(&group, &pts), vec![vec![0, 2], vec![1, 3]]);
    }

    #[test]
    fn pareto_front() {
        let pts = [
            (1.0, 10.0),
            (2.0, 20.0),
            (2.0, 15.0),
            (3.0, 20.0),
            (0.5, 5.0),
        ];
        assert_eq!(pareto(&pts), vec![0, 1, 4]);
    }

    #[test]
    fn narrow_log_axes_get_ticks() {
        assert_eq!(narrow_ticks(0.0116, 0.034), vec![0.02, 0.03]);
        assert!(narrow_ticks(130.0, 10600.0).is_empty(), "holds 1000");
        assert_eq!(narrow_ticks(0.00125, 0.008).len(), 6, "2e-3 … 7e-3");
        let few = narrow_ticks(0.0011, 0.0095);
        assert_eq!(few.len(), 2, "{few:?}: 2e-3 and 5e-3 rather than eight");
        assert_eq!(tick_text(0.02, false), "0.02");
        assert_eq!(tick_text(0.002, true), "2e-3");
        assert_eq!(tick_text(3000.0, false), "3000");
    }

    #[test]
    fn ramp_ends() {
        assert_eq!(ramp(0.0), RGBColor(68, 1, 84));
        assert_eq!(ramp(1.0), RGBColor(253, 231, 37));
    }
}
