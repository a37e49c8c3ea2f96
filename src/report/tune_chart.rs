//! The chart of a `quantbench tune` search: every probe as a point of its memory (x) and decode
//! speed (y), coloured by quant — hollow for short probes, filled for full measurements —, the
//! targets as lines, the recommendation ringed. Drawn only for a tune's run folder. Never
//! prints.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::charts::{quant_color, short, Err2, FONT};
use crate::results::Report;
use crate::tune::Probe;

pub const STEM: &str = "tune_search";

/// The chart when the report is a tune's (stem, title, size).
pub fn specs(r: &Report) -> Vec<(&'static str, &'static str, (u32, u32))> {
    match &r.tune {
        Some(o) if o.probes.iter().any(plotted) => vec![(STEM, "Tune: every probe", (1300, 800))],
        _ => Vec::new(),
    }
}

fn plotted(p: &Probe) -> bool {
    p.ok && p.mem_bytes.is_some() && p.decode_tok_s.is_some()
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

pub fn draw<DB: DrawingBackend>(a: &DrawingArea<DB, Shift>, r: &Report) -> Result<(), Err2<DB>> {
    let Some(o) = &r.tune else { return Ok(()) };
    let pts: Vec<&Probe> = o.probes.iter().filter(|p| plotted(p)).collect();
    let xs: Vec<f64> = pts.iter().map(|p| mib(p.mem_bytes.unwrap_or(0))).collect();
    let ys: Vec<f64> = pts.iter().map(|p| p.decode_tok_s.unwrap_or(0.0)).collect();
    let x_max = xs
        .iter()
        .copied()
        .chain(o.targets.memory_bytes.map(mib))
        .fold(0.0, f64::max)
        * 1.15;
    let y_max = ys
        .iter()
        .copied()
        .chain(o.targets.min_tok_s)
        .fold(0.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(a)
        .caption(
            format!(
                "Tune {}: every probe ({} measured, grid {})",
                o.model, o.measured_cells, o.grid_cells
            ),
            (FONT, 24).into_font().style(FontStyle::Bold),
        )
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max.max(1.0), 0f64..y_max.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("mem_bytes, MiB (VRAM on a GPU, else host RSS)")
        .y_desc("decode_tok_s (mean)")
        .axis_desc_style((FONT, 17))
        .label_style((FONT, 15))
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .draw()?;
    target_lines(&mut chart, o, x_max, y_max)?;
    let mut quants: Vec<String> = Vec::new();
    for p in &pts {
        let q = p.quant.to_string();
        if !quants.contains(&q) {
            quants.push(q);
        }
    }
    for (i, q) in quants.iter().enumerate() {
        let color = quant_color(q, i);
        let mine: Vec<&&Probe> = pts.iter().filter(|p| p.quant.to_string() == *q).collect();
        let at = |p: &Probe| (mib(p.mem_bytes.unwrap_or(0)), p.decode_tok_s.unwrap_or(0.0));
        chart
            .draw_series(mine.iter().map(|p| {
                let style = if p.full {
                    color.filled()
                } else {
                    color.stroke_width(2)
                };
                Circle::new(at(p), 7, style)
            }))?
            .label(q.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), 6, color.filled()));
    }
    if let Some(rec) = &o.recommendation {
        if plotted(rec) {
            let p = (
                mib(rec.mem_bytes.unwrap_or(0)),
                rec.decode_tok_s.unwrap_or(0.0),
            );
            chart
                .draw_series([Circle::new(p, 14, BLACK.stroke_width(3))])?
                .label("recommended")
                .legend(|(x, y)| Circle::new((x + 10, y), 7, BLACK.stroke_width(2)));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 16))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

/// The chart's axes.
type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The memory budget and the speed target as dashed lines.
fn target_lines<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    o: &crate::tune::Outcome,
    x_max: f64,
    y_max: f64,
) -> Result<(), Err2<DB>> {
    let target = RGBColor(200, 30, 30);
    if let Some(m) = o.targets.memory_bytes {
        let x = mib(m);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x, 0.0), (x, y_max)],
                8,
                6,
                target.stroke_width(2),
            ))?
            .label("memory budget")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], target.stroke_width(2))
            });
    }
    if let Some(s) = o.targets.min_tok_s {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, s), (x_max, s)],
                8,
                6,
                target.stroke_width(2),
            ))?
            .label("speed target");
    }
    Ok(())
}
