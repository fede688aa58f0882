//! Warmup until steady state (`warmup_until_stable`): after the fixed warmup, rounds of
//! the warmup prompts run until two consecutive rounds' output throughput — and mean
//! metered power, where both rounds have it — differ by at most the tolerance, or the
//! round bound is reached. The rounds and their figures go into the result.

use lem_common::config::SteadyWarmupConfig;
use lem_common::domain::WarmupRecord;

/// What one warmup round measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Round {
    pub output_tokens: u64,
    pub wall_ns: u64,
    /// Mean power over the round (W), `None` without a meter that reads.
    pub power_w: Option<f64>,
}

impl Round {
    fn tokens_per_s(&self) -> f64 {
        if self.wall_ns == 0 {
            0.0
        } else {
            self.output_tokens as f64 * 1e9 / self.wall_ns as f64
        }
    }
}

/// `|b − a| / |a| ≤ tolerance` (a zero `a` only matches a zero `b`).
fn close(a: f64, b: f64, tolerance: f64) -> bool {
    if a == 0.0 {
        return b == 0.0;
    }
    ((b - a) / a).abs() <= tolerance
}

/// Runs `round` until stable or `cfg.max_rounds` rounds ran; an error ends warmup with it.
pub fn until_stable<E>(
    cfg: &SteadyWarmupConfig,
    mut round: impl FnMut() -> Result<Round, E>,
) -> Result<WarmupRecord, E> {
    let mut rounds: Vec<Round> = Vec::new();
    let mut stable = false;
    while (rounds.len() as u32) < cfg.max_rounds.max(1) {
        rounds.push(round()?);
        if let [.., a, b] = rounds.as_slice() {
            let throughput = close(a.tokens_per_s(), b.tokens_per_s(), cfg.tolerance);
            let power = match (a.power_w, b.power_w) {
                (Some(pa), Some(pb)) => close(pa, pb, cfg.tolerance),
                _ => true,
            };
            if throughput && power {
                stable = true;
                break;
            }
        }
    }
    Ok(WarmupRecord {
        rule: format!(
            "until two consecutive rounds' output tokens/s and metered power differ by ≤ {:.1}%, at most {} rounds",
            cfg.tolerance * 100.0,
            cfg.max_rounds.max(1)
        ),
        rounds: rounds.len() as u32,
        stable,
        output_tokens_per_s: rounds.iter().map(Round::tokens_per_s).collect(),
        power_w: rounds.iter().map(|r| r.power_w).collect(),
        wall_ns: rounds.iter().map(|r| r.wall_ns).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_rounds: u32, tolerance: f64) -> SteadyWarmupConfig {
        SteadyWarmupConfig {
            enabled: true,
            max_rounds,
            tolerance,
        }
    }

    /// Rounds from a script of (tokens/s, watts).
    fn script(
        rounds: &[(f64, Option<f64>)],
    ) -> impl FnMut() -> Result<Round, std::convert::Infallible> + '_ {
        let mut k = 0;
        move || {
            let (tps, power_w) = rounds[k];
            k += 1;
            // 1 s rounds: tokens = tokens/s.
            Ok(Round {
                output_tokens: tps as u64,
                wall_ns: 1_000_000_000,
                power_w,
            })
        }
    }

    #[test]
    fn stops_when_throughput_and_power_settle() {
        // Throughput settles at round 3 (100 → 104: 4%), power only at round 4.
        let rounds = [
            (60.0, Some(300.0)),
            (90.0, Some(280.0)),
            (100.0, Some(240.0)),
            (104.0, Some(236.0)),
            (104.0, Some(236.0)),
        ];
        let r = until_stable(&cfg(10, 0.05), script(&rounds)).unwrap();
        // 240 → 236 W is 1.7%, 100 → 104 tok/s 4%: stable after round 4.
        assert_eq!(r.rounds, 4);
        assert!(r.stable);
        assert_eq!(r.output_tokens_per_s, vec![60.0, 90.0, 100.0, 104.0]);
        assert_eq!(r.power_w[3], Some(236.0));
        assert_eq!(r.wall_ns, 4_000_000_000);
    }

    #[test]
    fn without_power_throughput_alone_decides() {
        let rounds = [(50.0, None), (80.0, None), (81.0, None)];
        let r = until_stable(&cfg(10, 0.05), script(&rounds)).unwrap();
        assert_eq!(r.rounds, 3);
        assert!(r.stable);
    }

    #[test]
    fn the_bound_ends_an_unsettled_warmup_and_says_so() {
        let rounds = [(10.0, None), (20.0, None), (40.0, None)];
        let r = until_stable(&cfg(3, 0.05), script(&rounds)).unwrap();
        assert_eq!(r.rounds, 3);
        assert!(!r.stable);
        assert!(r.rule.contains("at most 3 rounds"), "{}", r.rule);
    }
}
