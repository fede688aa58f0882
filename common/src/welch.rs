//! Difference of two means with Welch's unequal-variance t-test. Pure.
//!
//! Used by `lem results compare` on per-cycle values of one metric: is B − A real, or
//! within the spread between cycles?

use crate::stats::t_quantile_975;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// B − A for one metric: the two means, the difference and, when both sides have two or
/// more samples with some spread, Welch's test of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanDifference {
    pub n_a: usize,
    pub n_b: usize,
    pub mean_a: f64,
    pub mean_b: f64,
    /// mean_b − mean_a.
    pub difference: f64,
    /// (mean_b − mean_a) / |mean_a|; `None` when mean_a is 0.
    pub relative_difference: Option<f64>,
    /// `None` when the test cannot be done; `no_test_reason` says why.
    pub welch: Option<WelchTest>,
    pub no_test_reason: Option<String>,
}

/// Welch's t-test of mean_b − mean_a = 0 (two-sided) and the 95% CI of the difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WelchTest {
    /// (mean_b − mean_a) / sqrt(var_a/n_a + var_b/n_b).
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value from Student's t with `df` degrees of freedom.
    pub p_value: f64,
    pub ci95_low: f64,
    pub ci95_high: f64,
    /// p < 0.05, i.e. the 95% CI excludes zero.
    pub significant: bool,
}

/// Why two sample sets cannot be compared at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DifferenceError {
    #[error("side {side} has no samples")]
    Empty { side: char },
    #[error("side {side} has a non-finite sample")]
    NonFinite { side: char },
}

/// Mean and sample variance (divisor n − 1; `None` for one sample), two-pass.
fn mean_var(x: &[f64]) -> (f64, Option<f64>) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (mean, None);
    }
    let ss: f64 = x.iter().map(|v| (v - mean) * (v - mean)).sum();
    (mean, Some(ss / (n - 1.0)))
}

/// Two-sided p-value of `t` under Student's t with `df` degrees of freedom.
fn two_sided_p(t: f64, df: f64) -> f64 {
    // cdf(−|t|) keeps small p-values accurate (1 − cdf(|t|) would cancel).
    let tail = if df.is_infinite() {
        Normal::new(0.0, 1.0).ok().map(|d| d.cdf(-t.abs()))
    } else {
        StudentsT::new(0.0, 1.0, df).ok().map(|d| d.cdf(-t.abs()))
    };
    tail.map(|p| (2.0 * p).min(1.0)).unwrap_or(f64::NAN)
}

/// Compares samples `b` against `a` (the difference is B − A).
pub fn mean_difference(a: &[f64], b: &[f64]) -> Result<MeanDifference, DifferenceError> {
    for (side, x) in [('A', a), ('B', b)] {
        if x.is_empty() {
            return Err(DifferenceError::Empty { side });
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(DifferenceError::NonFinite { side });
        }
    }
    let (mean_a, var_a) = mean_var(a);
    let (mean_b, var_b) = mean_var(b);
    let difference = mean_b - mean_a;
    let relative_difference = (mean_a != 0.0).then(|| difference / mean_a.abs());
    let (welch, no_test_reason) = match (var_a, var_b) {
        (Some(va), Some(vb)) => {
            let (na, nb) = (a.len() as f64, b.len() as f64);
            let (sa, sb) = (va / na, vb / nb);
            let se2 = sa + sb;
            if se2 == 0.0 {
                (
                    None,
                    Some("no spread between cycles on either side; the t-test is undefined".into()),
                )
            } else {
                let se = se2.sqrt();
                let t = difference / se;
                let df = se2 * se2 / (sa * sa / (na - 1.0) + sb * sb / (nb - 1.0));
                let p_value = two_sided_p(t, df);
                let half = t_quantile_975(df) * se;
                (
                    Some(WelchTest {
                        t,
                        df,
                        p_value,
                        ci95_low: difference - half,
                        ci95_high: difference + half,
                        significant: p_value < 0.05,
                    }),
                    None,
                )
            }
        }
        _ => (
            None,
            Some(format!(
                "too few cycles for a verdict (A {}, B {}; need 2 on each side)",
                a.len(),
                b.len()
            )),
        ),
    };
    Ok(MeanDifference {
        n_a: a.len(),
        n_b: b.len(),
        mean_a,
        mean_b,
        difference,
        relative_difference,
        welch,
        no_test_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    /// Expected values printed by `scripts/reference/welch.py` (scipy 1.17.1,
    /// `scipy.stats.ttest_ind(b, a, equal_var=False)` and its `confidence_interval(0.95)`).
    #[test]
    fn welch_matches_scipy() {
        type Case = (&'static [f64], &'static [f64], [f64; 6]);
        let cases: [Case; 3] = [
            (
                &[10.1, 9.8, 10.4, 10.0, 9.9],
                &[10.9, 11.3, 10.7, 11.1],
                // diff, t, df, p, ci low, ci high
                [
                    0.9600000000000026,
                    5.8137346862791315,
                    6.1605497125916395,
                    0.0010361495966115988,
                    0.5584895109364123,
                    1.361510489063593,
                ],
            ),
            (
                &[5.0, 7.0, 6.0],
                &[6.5, 5.5, 8.0, 4.5],
                [
                    0.125,
                    0.13245323570650439,
                    4.986244529074065,
                    0.8998048182000626,
                    -2.3029477067869206,
                    2.5529477067869206,
                ],
            ),
            (
                &[1.0, 3.0],
                &[2.0, 6.0],
                [
                    2.0,
                    0.8944271909999159,
                    1.4705882352941178,
                    0.49313270812084714,
                    -11.837045660142127,
                    15.837045660142127,
                ],
            ),
        ];
        for (a, b, [diff, t, df, p, lo, hi]) in cases {
            let d = mean_difference(a, b).unwrap();
            let w = d.welch.as_ref().expect("two or more samples each side");
            assert!(close(d.difference, diff, 1e-12), "{d:?}");
            assert!(close(w.t, t, 1e-10), "t {} vs {t}", w.t);
            assert!(close(w.df, df, 1e-10), "df {} vs {df}", w.df);
            assert!(close(w.p_value, p, 1e-8), "p {} vs {p}", w.p_value);
            assert!(close(w.ci95_low, lo, 1e-8), "lo {} vs {lo}", w.ci95_low);
            assert!(close(w.ci95_high, hi, 1e-8), "hi {} vs {hi}", w.ci95_high);
            assert_eq!(w.significant, p < 0.05);
            assert_eq!(w.significant, lo > 0.0 || hi < 0.0);
            assert_eq!((d.n_a, d.n_b), (a.len(), b.len()));
            assert_eq!(d.no_test_reason, None);
        }
    }

    #[test]
    fn relative_difference_is_against_a() {
        let d = mean_difference(&[4.0, 4.0], &[5.0, 5.0]).unwrap();
        assert_eq!(d.relative_difference, Some(0.25));
        let neg = mean_difference(&[-4.0, -4.0], &[-3.0, -3.0]).unwrap();
        assert_eq!(neg.relative_difference, Some(0.25));
        let zero = mean_difference(&[-1.0, 1.0], &[2.0, 3.0]).unwrap();
        assert_eq!(zero.relative_difference, None);
    }

    #[test]
    fn too_few_samples_gives_means_but_no_verdict() {
        let d = mean_difference(&[2.0], &[3.0, 5.0]).unwrap();
        assert_eq!((d.mean_a, d.mean_b, d.difference), (2.0, 4.0, 2.0));
        assert_eq!(d.welch, None);
        let why = d.no_test_reason.unwrap();
        assert!(
            why.contains("too few cycles") && why.contains("A 1, B 2"),
            "{why}"
        );
    }

    #[test]
    fn no_spread_on_either_side_gives_no_verdict() {
        // Equal constant samples would make t = 0/0: no test, said why.
        let d = mean_difference(&[2.0, 2.0], &[3.0, 3.0, 3.0]).unwrap();
        assert_eq!(d.difference, 1.0);
        assert_eq!(d.welch, None);
        assert!(d.no_test_reason.unwrap().contains("no spread"));
    }

    #[test]
    fn bad_samples_are_errors_naming_the_side() {
        assert_eq!(
            mean_difference(&[], &[1.0]),
            Err(DifferenceError::Empty { side: 'A' })
        );
        assert_eq!(
            mean_difference(&[1.0], &[f64::NAN]),
            Err(DifferenceError::NonFinite { side: 'B' })
        );
    }
}
