//! The micro-kernels under our convolutions, one file per instruction set,
//! and the one place that says which of them this CPU runs.
//!
//! The operators ([`super::Int8Conv`], [`super::F32Conv`]) own the data
//! layouts (packed weights, padded images, panels); the inner loops that
//! multiply them live in the files below. The portable kernels in
//! [`super::gemm`] and [`super::gemm_f32`] are the reference every other
//! kernel is tested against, and what any other CPU runs.
//!
//! | file | CPU | int8 kernel | f32 kernel |
//! |---|---|---|---|
//! | `gemm.rs`, `gemm_f32.rs` (AVX2 parts) | x86_64 with AVX2 + FMA | `u8 x s8` quads (`vpmaddubsw`, 7-bit weights) or `i16` pairs (`vpmaddwd`), 6x16 | FMA 6x16 |
//! | [`neon`] | every aarch64 CPU (Pi 4's Cortex-A72, A53) | `s8 x s8` quads: `smull`/`smlal` into `i16`, `sadalp` into `i32`, 4x16 | `fmla` by element 6x16 |
//! | [`neon_dot`] | aarch64 with the dot product (A55, A76, A78AE: Pi 5, Jetson Orin) | `s8 x s8` quads: `sdot` by element, 4x16 | (as [`neon`]) |
//!
//! The choice is made once per convolution, when the operator is built
//! ([`Int8Kernel::choose`], [`F32Kernel::detect`]); `dla-tools bench --profile`
//! and `inspect --kernels` print it for every convolution.

#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(target_arch = "aarch64")]
pub mod neon_dot;

use std::fmt;

/// The integer matrix-product kernel one quantized convolution runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// Exact `i16` pairs in plain Rust: any weights, any zero points.
    PortableI16,
    /// Exact `i16` pairs with `vpmaddwd` (x86_64 AVX2).
    Avx2I16,
    /// `u8 x s8` quads with `vpmaddubsw` (x86_64 AVX2), when no pair of
    /// neighbouring weights can saturate its `i16` sums (7-bit weights).
    Avx2U8,
    /// `s8 x s8` quads with `smull`/`smlal` then `sadalp` (aarch64 NEON):
    /// two products per `i16` lane, exact while no weight is -128.
    NeonMull,
    /// [`Int8Kernel::NeonMull`] with one product per `i16` lane, for layers
    /// with a -128 weight (two -128 x -128 products overflow `i16`).
    NeonMullSingle,
    /// `s8 x s8` quads with `sdot` (aarch64 with the dot product).
    NeonDot,
}

impl Int8Kernel {
    /// Every int8 kernel, fastest first: [`Int8Kernel::choose`] takes the
    /// first one that [`Int8Kernel::supports`] a layer.
    pub const ALL: [Int8Kernel; 6] = [
        Int8Kernel::Avx2U8,
        Int8Kernel::Avx2I16,
        Int8Kernel::NeonDot,
        Int8Kernel::NeonMull,
        Int8Kernel::NeonMullSingle,
        Int8Kernel::PortableI16,
    ];

    /// The fastest exact kernel this CPU has for a layer with these weights
    /// (`[channel][k]` row-major) and weight zero points.
    pub fn choose(weights: &[i8], k: usize, w_zero_points: &[i32]) -> Int8Kernel {
        let cpu = Cpu::detect();
        Int8Kernel::ALL
            .into_iter()
            .find(|kernel| kernel.supports(cpu, weights, k, w_zero_points))
            .unwrap_or(Int8Kernel::PortableI16)
    }

    /// Whether `cpu` runs this kernel and it sums a layer with these weights
    /// and weight zero points exactly. The quad kernels take symmetric
    /// weights only (a weight zero point would need per-pixel sums).
    pub fn supports(self, cpu: Cpu, weights: &[i8], k: usize, w_zero_points: &[i32]) -> bool {
        let symmetric = w_zero_points.iter().all(|&z| z == 0);
        match self {
            Int8Kernel::PortableI16 => true,
            Int8Kernel::Avx2I16 => cpu.avx2,
            Int8Kernel::Avx2U8 => cpu.avx2 && symmetric && super::gemm::fits_u8_pairs(weights, k),
            Int8Kernel::NeonMull => cpu.neon && symmetric && !weights.contains(&i8::MIN),
            Int8Kernel::NeonMullSingle => cpu.neon && symmetric,
            Int8Kernel::NeonDot => cpu.dotprod && symmetric,
        }
    }

    /// Whether the kernel multiplies quads of bytes (else `i16` pairs).
    pub fn quads(self) -> bool {
        !matches!(self, Int8Kernel::PortableI16 | Int8Kernel::Avx2I16)
    }

    /// Whether the kernel multiplies quads of `s8` activations (`u8` input
    /// with its top bit flipped: `x - 128`).
    pub fn signed_quads(self) -> bool {
        matches!(
            self,
            Int8Kernel::NeonMull | Int8Kernel::NeonMullSingle | Int8Kernel::NeonDot
        )
    }

    /// Output channels per micro-kernel call.
    pub fn rows(self) -> usize {
        if self.signed_quads() {
            4
        } else {
            super::gemm::MR
        }
    }

    /// What `bench --profile` prints: instruction set, method, tile.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::PortableI16 => "portable i16 6x16",
            Int8Kernel::Avx2I16 => "avx2 i16 (vpmaddwd) 6x16",
            Int8Kernel::Avx2U8 => "avx2 u8 x s8 (vpmaddubsw) 6x16",
            Int8Kernel::NeonMull => "neon s8 (smull+smlal, sadalp) 4x16",
            Int8Kernel::NeonMullSingle => "neon s8 (smull, sadalp; a -128 weight) 4x16",
            Int8Kernel::NeonDot => "neon dotprod s8 (sdot) 4x16",
        }
    }
}

impl fmt::Display for Int8Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The float matrix-product kernel of this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F32Kernel {
    /// Plain Rust.
    Portable,
    /// 12 AVX2 FMA accumulators (x86_64 AVX2 + FMA).
    Avx2Fma,
    /// 24 NEON `fmla`-by-element accumulators (aarch64).
    NeonFmla,
}

impl F32Kernel {
    /// Every f32 kernel, fastest first.
    pub const ALL: [F32Kernel; 3] = [F32Kernel::Avx2Fma, F32Kernel::NeonFmla, F32Kernel::Portable];

    /// The fastest kernel this CPU has.
    pub fn detect() -> F32Kernel {
        let cpu = Cpu::detect();
        F32Kernel::ALL
            .into_iter()
            .find(|kernel| kernel.runs_on(cpu))
            .unwrap_or(F32Kernel::Portable)
    }

    /// Whether `cpu` has what the kernel needs.
    pub fn runs_on(self, cpu: Cpu) -> bool {
        match self {
            F32Kernel::Portable => true,
            F32Kernel::Avx2Fma => cpu.avx2 && cpu.fma,
            F32Kernel::NeonFmla => cpu.neon,
        }
    }

    /// What `bench --profile` prints.
    pub fn name(self) -> &'static str {
        match self {
            F32Kernel::Portable => "portable 6x16",
            F32Kernel::Avx2Fma => "avx2+fma 6x16",
            F32Kernel::NeonFmla => "neon fmla 6x16",
        }
    }
}

impl fmt::Display for F32Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The CPU features our kernels use, read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cpu {
    /// x86_64 AVX2.
    pub avx2: bool,
    /// x86_64 FMA.
    pub fma: bool,
    /// aarch64 Advanced SIMD (every aarch64 Linux CPU has it).
    pub neon: bool,
    /// aarch64 dot product (`sdot`/`udot`, Armv8.2 optional, Armv8.4).
    pub dotprod: bool,
}

impl Cpu {
    /// One line for people: architecture and the features our kernels use.
    pub fn describe(&self) -> String {
        let features: Vec<&str> = [
            (self.avx2, "avx2"),
            (self.fma, "fma"),
            (self.neon, "neon"),
            (self.dotprod, "dotprod"),
        ]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect();
        let features = if features.is_empty() {
            "none of avx2, fma, neon, dotprod".to_string()
        } else {
            features.join(" + ")
        };
        format!("{} with {features}", std::env::consts::ARCH)
    }

    /// This CPU's features (detected on first use).
    pub fn detect() -> Cpu {
        use std::sync::OnceLock;
        static CPU: OnceLock<Cpu> = OnceLock::new();
        *CPU.get_or_init(|| {
            #[allow(unused_mut)]
            let mut cpu = Cpu::default();
            #[cfg(target_arch = "x86_64")]
            {
                cpu.avx2 = std::arch::is_x86_feature_detected!("avx2");
                cpu.fma = std::arch::is_x86_feature_detected!("fma");
            }
            #[cfg(target_arch = "aarch64")]
            {
                cpu.neon = std::arch::is_aarch64_feature_detected!("neon");
                cpu.dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
            }
            cpu
        })
    }
}
