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
//! | [`avx512`] | x86_64 with AVX-512 (Xeon, Zen 4/5) | `u8 x s8` quads (`vpdpbusd` on `zmm`, AVX-512 VNNI), 6x64 (4 panels) | FMA on `zmm` 6x64 (4 panels) |
//! | [`avx_vnni`] | x86_64 with AVX-VNNI (Alder Lake and later, N100, Zen 5) | `u8 x s8` quads (`vpdpbusd` on `ymm`), 6x16 | (AVX2) |
//! | `gemm.rs`, `gemm_f32.rs` (AVX2 parts) | x86_64 with AVX2 + FMA | `u8 x s8` quads (`vpmaddubsw`, 7-bit weights), 4x16, or `i16` pairs (`vpmaddwd`), 6x16 | FMA 6x16 |
//! | [`neon`] | every aarch64 CPU (Pi 4's Cortex-A72, A53) | `s8 x s8` quads: `smull`/`smlal` into `i16`, `sadalp` into `i32`, 4x16 | `fmla` by element 6x16 |
//! | [`neon_dot`] | aarch64 with the dot product (A55, A76, A78AE: Pi 5, Jetson Orin) | `s8 x s8` quads: `sdot` by element, 4x16 | (as [`neon`]) |
//!
//! Besides the convolutions' tiles, [`avx2`] and [`neon`] each hold a row
//! kernel of the learned up-sampler ([`super::DepthwiseUpsample`]), chosen
//! once per frame by the same [`Cpu::detect`].
//!
//! The choice is made once per convolution, when the operator is built
//! ([`Int8Kernel::choose`], [`F32Kernel::detect`]); `dla-tools bench --profile`
//! and `inspect --kernels` print it for every convolution. `DLA_ISA` caps
//! it ([`Cpu::detect`]): `DLA_ISA=avx2` on an AVX-512 machine measures the
//! AVX2 kernels side by side, or steps around a kernel a CPU runs badly.
//!
//! The AVX-VNNI and AVX-512 tiles are written once over a vector type in
//! [`lanes`], so their loops are tested on emulated lanes on any machine;
//! only their one-instruction lane methods need the CPU itself.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "x86_64")]
pub mod avx_vnni;
pub mod lanes;
#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(target_arch = "aarch64")]
pub mod neon_dot;

use std::fmt;

/// Most neighbouring 16-pixel panels a kernel multiplies in one call
/// ([`Int8Kernel::panels`], [`F32Kernel::panels`]): four `zmm` rows of six
/// channels are 24 of AVX-512's 32 registers.
pub const MAX_PANELS: usize = 4;

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
    /// `u8 x s8` quads with `vpdpbusd` on 256-bit registers (x86_64
    /// AVX-VNNI): any symmetric weights.
    AvxVnni,
    /// `u8 x s8` quads with `vpdpbusd` on 512-bit registers (x86_64 AVX-512
    /// VNNI): any symmetric weights.
    Avx512Vnni,
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
    pub const ALL: [Int8Kernel; 8] = [
        Int8Kernel::Avx512Vnni,
        Int8Kernel::AvxVnni,
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
    /// weights only (a weight zero point would need per-pixel sums). A model
    /// quantized with 7-bit weights runs on every kernel; one with full 8-bit
    /// weights runs on `vpdpbusd` or NEON quads where the CPU has them and on
    /// AVX2's `i16` pairs where it has only AVX2: exact everywhere, so the
    /// same file gives the same labels on every CPU.
    pub fn supports(self, cpu: Cpu, weights: &[i8], k: usize, w_zero_points: &[i32]) -> bool {
        let symmetric = w_zero_points.iter().all(|&z| z == 0);
        match self {
            Int8Kernel::PortableI16 => true,
            Int8Kernel::Avx2I16 => cpu.avx2,
            Int8Kernel::Avx2U8 => cpu.avx2 && symmetric && super::gemm::fits_u8_pairs(weights, k),
            Int8Kernel::AvxVnni => cpu.avx2 && cpu.avx_vnni && symmetric,
            Int8Kernel::Avx512Vnni => cpu.avx2 && cpu.avx512_vnni && symmetric,
            Int8Kernel::NeonMull => cpu.neon && symmetric && !weights.contains(&i8::MIN),
            Int8Kernel::NeonMullSingle => cpu.neon && symmetric,
            Int8Kernel::NeonDot => cpu.dotprod && symmetric,
        }
    }

    /// Whether the kernel multiplies quads of bytes (else `i16` pairs).
    pub fn quads(self) -> bool {
        !matches!(self, Int8Kernel::PortableI16 | Int8Kernel::Avx2I16)
    }

    /// Whether the kernel multiplies quads of `u8` activations by `s8`
    /// weights on x86 (the AVX2 panel gather serves them all).
    pub fn u8_quads(self) -> bool {
        matches!(
            self,
            Int8Kernel::Avx2U8 | Int8Kernel::AvxVnni | Int8Kernel::Avx512Vnni
        )
    }

    /// Whether the kernel multiplies quads of `s8` activations (`u8` input
    /// with its top bit flipped: `x - 128`).
    pub fn signed_quads(self) -> bool {
        matches!(
            self,
            Int8Kernel::NeonMull | Int8Kernel::NeonMullSingle | Int8Kernel::NeonDot
        )
    }

    /// Output channels per micro-kernel call: 4 on NEON and AVX2's
    /// `vpmaddubsw` (on AVX2, 6 rows of two products each need more than
    /// its 16 registers, and ran 14 % slower per product), else [`MR`].
    pub fn rows(self) -> usize {
        if self.signed_quads() || self == Int8Kernel::Avx2U8 {
            4
        } else {
            super::gemm::MR
        }
    }

    /// Neighbouring 16-pixel panels one call multiplies
    /// ([`super::gemm::quads_kernel_panels`]): 4 on AVX-512 VNNI, whose 32
    /// registers hold 6 x 64 accumulators, so a weight broadcast feeds four
    /// `vpdpbusd` instead of one; else 1.
    pub fn panels(self) -> usize {
        match self {
            Int8Kernel::Avx512Vnni => MAX_PANELS,
            _ => 1,
        }
    }

    /// Whether layers whose channels do not come in fours (the RGB stem)
    /// read an image of column quads in place on this kernel rather than
    /// gather their panels. Only the four-panel AVX-512 VNNI tile gains:
    /// DLA-tiny's 7x7 stem, which then sums 42 quads instead of 37, went
    /// from 2.22 to 1.88 ms (1 thread, Xeon with AVX-512 VNNI); held to
    /// AVX-VNNI it ran 3.03 against 3.09 ms, and held to AVX2's
    /// `vpmaddubsw` 4.60 against 4.87 ms, where a gathered panel costs less
    /// than the extra quads.
    pub fn reads_column_quads(self) -> bool {
        self == Int8Kernel::Avx512Vnni
    }

    /// What `bench --profile` prints: instruction set, method, tile.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::PortableI16 => "portable i16 6x16",
            Int8Kernel::Avx2I16 => "avx2 i16 (vpmaddwd) 6x16",
            Int8Kernel::Avx2U8 => "avx2 u8 x s8 (vpmaddubsw) 4x16",
            Int8Kernel::AvxVnni => "avx-vnni u8 x s8 (vpdpbusd ymm) 6x16",
            Int8Kernel::Avx512Vnni => "avx512-vnni u8 x s8 (vpdpbusd zmm) 6x64",
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
    /// 12 AVX-512 FMA accumulators, two reduction chains (x86_64 AVX-512F).
    Avx512Fma,
    /// 24 NEON `fmla`-by-element accumulators (aarch64).
    NeonFmla,
}

impl F32Kernel {
    /// Every f32 kernel, fastest first.
    pub const ALL: [F32Kernel; 4] = [
        F32Kernel::Avx512Fma,
        F32Kernel::Avx2Fma,
        F32Kernel::NeonFmla,
        F32Kernel::Portable,
    ];

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
            F32Kernel::Avx512Fma => cpu.avx512f,
            F32Kernel::NeonFmla => cpu.neon,
        }
    }

    /// Neighbouring 16-pixel panels one call multiplies
    /// ([`super::gemm_f32::micro_kernel_panels_unchecked`]): 4 on AVX-512,
    /// whose 32 registers hold 6 x 64 accumulators, so a weight broadcast
    /// feeds four multiply-adds instead of one; else 1.
    pub fn panels(self) -> usize {
        match self {
            F32Kernel::Avx512Fma => MAX_PANELS,
            _ => 1,
        }
    }

    /// What `bench --profile` prints.
    pub fn name(self) -> &'static str {
        match self {
            F32Kernel::Portable => "portable 6x16",
            F32Kernel::Avx2Fma => "avx2+fma 6x16",
            F32Kernel::Avx512Fma => "avx512 fma (zmm) 6x64",
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
    /// x86_64 AVX-VNNI (`vpdpbusd` on `ymm`, VEX-encoded).
    pub avx_vnni: bool,
    /// x86_64 AVX-512 Foundation.
    pub avx512f: bool,
    /// x86_64 AVX-512F + AVX-512 VNNI (`vpdpbusd` on `zmm`).
    pub avx512_vnni: bool,
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
            (self.avx_vnni, "avxvnni"),
            (self.avx512f, "avx512f"),
            (self.avx512_vnni, "avx512vnni"),
            (self.neon, "neon"),
            (self.dotprod, "dotprod"),
        ]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect();
        let features = if features.is_empty() {
            "none of avx2, fma, avxvnni, avx512f, avx512vnni, neon, dotprod".to_string()
        } else {
            features.join(" + ")
        };
        format!("{} with {features}", std::env::consts::ARCH)
    }

    /// This CPU's features (detected on first use), capped by `DLA_ISA`
    /// when it is set ([`Isa`]).
    pub fn detect() -> Cpu {
        use std::sync::OnceLock;
        static CPU: OnceLock<Cpu> = OnceLock::new();
        *CPU.get_or_init(|| {
            let cpu = Cpu::detect_uncapped();
            match std::env::var("DLA_ISA") {
                Err(_) => cpu,
                Ok(name) => match name.parse::<Isa>() {
                    Ok(isa) => cpu.capped(isa),
                    Err(e) => {
                        log::warn!("{e}; using every feature this CPU has");
                        cpu
                    }
                },
            }
        })
    }

    /// This CPU's features without a cap.
    fn detect_uncapped() -> Cpu {
        #[allow(unused_mut)]
        let mut cpu = Cpu::default();
        {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                cpu.avx2 = has!("avx2");
                cpu.fma = has!("fma");
                cpu.avx_vnni = has!("avxvnni");
                cpu.avx512f = has!("avx512f");
                cpu.avx512_vnni = cpu.avx512f && has!("avx512vnni");
            }
            #[cfg(target_arch = "aarch64")]
            {
                cpu.neon = std::arch::is_aarch64_feature_detected!("neon");
                cpu.dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
            }
            cpu
        }
    }

    /// These features, less those newer than `isa` on this architecture
    /// (an x86 name leaves aarch64 features alone and the reverse).
    pub fn capped(self, isa: Isa) -> Cpu {
        let x86 = match isa {
            Isa::Portable => 0,
            Isa::Avx2 => 1,
            Isa::AvxVnni => 2,
            Isa::Avx512 | Isa::Neon | Isa::Native => 3,
        };
        let arm = match isa {
            Isa::Portable => 0,
            Isa::Neon => 1,
            _ => 2,
        };
        Cpu {
            avx2: self.avx2 && x86 >= 1,
            fma: self.fma && x86 >= 1,
            avx_vnni: self.avx_vnni && x86 >= 2,
            avx512f: self.avx512f && x86 >= 3,
            avx512_vnni: self.avx512_vnni && x86 >= 3,
            neon: self.neon && arm >= 1,
            dotprod: self.dotprod && arm >= 2,
        }
    }
}

/// The newest instruction set our kernels may use, from `DLA_ISA`: a cap,
/// never a promise (a CPU without a feature never runs its kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust only.
    Portable,
    /// x86_64: AVX2 + FMA, no VNNI, no AVX-512.
    Avx2,
    /// x86_64: AVX-VNNI and AVX2, no AVX-512.
    AvxVnni,
    /// x86_64: everything up to AVX-512.
    Avx512,
    /// aarch64: NEON without the dot product.
    Neon,
    /// No cap.
    Native,
}

impl std::str::FromStr for Isa {
    type Err = String;

    fn from_str(s: &str) -> Result<Isa, String> {
        match s.to_ascii_lowercase().as_str() {
            "portable" => Ok(Isa::Portable),
            "avx2" => Ok(Isa::Avx2),
            "avxvnni" | "avx-vnni" => Ok(Isa::AvxVnni),
            "avx512" => Ok(Isa::Avx512),
            "neon" => Ok(Isa::Neon),
            "native" => Ok(Isa::Native),
            _ => Err(format!(
                "DLA_ISA={s:?} is not one of portable, avx2, avxvnni, avx512, neon, native"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dla_isa_caps_features_on_its_own_architecture_only() {
        let all = Cpu {
            avx2: true,
            fma: true,
            avx_vnni: true,
            avx512f: true,
            avx512_vnni: true,
            neon: true,
            dotprod: true,
        };
        let avx2 = all.capped("AVX2".parse().unwrap());
        assert!(avx2.avx2 && avx2.fma && !avx2.avx_vnni && !avx2.avx512f && !avx2.avx512_vnni);
        assert!(
            avx2.neon && avx2.dotprod,
            "an x86 name leaves aarch64 alone"
        );
        let vnni = all.capped("avx-vnni".parse().unwrap());
        assert!(vnni.avx_vnni && !vnni.avx512_vnni);
        let neon = all.capped(Isa::Neon);
        assert!(neon.neon && !neon.dotprod && neon.avx512_vnni);
        assert_eq!(all.capped(Isa::Native), all);
        assert_eq!(all.capped(Isa::Avx512), all.capped(Isa::Native));
        assert_eq!(all.capped(Isa::Portable), Cpu::default());
        let err = "sse2".parse::<Isa>().unwrap_err();
        assert!(
            err.contains("DLA_ISA=\"sse2\"") && err.contains("avx512"),
            "{err}"
        );
        // A cap never adds what the CPU lacks.
        assert_eq!(Cpu::default().capped(Isa::Native), Cpu::default());
    }

    #[test]
    fn a_kernel_is_chosen_only_where_the_cpu_has_it() {
        let avx2_only = Cpu {
            avx2: true,
            fma: true,
            ..Cpu::default()
        };
        let vnni = Cpu {
            avx_vnni: true,
            ..avx2_only
        };
        let full8 = [-128i8, 127, 100, -100];
        let seven = [-64i8, 63, 50, -50];
        let pick = |cpu: Cpu, w: &[i8]| {
            Int8Kernel::ALL
                .into_iter()
                .find(|k| k.supports(cpu, w, 4, &[0]))
                .unwrap()
        };
        assert_eq!(pick(avx2_only, &seven), Int8Kernel::Avx2U8);
        assert_eq!(pick(avx2_only, &full8), Int8Kernel::Avx2I16);
        assert_eq!(pick(vnni, &full8), Int8Kernel::AvxVnni);
        let avx512 = Cpu {
            avx512f: true,
            avx512_vnni: true,
            ..vnni
        };
        assert_eq!(pick(avx512, &seven), Int8Kernel::Avx512Vnni);
        // A weight zero point needs the pair kernels.
        assert!(!Int8Kernel::Avx512Vnni.supports(avx512, &full8, 4, &[1]));
        assert_eq!(
            F32Kernel::ALL.into_iter().find(|k| k.runs_on(avx512)),
            Some(F32Kernel::Avx512Fma)
        );
    }
}
