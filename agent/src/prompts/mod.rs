//! Prompt sources: synthetic, file, Hugging Face datasets (through the HF cache).
//!
//! [`load_prompts`] reads a source and then samples, in this order:
//! 1. read every prompt of the source in its own order (blank prompts are skipped);
//! 2. if `shuffle`, shuffle them with `SplitMix64(seed)` (Fisher–Yates);
//! 3. keep the first `sample_size`;
//! 4. keep the first `count` (the CLI's `-n`).
//!
//! Without `shuffle` only the prompts that steps 3–4 keep are read, so a large dataset costs
//! no more than the prompts used. Asking for more prompts than a source has is not an error:
//! what there is gets used and [`LoadedPrompts::warnings`] says so. A source with no prompt
//! at all is an error.

mod files;
mod hf;
mod synthetic;

use std::path::PathBuf;

use lem_common::rng::SplitMix64;

/// Where prompts come from (the config's `prompt_source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptSpec {
    /// Generated English-like text of exactly `input_tokens` tokens where the tokenizer
    /// allows it (else the closest length below).
    Synthetic { input_tokens: u32 },
    /// `.txt` (one prompt per line), `.jsonl`, `.json`, `.csv` or `.parquet`.
    File {
        path: PathBuf,
        column: Option<String>,
    },
    /// An alias (`alpaca`, `gsm8k`, `mmlu`, `sharegpt`) or a dataset repo id. Fields left
    /// `None` take the alias's value, else split `train`, no subset, auto-detected column.
    HuggingFace {
        dataset: String,
        split: Option<String>,
        subset: Option<String>,
        column: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sampling {
    pub sample_size: Option<u32>,
    pub shuffle: bool,
    pub seed: u64,
}

impl Default for Sampling {
    /// The seed tool's defaults: no sampling, no shuffle, seed 42.
    fn default() -> Self {
        Self {
            sample_size: None,
            shuffle: false,
            seed: 42,
        }
    }
}

pub struct PromptContext<'a> {
    /// The hub cache itself (holding `datasets--*`), as `hub::ResolveOptions::hf_cache_dir`.
    pub hf_cache_dir: PathBuf,
    pub offline: bool,
    /// Token and endpoint for dataset downloads.
    pub hub_access: crate::hub::HubAccess,
    /// Token count of a text under the model's tokenizer (for synthetic prompts).
    pub count_tokens: &'a dyn Fn(&str) -> usize,
}

/// The prompts, what they were read from, and anything the caller should tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedPrompts {
    pub prompts: Vec<String>,
    /// E.g. `huggingface tatsu-lab/alpaca split train column instruction (hf-cache: 1 file)`.
    pub source: String,
    pub warnings: Vec<String>,
}

/// Columns tried, in order, when none is given (the seed tool's list, then chat layouts).
pub const AUTO_COLUMNS: &[&str] = &[
    "text",
    "prompt",
    "question",
    "instruction",
    "input",
    "content",
    "conversations",
    "messages",
];

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("synthetic prompts: {0}")]
    Synthetic(String),
    /// The file's content is not what the config's `sha256` names.
    #[error(transparent)]
    Hash(#[from] lem_common::shipped_prompt::ShippedPromptError),
    #[error("prompt file {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "prompt file {}: unsupported type (expected .txt, .jsonl, .json, .csv or .parquet)",
        .path.display()
    )]
    UnsupportedFormat { path: PathBuf },
    /// One record is malformed; `at` is `line 3`, `row 7` or `element 2`.
    #[error("prompt file {}, {at}: {message}", .path.display())]
    Record {
        path: PathBuf,
        at: String,
        message: String,
    },
    #[error(
        "prompt file {}: {wanted}; it has: {}",
        .path.display(),
        if .available.is_empty() { "no columns".to_string() } else { .available.join(", ") }
    )]
    NoColumn {
        path: PathBuf,
        /// `no column "x"` or `none of the columns text, prompt, ...`.
        wanted: String,
        available: Vec<String>,
    },
    #[error("parquet file {}: {source}", .path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("dataset `{dataset}`: {message}")]
    Dataset { dataset: String, message: String },
    #[error(
        "dataset `{dataset}` not found{offline}. Looked in:\n{looked}\n{hint}",
        offline = if *.offline { " (offline)" } else { "" },
        looked = bullet_list(.looked),
        hint = if *.offline {
            "Unset HF_HUB_OFFLINE / LEM_OFFLINE where the Hugging Face hub is reachable, or \
             copy the dataset's `datasets--*` folder into the Hugging Face cache (HF_HUB_CACHE), \
             or use a `file` prompt source."
        } else {
            "Check the name, split and subset (`lem datasets` lists the built-in aliases)."
        }
    )]
    DatasetNotFound {
        dataset: String,
        offline: bool,
        looked: Vec<String>,
    },
    #[error(
        "dataset `{dataset}`: downloading {what} from the Hugging Face hub failed: {source}\n\
         Already looked in:\n{looked}\nOr use a `file` prompt source, or set HF_HUB_OFFLINE=1 \
         to use the cache only.",
        looked = bullet_list(.looked)
    )]
    Download {
        dataset: String,
        what: String,
        looked: Vec<String>,
        #[source]
        source: Box<hf_hub::api::sync::ApiError>,
    },
    #[error("{source_desc}: no prompts (every record was empty)")]
    Empty { source_desc: String },
}

fn bullet_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Collects prompts until an optional limit; skips blank ones.
pub(crate) struct Collector {
    limit: Option<usize>,
    pub(crate) prompts: Vec<String>,
}

impl Collector {
    pub(crate) fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            prompts: Vec::new(),
        }
    }

    pub(crate) fn full(&self) -> bool {
        self.limit.is_some_and(|l| self.prompts.len() >= l)
    }

    pub(crate) fn push(&mut self, text: String) {
        if !self.full() && !text.trim().is_empty() {
            self.prompts.push(text);
        }
    }
}

/// Loads the prompts of `spec` and samples them (see the module docs for the order).
/// `count` is the number of prompts wanted; `None` keeps every sampled prompt (synthetic:
/// `sample_size`, else 10).
pub fn load_prompts(
    spec: &PromptSpec,
    sampling: &Sampling,
    count: Option<u32>,
    ctx: &PromptContext<'_>,
) -> Result<LoadedPrompts, PromptError> {
    let (prompts, source, mut warnings) = match spec {
        PromptSpec::Synthetic { input_tokens } => {
            let n = match (count, sampling.sample_size) {
                (Some(c), Some(s)) => c.min(s),
                (Some(n), None) | (None, Some(n)) => n,
                (None, None) => 10,
            };
            let (prompts, warnings) =
                synthetic::generate(*input_tokens, n, sampling.seed, ctx.count_tokens)?;
            let source = format!("synthetic ({input_tokens} tokens, seed {})", sampling.seed);
            return Ok(LoadedPrompts {
                prompts,
                source,
                warnings,
            });
        }
        PromptSpec::File { path, column } => {
            let mut out = Collector::new(read_limit(sampling, count));
            let used = files::read_file(path, column.as_deref(), &mut out)?;
            let source = match used {
                Some(c) => format!("file {} (column {c})", path.display()),
                None => format!("file {}", path.display()),
            };
            (out, source, Vec::new())
        }
        PromptSpec::HuggingFace {
            dataset,
            split,
            subset,
            column,
        } => {
            let mut out = Collector::new(read_limit(sampling, count));
            let req = hf::DatasetRequest::new(
                dataset,
                split.as_deref(),
                subset.as_deref(),
                column.as_deref(),
            );
            let (source, warnings) = hf::read_dataset(&req, ctx, &mut out)?;
            (out, source, warnings)
        }
    };
    let exhausted = !prompts.full();
    if prompts.prompts.is_empty() {
        return Err(PromptError::Empty {
            source_desc: source,
        });
    }
    let prompts = sample(prompts.prompts, sampling, count, exhausted, &mut warnings);
    Ok(LoadedPrompts {
        prompts,
        source,
        warnings,
    })
}

/// Without shuffling, reading can stop after the prompts that will be kept.
fn read_limit(sampling: &Sampling, count: Option<u32>) -> Option<usize> {
    if sampling.shuffle {
        return None;
    }
    [sampling.sample_size, count]
        .into_iter()
        .flatten()
        .min()
        .map(|n| n as usize)
}

/// Steps 2–4 of the module docs. `exhausted`: every prompt of the source was read, so a
/// shortfall is real (not a read limit) and is reported.
fn sample(
    mut prompts: Vec<String>,
    sampling: &Sampling,
    count: Option<u32>,
    exhausted: bool,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    if sampling.shuffle {
        SplitMix64::new(sampling.seed).shuffle(&mut prompts);
    }
    if let Some(n) = sampling.sample_size {
        if exhausted && prompts.len() < n as usize {
            warnings.push(format!(
                "sample_size is {n} but the source has only {} prompts; using all of them",
                prompts.len()
            ));
        }
        prompts.truncate(n as usize);
    }
    if let Some(n) = count {
        if exhausted && prompts.len() < n as usize {
            warnings.push(format!(
                "{n} prompts asked for but only {} available; using {}",
                prompts.len(),
                prompts.len()
            ));
        }
        prompts.truncate(n as usize);
    }
    prompts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i}")).collect()
    }

    fn sampling(sample_size: Option<u32>, shuffle: bool, seed: u64) -> Sampling {
        Sampling {
            sample_size,
            shuffle,
            seed,
        }
    }

    #[test]
    fn sampling_order_is_shuffle_then_sample_size_then_count() {
        let mut w = Vec::new();
        let s = sampling(Some(5), true, 7);
        let a = sample(words(20), &s, Some(3), true, &mut w);
        let b = sample(words(20), &s, Some(3), true, &mut w);
        assert_eq!(a, b, "same seed, same prompts");
        // count cuts the sample_size sample: a prefix of it.
        let five = sample(words(20), &s, None, true, &mut w);
        assert_eq!(five.len(), 5);
        assert_eq!(&five[..3], &a[..]);
        let other = sample(words(20), &sampling(Some(5), true, 8), None, true, &mut w);
        assert_ne!(five, other, "another seed, another order");
        assert!(w.is_empty());
        let plain = sample(
            words(20),
            &sampling(Some(5), false, 7),
            Some(3),
            true,
            &mut w,
        );
        assert_eq!(plain, words(3));
    }

    #[test]
    fn shortfall_warns_only_when_the_source_was_exhausted() {
        let mut w = Vec::new();
        let got = sample(
            words(4),
            &sampling(Some(6), false, 1),
            Some(10),
            true,
            &mut w,
        );
        assert_eq!(got.len(), 4);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("sample_size is 6"), "{w:?}");
        assert!(w[1].contains("10 prompts asked for but only 4"), "{w:?}");
        let mut w = Vec::new();
        sample(words(4), &sampling(None, false, 1), Some(4), false, &mut w);
        assert!(w.is_empty());
    }

    #[test]
    fn read_limit_only_without_shuffle() {
        assert_eq!(read_limit(&sampling(Some(5), false, 0), Some(3)), Some(3));
        assert_eq!(read_limit(&sampling(Some(2), false, 0), None), Some(2));
        assert_eq!(read_limit(&sampling(None, false, 0), None), None);
        assert_eq!(read_limit(&sampling(Some(5), true, 0), Some(3)), None);
    }

    #[test]
    fn load_prompts_from_a_file_with_sampling_and_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.txt");
        std::fs::write(&path, "one\n\ntwo\n  \nthree\n").unwrap();
        let count = |s: &str| s.split_whitespace().count();
        let ctx = PromptContext {
            hf_cache_dir: dir.path().join("hf"),
            offline: true,
            hub_access: Default::default(),
            count_tokens: &count,
        };
        let spec = PromptSpec::File { path, column: None };
        let got = load_prompts(&spec, &Sampling::default(), Some(5), &ctx).unwrap();
        assert_eq!(got.prompts, ["one", "two", "three"]);
        assert_eq!(got.warnings.len(), 1, "{:?}", got.warnings);
        let got = load_prompts(&spec, &Sampling::default(), Some(2), &ctx).unwrap();
        assert_eq!(got.prompts, ["one", "two"]);
        assert!(got.warnings.is_empty());

        let empty = dir.path().join("e.txt");
        std::fs::write(&empty, "\n \n").unwrap();
        let spec = PromptSpec::File {
            path: empty,
            column: None,
        };
        let e = load_prompts(&spec, &Sampling::default(), None, &ctx).unwrap_err();
        assert!(e.to_string().contains("e.txt: no prompts"), "{e}");
    }

    #[test]
    fn synthetic_defaults_to_ten_prompts_and_honours_count() {
        let count = |s: &str| s.split_whitespace().count();
        let ctx = PromptContext {
            hf_cache_dir: PathBuf::from("/nonexistent"),
            offline: true,
            hub_access: Default::default(),
            count_tokens: &count,
        };
        let spec = PromptSpec::Synthetic { input_tokens: 12 };
        let got = load_prompts(&spec, &Sampling::default(), None, &ctx).unwrap();
        assert_eq!(got.prompts.len(), 10);
        assert!(got.prompts.iter().all(|p| count(p) == 12));
        let got = load_prompts(&spec, &Sampling::default(), Some(3), &ctx).unwrap();
        assert_eq!(got.prompts.len(), 3);
    }
}
