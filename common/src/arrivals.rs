//! Request arrival schedules for `latency_simulation`: when each request arrives, as an
//! offset in nanoseconds from the start of the measured window. Pure; no clock.
//!
//! Both modes put the first request at 0, as `vllm bench serve` sends its first request
//! at once and then waits one inter-arrival gap before each next one:
//! - `constant`: request i arrives at i / qps (no accumulated rounding).
//! - `poisson`: gaps are exponential with mean 1 / qps (a Poisson process of rate qps),
//!   drawn from `SplitMix64` so a seed gives the same schedule on every platform.

use crate::config::{ExperimentConfig, LatencyMode, LatencySimulation};
use crate::rng::SplitMix64;

/// Seed of Poisson arrivals when neither `latency_simulation.seed` nor `random_seed` is set.
pub const DEFAULT_ARRIVAL_SEED: u64 = 0x6C65_6D5F_6172_7276; // "lem_arrv"

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArrivalError {
    #[error("latency_simulation.target_qps must be a finite number greater than 0 (found {0})")]
    BadRate(f64),
}

/// The seed Poisson arrivals use: `latency_simulation.seed`, else the config's
/// `random_seed`, else `DEFAULT_ARRIVAL_SEED`.
pub fn arrival_seed(sim: &LatencySimulation, random_seed: Option<u64>) -> u64 {
    sim.seed.or(random_seed).unwrap_or(DEFAULT_ARRIVAL_SEED)
}

/// Arrival offsets (ns from window start, non-decreasing) of `n` requests at `target_qps`.
pub fn arrival_offsets_ns(
    mode: LatencyMode,
    target_qps: f64,
    n: usize,
    seed: u64,
) -> Result<Vec<u64>, ArrivalError> {
    if !(target_qps.is_finite() && target_qps > 0.0) {
        return Err(ArrivalError::BadRate(target_qps));
    }
    let mean_gap_s = 1.0 / target_qps;
    let to_ns = |s: f64| (s * 1e9).round() as u64;
    Ok(match mode {
        LatencyMode::Constant => (0..n).map(|i| to_ns(i as f64 * mean_gap_s)).collect(),
        LatencyMode::Poisson => {
            let mut rng = SplitMix64::new(seed);
            let mut t_s = 0.0f64;
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                if i > 0 {
                    // Inverse CDF; 1 - u is in (0, 1], so the log is finite.
                    t_s += -(1.0 - rng.next_f64()).ln() * mean_gap_s;
                }
                out.push(to_ns(t_s));
            }
            out
        }
    })
}

/// The schedule a config asks for; `None` when `latency_simulation` is off (every request
/// arrives at once, at the window start).
pub fn schedule_for(cfg: &ExperimentConfig, n: usize) -> Result<Option<Vec<u64>>, ArrivalError> {
    let sim = &cfg.latency_simulation;
    if !sim.enabled {
        return Ok(None);
    }
    arrival_offsets_ns(
        sim.mode,
        sim.target_qps,
        n,
        arrival_seed(sim, cfg.random_seed),
    )
    .map(Some)
}

/// "poisson 2 req/s (seed 7)", "constant 0.5 req/s" or "all at once": how requests arrived.
pub fn describe(sim: &LatencySimulation, random_seed: Option<u64>) -> String {
    if !sim.enabled {
        return "all at once".into();
    }
    match sim.mode {
        LatencyMode::Constant => format!("constant {} req/s", sim.target_qps),
        LatencyMode::Poisson => format!(
            "poisson {} req/s (seed {})",
            sim.target_qps,
            arrival_seed(sim, random_seed)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps_s(offsets: &[u64]) -> Vec<f64> {
        offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as f64 / 1e9)
            .collect()
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    /// Sample coefficient of variation (std with divisor n-1, over the mean).
    fn cv(v: &[f64]) -> f64 {
        let m = mean(v);
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64;
        var.sqrt() / m
    }

    /// Kolmogorov–Smirnov statistic of `samples` against Exp(rate).
    fn ks_exponential(samples: &[f64], rate: f64) -> f64 {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len() as f64;
        s.iter()
            .enumerate()
            .map(|(i, &x)| {
                let f = 1.0 - (-rate * x).exp();
                (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn constant_is_exactly_evenly_spaced_from_zero() {
        let o = arrival_offsets_ns(LatencyMode::Constant, 4.0, 5, 0).unwrap();
        assert_eq!(o, [0, 250_000_000, 500_000_000, 750_000_000, 1_000_000_000]);
        // 3 req/s: i/3 s rounded to the ns, no drift after many requests.
        let o = arrival_offsets_ns(LatencyMode::Constant, 3.0, 3001, 0).unwrap();
        assert_eq!(o[1], 333_333_333);
        assert_eq!(o[2], 666_666_667);
        assert_eq!(o[3000], 1_000_000_000_000);
        assert!(arrival_offsets_ns(LatencyMode::Constant, 3.0, 0, 0)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn poisson_follows_the_requested_rate() {
        // Fixed seeds, so these are deterministic; the bounds are what a correct generator
        // meets with high probability, derived from the sample size.
        for (qps, seed) in [(2.0, 7u64), (0.5, 1), (250.0, 42)] {
            let n = 20_000;
            let o = arrival_offsets_ns(LatencyMode::Poisson, qps, n + 1, seed).unwrap();
            assert_eq!(o[0], 0, "first request at the window start");
            assert!(o.windows(2).all(|w| w[0] <= w[1]), "non-decreasing");
            let gaps = gaps_s(&o);
            // Mean rate: the mean of n Exp(qps) gaps has relative std 1/sqrt(n); 4 sigma.
            let rate = 1.0 / mean(&gaps);
            let rel_bound = 4.0 / (n as f64).sqrt();
            assert!(
                (rate / qps - 1.0).abs() < rel_bound,
                "qps {qps} seed {seed}: achieved rate {rate} (bound ±{rel_bound})"
            );
            // CV of exponential gaps is 1; the sample CV has std ~ 1/sqrt(n); 4 sigma.
            let c = cv(&gaps);
            assert!(
                (c - 1.0).abs() < 4.0 / (n as f64).sqrt(),
                "qps {qps} seed {seed}: inter-arrival CV {c}"
            );
            // KS against Exp(qps) with the rate known in advance: 1% critical value of the
            // Kolmogorov distribution, 1.628 / sqrt(n) for large n.
            let d = ks_exponential(&gaps, qps);
            let d_crit = 1.628 / (n as f64).sqrt();
            assert!(d < d_crit, "qps {qps} seed {seed}: KS D {d} >= {d_crit}");
        }
    }

    #[test]
    fn ks_rejects_constant_gaps_as_exponential() {
        // The test above has power: evenly spaced arrivals fail it.
        let o = arrival_offsets_ns(LatencyMode::Constant, 2.0, 2001, 0).unwrap();
        let d = ks_exponential(&gaps_s(&o), 2.0);
        assert!(d > 1.628 / 2000f64.sqrt(), "{d}");
    }

    #[test]
    fn seeds_reproduce_and_differ() {
        let a = arrival_offsets_ns(LatencyMode::Poisson, 2.0, 50, 7).unwrap();
        assert_eq!(
            a,
            arrival_offsets_ns(LatencyMode::Poisson, 2.0, 50, 7).unwrap()
        );
        assert_ne!(
            a,
            arrival_offsets_ns(LatencyMode::Poisson, 2.0, 50, 8).unwrap()
        );
        // A prefix of a longer schedule is the shorter schedule.
        let long = arrival_offsets_ns(LatencyMode::Poisson, 2.0, 80, 7).unwrap();
        assert_eq!(&long[..50], &a[..]);
    }

    #[test]
    fn bad_rates_are_refused_with_the_field_named() {
        for qps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = arrival_offsets_ns(LatencyMode::Poisson, qps, 3, 0).unwrap_err();
            assert!(
                e.to_string().contains("latency_simulation.target_qps"),
                "{e}"
            );
        }
    }

    #[test]
    fn seed_precedence_and_config_schedule() {
        let mut cfg = ExperimentConfig::default_for("t", "m");
        assert_eq!(
            schedule_for(&cfg, 4).unwrap(),
            None,
            "disabled: all at once"
        );
        assert_eq!(describe(&cfg.latency_simulation, None), "all at once");
        cfg.latency_simulation.enabled = true;
        cfg.latency_simulation.target_qps = 2.0;
        assert_eq!(
            arrival_seed(&cfg.latency_simulation, None),
            DEFAULT_ARRIVAL_SEED
        );
        cfg.random_seed = Some(5);
        assert_eq!(arrival_seed(&cfg.latency_simulation, cfg.random_seed), 5);
        cfg.latency_simulation.seed = Some(7);
        assert_eq!(arrival_seed(&cfg.latency_simulation, cfg.random_seed), 7);
        assert_eq!(
            schedule_for(&cfg, 4).unwrap().unwrap(),
            arrival_offsets_ns(LatencyMode::Poisson, 2.0, 4, 7).unwrap()
        );
        assert_eq!(
            describe(&cfg.latency_simulation, cfg.random_seed),
            "poisson 2 req/s (seed 7)"
        );
        cfg.latency_simulation.mode = LatencyMode::Constant;
        assert_eq!(
            describe(&cfg.latency_simulation, cfg.random_seed),
            "constant 2 req/s"
        );
    }
}
