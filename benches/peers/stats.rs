//! Medians and spreads over rounds, quantiles of a run's samples, and the table's rows.

use std::fmt;

/// Nearest-rank quantile `q` of `samples` (0 when empty); `q = 1` is the largest.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One figure over the rounds.
#[derive(Debug, Clone)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn of(values: Vec<f64>) -> Samples {
        Samples(values)
    }

    /// The middle value (of an even count, the lower middle: a value that was measured).
    pub fn median(&self) -> f64 {
        quantile(&self.0, 0.5)
    }

    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

/// A figure for both servers.
pub struct Row {
    label: &'static str,
    ours: Samples,
    theirs: Samples,
}

impl Row {
    pub fn new(label: &'static str, [ours, theirs]: [Samples; 2]) -> Row {
        Row {
            label,
            ours,
            theirs,
        }
    }

    /// revplane's median over the peer's (`None` when the peer's is 0).
    pub fn ratio(&self) -> Option<f64> {
        let theirs = self.theirs.median();
        (theirs != 0.0).then(|| self.ours.median() / theirs)
    }
}

fn spread(s: &Samples) -> String {
    format!("{} ({}-{})", num(s.median()), num(s.min()), num(s.max()))
}

/// Three significant digits, at most.
fn num(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<30} revplane {:<24} go-control-plane {:<24} ratio {}",
            self.label,
            spread(&self.ours),
            spread(&self.theirs),
            self.ratio().map_or("-".to_string(), |r| format!("{r:.3}x"))
        )
    }
}
