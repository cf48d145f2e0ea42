//! Calibration statistics: every observed tensor's range, channel means and
//! histogram over the calibration images, measured on our own runtime.

use std::collections::HashMap;

use anyhow::Context;
use tract_onnx::prelude::*;

use super::observer::TensorStats;
use crate::dataset::Dataset;
use crate::probe::{progress, slice, InputMaker, Probe};

fn values(t: &TValue) -> anyhow::Result<(&[f32], usize)> {
    let channels = t.shape().get(1).copied().unwrap_or(1);
    let slice = slice::<f32>(t).context("an intermediate tensor is not f32")?;
    Ok((slice, channels))
}

/// Collects statistics of `tensors` over `data`: one pass for min, max and
/// channel means, and a second pass for histograms when `histograms` is set.
pub fn collect_stats(
    probe: &Probe,
    tensors: &[String],
    data: &Dataset,
    inputs: &mut InputMaker,
    histograms: bool,
) -> anyhow::Result<HashMap<String, TensorStats>> {
    let mut stats: Vec<TensorStats> = vec![TensorStats::default(); tensors.len()];
    let passes = if histograms { 2 } else { 1 };
    for pass in 0..passes {
        let bar = progress(
            data.len(),
            if pass == 0 { "calibrate" } else { "histograms" },
        );
        for i in 0..data.len() {
            let outputs = probe.run(inputs.tensor(data, i)?)?;
            for (s, t) in stats.iter_mut().zip(&outputs) {
                let (v, channels) = values(t)?;
                if pass == 0 {
                    s.observe(v, channels);
                } else {
                    s.observe_histogram(v);
                }
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    Ok(tensors.iter().cloned().zip(stats).collect())
}
