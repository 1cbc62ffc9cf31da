//! The density tables and plot.

use super::{Row, mib, percentile};
use std::path::Path;
use std::time::Duration;

/// `State` and `Pids` latencies (sorted) with `n` containers.
pub(crate) struct Calls {
    pub(crate) n: usize,
    pub(crate) state: Vec<Duration>,
    pub(crate) pids: Vec<Duration>,
}

/// The daemon's recovery after `kill -9` with `n` containers, `exited` of them exiting while
/// it was down.
pub(crate) struct Restart {
    pub(crate) n: usize,
    pub(crate) exited: usize,
    /// From its spawn until it serves.
    pub(crate) serving: Duration,
    /// From its spawn until every exit was returned by `Wait`.
    pub(crate) exits: Duration,
    /// From its spawn until every other container's `State` was answered too.
    pub(crate) all_states: Duration,
    /// Exits whose `Wait` failed or gave another code.
    pub(crate) lost: usize,
}

/// Everything one run measured.
pub(crate) struct Figures {
    /// The front's and the daemon's PSS with no container, KiB.
    pub(crate) empty: u64,
    pub(crate) rows: Vec<Row>,
    pub(crate) calls: Calls,
    /// Exit → Wait latencies, sorted.
    pub(crate) exit_wait: Vec<Duration>,
    /// Restarts: with every container alive, then with exits while down.
    pub(crate) restart: Vec<Restart>,
    /// The exit watch at the end (after the exits and the restart).
    pub(crate) watch: Option<exitwatch::Stats>,
    /// The Go shim's mean PSS (KiB) and over how many shims.
    pub(crate) stock: Option<(u64, usize)>,
    /// The machine's memory, KiB.
    pub(crate) memory_total: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The tables and lines of docs/benchmarks.md.
pub(crate) fn print(f: &Figures) {
    println!();
    println!(
        "| running containers | shimless front + daemon PSS | per container (above empty) | N × Go shim PSS | stock / shimless | exit watch tracked | daemon fds |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &f.rows {
        let per = (r.pss() as f64 - f.empty as f64) / r.n as f64;
        let (stock, ratio) = match f.stock {
            Some((shim, _)) => (
                format!("{:.1} MiB", mib(shim * r.n as u64)),
                format!("{:.0}×", (shim * r.n as u64) as f64 / r.pss().max(1) as f64),
            ),
            None => ("not measured".into(), String::new()),
        };
        println!(
            "| {} | {:.1} MiB (front {:.1}, daemon {:.1}) | {per:.1} KiB | {stock} | {ratio} | {} / {} | {} |",
            r.n,
            mib(r.pss()),
            mib(r.front_pss),
            mib(r.daemon_pss),
            r.tracked.map_or("?".into(), |t| t.to_string()),
            exitwatch::CAPACITY,
            r.daemon_fds
        );
    }
    if let [.., a, b] = f.rows.as_slice() {
        println!(
            "marginal cost per container ({} → {}): {:.1} KiB PSS",
            a.n,
            b.n,
            (b.pss() as f64 - a.pss() as f64) / (b.n - a.n) as f64
        );
    }
    let c = &f.calls;
    println!(
        "with {} containers: State p50 {:.2} ms p99 {:.2} ms; Pids p50 {:.2} ms p99 {:.2} ms ({} calls each, one at a time)",
        c.n,
        ms(percentile(&c.state, 0.5)),
        ms(percentile(&c.state, 0.99)),
        ms(percentile(&c.pids, 0.5)),
        ms(percentile(&c.pids, 0.99)),
        c.state.len()
    );
    println!(
        "exit → Wait, {} exiting at once among {}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        f.exit_wait.len(),
        c.n,
        ms(percentile(&f.exit_wait, 0.5)),
        ms(percentile(&f.exit_wait, 0.99)),
        f.exit_wait.last().map_or(0.0, |d| ms(*d))
    );
    for r in &f.restart {
        println!(
            "daemon kill -9 and restart with {} containers, {} exiting while it was down: serving after {:.0} ms, \
             every exit returned by Wait after {:.0} ms, every other State answered after {:.0} ms; {} exits lost",
            r.n,
            r.exited,
            ms(r.serving),
            ms(r.exits),
            ms(r.all_states),
            r.lost
        );
    }
    if let Some(w) = f.watch {
        println!(
            "exit watch at the end: {} tracked, {} recorded not yet taken, capacity {} each; \
             {} exits recorded since load",
            w.tracked, w.recorded, w.capacity, w.recorded_total
        );
    }
    if let Some((shim, k)) = f.stock {
        println!(
            "stock: {k} Go shims measured, {:.2} MiB PSS each: {} of them alone would fill this machine's {:.1} GiB \
             (before containerd, the containers and the kernel's own memory)",
            mib(shim),
            stock_limit(f),
            mib(f.memory_total) / 1024.0
        );
    }
}

/// How many Go shims this machine's memory holds at their measured PSS.
fn stock_limit(f: &Figures) -> u64 {
    f.stock.map_or(0, |(shim, _)| f.memory_total / shim.max(1))
}

/// The plot: PSS against running containers (log scales): shimless measured at each size, the
/// Go shims measured at K and N × their mean beyond, the machine's memory as a ceiling.
pub(crate) fn plot(path: &Path, f: &Figures) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let stock_color = RGBColor(204, 85, 0);
    let shimless_color = RGBColor(0, 114, 178);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let max_n = f.rows.iter().map(|r| r.n).max().unwrap_or(10) as f64;
    let min_n = f.rows.iter().map(|r| r.n).min().unwrap_or(10) as f64;
    let top = mib(f.memory_total).max(1.0) * 3.0;
    let bottom = f
        .rows
        .iter()
        .map(|r| mib(r.pss()))
        .fold(top, f64::min)
        .max(0.5)
        * 0.5;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Memory (PSS) vs running containers (the runtime alone keeps no process: 0)",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(
            ((min_n * 0.8)..(max_n * 1.3)).log_scale(),
            (bottom..top).log_scale(),
        )?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_label_formatter(&|n| format!("{n:.0}"))
        .y_label_formatter(&|m| format!("{m:.0}"))
        .x_desc("running containers, log scale")
        .y_desc("PSS, MiB, log scale")
        .draw()?;
    let shimless: Vec<(f64, f64)> = f.rows.iter().map(|r| (r.n as f64, mib(r.pss()))).collect();
    chart
        .draw_series(LineSeries::new(
            shimless.clone(),
            shimless_color.stroke_width(2),
        ))?
        .label("shimless: front + daemon (measured)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], shimless_color));
    chart.draw_series(
        shimless
            .iter()
            .map(|p| Circle::new(*p, 4, shimless_color.filled())),
    )?;
    chart.draw_series(shimless.iter().map(|&(x, y)| {
        Text::new(
            format!("{y:.0}"),
            (x, y * 1.3),
            ("sans-serif", 13).into_font(),
        )
    }))?;
    if let Some((shim, k)) = f.stock {
        let line: Vec<(f64, f64)> = f
            .rows
            .iter()
            .map(|r| (r.n as f64, mib(shim * r.n as u64)))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), stock_color.stroke_width(2)))?
            .label(format!("stock: N × one Go shim's PSS (measured over {k})"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], stock_color));
        chart.draw_series(line.iter().map(|&(x, y)| {
            Text::new(
                format!("{y:.0}"),
                (x, y * 1.3),
                ("sans-serif", 13).into_font(),
            )
        }))?;
        let measured = (k as f64, mib(shim * k as u64));
        chart.draw_series(std::iter::once(Circle::new(
            measured,
            5,
            stock_color.filled(),
        )))?;
        let limit = stock_limit(f) as f64;
        if limit > 0.0 {
            chart.draw_series(std::iter::once(Text::new(
                format!(
                    "stock fills {:.0} GiB at {limit:.0}",
                    mib(f.memory_total) / 1024.0
                ),
                (min_n, mib(f.memory_total) * 1.15),
                ("sans-serif", 13).into_font(),
            )))?;
        }
    }
    let ceiling = mib(f.memory_total);
    chart
        .draw_series(LineSeries::new(
            [(min_n * 0.8, ceiling), (max_n * 1.3, ceiling)],
            BLACK.stroke_width(1),
        ))?
        .label("this machine's memory")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
