//! Which micro-kernel runs each of our convolutions on this CPU: the lines
//! `bench --profile` and `inspect --kernels` print.

use std::collections::BTreeMap;

use dla_runtime::backend::{ConvKernel, TractBackend};
use dla_runtime::ops::kernels::Cpu;

/// How many convolutions run on each kernel.
pub fn counts(kernels: &[ConvKernel]) -> BTreeMap<&'static str, usize> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for k in kernels {
        *count.entry(k.kernel).or_default() += 1;
    }
    count
}

/// One line per kernel: how many convolutions run on it.
pub fn summary(backend: &TractBackend) -> Vec<String> {
    let kernels = backend.conv_kernels();
    if kernels.is_empty() {
        return vec!["kernels    tract's own (DLA_OPS=tract)".to_string()];
    }
    let count = counts(&kernels);
    let mut lines = vec![format!("kernels    on {}:", Cpu::detect().describe())];
    lines.extend(
        count
            .into_iter()
            .map(|(kernel, n)| format!("  {n:>3} convolution(s) on {kernel}")),
    );
    lines
}

/// One line per convolution, in plan order.
pub fn per_node(backend: &TractBackend) -> Vec<String> {
    backend
        .conv_kernels()
        .into_iter()
        .map(
            |ConvKernel {
                 node,
                 shape,
                 kernel,
                 reads_in_place,
             }| {
                let reads = if reads_in_place {
                    ", reads in place"
                } else {
                    ""
                };
                format!("  {node}: {shape}; {kernel}{reads}")
            },
        )
        .collect()
}
