//! Results: figures with optional targets, the human table and the JSON
//! file.

use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

/// A target a figure must reach.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The figure must be at least this.
    AtLeast(f64),
    /// The figure must be at most this.
    AtMost(f64),
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(t) => value >= t,
            Target::AtMost(t) => value <= t,
        }
    }

    /// `>= 500,000 /s` or `<= 4.00 KiB`.
    pub fn describe(self, unit: &str) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {} {unit}", human(t)),
            Target::AtMost(t) => format!("<= {} {unit}", human(t)),
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The measurement.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// The target, if the figure has one.
    pub target: Option<Target>,
    /// The scenario that measured it (its JSON key, e.g. `fanout_sse`);
    /// set by the runner.
    pub scenario: &'static str,
}

impl Figure {
    /// A figure.
    pub fn new(name: String, value: f64, unit: &'static str, target: Option<Target>) -> Figure {
        Figure {
            name,
            value,
            unit,
            target,
            scenario: "",
        }
    }

    /// `PASS`, `MISS`, or `-` without a target.
    pub fn verdict(&self) -> &'static str {
        match self.target {
            Some(t) if t.met(self.value) => "PASS",
            Some(_) => "MISS",
            None => "-",
        }
    }

    /// JSON form.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": self.target.map(|t| t.describe(self.unit)),
            "scenario": self.scenario,
            "result": self.verdict(),
        })
    }
}

/// A number with 3 significant digits and thousands separators.
pub fn human(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let rounded = v.round() as i64;
        let digits = rounded.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if rounded < 0 {
            out.insert(0, '-');
        }
        out
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The table printed at the end of a run.
pub fn table(figures: &[Figure]) -> String {
    let rows: Vec<[String; 4]> = figures
        .iter()
        .map(|f| {
            [
                f.name.clone(),
                format!("{} {}", human(f.value), f.unit),
                f.target
                    .map_or_else(|| "-".to_owned(), |t| t.describe(f.unit)),
                f.verdict().to_owned(),
            ]
        })
        .collect();
    let header = ["figure", "value", "target", "result"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |r: &[String; 4]| {
        format!(
            "{:<w0$}  {:>w1$}  {:<w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )
    };
    let mut out = line(&header);
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 6));
    for r in &rows {
        out.push('\n');
        out.push_str(&line(r));
    }
    out
}

/// Writes the JSON results file.
pub fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("encoding the results")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_formatting() {
        let f = Figure::new("x".into(), 3.5, "KiB", Some(Target::AtMost(4.0)));
        assert_eq!(f.verdict(), "PASS");
        let f = Figure::new(
            "y".into(),
            400_000.0,
            "/s",
            Some(Target::AtLeast(500_000.0)),
        );
        assert_eq!(f.verdict(), "MISS");
        assert_eq!(human(1_234_567.4), "1,234,567");
        assert_eq!(human(12.345), "12.3");
        assert!(table(&[f]).contains("MISS"));
    }
}
