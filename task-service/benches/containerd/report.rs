//! The tables printed and the plot drawn.

use super::{MemoryRow, Rates, mib};
use std::path::Path;

pub(crate) fn print_memory(rows: &[MemoryRow]) {
    println!();
    println!(
        "| N | stock shims | stock total PSS MiB (private) | stock per shim MiB | shimless front + daemon PSS MiB (private) | front | daemon | stock / shimless |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let per = if r.stock_shims > 0 {
            mib(r.stock_pss) / r.stock_shims as f64
        } else {
            0.0
        };
        println!(
            "| {} | {} | {:.1} ({:.1}) | {:.2} | {:.1} ({:.1}) | {:.1} | {:.1} | {:.0}× |",
            r.n,
            r.stock_shims,
            mib(r.stock_pss),
            mib(r.stock_private),
            per,
            mib(r.shimless_pss()),
            mib(r.front_private + r.daemon_private),
            mib(r.front_pss),
            mib(r.daemon_pss),
            r.stock_pss as f64 / r.shimless_pss().max(1) as f64
        );
    }
    if let Some(base) = rows.iter().find(|r| r.n == 10) {
        for r in rows.iter().filter(|r| r.n > 10) {
            let per = (r.front_pss as f64 - base.front_pss as f64) / (r.n - 10) as f64;
            println!(
                "front PSS per containerd connection (N = 10 → {}): {:.1} KiB; daemon per container: {:.1} KiB",
                r.n,
                per,
                (r.daemon_pss as f64 - base.daemon_pss as f64) / (r.n - 10) as f64
            );
        }
    }
}

pub(crate) fn print_rates(rates: &Rates) {
    println!();
    println!("| lifecycle | stock containers/s | shimless containers/s | shimless / stock |");
    println!("|---|---:|---:|---:|");
    for (label, stock, shimless) in rates {
        println!(
            "| {label} ({} each) | {:.1} | {:.1} | {:.2}× |",
            stock.containers,
            stock.per_second(),
            shimless.per_second(),
            shimless.per_second() / stock.per_second()
        );
    }
}

/// The stock shims' colour in the plot.
const STOCK_COLOR: plotters::style::RGBColor = plotters::style::RGBColor(204, 85, 0);
/// shimless's colour in the plot.
const SHIMLESS_COLOR: plotters::style::RGBColor = plotters::style::RGBColor(0, 114, 178);

/// One half of the plot.
type Area<'a> =
    plotters::drawing::DrawingArea<plotters::prelude::SVGBackend<'a>, plotters::coord::Shift>;

/// The SVG at `path`: memory on the left, lifecycle rates on the right.
pub(crate) fn plot(
    path: &Path,
    rows: &[MemoryRow],
    rates: &Rates,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(560);
    if !rows.is_empty() {
        plot_memory(&left, rows)?;
    }
    if !rates.is_empty() {
        plot_rates(&right, rates)?;
    }
    root.present()?;
    Ok(())
}

/// PSS against running containers, both log scales, one line per runtime.
fn plot_memory(area: &Area, rows: &[MemoryRow]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let (stock_color, shimless_color) = (STOCK_COLOR, SHIMLESS_COLOR);
    let max_n = rows.iter().map(|r| r.n).max().unwrap_or(10) as f64;
    let min_n = rows.iter().map(|r| r.n).min().unwrap_or(10) as f64;
    let max_mib = rows
        .iter()
        .map(|r| mib(r.stock_pss.max(r.shimless_pss())))
        .fold(1.0, f64::max);
    let min_mib = rows
        .iter()
        .map(|r| mib(r.stock_pss.min(r.shimless_pss())))
        .fold(max_mib, f64::min)
        .max(0.1);
    let mut chart = ChartBuilder::on(area)
        .caption("Memory (PSS) vs running containers", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            ((min_n * 0.8)..(max_n * 1.25)).log_scale(),
            ((min_mib * 0.5)..(max_mib * 2.0)).log_scale(),
        )?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_label_formatter(&|n| format!("{n:.0}"))
        .y_label_formatter(&|m| format!("{m:.0}"))
        .x_desc("running containers (N), log scale")
        .y_desc("PSS, MiB, log scale")
        .draw()?;
    let series = [
        (
            "stock: sum of containerd-shim-runc-v2",
            stock_color,
            rows.iter()
                .map(|r| (r.n as f64, mib(r.stock_pss)))
                .collect::<Vec<_>>(),
        ),
        (
            "shimless: front + daemon",
            shimless_color,
            rows.iter()
                .map(|r| (r.n as f64, mib(r.shimless_pss())))
                .collect(),
        ),
    ];
    for (name, color, points) in series {
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        chart.draw_series(points.iter().map(|&(x, y)| {
            Text::new(
                format!("{y:.0}"),
                (x, y * 1.25),
                ("sans-serif", 13).into_font(),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Containers per second, a pair of bars (stock, shimless) per measure.
fn plot_rates(area: &Area, rates: &Rates) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let (stock_color, shimless_color) = (STOCK_COLOR, SHIMLESS_COLOR);
    let max_rate = rates
        .iter()
        .map(|(_, s, l)| s.per_second().max(l.per_second()))
        .fold(1.0, f64::max);
    let groups = rates.len();
    let labels: Vec<String> = rates.iter().map(|(l, _, _)| l.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption("Lifecycle throughput (create→delete)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..groups as f64, 0.0..max_rate * 1.2)?;
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
        .y_desc("containers per second")
        .draw()?;
    for (i, (_, stock, shimless)) in rates.iter().enumerate() {
        let x = i as f64;
        for (offset, color, value) in [
            (0.12, stock_color, stock.per_second()),
            (0.52, shimless_color, shimless.per_second()),
        ] {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x + offset, 0.0), (x + offset + 0.36, value)],
                color.filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{value:.1}"),
                (x + offset + 0.05, value + max_rate * 0.04),
                ("sans-serif", 13).into_font(),
            )))?;
        }
    }
    for (name, color) in [("stock", stock_color), ("shimless", shimless_color)] {
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
    Ok(())
}
