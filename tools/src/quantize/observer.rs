//! Activation statistics gathered during calibration, and the clipping range
//! each method picks from them.
//!
//! Pass 1 records min, max and per-channel means (means drive bias
//! correction). Percentile and entropy need a histogram over a range known in
//! advance, so they take a second pass that bins `|x|` into [`BINS`] bins
//! over `[0, max|x|]` from pass 1, as ONNX Runtime's and TensorRT's
//! calibrators do.

use std::str::FromStr;

/// Histogram resolution of pass 2.
pub const BINS: usize = 2048;

/// How a tensor's clipping range is chosen from its statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The observed minimum and maximum: no clipping, coarsest steps.
    MinMax,
    /// Clip `|x|` at this percentile (e.g. 99.999) of its distribution.
    Percentile(f64),
    /// The threshold whose int8 histogram is closest to the float one in
    /// Kullback-Leibler divergence (TensorRT's entropy calibration).
    Entropy,
}

impl Method {
    /// Whether the method needs the histogram pass.
    pub fn needs_histogram(&self) -> bool {
        !matches!(self, Method::MinMax)
    }

    /// Short name for reports and metadata.
    pub fn label(&self) -> String {
        match self {
            Method::MinMax => "minmax".into(),
            Method::Percentile(p) => format!("percentile({p})"),
            Method::Entropy => "entropy".into(),
        }
    }
}

impl FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "minmax" => Ok(Method::MinMax),
            "entropy" => Ok(Method::Entropy),
            "percentile" => Ok(Method::Percentile(99.999)),
            other => match other.strip_prefix("percentile:").map(str::parse::<f64>) {
                Some(Ok(p)) if p > 50.0 && p <= 100.0 => Ok(Method::Percentile(p)),
                _ => Err(format!(
                    "unknown method {other:?}: expected minmax, percentile, percentile:P \
                     (50 < P <= 100) or entropy"
                )),
            },
        }
    }
}

/// Statistics of one activation tensor over the calibration set.
#[derive(Debug, Clone)]
pub struct TensorStats {
    /// Smallest value seen.
    pub min: f32,
    /// Largest value seen.
    pub max: f32,
    channel_sums: Vec<f64>,
    values_per_channel: u64,
    histogram: Vec<u64>,
}

impl Default for TensorStats {
    fn default() -> Self {
        TensorStats {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            channel_sums: Vec::new(),
            values_per_channel: 0,
            histogram: Vec::new(),
        }
    }
}

impl TensorStats {
    /// Pass 1: one NCHW tensor's values (`channels` planes of equal size).
    pub fn observe(&mut self, values: &[f32], channels: usize) {
        if values.is_empty() {
            return;
        }
        let channels = channels.max(1);
        if self.channel_sums.len() != channels {
            self.channel_sums = vec![0.0; channels];
            self.values_per_channel = 0;
        }
        let plane = values.len() / channels;
        for (c, chunk) in values.chunks(plane.max(1)).take(channels).enumerate() {
            let (mut lo, mut hi, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0.0f64);
            for &v in chunk {
                lo = lo.min(v);
                hi = hi.max(v);
                sum += f64::from(v);
            }
            self.min = self.min.min(lo);
            self.max = self.max.max(hi);
            self.channel_sums[c] += sum;
        }
        self.values_per_channel += plane as u64;
    }

    /// Largest magnitude seen in pass 1.
    pub fn max_abs(&self) -> f32 {
        self.min.abs().max(self.max.abs())
    }

    /// Pass 2: bins `|x|` over `[0, max_abs]` (call after every pass-1 observation).
    pub fn observe_histogram(&mut self, values: &[f32]) {
        if self.histogram.len() != BINS {
            self.histogram = vec![0; BINS];
        }
        let top = self.max_abs();
        if top <= 0.0 {
            self.histogram[0] += values.len() as u64;
            return;
        }
        let k = BINS as f32 / top;
        for &v in values {
            let b = ((v.abs() * k) as usize).min(BINS - 1);
            self.histogram[b] += 1;
        }
    }

    /// Mean of each channel (what bias correction needs).
    pub fn channel_means(&self) -> Vec<f32> {
        let n = self.values_per_channel.max(1) as f64;
        self.channel_sums.iter().map(|s| (s / n) as f32).collect()
    }

    /// The clipping range `[lo, hi]` (always containing 0) for `method`;
    /// `levels` is how many quantisation steps cover the positive side (255
    /// for u8 after ReLU, 127 for symmetric int8).
    pub fn range(&self, method: Method, levels: usize) -> (f32, f32) {
        if !self.min.is_finite() || !self.max.is_finite() {
            return (0.0, 0.0);
        }
        let (lo, hi) = (self.min.min(0.0), self.max.max(0.0));
        let threshold = match method {
            Method::MinMax => return (lo, hi),
            Method::Percentile(p) => self.percentile_threshold(p),
            Method::Entropy => self.entropy_threshold(levels),
        };
        match threshold {
            Some(t) => (lo.max(-t), hi.min(t)),
            None => (lo, hi),
        }
    }

    fn bin_width(&self) -> f32 {
        self.max_abs() / BINS as f32
    }

    fn percentile_threshold(&self, p: f64) -> Option<f32> {
        let total: u64 = self.histogram.iter().sum();
        if total == 0 {
            return None;
        }
        let target = (total as f64 * p / 100.0).ceil() as u64;
        let mut seen = 0;
        for (i, &count) in self.histogram.iter().enumerate() {
            seen += count;
            if seen >= target {
                return Some((i + 1) as f32 * self.bin_width());
            }
        }
        None
    }

    /// TensorRT's method: for each candidate threshold, P is the histogram
    /// up to it with the clipped tail folded into its last bin, Q is the same
    /// bins *without* the tail merged into `levels` buckets and spread back;
    /// keep the threshold with the smallest KL(P || Q). Clipping too early
    /// piles the tail into P's last bin, which Q cannot match.
    fn entropy_threshold(&self, levels: usize) -> Option<f32> {
        let hist = &self.histogram;
        if hist.iter().sum::<u64>() == 0 {
            return None;
        }
        let levels = levels.clamp(2, BINS);
        let mut best: Option<(f64, usize)> = None;
        let mut p = vec![0f64; BINS];
        let mut q = vec![0f64; BINS];
        let mut tail: u64 = hist[levels..].iter().sum();
        for end in levels..=BINS {
            if end > levels {
                tail -= hist[end - 1];
            }
            for (i, slot) in p[..end].iter_mut().enumerate() {
                *slot = hist[i] as f64;
            }
            for l in 0..levels {
                let bucket = l * end / levels..(l + 1) * end / levels;
                let mass: f64 = p[bucket.clone()].iter().sum();
                let nonzero = p[bucket.clone()].iter().filter(|&&v| v > 0.0).count();
                for i in bucket {
                    q[i] = if p[i] > 0.0 {
                        mass / nonzero as f64
                    } else {
                        0.0
                    };
                }
            }
            p[end - 1] += tail as f64;
            // Bin 0 holds the exact zeros of ReLU outputs, which every
            // threshold represents exactly: leave them out of the comparison.
            let (sp, sq): (f64, f64) = (p[1..end].iter().sum(), q[1..end].iter().sum());
            if sp <= 0.0 || sq <= 0.0 {
                continue;
            }
            let kl: f64 = p[1..end]
                .iter()
                .zip(&q[1..end])
                .filter(|(&a, _)| a > 0.0)
                .map(|(&a, &b)| {
                    let a = a / sp;
                    let b = (b / sq).max(1e-12);
                    a * (a / b).ln()
                })
                .sum();
            if best.is_none_or(|(k, _)| kl < k) {
                best = Some((kl, end));
            }
        }
        best.map(|(_, end)| end as f32 * self.bin_width())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_of(values: &[f32]) -> TensorStats {
        let mut s = TensorStats::default();
        s.observe(values, 1);
        s.observe_histogram(values);
        s
    }

    #[test]
    fn minmax_keeps_the_whole_range_and_zero() {
        let s = stats_of(&[0.5, 2.0, 1.0]);
        assert_eq!(s.range(Method::MinMax, 255), (0.0, 2.0));
        let s = stats_of(&[-1.0, 3.0]);
        assert_eq!(s.range(Method::MinMax, 255), (-1.0, 3.0));
    }

    #[test]
    fn percentile_clips_rare_outliers() {
        let mut values: Vec<f32> = (0..10_000).map(|i| (i % 100) as f32 / 100.0).collect();
        values.push(50.0);
        let s = stats_of(&values);
        let (lo, hi) = s.range(Method::Percentile(99.9), 255);
        assert_eq!(lo, 0.0);
        assert!(hi > 0.9 && hi < 1.2, "{hi}");
        assert_eq!(s.range(Method::Percentile(100.0), 255).1, 50.0);
    }

    #[test]
    fn entropy_ignores_a_long_thin_tail() {
        // A bell of values near 1 and a handful of far outliers.
        let mut values: Vec<f32> = (0..20_000)
            .map(|i| 1.0 + ((i as f32 * 0.618).fract() - 0.5))
            .collect();
        values.extend([40.0, 39.0, 38.5]);
        let s = stats_of(&values);
        let (_, hi) = s.range(Method::Entropy, 255);
        assert!(hi > 1.4 && hi < 10.0, "{hi}");
    }

    #[test]
    fn entropy_keeps_a_dense_range_whole() {
        // Uniform values need no clipping: a threshold far inside would fold
        // most of the mass into one bin.
        let values: Vec<f32> = (0..50_000).map(|i| (i as f32 * 0.618).fract()).collect();
        let (_, hi) = stats_of(&values).range(Method::Entropy, 255);
        assert!(hi > 0.9, "{hi}");
    }

    #[test]
    fn channel_means_are_per_plane() {
        let mut s = TensorStats::default();
        s.observe(&[1.0, 3.0, 10.0, 20.0], 2);
        s.observe(&[3.0, 5.0, 0.0, 10.0], 2);
        assert_eq!(s.channel_means(), vec![3.0, 10.0]);
    }

    #[test]
    fn methods_parse_with_their_parameters() {
        assert_eq!("minmax".parse::<Method>().unwrap(), Method::MinMax);
        assert_eq!(
            "percentile:99.99".parse::<Method>().unwrap(),
            Method::Percentile(99.99)
        );
        assert!("percentile:20".parse::<Method>().is_err());
        assert!("kl".parse::<Method>().is_err());
    }
}
