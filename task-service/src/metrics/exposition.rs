//! Writing Prometheus's text exposition format (version 0.0.4): `# HELP` and `# TYPE` lines,
//! then one sample per line, labels quoted and escaped.

use std::fmt::Write;

/// A metric family's kind, as its `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

/// A scrape's text, built family by family.
///
/// ```
/// use task_service::metrics::exposition::{Exposition, Kind};
/// let mut out = Exposition::default();
/// out.family("shimless_demo_total", Kind::Counter, "What the demo counted.");
/// out.sample("shimless_demo_total", &[("method", "Create")], 3.0);
/// let text = out.finish();
/// let lines: Vec<&str> = text.lines().collect();
/// assert_eq!(lines[0], "# HELP shimless_demo_total What the demo counted.");
/// assert_eq!(lines[1], "# TYPE shimless_demo_total counter");
/// assert_eq!(lines[2], "shimless_demo_total{method=\"Create\"} 3");
/// ```
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts the family `name`: its help text and type.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample of the current family (`name` may carry `_bucket`, `_sum` or `_count`).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"");
                escape_into(&mut self.text, value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The text, ready to serve.
    pub fn finish(self) -> String {
        self.text
    }
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value: integers without a fraction, `+Inf` for infinity.
fn number(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_formatted() {
        let mut out = Exposition::default();
        out.sample("m", &[("a", "x\"y\\z\nw")], 0.25);
        out.sample("m", &[], f64::INFINITY);
        assert_eq!(out.finish(), "m{a=\"x\\\"y\\\\z\\nw\"} 0.25\nm +Inf\n");
    }
}
