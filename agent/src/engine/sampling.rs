//! Choosing the next token from a row's logits, with Hugging Face `generate` semantics:
//! repetition penalty and EOS suppression (min_new_tokens) first, then greedy argmax, or
//! temperature → top-k → top-p → min-p and a draw from `SplitMix64`.

use lem_common::rng::SplitMix64;

/// The sampling part of `GenerationParams`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// None = greedy.
    pub temperature: Option<f64>,
    /// 0 = off.
    pub top_k: usize,
    /// 1.0 = off.
    pub top_p: f64,
    /// 0.0 = off.
    pub min_p: f64,
    /// 1.0 = off.
    pub repetition_penalty: f64,
}

/// One row's sampler: its own RNG stream, so rows do not perturb each other.
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: SamplingConfig,
    rng: SplitMix64,
}

impl Sampler {
    pub fn new(cfg: SamplingConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: SplitMix64::new(seed),
        }
    }

    /// Picks the next token. `context` is the row's prompt and output so far (for the
    /// repetition penalty); `banned` ids get -inf (EOS before min_new_tokens).
    /// `logits` is used as scratch.
    pub fn next(&mut self, logits: &mut [f32], context: &[u32], banned: &[u32]) -> u32 {
        apply_repetition_penalty(logits, context, self.cfg.repetition_penalty);
        for &id in banned {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        match self.cfg.temperature {
            None => argmax(logits),
            Some(t) => sample(logits, t, &self.cfg, &mut self.rng),
        }
    }
}

/// HF `RepetitionPenaltyLogitsProcessor`: each distinct token already in the sequence has
/// its logit divided by the penalty when positive, multiplied when negative.
pub fn apply_repetition_penalty(logits: &mut [f32], context: &[u32], penalty: f64) {
    if penalty == 1.0 || context.is_empty() {
        return;
    }
    let mut ids: Vec<u32> = context.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let p = penalty as f32;
    for id in ids {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if *l < 0.0 { *l * p } else { *l / p };
        }
    }
}

/// Index of the largest logit; the lowest id wins ties, so greedy is deterministic.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// Candidates ordered by weight descending, then id ascending (a total, stable order).
fn by_weight_desc(a: &(u32, f64), b: &(u32, f64)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Temperature, then top-k, top-p (nucleus over what top-k left) and min-p; draws one id.
pub fn sample(logits: &[f32], temperature: f64, cfg: &SamplingConfig, rng: &mut SplitMix64) -> u32 {
    let max = logits
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        // Everything is banned: there is no distribution; fall back to the first id.
        return argmax(logits);
    }
    // Unnormalised probabilities; the largest is exactly 1.
    let mut cand: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| (i as u32, ((v - max) as f64 / temperature).exp()))
        .filter(|(_, w)| *w > 0.0)
        .collect();

    if cfg.top_k > 0 && cfg.top_k < cand.len() {
        cand.select_nth_unstable_by(cfg.top_k - 1, by_weight_desc);
        cand.truncate(cfg.top_k);
    }
    if cfg.top_p < 1.0 {
        nucleus(&mut cand, cfg.top_p);
    }
    if cfg.min_p > 0.0 {
        let top = cand.iter().map(|c| c.1).fold(0.0, f64::max);
        let floor = cfg.min_p * top;
        cand.retain(|c| c.1 >= floor);
    }

    let total: f64 = cand.iter().map(|c| c.1).sum();
    let r = rng.next_f64() * total;
    let mut acc = 0.0;
    for &(id, w) in &cand {
        acc += w;
        if r < acc {
            return id;
        }
    }
    cand.last().map(|c| c.0).unwrap_or(0)
}

/// Keeps the smallest prefix of the descending order whose mass reaches `top_p` of the
/// total (the token that crosses the line stays, as in HF). Sorting 49k candidates per
/// token is avoidable: the prefix almost always lies among the few heavy ones, so those
/// are sorted first and the full sort only runs when they do not reach `top_p`.
fn nucleus(cand: &mut Vec<(u32, f64)>, top_p: f64) {
    let total: f64 = cand.iter().map(|c| c.1).sum();
    let target = top_p * total;
    let cutoff = total * 1e-4;
    let heavy = partition_in_place(cand, |c| c.1 >= cutoff);
    for attempt_full in [false, true] {
        let n = if attempt_full { cand.len() } else { heavy };
        cand[..n].sort_unstable_by(by_weight_desc);
        let mut acc = 0.0;
        for i in 0..n {
            acc += cand[i].1;
            if acc >= target {
                cand.truncate(i + 1);
                return;
            }
        }
    }
    // Rounding kept the sum just below target: keep everything.
}

/// Moves the elements satisfying `pred` to the front; returns how many there are.
fn partition_in_place<T>(v: &mut [T], pred: impl Fn(&T) -> bool) -> usize {
    let mut k = 0;
    for i in 0..v.len() {
        if pred(&v[i]) {
            v.swap(i, k);
            k += 1;
        }
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(t: f64) -> SamplingConfig {
        SamplingConfig {
            temperature: Some(t),
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
        }
    }

    fn histogram(logits: &[f32], c: &SamplingConfig, n: usize, seed: u64) -> Vec<usize> {
        let mut rng = SplitMix64::new(seed);
        let mut h = vec![0; logits.len()];
        for _ in 0..n {
            h[sample(logits, c.temperature.unwrap(), c, &mut rng) as usize] += 1;
        }
        h
    }

    #[test]
    fn argmax_takes_lowest_id_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -5.0]), 1);
    }

    #[test]
    fn repetition_penalty_follows_hf_sign_rule() {
        let mut l = vec![2.0, -2.0, 1.0, 4.0];
        // Token 0 appears twice: penalised once.
        apply_repetition_penalty(&mut l, &[0, 1, 0], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0, 4.0]);
    }

    #[test]
    fn greedy_sampler_respects_penalty_and_bans() {
        let mut s = Sampler::new(
            SamplingConfig {
                temperature: None,
                repetition_penalty: 4.0,
                ..cfg(1.0)
            },
            0,
        );
        // 3 wins alone; penalised (4.0 -> 1.0) 0 wins; with 0 banned, 2 wins.
        assert_eq!(s.next(&mut [2.0, 0.0, 1.5, 4.0], &[], &[]), 3);
        assert_eq!(s.next(&mut [2.0, 0.0, 1.5, 4.0], &[3], &[]), 0);
        assert_eq!(s.next(&mut [2.0, 0.0, 1.5, 4.0], &[3], &[0]), 2);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let c = SamplingConfig {
            top_k: 1,
            ..cfg(5.0)
        };
        let h = histogram(&[0.1, 0.3, 0.2], &c, 200, 1);
        assert_eq!(h, vec![0, 200, 0]);
    }

    #[test]
    fn top_k_limits_support() {
        let c = SamplingConfig {
            top_k: 2,
            ..cfg(1.0)
        };
        let h = histogram(&[1.0, 0.0, 0.9, 0.8], &c, 2000, 2);
        assert_eq!(h[1] + h[3], 0, "{h:?}");
        assert!(h[0] > 0 && h[2] > 0);
    }

    #[test]
    fn top_p_keeps_the_crossing_token() {
        // probs ≈ 0.5, 0.3, 0.2 → top_p 0.6 keeps {0, 1}; 0.5 keeps {0} only.
        let l = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let h = histogram(
            &l,
            &SamplingConfig {
                top_p: 0.6,
                ..cfg(1.0)
            },
            3000,
            3,
        );
        assert_eq!(h[2], 0);
        assert!(h[1] > 900 && h[1] < 1400, "{h:?}"); // 0.3/0.8 = 37.5%
        let h = histogram(
            &l,
            &SamplingConfig {
                top_p: 0.5,
                ..cfg(1.0)
            },
            500,
            3,
        );
        assert_eq!(h, vec![500, 0, 0]);
    }

    #[test]
    fn top_p_falls_back_to_full_sort_over_a_flat_tail() {
        // A flat 30k-token distribution: no token holds 1e-4 of the mass, so the quick
        // path finds nothing and the full sort must run; the tail must stay reachable.
        let mut l = vec![0.0f32; 30_000];
        l[0] = 1.0;
        let c = SamplingConfig {
            top_p: 0.99,
            ..cfg(1.0)
        };
        let mut rng = SplitMix64::new(9);
        let mut distinct = std::collections::BTreeSet::new();
        for _ in 0..200 {
            distinct.insert(sample(&l, 1.0, &c, &mut rng));
        }
        assert!(distinct.len() > 100, "tail not sampled: {}", distinct.len());
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        // probs 0.6, 0.3, 0.1: min_p 0.2 → floor 0.12 drops token 2.
        let l = [0.6f32.ln(), 0.3f32.ln(), 0.1f32.ln()];
        let h = histogram(
            &l,
            &SamplingConfig {
                min_p: 0.2,
                ..cfg(1.0)
            },
            2000,
            4,
        );
        assert_eq!(h[2], 0);
        assert!(h[1] > 500, "{h:?}");
    }

    #[test]
    fn low_temperature_sharpens_and_seed_reproduces() {
        let l = [1.0f32, 0.0, 0.5];
        let cold = histogram(&l, &cfg(0.05), 1000, 5);
        assert!(cold[0] > 990, "{cold:?}");
        let a = histogram(&l, &cfg(1.0), 300, 6);
        let b = histogram(&l, &cfg(1.0), 300, 6);
        assert_eq!(a, b);
        // Roughly softmax: e^1 : e^0 : e^0.5 = 0.51 : 0.19 : 0.31.
        let warm = histogram(&l, &cfg(1.0), 6000, 7);
        assert!((2700..3400).contains(&warm[0]), "{warm:?}");
        assert!((900..1400).contains(&warm[1]), "{warm:?}");
    }

    #[test]
    fn banned_everything_does_not_panic() {
        let mut s = Sampler::new(cfg(1.0), 0);
        let id = s.next(&mut [1.0, 2.0], &[], &[0, 1]);
        assert!(id < 2);
    }
}
