//! Which instruction-set variant of the kernels runs, chosen once per process.
//!
//! The build targets x86-64-v3 (AVX2, FMA, F16C); wider instructions are used only where
//! the CPU reports them at run time, so one binary runs everywhere. Every variant of a
//! kernel computes the same bits: the integer dot products are exact whatever the
//! instructions, and the float operations on them are the same, in the same order.

use std::sync::OnceLock;

/// A kernel variant, from the most portable to the widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Plain Rust, any CPU.
    Scalar,
    /// AVX2 + FMA + F16C: `vpmaddubsw` / `vpmaddwd` integer dot products.
    Avx2,
    /// AVX-512 VNNI (with VL and BW): `vpdpbusd` fuses the two AVX2 steps into one (on
    /// 256-bit registers, so the lanes and the float order are AVX2's).
    Avx512Vnni,
}

/// Every variant, most portable first.
pub const ALL: [Variant; 3] = [Variant::Scalar, Variant::Avx2, Variant::Avx512Vnni];

/// The environment variable that caps the variant (`scalar`, `avx2`, `avx512vnni`), for
/// comparing paths on one machine; unset or empty = the best the CPU has.
pub const OVERRIDE_ENV: &str = "LEM_CPU_KERNEL";

impl Variant {
    /// Lower-case name as in results and `LEM_CPU_KERNEL`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Scalar => "scalar",
            Variant::Avx2 => "avx2",
            Variant::Avx512Vnni => "avx512vnni",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        ALL.into_iter().find(|v| v.name() == name)
    }

    /// Whether this CPU can run the variant.
    pub fn available(self) -> bool {
        match self {
            Variant::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512Vnni => {
                Variant::Avx2.available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// The variants this CPU can run, most portable first.
pub fn available() -> Vec<Variant> {
    ALL.into_iter().filter(|v| v.available()).collect()
}

/// The error for a `LEM_CPU_KERNEL` value that names no variant or one this CPU lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideError {
    pub value: String,
    pub available: Vec<Variant>,
}

impl std::fmt::Display for OverrideError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.available.iter().map(|v| v.name()).collect();
        write!(
            f,
            "{OVERRIDE_ENV}={:?}: not a kernel variant this CPU runs (available: {})",
            self.value,
            names.join(", ")
        )
    }
}

impl std::error::Error for OverrideError {}

/// The variant for `requested` (a `LEM_CPU_KERNEL` value): the best available when None
/// or empty.
pub fn choose(requested: Option<&str>) -> Result<Variant, OverrideError> {
    let avail = available();
    match requested.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(*avail.last().expect("scalar is always available")),
        Some(name) => match Variant::from_name(name) {
            Some(v) if v.available() => Ok(v),
            _ => Err(OverrideError {
                value: name.to_string(),
                available: avail,
            }),
        },
    }
}

static SELECTED: OnceLock<Variant> = OnceLock::new();

/// The variant this process runs, chosen on first use from the CPU and `LEM_CPU_KERNEL`.
/// An unusable override falls back to the best variant; `check_override` reports it.
pub fn selected() -> Variant {
    *SELECTED.get_or_init(|| {
        let env = std::env::var(OVERRIDE_ENV).ok();
        choose(env.as_deref()).unwrap_or_else(|_| choose(None).expect("best variant"))
    })
}

/// `LEM_CPU_KERNEL`'s value checked, so a caller can refuse a bad one with a clear error.
pub fn check_override() -> Result<(), OverrideError> {
    let env = std::env::var(OVERRIDE_ENV).ok();
    choose(env.as_deref()).map(|_| ())
}

/// Eight i32 lanes, each the sum of four products of unsigned `u` and signed `s` bytes
/// (lane `l` covers bytes `4l..4l + 4`), with AVX2's `vpmaddubsw` then `vpmaddwd`. Exact
/// while no pair of products leaves i16: the callers keep `|u · s|` pairs within
/// `2 · 128 · 128` with only `−128 · 128` pairs reaching the bound, which i16 holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn dot_avx2(
    u: std::arch::x86_64::__m256i,
    s: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// The same eight lanes with one `vpdpbusd` (no intermediate i16, so nothing to saturate).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(crate) unsafe fn dot_vnni(
    u: std::arch::x86_64::__m256i,
    s: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
}

/// Expands `$body!(module, "target features", dot)` once per SIMD variant: a kernel writes
/// its SIMD body once as a macro and gets a module per variant, each compiled with that
/// variant's CPU features and integer dot (so everything inlines).
#[cfg(target_arch = "x86_64")]
macro_rules! simd_variants {
    ($body:ident) => {
        $body!(avx2, "avx2,fma,f16c", $crate::dispatch::dot_avx2);
        $body!(
            avx512vnni,
            "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
            $crate::dispatch::dot_vnni
        );
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use simd_variants;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_scalar_is_always_there() {
        for v in ALL {
            assert_eq!(Variant::from_name(v.name()), Some(v));
        }
        assert!(Variant::Scalar.available());
        assert_eq!(available()[0], Variant::Scalar);
    }

    #[test]
    fn override_picks_a_lower_variant_and_refuses_unknown_names() {
        assert_eq!(choose(Some("scalar")), Ok(Variant::Scalar));
        assert_eq!(choose(Some("")), choose(None));
        let err = choose(Some("avx9000")).unwrap_err();
        assert!(
            err.to_string().contains("LEM_CPU_KERNEL=\"avx9000\""),
            "{err}"
        );
        assert!(err.to_string().contains("scalar"), "{err}");
        // The default is the widest the CPU has.
        assert_eq!(choose(None), Ok(*available().last().unwrap()));
    }
}
