//! Criterion benches for our own tract operators (runtime/src/ops), each on
//! the shape where DLA-tiny 256x512 spends the most time in it: the int8
//! and f32 micro-kernels and convolutions, QuantizeLinear and the final x4
//! up-sampler.
//! The whole-model comparison with onnxruntime is `dla-tools bench --vs ort`.
//!
//! `cargo bench -p dla-runtime --bench ops`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dla_runtime::ops::gemm::{micro_kernel, MR, NR};
use dla_runtime::ops::{DepthwiseUpsample, F32Conv, Geometry, Int8Conv, QuantizeU8, QuantizedConv};

/// A convolution to bench: name, input channels, output channels, input
/// size, kernel, stride.
type Shape = (&'static str, usize, usize, (usize, usize), usize, usize);

/// DLA-tiny 256x512's convolutions where the time goes.
const SHAPES: [Shape; 5] = [
    ("conv 7x7 3->16 at 256x512 (stem)", 3, 16, (256, 512), 7, 1),
    (
        "conv 3x3 16->16 at 256x512 (level0)",
        16,
        16,
        (256, 512),
        3,
        1,
    ),
    (
        "conv 3x3/2 16->32 at 256x512 (level1)",
        16,
        32,
        (256, 512),
        3,
        2,
    ),
    (
        "conv 3x3 128->64 at 64x128 (IDA node)",
        128,
        64,
        (64, 128),
        3,
        1,
    ),
    ("conv 1x1 32->64 at 64x128", 32, 64, (64, 128), 1, 1),
];
use tract_onnx::prelude::*;

fn conv(cin: usize, cout: usize, size: (usize, usize), k: usize, stride: usize) -> Int8Conv {
    let geometry = Geometry::square(cin, cout, size, k, stride, k / 2);
    let weights: Vec<i8> = (0..geometry.k() * cout)
        .map(|i| (i * 7 % 255) as i8)
        .collect();
    let spec = QuantizedConv {
        geometry,
        weights: &weights,
        w_zero_point: &vec![0; cout],
        w_scale: &vec![0.002; cout],
        bias: &vec![100; cout],
        x: (110, 0.05),
        y: (0, 0.05),
    };
    let shape = [1, cout, geometry.out_size.0, geometry.out_size.1];
    Int8Conv::new(&spec, "bench", u8::fact(shape))
}

fn bench_int8(c: &mut Criterion) {
    let pairs = 288; // a 3x3 convolution over 64 channels
    let a = vec![0x0003_fffei32; pairs * MR];
    let b = vec![0x0005_0007i32; pairs * NR];
    let mut acc = [[0; NR]; MR];
    let mut group = c.benchmark_group("int8");
    group.throughput(Throughput::Elements((2 * pairs * MR * NR) as u64));
    group.bench_function("micro-kernel, k 576 (elements = MACs)", |bench| {
        bench.iter(|| micro_kernel(black_box(&a), black_box(&b), pairs, &mut acc, false))
    });
    #[cfg(target_arch = "x86_64")]
    if dla_runtime::ops::gemm::avx2() {
        // The u8 x s8 kernel 7-bit weights get: 144 quads = the same k of 576.
        let quads = pairs / 2;
        let a8 = vec![0x3f01_c102i32; quads * MR];
        let b8 = vec![0x7fff_0180i32; quads * NR];
        let offsets: Vec<usize> = (0..quads).map(|q| q * NR).collect();
        group.bench_function("micro-kernel u8 x s8, k 576 (elements = MACs)", |bench| {
            // SAFETY: AVX2 checked; sizes as required; 7-bit weights.
            bench.iter(|| unsafe {
                dla_runtime::ops::gemm::micro_kernel_u8(
                    black_box(&a8),
                    black_box(b8.as_ptr()),
                    &offsets,
                    &mut acc,
                    false,
                    None,
                )
            })
        });
        let mut acc4 = [[0; NR]; 4];
        group.throughput(Throughput::Elements((4 * quads * 4 * NR) as u64));
        group.bench_function(
            "micro-kernel u8 x s8 4x16, k 576 (elements = MACs)",
            |bench| {
                // SAFETY: AVX2 checked; sizes as required (4 rows of the
                // 6-row weights); 7-bit weights.
                bench.iter(|| unsafe {
                    dla_runtime::ops::gemm::micro_kernel_u8(
                        black_box(&a8),
                        black_box(b8.as_ptr()),
                        &offsets,
                        &mut acc4,
                        false,
                        None,
                    )
                })
            },
        );
    }
    for (name, cin, cout, size, k, stride) in SHAPES {
        let op = conv(cin, cout, size, k, stride);
        let input = vec![97u8; cin * size.0 * size.1];
        let mut out = vec![0u8; cout * op.geometry.out_size.0 * op.geometry.out_size.1];
        group.throughput(Throughput::Elements(op.geometry.macs() as u64));
        group.sample_size(10);
        group.bench_function(format!("{name} (elements = MACs)"), |bench| {
            bench.iter(|| op.run(black_box(&input), &mut out))
        });
    }
    group.finish();
}

fn bench_f32(c: &mut Criterion) {
    let k = 576; // a 3x3 convolution over 64 channels
    let a = vec![0.25f32; k * dla_runtime::ops::gemm_f32::MR];
    let x = vec![0.5f32; k + dla_runtime::ops::gemm_f32::NR];
    let offsets: Vec<usize> = (0..k).collect();
    let mut acc = [[0.0; dla_runtime::ops::gemm_f32::NR]; dla_runtime::ops::gemm_f32::MR];
    let mut group = c.benchmark_group("f32");
    let per_call = k * dla_runtime::ops::gemm_f32::MR * dla_runtime::ops::gemm_f32::NR;
    group.throughput(Throughput::Elements(per_call as u64));
    group.bench_function("micro-kernel 6x16, k 576 (elements = MACs)", |bench| {
        bench.iter(|| {
            dla_runtime::ops::gemm_f32::micro_kernel(
                black_box(&a),
                black_box(&x),
                &offsets,
                &mut acc,
                false,
            )
        })
    });
    // The tile this CPU's convolutions run: four panels on AVX-512.
    let kernel = dla_runtime::ops::kernels::F32Kernel::detect();
    let panels = kernel.panels();
    let x = vec![0.5f32; k + panels * dla_runtime::ops::gemm_f32::NR];
    let mut wide = vec![acc; panels];
    group.throughput(Throughput::Elements((panels * per_call) as u64));
    group.bench_function(
        format!("micro-kernel {kernel}, k 576 (elements = MACs)"),
        |bench| {
            bench.iter(|| {
                // SAFETY: the detected kernel; every offset leaves
                // `panels * NR` values of x.
                unsafe {
                    dla_runtime::ops::gemm_f32::micro_kernel_panels_unchecked(
                        kernel,
                        dla_runtime::ops::gemm_f32::MR,
                        black_box(&a),
                        black_box(&x),
                        &offsets,
                        &mut wide,
                        false,
                        None,
                    )
                }
            })
        },
    );
    for (name, cin, cout, size, k, stride) in SHAPES {
        let geometry = Geometry::square(cin, cout, size, k, stride, k / 2);
        let weights: Vec<f32> = (0..geometry.k() * cout)
            .map(|i| (i % 17) as f32 * 0.01 - 0.08)
            .collect();
        let (oh, ow) = geometry.out_size;
        let op = F32Conv::new(
            geometry,
            &weights,
            &vec![0.1; cout],
            "bench",
            f32::fact([1, cout, oh, ow]),
        )
        .with_relu();
        let input = vec![0.3f32; cin * size.0 * size.1];
        let mut out = vec![0f32; cout * oh * ow];
        group.throughput(Throughput::Elements(geometry.macs() as u64));
        group.sample_size(10);
        group.bench_function(format!("{name} (elements = MACs)"), |bench| {
            bench.iter(|| op.run(black_box(&input), &mut out))
        });
    }
    group.finish();
}

fn bench_float_glue(c: &mut Criterion) {
    let q = QuantizeU8 {
        inverse_scale: 9.7,
        zero_point: 3,
        output_type: u8::datum_type(),
        arena: Default::default(),
    };
    let input: Vec<f32> = (0..64 * 64 * 128)
        .map(|i| (i % 1000) as f32 * 0.03)
        .collect();
    let mut out = vec![0u8; input.len()];
    c.bench_function("quantize 64x64x128 f32 -> u8", |b| {
        b.iter(|| q.run(black_box(&input), &mut out))
    });
    let up = DepthwiseUpsample::new(
        19,
        (64, 128),
        (256, 512),
        (8, 8),
        (4, 4),
        (2, 2),
        vec![0.02; 19 * 64],
        vec![0.0; 19],
        "bench",
    );
    let input = vec![1.0f32; 19 * 64 * 128];
    let mut out = vec![0.0f32; 19 * 256 * 512];
    c.bench_function("depthwise up-sample x4, 19 channels to 256x512", |b| {
        b.iter(|| up.run(black_box(&input), &mut out))
    });
}

criterion_group!(benches, bench_int8, bench_f32, bench_float_glue);
criterion_main!(benches);
