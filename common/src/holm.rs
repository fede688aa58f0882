//! Holm's step-down correction for testing several hypotheses at once (Holm 1979):
//! controls the family-wise error rate without assuming the tests are independent.
//! Sort the m p-values ascending; the i-th smallest (1-based) is adjusted to
//! max over j ≤ i of min(1, (m − j + 1) · p(j)), so adjusted values keep the raw order.
//! A hypothesis is rejected at level α when its adjusted p-value is below α.

/// Holm-adjusted p-values, in the order given. Non-finite input stays as it is and is
/// left out of the family (it is no test).
pub fn holm_adjust(p_values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p_values.len())
        .filter(|&i| p_values[i].is_finite())
        .collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let m = order.len();
    let mut adjusted = p_values.to_vec();
    let mut running_max = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        let scaled = ((m - rank) as f64 * p_values[i]).min(1.0);
        running_max = running_max.max(scaled);
        adjusted[i] = running_max;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjusts_by_rank_and_keeps_the_order_monotone() {
        // By hand: sorted 0.01, 0.02, 0.03, 0.04 with m = 4 → 0.04, 0.06, 0.06 (max of
        // 0.06 and 2·0.03), 0.06 (max of 0.06 and 0.04).
        let adj = holm_adjust(&[0.03, 0.01, 0.04, 0.02]);
        let want = [0.06, 0.04, 0.06, 0.06];
        for (a, w) in adj.iter().zip(want) {
            assert!((a - w).abs() < 1e-12, "{adj:?}");
        }
    }

    #[test]
    fn caps_at_one_and_passes_non_finite_through() {
        let adj = holm_adjust(&[0.5, f64::NAN, 0.9]);
        // m = 2 (the NaN is no test): 2·0.5 = 1.0, then max(1.0, 0.9) = 1.0.
        assert_eq!(adj[0], 1.0);
        assert!(adj[1].is_nan());
        assert_eq!(adj[2], 1.0);
        assert_eq!(holm_adjust(&[0.2]), vec![0.2], "one test: unchanged");
    }
}
