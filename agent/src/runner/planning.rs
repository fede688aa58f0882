//! Planning a job's window: how prompts group into batches and what each cycle samples
//! with. Pure functions of the config.

use crate::engine::GenerationParams;
use lem_common::config::{BatchingStrategy, ExperimentConfig};

pub(crate) fn generation_params(cfg: &ExperimentConfig, cycle: u32) -> GenerationParams {
    let d = &cfg.decoder_config;
    GenerationParams {
        max_new_tokens: cfg.max_output_tokens,
        min_new_tokens: cfg.min_output_tokens,
        temperature: d.temperature,
        do_sample: d.do_sample && d.temperature > 0.0,
        top_p: d.top_p,
        top_k: d.top_k,
        min_p: d.min_p,
        repetition_penalty: d.repetition_penalty,
        // Each cycle samples differently but reproducibly.
        seed: cfg
            .random_seed
            .unwrap_or(0)
            .wrapping_add(cycle as u64 * 1_000_003),
    }
}

/// Groups prompt indices into batches by the config's strategy.
pub fn plan_batches(cfg: &ExperimentConfig, prompts: &[Vec<u32>]) -> Vec<Vec<usize>> {
    let b = &cfg.batching_options;
    let batch_size = b.batch_size.max(1) as usize;
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    let sorted = matches!(
        b.strategy,
        BatchingStrategy::SortedStatic | BatchingStrategy::SortedDynamic
    );
    if sorted {
        order.sort_by_key(|&i| (prompts[i].len(), i));
    }
    let dynamic = matches!(
        b.strategy,
        BatchingStrategy::Dynamic | BatchingStrategy::SortedDynamic
    );
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_tokens = 0usize;
    for i in order {
        let len = prompts[i].len();
        let over_tokens = dynamic
            && b.max_tokens_per_batch
                .is_some_and(|max| !current.is_empty() && current_tokens + len > max as usize);
        if current.len() == batch_size || over_tokens {
            batches.push(std::mem::take(&mut current));
            current_tokens = 0;
        }
        current.push(i);
        current_tokens += len;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(
        batch_size: u32,
        strategy: BatchingStrategy,
        max_tokens: Option<u32>,
    ) -> ExperimentConfig {
        let mut c = ExperimentConfig::default_for("t", "m");
        c.batching_options.batch_size = batch_size;
        c.batching_options.strategy = strategy;
        c.batching_options.max_tokens_per_batch = max_tokens;
        c
    }

    /// Prompts of lengths 5, 1, 4, 2, 3 (index = position).
    fn prompts() -> Vec<Vec<u32>> {
        [5usize, 1, 4, 2, 3].iter().map(|&n| vec![7; n]).collect()
    }

    #[test]
    fn static_keeps_order_and_fills_batches() {
        let b = plan_batches(&cfg(2, BatchingStrategy::Static, None), &prompts());
        assert_eq!(b, vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn sorted_static_groups_similar_lengths() {
        let b = plan_batches(&cfg(2, BatchingStrategy::SortedStatic, None), &prompts());
        assert_eq!(b, vec![vec![1, 3], vec![4, 2], vec![0]]);
    }

    #[test]
    fn dynamic_respects_the_token_budget_and_batch_size() {
        // Budget 6, in order: 5+1 | 4+2 | 3.
        let b = plan_batches(&cfg(4, BatchingStrategy::Dynamic, Some(6)), &prompts());
        assert_eq!(b, vec![vec![0, 1], vec![2, 3], vec![4]]);
        let b = plan_batches(
            &cfg(4, BatchingStrategy::SortedDynamic, Some(6)),
            &prompts(),
        );
        // Sorted 1,2,3 (=6) | 4 | 5.
        assert_eq!(b, vec![vec![1, 3, 4], vec![2], vec![0]]);
        // A prompt over the budget still runs, alone.
        let b = plan_batches(&cfg(4, BatchingStrategy::Dynamic, Some(2)), &prompts());
        assert!(b.iter().all(|batch| batch.len() == 1
            || batch.iter().map(|&i| prompts()[i].len()).sum::<usize>() <= 2));
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 5);
    }

    #[test]
    fn every_prompt_runs_exactly_once() {
        for strategy in [
            BatchingStrategy::Static,
            BatchingStrategy::SortedStatic,
            BatchingStrategy::Dynamic,
            BatchingStrategy::SortedDynamic,
        ] {
            let mut all: Vec<usize> = plan_batches(&cfg(3, strategy, Some(7)), &prompts())
                .into_iter()
                .flatten()
                .collect();
            all.sort();
            assert_eq!(all, vec![0, 1, 2, 3, 4], "{strategy:?}");
        }
    }
}
