//! The charts of served cells: latency percentiles (TTFT, TPOT) and goodput against the
//! offered request rate — one line per model × quant × server settings, every measured point
//! (a rate sweep's cells, a search's probes) — and the distribution (CDF) of TTFT and
//! end-to-end latency of each served cell's reported point. Drawn only where the run has
//! served cells (the rate chart: open-loop points). Never prints.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::charts::{quant_color, short, Err2, FONT};
use crate::results::{CellResult, CellStatus, Report};
use crate::serving_stats::PointSummary;

/// The stems, in the order of [`specs`].
pub const STEMS: [&str; 2] = ["serving_latency_vs_rate", "serving_latency_cdf"];

/// One line: a label, a colour, and the points (or a cell's CDF) it draws.
struct Line<'a> {
    label: String,
    color: RGBColor,
    points: Vec<&'a PointSummary>,
    cell: &'a CellResult,
}

fn served(r: &Report) -> impl Iterator<Item = &CellResult> {
    r.cells
        .iter()
        .filter(|c| c.status == CellStatus::Ok && c.serving.is_some())
}

/// The rate lines: served cells grouped by everything but their load point, each group's
/// open-loop points in rate order.
fn rate_lines(r: &Report) -> Vec<Line<'_>> {
    let mut lines: Vec<Line> = Vec::new();
    for (i, c) in served(r).enumerate() {
        let tag = crate::plan::join_tags(&[c.params.context_tag(), c.params.placement_tag()]);
        let label = format!(
            "{} {} np {}{}",
            c.model,
            c.quant,
            c.params.n_parallel,
            tag.map(|t| format!(" [{t}]")).unwrap_or_default()
        );
        let pts = c.serving.as_ref().map_or(&[][..], |s| &s.points[..]);
        let open: Vec<&PointSummary> = pts
            .iter()
            .filter(|p| p.offered_rate_req_s.is_some())
            .collect();
        match lines.iter_mut().find(|l| l.label == label) {
            Some(l) => l.points.extend(open),
            None => lines.push(Line {
                color: quant_color(&c.quant.to_string(), i),
                label,
                points: open,
                cell: c,
            }),
        }
    }
    lines.retain(|l| !l.points.is_empty());
    for l in &mut lines {
        l.points.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    }
    lines
}

fn rate(p: &PointSummary) -> f64 {
    p.offered_rate_req_s.unwrap_or(0.0)
}

/// The serving charts a report has (stem, title, pixel size).
pub fn specs(r: &Report) -> Vec<(&'static str, &'static str, (u32, u32))> {
    let mut out = Vec::new();
    let lines = rate_lines(r);
    let legend_h = 24 * lines.len() as u32;
    if !lines.is_empty() {
        out.push((
            STEMS[0],
            "Serving: latency and goodput vs offered rate",
            (2200, 720 + legend_h),
        ));
    }
    let n = served(r)
        .filter(|c| {
            c.serving
                .as_ref()
                .is_some_and(|s| !s.ttft_cdf_ms.is_empty())
        })
        .count();
    if n > 0 {
        out.push((
            STEMS[1],
            "Serving: TTFT and E2E distributions",
            (1800, 720 + 24 * n as u32),
        ));
    }
    out
}

/// Draws serving chart `stem`.
pub fn draw<DB: DrawingBackend>(
    stem: &str,
    a: &DrawingArea<DB, Shift>,
    r: &Report,
) -> Result<(), Err2<DB>> {
    if stem == STEMS[0] {
        vs_rate(a, r)
    } else {
        cdf(a, r)
    }
}

/// The legend under the panels: a coloured line and a label per line.
fn legend<DB: DrawingBackend>(
    a: &DrawingArea<DB, Shift>,
    items: &[(String, RGBColor)],
    note: &str,
) -> Result<(), Err2<DB>> {
    let style = (FONT, 17).into_font();
    a.draw(&Text::new(note.to_string(), (20, 6), style.clone()))?;
    for (i, (label, color)) in items.iter().enumerate() {
        let y = 34 + 24 * i as i32;
        a.draw(&PathElement::new(
            vec![(20, y + 8), (60, y + 8)],
            color.stroke_width(3),
        ))?;
        a.draw(&Text::new(label.clone(), (70, y), style.clone()))?;
    }
    Ok(())
}

type Metric = fn(&PointSummary) -> Option<f64>;
/// A drawn series: its points and whether it is dashed.
type Series = (Vec<(f64, f64)>, bool);
/// A panel: caption, y axis, the solid and the dashed figure.
type RatePanel = (&'static str, &'static str, [(Metric, bool); 2]);

/// TTFT, TPOT and goodput against the offered rate.
fn vs_rate<DB: DrawingBackend>(a: &DrawingArea<DB, Shift>, r: &Report) -> Result<(), Err2<DB>> {
    let lines = rate_lines(r);
    let (w, h) = a.dim_in_pixel();
    let (plots, key) = a.split_vertically(h.saturating_sub(40 + 24 * lines.len() as u32));
    let areas = plots.split_evenly((1, 3));
    let x_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| rate(p)))
        .fold(0.0, f64::max)
        * 1.08;
    let panels: [RatePanel; 3] = [
        (
            "TTFT vs offered rate",
            "ms (solid p99, dashed p50)",
            [
                (|p| p.ttft_ms.as_ref().map(|x| x.p99), false),
                (|p| p.ttft_ms.as_ref().map(|x| x.p50), true),
            ],
        ),
        (
            "TPOT vs offered rate",
            "ms (solid p99, dashed p50)",
            [
                (|p| p.tpot_ms.as_ref().map(|x| x.p99), false),
                (|p| p.tpot_ms.as_ref().map(|x| x.p50), true),
            ],
        ),
        (
            "Goodput vs offered rate",
            "% of requests meeting the SLO (dashed: achieved req/s ÷ offered)",
            [
                (|p| p.goodput_frac.map(|g| g * 100.0), false),
                (
                    |p| {
                        p.offered_rate_req_s
                            .filter(|r| *r > 0.0)
                            .map(|r| p.req_per_s / r * 100.0)
                    },
                    true,
                ),
            ],
        ),
    ];
    let x_min = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| rate(p)))
        .filter(|r| *r > 0.0)
        .fold(f64::INFINITY, f64::min);
    for (p, area) in panels.iter().zip(&areas) {
        rate_panel(area, p, &lines, (x_min, x_max))?;
    }
    let _ = w;
    let items: Vec<(String, RGBColor)> = lines.iter().map(|l| (l.label.clone(), l.color)).collect();
    legend(&key, &items, "One line per model × quant × server settings; every open-loop point (rate sweeps, search probes). Device: see the report.")?;
    let _ = lines.first().map(|l| l.cell);
    Ok(())
}

/// The CDFs of TTFT and E2E of each served cell's reported point.
fn cdf<DB: DrawingBackend>(a: &DrawingArea<DB, Shift>, r: &Report) -> Result<(), Err2<DB>> {
    let cells: Vec<&CellResult> = served(r)
        .filter(|c| {
            c.serving
                .as_ref()
                .is_some_and(|s| !s.ttft_cdf_ms.is_empty())
        })
        .collect();
    let (_, h) = a.dim_in_pixel();
    let (plots, key) = a.split_vertically(h.saturating_sub(40 + 24 * cells.len() as u32));
    let areas = plots.split_evenly((1, 2));
    type Pick = fn(&crate::protocol::ServingMeasurement) -> &Vec<f64>;
    let panels: [(&str, Pick); 2] = [
        ("TTFT distribution", |s| &s.ttft_cdf_ms),
        ("E2E latency distribution", |s| &s.e2e_cdf_ms),
    ];
    let mut items = Vec::new();
    for (i, c) in cells.iter().enumerate() {
        items.push((
            format!("{} {}{}", c.model, c.quant, c.placement_suffix()),
            quant_color(&c.quant.to_string(), i),
        ));
    }
    for ((title, pick), area) in panels.iter().zip(&areas) {
        let x_max = cells
            .iter()
            .filter_map(|c| c.serving.as_ref().and_then(|s| pick(s).last().copied()))
            .fold(0.0, f64::max)
            * 1.05;
        let mut chart = ChartBuilder::on(area)
            .caption(*title, (FONT, 24).into_font().style(FontStyle::Bold))
            .margin(16)
            .x_label_area_size(60)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..x_max.max(1e-3), 0f64..100f64)?;
        chart
            .configure_mesh()
            .x_desc("ms")
            .y_desc("% of requests at or below")
            .axis_desc_style((FONT, 17))
            .label_style((FONT, 15))
            .x_label_formatter(&|v| short(*v))
            .draw()?;
        for (c, (_, color)) in cells.iter().zip(&items) {
            let Some(s) = c.serving.as_ref() else {
                continue;
            };
            let pts: Vec<(f64, f64)> = pick(s)
                .iter()
                .enumerate()
                .map(|(q, &v)| (v, q as f64))
                .collect();
            chart.draw_series(LineSeries::new(pts, color.stroke_width(2)))?;
        }
    }
    legend(
        &key,
        &items,
        "Each served cell's reported point (a search: the rate found); complete requests.",
    )
}

/// One panel of the rate chart: the panel's two figures of every line against the offered
/// rate, on log axes where the values span more than a factor of 20.
fn rate_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (title, y_desc, metrics): &RatePanel,
    lines: &[Line],
    (x_min, x_max): (f64, f64),
) -> Result<(), Err2<DB>> {
    let values: Vec<f64> = lines
        .iter()
        .flat_map(|l| l.points.iter())
        .flat_map(|p| metrics.iter().filter_map(|(m, _)| m(p)))
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let y_max = values.iter().copied().fold(0.0, f64::max);
    let y_min = values.iter().copied().fold(f64::INFINITY, f64::min);
    // rates and latencies that span orders of magnitude read on log axes
    let log_x = x_min.is_finite() && x_max / x_min > 20.0;
    let log_y = !title.starts_with("Goodput") && y_min.is_finite() && y_max / y_min > 20.0;
    let xr = if log_x {
        (x_min / 1.3, x_max * 1.3)
    } else {
        (0.0, x_max.max(1e-3))
    };
    let yr = if log_y {
        (y_min / 1.5, y_max * 1.5)
    } else {
        (0.0, (y_max * 1.12).max(1e-3))
    };
    let lines_pts: Vec<(&Line, Vec<Series>)> = lines
        .iter()
        .map(|l| {
            let series = metrics
                .iter()
                .map(|(m, dashed)| {
                    let pts = l
                        .points
                        .iter()
                        .filter_map(|p| Some((rate(p), m(p)?)))
                        .filter(|(x, y)| y.is_finite() && *y > 0.0 && (!log_x || *x > 0.0))
                        .map(|(x, y)| (x.clamp(xr.0, xr.1), y.clamp(yr.0, yr.1)))
                        .collect();
                    (pts, *dashed)
                })
                .collect();
            (l, series)
        })
        .collect();
    let caption = (FONT, 24).into_font().style(FontStyle::Bold);
    let mut b = ChartBuilder::on(area);
    b.caption(*title, caption)
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(80);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(if log_x {
                    "offered rate, requests/s (log)"
                } else {
                    "offered rate, requests/s"
                })
                .y_desc(*y_desc)
                .axis_desc_style((FONT, 17))
                .label_style((FONT, 15))
                .x_label_formatter(&|v| short(*v))
                .y_label_formatter(&|v| short(*v))
                .draw()?;
            for (l, series) in &lines_pts {
                for (pts, dashed) in series {
                    let style = l.color.stroke_width(2);
                    if *dashed {
                        chart.draw_series(DashedLineSeries::new(pts.clone(), 9, 6, style))?;
                    } else {
                        chart.draw_series(LineSeries::new(pts.clone(), style))?;
                    }
                    let mark = if *dashed {
                        l.color.stroke_width(1)
                    } else {
                        l.color.filled()
                    };
                    chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, mark)))?;
                }
            }
        }};
    }
    match (log_x, log_y) {
        (true, true) => {
            draw!(b.build_cartesian_2d((xr.0..xr.1).log_scale(), (yr.0..yr.1).log_scale())?)
        }
        (true, false) => draw!(b.build_cartesian_2d((xr.0..xr.1).log_scale(), yr.0..yr.1)?),
        (false, true) => draw!(b.build_cartesian_2d(xr.0..xr.1, (yr.0..yr.1).log_scale())?),
        (false, false) => draw!(b.build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)?),
    }
    Ok(())
}
