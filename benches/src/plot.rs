//! The latency distributions as a PNG: one percentile curve per scenario
//! (x: percentile on a "nines" scale, 50 / 90 / 99 / 99.9 / 99.99; y: latency
//! in ms, log scale), the way HdrHistogram plots are read.
//!
//! Only plotters' bitmap backend is used. Text needs a font: none is bundled;
//! a TrueType font is loaded from the system at run time (DejaVu Sans, from
//! Debian's `fonts-dejavu-core`, or `WEFT_PLOT_FONT`). Without one the plot is
//! drawn without any text, and the caller's Markdown carries the legend.

use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// One curve: a name and the latencies (µs) it stands for.
pub struct Series<'a> {
    pub name: &'a str,
    pub histogram: &'a Histogram<u64>,
}

/// Where fonts are looked for when `WEFT_PLOT_FONT` is not set.
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// Line colours, in scenario order; also named in the Markdown legend.
pub const COLORS: [(&str, RGBColor); 8] = [
    ("black", RGBColor(0, 0, 0)),
    ("blue", RGBColor(31, 119, 180)),
    ("green", RGBColor(44, 160, 44)),
    ("purple", RGBColor(148, 103, 189)),
    ("orange", RGBColor(255, 127, 14)),
    ("red", RGBColor(214, 39, 40)),
    ("brown", RGBColor(140, 86, 75)),
    ("grey", RGBColor(127, 127, 127)),
];

/// Registers a system font as plotters' sans-serif once; `true` when text can be drawn.
pub fn fonts_available() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        let candidates = std::env::var("WEFT_PLOT_FONT").into_iter().chain(FONT_PATHS.iter().map(|s| s.to_string()));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// A chart's frame on `root`, filled white: margins, and the title and the axes' label
/// areas when text can be drawn.
fn frame<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    title: &str,
    text: bool,
) -> anyhow::Result<ChartBuilder<'a, 'b, BitMapBackend<'b>>> {
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(root);
    builder.margin(20).margin_right(50);
    if text {
        builder.caption(title, ("sans-serif", 22)).x_label_area_size(45).y_label_area_size(65);
    }
    Ok(builder)
}

/// Characters of a latency label, to right-align it roughly.
fn y_label_len(y: f64) -> usize {
    if y >= 1.0 {
        format!("{y:.0}").len()
    } else {
        format!("{y}").len()
    }
}

/// The "nines" of quantile `q`: 0.5 → 0.30, 0.9 → 1, 0.99 → 2, 0.999 → 3.
fn nines(q: f64) -> f64 {
    -(1.0 - q).log10()
}

/// Draws `series` to `path` (PNG, 1000 × 600); `title` heads it when fonts are available.
/// Returns whether text (title, axes, legend) was drawn.
pub fn latency_percentiles(path: &Path, title: &str, series: &[Series<'_>]) -> anyhow::Result<bool> {
    let series: Vec<&Series<'_>> = series.iter().filter(|s| !s.histogram.is_empty()).collect();
    anyhow::ensure!(!series.is_empty(), "no latencies to plot");
    let text = fonts_available();
    // The curve goes as far as the fewest samples allow: 99.99 needs ~10^4.
    let fewest = series.iter().map(|s| s.histogram.len()).min().unwrap_or(0);
    let x_max: f64 = if fewest >= 20_000 { 4.0 } else { 3.0 };
    let x_min = nines(0.5);
    let steps = 200;
    let curves: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            (0..=steps)
                .map(|i| {
                    let x = x_min + (x_max - x_min) * i as f64 / steps as f64;
                    let q = 1.0 - 10f64.powf(-x);
                    (x, s.histogram.value_at_quantile(q).max(1) as f64 / 1000.0)
                })
                .collect()
        })
        .collect();
    let y_lo = curves.iter().flatten().map(|p| p.1).fold(f64::INFINITY, f64::min) * 0.8;
    let y_hi = curves.iter().flatten().map(|p| p.1).fold(0.0, f64::max) * 1.25;

    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    let mut chart = frame(&root, title, text)?.build_cartesian_2d(x_min..x_max, (y_lo..y_hi).log_scale())?;
    let mut mesh = chart.configure_mesh();
    // Both grids are drawn by hand below: plotters' log-scale labels skip whole decades.
    mesh.disable_mesh().x_labels(0).y_labels(0).y_label_formatter(&|_| String::new());
    if text {
        mesh.y_desc("latency, ms (log scale)").x_desc("percentile").axis_desc_style(("sans-serif", 15));
    }
    mesh.draw()?;

    // Latency grid: 1-2-5 steps, the decades darker.
    let mut y_ticks = Vec::new();
    for e in (y_lo.log10().floor() as i32)..=(y_hi.log10().ceil() as i32) {
        for m in [1.0, 2.0, 5.0] {
            let y = m * 10f64.powi(e);
            if (y_lo..=y_hi).contains(&y) {
                y_ticks.push((y, m == 1.0));
            }
        }
    }
    for &(y, major) in &y_ticks {
        let shade = if major { 200 } else { 230 };
        chart.draw_series(LineSeries::new([(x_min, y), (x_max, y)], RGBColor(shade, shade, shade)))?;
    }
    if text {
        for &(y, _) in &y_ticks {
            let (px, py) = chart.backend_coord(&(x_min, y));
            let label = if y >= 1.0 { format!("{y:.0}") } else { format!("{y}") };
            root.draw(&Text::new(label, (px - 8 - 8 * y_label_len(y) as i32, py - 8), ("sans-serif", 15).into_font()))?;
        }
    }

    // The percentile grid, drawn by hand: the nines are where a reader looks.
    let mut ticks = vec![(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9")];
    if x_max >= 4.0 {
        ticks.push((0.9999, "p99.99"));
    }
    for &(q, _) in &ticks {
        let x = nines(q);
        chart.draw_series(LineSeries::new([(x, y_lo), (x, y_hi)], RGBColor(200, 200, 200)))?;
    }
    if text {
        for &(q, label) in &ticks {
            let (px, py) = chart.backend_coord(&(nines(q), y_lo));
            root.draw(&Text::new(label, (px - 4 * label.len() as i32, py + 6), ("sans-serif", 15).into_font()))?;
        }
    }

    for (i, (s, curve)) in series.iter().zip(&curves).enumerate() {
        let color = COLORS[i % COLORS.len()].1;
        let drawn = chart.draw_series(LineSeries::new(curve.iter().copied(), color.stroke_width(3)))?;
        if text {
            drawn.label(s.name).legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()?;
    }
    root.present()?;
    Ok(text)
}

/// Line curves over a linear x (e.g. minutes) to `path` (PNG, 1000 × 500), the y axis
/// from zero; `title` and the axes' names are drawn when fonts are available.
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    curves: &[(&str, Vec<(f64, f64)>)],
) -> anyhow::Result<bool> {
    let points = curves.iter().flat_map(|(_, c)| c.iter());
    let (x_max, y_max) = points.fold((1.0f64, 1.0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let text = fonts_available();
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    let mut chart = frame(&root, title, text)?.build_cartesian_2d(0.0..x_max, 0.0..y_max * 1.2)?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.x_desc(x_desc).y_desc(y_desc).axis_desc_style(("sans-serif", 15)).label_style(("sans-serif", 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    for (i, (name, curve)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()].1;
        let drawn = chart.draw_series(LineSeries::new(curve.iter().copied(), color.stroke_width(2)))?;
        if text {
            drawn.label(*name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
    }
    root.present()?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_scale() {
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn draws_a_png() {
        let mut a = Histogram::<u64>::new(3).unwrap();
        let mut b = Histogram::<u64>::new(3).unwrap();
        for i in 0..5000u64 {
            a.record(200 + i % 100).unwrap();
            b.record(300 + (i * i) % 4000).unwrap();
        }
        let path = std::env::temp_dir().join(format!("weft-plot-test-{}.png", std::process::id()));
        let series = [Series { name: "a", histogram: &a }, Series { name: "b", histogram: &b }];
        latency_percentiles(&path, "test", &series).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn draws_lines_over_minutes() {
        let path = std::env::temp_dir().join(format!("weft-plot-lines-{}.png", std::process::id()));
        let curves = [("a", vec![(1.0, 12.0), (2.0, 12.5)]), ("b", vec![(1.0, 11.0), (2.0, 11.2)])];
        lines(&path, "test", "minute", "MiB", &curves).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}
