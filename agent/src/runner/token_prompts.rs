//! The job's prompts as the window runs them: read from the config's source (synthetic,
//! a file, a Hugging Face dataset), tokenized and truncated to `max_input_tokens`.

use super::{RunContext, RunError};
use crate::prompts::{self, PromptContext, PromptSpec, Sampling};
use lem_common::config::{ExperimentConfig, PromptSource};

/// One prompt as the window runs it.
pub(crate) struct TokenPrompt {
    /// The prompt's text as the source gave it.
    pub text: String,
    /// Its token ids, truncated to `max_input_tokens`.
    pub ids: Vec<u32>,
    pub truncated: bool,
}

/// The config's prompts, tokenized and truncated to `max_input_tokens`; empty ones are
/// dropped. Notes (truncation, source warnings) go to `warnings`.
pub(crate) fn load_token_prompts(
    cfg: &ExperimentConfig,
    ctx: &RunContext,
    tokenizer: &crate::engine::LemTokenizer,
    warnings: &mut Vec<String>,
) -> Result<Vec<TokenPrompt>, RunError> {
    let (spec, sampling) = prompt_spec(cfg);
    let count_tokens = |s: &str| tokenizer.count(s);
    let pctx = PromptContext {
        hf_cache_dir: ctx.resolve.hf_cache_dir.clone(),
        offline: ctx.resolve.offline,
        hub_access: ctx.resolve.access.clone(),
        count_tokens: &count_tokens,
    };
    let loaded = prompts::load_prompts(&spec, &sampling, cfg.num_input_prompts, &pctx)?;
    warnings.extend(loaded.warnings);
    let mut token_prompts = Vec::with_capacity(loaded.prompts.len());
    let mut truncated_count = 0;
    for text in loaded.prompts {
        let mut ids = tokenizer.encode(&text).map_err(|source| RunError::Engine {
            model: cfg.model_name.clone(),
            source,
        })?;
        let truncated = ids.len() > cfg.max_input_tokens as usize;
        if truncated {
            ids.truncate(cfg.max_input_tokens as usize);
            truncated_count += 1;
        }
        if ids.is_empty() {
            continue;
        }
        token_prompts.push(TokenPrompt {
            text,
            ids,
            truncated,
        });
    }
    if truncated_count > 0 {
        warnings.push(format!(
            "{truncated_count} prompt(s) truncated to max_input_tokens = {}",
            cfg.max_input_tokens
        ));
    }
    if token_prompts.is_empty() {
        return Err(RunError::Unsupported("no non-empty prompts to run".into()));
    }
    Ok(token_prompts)
}

fn prompt_spec(cfg: &ExperimentConfig) -> (PromptSpec, Sampling) {
    match &cfg.prompt_source {
        None => (
            PromptSpec::Synthetic {
                input_tokens: cfg.max_input_tokens,
            },
            Sampling {
                sample_size: None,
                shuffle: false,
                seed: cfg.random_seed.unwrap_or(42),
            },
        ),
        Some(src) => {
            let sampling = Sampling {
                sample_size: src.sample_size(),
                shuffle: src.shuffle(),
                seed: src.seed(),
            };
            let spec = match src {
                PromptSource::Synthetic { input_tokens, .. } => PromptSpec::Synthetic {
                    input_tokens: input_tokens.unwrap_or(cfg.max_input_tokens),
                },
                PromptSource::File { path, column, .. } => PromptSpec::File {
                    path: path.into(),
                    column: column.clone(),
                },
                PromptSource::Huggingface {
                    dataset,
                    split,
                    subset,
                    column,
                    ..
                } => PromptSpec::HuggingFace {
                    dataset: dataset.clone(),
                    split: split.clone(),
                    subset: subset.clone(),
                    column: column.clone(),
                },
            };
            (spec, sampling)
        }
    }
}
