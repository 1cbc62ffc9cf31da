//! The overhead table and its plot.

use super::Row;
use std::path::Path;

/// The table: per-container wall time of each way, what each shim adds over the runtime
/// alone, and the ratios.
pub(crate) fn print(rows: &[Row]) {
    println!();
    println!(
        "| runtime, at a time | runtime alone ms/container | stock ms | shimless ms | stock adds ms | shimless adds ms | stock / alone | shimless / alone | shimless / stock |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let (a, s, l) = (r.alone.ms(), r.stock.ms(), r.shimless.ms());
        println!(
            "| {}, {} ({} each) | {a:.1} | {s:.1} | {l:.1} | {:+.1} | {:+.1} | {:.2}× | {:.2}× | {:.2}× |",
            r.runtime,
            r.concurrency,
            r.alone.containers,
            s - a,
            l - a,
            s / a,
            l / a,
            l / s
        );
    }
}

/// The three ways' colours: runtime alone, stock shim, shimless.
const COLORS: [plotters::style::RGBColor; 3] = [
    plotters::style::RGBColor(120, 120, 120),
    plotters::style::RGBColor(204, 85, 0),
    plotters::style::RGBColor(0, 114, 178),
];

/// The SVG at `path`: a group of three bars (runtime alone, stock, shimless) of milliseconds
/// per container for each runtime and concurrency.
pub(crate) fn plot(path: &Path, rows: &[Row]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_ms = rows
        .iter()
        .map(|r| r.alone.ms().max(r.stock.ms()).max(r.shimless.ms()))
        .fold(1.0, f64::max);
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{}, {} at a time", r.runtime, r.concurrency))
        .collect();
    let groups = rows.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Wall time per container, create → delete (lower is better)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..groups.max(1) as f64, 0.0..max_ms * 1.2)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(groups * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < labels.len() {
                labels[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc("milliseconds per container")
        .draw()?;
    for (i, r) in rows.iter().enumerate() {
        let x = i as f64;
        let values = [r.alone.ms(), r.stock.ms(), r.shimless.ms()];
        for (k, (color, value)) in COLORS.iter().zip(values).enumerate() {
            let left = x + 0.08 + k as f64 * 0.28;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(left, 0.0), (left + 0.26, value)],
                color.filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{value:.1}"),
                (left + 0.02, value + max_ms * 0.04),
                ("sans-serif", 13).into_font(),
            )))?;
        }
    }
    for (name, color) in ["runtime alone", "stock shim", "shimless"]
        .into_iter()
        .zip(COLORS)
    {
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
