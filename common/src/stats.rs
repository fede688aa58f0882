//! Summary statistics (mean, sample std, Student-t 95% CI, CV) and percentiles. Pure.
//!
//! Used for statistics across cycles and for latency percentiles within a job.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// 0.975 quantile of the standard normal distribution (the limit of `t_quantile_975`).
pub const NORMAL_QUANTILE_975: f64 = 1.959963984540054;

/// Above this many degrees of freedom statrs' `StudentsT::inverse_cdf` loses accuracy
/// (measured with statrs 0.18: ~3e-7 off at df = 5e4, ~2e-2 off at 1e7, hangs near 1e8),
/// so we switch to the asymptotic expansion, which is accurate to ~1e-15 here.
const STATRS_MAX_DF: f64 = 1e4;

/// Two-sided 95% critical value of Student's t: the 0.975 quantile with `df` degrees of
/// freedom. Returns NaN for `df <= 0` or NaN; `df = +inf` gives the normal quantile.
pub fn t_quantile_975(df: f64) -> f64 {
    if df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if df <= STATRS_MAX_DF {
        // Location 0, scale 1 and a finite positive df are always valid.
        return StudentsT::new(0.0, 1.0, df)
            .map(|t| t.inverse_cdf(0.975))
            .unwrap_or(f64::NAN);
    }
    t_quantile_expansion(NORMAL_QUANTILE_975, df)
}

/// Cornish-Fisher expansion of a t quantile around the normal quantile `z` (Abramowitz &
/// Stegun 26.7.5), three correction terms. Tends to `z` as df grows, so huge df (or
/// infinity) is simply the normal quantile.
fn t_quantile_expansion(z: f64, df: f64) -> f64 {
    let z3 = z.powi(3);
    let z5 = z.powi(5);
    let z7 = z.powi(7);
    let g1 = (z3 + z) / 4.0;
    let g2 = (5.0 * z5 + 16.0 * z3 + 3.0 * z) / 96.0;
    let g3 = (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / 384.0;
    z + g1 / df + g2 / (df * df) + g3 / (df * df * df)
}

/// Mean, spread and 95% confidence interval of a set of samples (e.g. one metric across
/// cycles). Fields that need two or more samples are `None` for a single sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (divisor n-1); `None` if n < 2.
    pub std: Option<f64>,
    /// t_{0.975}(n-1) · std / sqrt(n); `None` if n < 2.
    pub ci95_half_width: Option<f64>,
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
    /// Coefficient of variation std / |mean|; `None` if n < 2 or mean == 0.
    pub cv: Option<f64>,
}

impl Summary {
    /// `None` when `samples` is empty or holds a non-finite value (a NaN would silently
    /// poison every field).
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let n = samples.len();
        let mean = samples.iter().sum::<f64>() / n as f64;
        if n < 2 {
            return Some(Summary {
                n,
                mean,
                std: None,
                ci95_half_width: None,
                ci95_low: None,
                ci95_high: None,
                cv: None,
            });
        }
        // Two-pass variance: no catastrophic cancellation for large, close values.
        let sum_sq: f64 = samples.iter().map(|x| (x - mean) * (x - mean)).sum();
        let std = (sum_sq / (n - 1) as f64).sqrt();
        let half = t_quantile_975((n - 1) as f64) * std / (n as f64).sqrt();
        let cv = if mean == 0.0 {
            None
        } else {
            Some(std / mean.abs())
        };
        Some(Summary {
            n,
            mean,
            std: Some(std),
            ci95_half_width: Some(half),
            ci95_low: Some(mean - half),
            ci95_high: Some(mean + half),
            cv,
        })
    }
}

/// The `p`-th percentile (0..=100) with linear interpolation between closest ranks, as
/// numpy's default `method="linear"`. Input need not be sorted. `None` for empty input,
/// `p` outside 0..=100, or a NaN sample.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() || !(0.0..=100.0).contains(&p) || samples.iter().any(|x| x.is_nan()) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(percentile_of_sorted(&sorted, p))
}

/// `sorted` must be non-empty, sorted ascending and NaN-free; `p` in 0..=100.
fn percentile_of_sorted(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Latency distribution of one job (values in whatever unit the caller passes, e.g. ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyPercentiles {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl LatencyPercentiles {
    /// `None` for empty input or a NaN sample.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|x| x.is_nan()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Self {
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50: percentile_of_sorted(&sorted, 50.0),
            p90: percentile_of_sorted(&sorted, 90.0),
            p99: percentile_of_sorted(&sorted, 99.0),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn t_quantiles_match_reference_values() {
        // Reference values: scipy.stats.t.ppf(0.975, df) for 1, 4, 30; df = 7 by bisection
        // on the closed-form CDF for odd df (1/2 + (θ + sinθcosθ(1 + 2/3 cos²θ + 8/15
        // cos⁴θ))/π, θ = atan(t/√7)).
        for (df, want) in [
            (1.0, 12.706204736174698),
            (4.0, 2.7764451051977987),
            (7.0, 2.3646242515927827),
            (30.0, 2.0422724563012373),
        ] {
            let got = t_quantile_975(df);
            assert!(close(got, want, 1e-12), "df={df}: {got} vs {want}");
        }
    }

    #[test]
    fn t_quantile_is_continuous_across_the_statrs_switch() {
        let below = t_quantile_975(STATRS_MAX_DF);
        let above = t_quantile_975(STATRS_MAX_DF * (1.0 + 1e-12));
        assert!((below - above).abs() < 1e-11, "{below} vs {above}");
        // t(1e4) = 1.9602012398906... (scipy); the expansion gives the same value.
        assert!(close(
            t_quantile_expansion(NORMAL_QUANTILE_975, 1e4),
            1.960201239890,
            1e-11
        ));
    }

    #[test]
    fn huge_df_returns_promptly_and_tends_to_normal() {
        let start = Instant::now();
        for df in [1e5, 1e8, 1e9, 1e15, f64::INFINITY] {
            let q = t_quantile_975(df);
            assert!((NORMAL_QUANTILE_975..1.96).contains(&q), "df={df}: {q}");
        }
        assert_eq!(t_quantile_975(f64::INFINITY), NORMAL_QUANTILE_975);
        assert!(close(t_quantile_975(1e9), NORMAL_QUANTILE_975, 1e-8));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn t_quantile_rejects_invalid_df() {
        assert!(t_quantile_975(0.0).is_nan());
        assert!(t_quantile_975(-3.0).is_nan());
        assert!(t_quantile_975(f64::NAN).is_nan());
    }

    #[test]
    fn summary_of_known_sample() {
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.n, 8);
        assert_eq!(s.mean, 5.0);
        // sum of squared deviations 32, / 7, sqrt.
        assert!(close(s.std.unwrap(), 2.138089935299395, 1e-14));
        // t(7) · std / sqrt(8) = 2.3646242515927827 · 0.7559289460184544
        let half = 1.7874879182362087;
        assert!(close(s.ci95_half_width.unwrap(), half, 1e-12));
        assert!(close(s.ci95_low.unwrap(), 5.0 - half, 1e-12));
        assert!(close(s.ci95_high.unwrap(), 5.0 + half, 1e-12));
        assert!(close(s.cv.unwrap(), 0.427617987059879, 1e-13));
    }

    #[test]
    fn summary_guards_small_and_degenerate_inputs() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
        assert_eq!(Summary::of(&[1.0, f64::INFINITY]), None);
        let one = Summary::of(&[3.5]).unwrap();
        assert_eq!(one.n, 1);
        assert_eq!(one.mean, 3.5);
        assert_eq!(
            (
                one.std,
                one.ci95_half_width,
                one.ci95_low,
                one.ci95_high,
                one.cv
            ),
            (None, None, None, None, None)
        );
        // Mean zero: CV undefined, the rest defined.
        let zero = Summary::of(&[-1.0, 1.0]).unwrap();
        assert_eq!(zero.mean, 0.0);
        assert_eq!(zero.cv, None);
        assert!(close(zero.std.unwrap(), std::f64::consts::SQRT_2, 1e-15));
        // Constant samples: zero spread, a zero-width interval.
        let flat = Summary::of(&[2.0, 2.0, 2.0]).unwrap();
        assert_eq!(flat.std, Some(0.0));
        assert_eq!(flat.ci95_half_width, Some(0.0));
        assert_eq!(flat.cv, Some(0.0));
    }

    #[test]
    fn summary_is_stable_for_large_offsets() {
        // Naive sum-of-squares would lose these digits entirely.
        let s = Summary::of(&[1e9 + 4.0, 1e9 + 7.0, 1e9 + 13.0, 1e9 + 16.0]).unwrap();
        assert!(close(s.std.unwrap(), 30.0f64.sqrt(), 1e-9));
    }

    #[test]
    fn summary_serialises_missing_fields_as_null() {
        // Null, not zero: a single-sample summary has no spread.
        let v = serde_json::to_value(Summary::of(&[3.0]).unwrap()).unwrap();
        assert_eq!(v["n"], 1);
        assert_eq!(v["mean"], 3.0);
        for key in ["std", "ci95_half_width", "ci95_low", "ci95_high", "cv"] {
            assert!(v[key].is_null(), "{key}: {v}");
        }
        let back: Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back, Summary::of(&[3.0]).unwrap());
    }

    // numpy.percentile(a, p) with the default "linear" method, numpy 2.4.
    const NP_SAMPLE: [f64; 10] = [15.0, 20.0, 35.0, 40.0, 50.0, 3.0, 7.5, 100.0, 0.25, 42.0];

    #[test]
    fn percentile_matches_numpy_linear() {
        for (p, want) in [
            (0.0, 0.25),
            (10.0, 2.725),
            (25.0, 9.375),
            (33.3, 14.9775),
            (50.0, 27.5),
            (90.0, 55.0),
            (99.0, 95.5),
            (100.0, 100.0),
        ] {
            let got = percentile(&NP_SAMPLE, p).unwrap();
            assert!(close(got, want, 1e-12), "p={p}: {got} vs {want}");
        }
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[2.0, 1.0], 50.0), Some(1.5));
    }

    #[test]
    fn percentile_guards() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0], -0.1), None);
        assert_eq!(percentile(&[1.0], 100.1), None);
        assert_eq!(percentile(&[1.0], f64::NAN), None);
        assert_eq!(percentile(&[1.0, f64::NAN], 50.0), None);
    }

    #[test]
    fn latency_percentiles_of_known_sample() {
        let l = LatencyPercentiles::of(&NP_SAMPLE).unwrap();
        assert!(close(l.mean, 31.275, 1e-14));
        assert!(close(l.p50, 27.5, 1e-14));
        assert!(close(l.p90, 55.0, 1e-12));
        assert!(close(l.p99, 95.5, 1e-12));
        assert_eq!((l.min, l.max), (0.25, 100.0));
        assert_eq!(LatencyPercentiles::of(&[]), None);
        let single = LatencyPercentiles::of(&[4.0]).unwrap();
        assert_eq!(
            (single.mean, single.p50, single.p99, single.min, single.max),
            (4.0, 4.0, 4.0, 4.0, 4.0)
        );
    }
}
