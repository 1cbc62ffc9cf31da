//! A latency histogram of atomics: fixed buckets in seconds, a sum and a count.

use super::exposition::Exposition;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of the buckets, in seconds (`+Inf` is implied): from a fast `State` to a
/// slow `runc create` under load. A held `Wait` lands in `+Inf`.
pub const BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Observations of a duration.
///
/// ```
/// use std::time::Duration;
/// use task_service::metrics::histogram::Histogram;
/// static H: Histogram = Histogram::new();
/// H.observe(Duration::from_millis(3));
/// H.observe(Duration::from_secs(100));
/// assert_eq!(H.count(), 2);
/// ```
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram (usable in a `static`).
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts one observation of `took`.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        // Each bucket counts only its own range; rendering adds them up (cumulative).
        if let Some(i) = BOUNDS.iter().position(|&bound| seconds <= bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// How many observations there were.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes `<name>_bucket` (cumulative, with `le`), `<name>_sum` and `<name>_count` with
    /// `labels`.
    pub fn render(&self, out: &mut Exposition, name: &str, labels: &[(&str, &str)]) {
        let bucket = format!("{name}_bucket");
        let with_le = |le: &str, out: &mut Exposition, value: u64| {
            let mut labels = labels.to_vec();
            labels.push(("le", le));
            out.sample(&bucket, &labels, value as f64);
        };
        let mut cumulative = 0;
        for (i, bound) in BOUNDS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            with_le(&bound.to_string(), out, cumulative);
        }
        let count = self.count();
        with_le("+Inf", out, count);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        out.sample(&format!("{name}_sum"), labels, sum);
        out.sample(&format!("{name}_count"), labels, count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inf_is_the_count() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_secs(40));
        let mut out = Exposition::default();
        h.render(&mut out, "d", &[("m", "x")]);
        let text = out.finish();
        assert!(
            text.contains("d_bucket{m=\"x\",le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("d_bucket{m=\"x\",le=\"0.01\"} 2\n"), "{text}");
        assert!(text.contains("d_bucket{m=\"x\",le=\"30\"} 2\n"), "{text}");
        assert!(text.contains("d_bucket{m=\"x\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("d_count{m=\"x\"} 3\n"), "{text}");
        assert!(text.contains("d_sum{m=\"x\"} 40.0075\n"), "{text}");
    }
}
