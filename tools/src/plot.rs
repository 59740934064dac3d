//! `quiver bench --plot FILE.svg`: the sweep as a recall@10-vs-latency curve, exact MaxSim marked,
//! in the manner of ann-benchmarks' plots (recall on x, latency on a log y axis).

use std::path::Path;

use plotters::prelude::*;

/// One measured setting.
pub struct Point {
    /// Recall@10 against exact MaxSim.
    pub recall: f64,
    /// Single-query p50 latency, milliseconds.
    pub p50_ms: f64,
    /// A short label (the setting).
    pub label: String,
}

/// Draws `points` (the sweep, joined in recall order) and `exact` (the brute-force yardstick) to
/// an SVG file at `path`.
pub fn draw(path: &Path, title: &str, points: &[Point], exact: Option<&Point>) -> Result<(), String> {
    if points.is_empty() {
        return Err("nothing to plot".into());
    }
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let all: Vec<&Point> = points.iter().chain(exact).collect();
    let lo = all.iter().map(|p| p.p50_ms).fold(f64::INFINITY, f64::min).max(1e-3) / 1.5;
    let hi = all.iter().map(|p| p.p50_ms).fold(0.0, f64::max) * 1.5;
    let rmin = all.iter().map(|p| p.recall).fold(1.0, f64::min);
    let x_lo = (rmin - 0.05).clamp(0.0, 0.95);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x_lo..1.005f64, (lo..hi).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("recall@10 vs exact MaxSim")
        .y_desc("p50 latency, ms (single thread, log scale)")
        .draw()
        .map_err(|e| err(&e))?;
    let mut sweep: Vec<&Point> = points.iter().collect();
    sweep.sort_by(|a, b| a.recall.total_cmp(&b.recall).then(a.p50_ms.total_cmp(&b.p50_ms)));
    chart
        .draw_series(LineSeries::new(sweep.iter().map(|p| (p.recall, p.p50_ms)), &BLUE))
        .map_err(|e| err(&e))?
        .label("quiverdb sweep")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(sweep.iter().map(|p| Circle::new((p.recall, p.p50_ms), 4, BLUE.filled())))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(
            sweep.iter().map(|p| {
                Text::new(p.label.clone(), (p.recall, p.p50_ms), ("sans-serif", 11).into_font().color(&BLACK))
            }),
        )
        .map_err(|e| err(&e))?;
    if let Some(e) = exact {
        chart
            .draw_series(std::iter::once(TriangleMarker::new((e.recall.min(1.0), e.p50_ms), 8, RED.filled())))
            .map_err(|x| err(&x))?
            .label(format!("exact MaxSim ({:.1} ms)", e.p50_ms))
            .legend(|(x, y)| TriangleMarker::new((x + 10, y), 6, RED.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
