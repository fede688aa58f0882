//! Batched generation: one prefill over the left-padded prompts, then one decode step per
//! token for all rows, with per-row timing (TTFT, inter-token latencies, end-to-end).

use super::error::EngineError;
use super::model::KvCache;
use super::sampling::{Sampler, SamplingConfig};
use super::Engine;
use candle_core::Tensor;
use lem_common::domain::StopReason;
use std::time::Instant;

/// Decoder settings for one `generate` call (Hugging Face `generate` meanings).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub max_new_tokens: u32,
    /// EOS is suppressed until a row has this many tokens.
    pub min_new_tokens: u32,
    /// 0 = greedy.
    pub temperature: f64,
    /// false = greedy whatever the temperature.
    pub do_sample: bool,
    /// 1.0 = off.
    pub top_p: f64,
    /// 0 = off.
    pub top_k: u32,
    /// 0.0 = off.
    pub min_p: f64,
    /// 1.0 = off.
    pub repetition_penalty: f64,
    /// Row `r` samples from `SplitMix64(seed + r)`.
    pub seed: u64,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            min_new_tokens: 0,
            temperature: 0.0,
            do_sample: false,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl GenerationParams {
    fn sampling_config(&self) -> Result<SamplingConfig, EngineError> {
        let bad = |m: String| Err(EngineError::InvalidParams(m));
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1".into());
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("temperature {} must be >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p {} must be in [0, 1]", self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!(
                "repetition_penalty {} must be > 0",
                self.repetition_penalty
            ));
        }
        let greedy = !self.do_sample || self.temperature == 0.0;
        Ok(SamplingConfig {
            temperature: (!greedy).then_some(self.temperature),
            top_k: self.top_k as usize,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
        })
    }
}

/// Hooks into a running `generate` (progress bars, Ctrl+C).
pub trait GenerationObserver {
    /// The prompts of a batch of `batch` rows went through the model.
    fn on_prefill_done(&mut self, _batch: usize) {}
    /// Row `row` produced `token` (not called for rows that already stopped).
    fn on_token(&mut self, _row: usize, _token: u32) {}
    /// Polled before every forward pass; true makes `generate` return
    /// `EngineError::Interrupted`.
    fn should_stop(&self) -> bool {
        false
    }
}

/// An observer that does nothing.
pub struct NoopObserver;
impl GenerationObserver for NoopObserver {}

/// One row of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedSequence {
    /// Prompt tokens, padding not counted.
    pub input_tokens: u32,
    /// Generated ids, the stopping EOS included (it was computed and timed).
    pub output_token_ids: Vec<u32>,
    /// Text of the output, special tokens left out.
    pub text: String,
    /// From the start of the `generate` call to this row's first token.
    pub ttft_ns: u64,
    /// Gaps between consecutive tokens of this row (`output_token_ids.len() - 1` of them).
    pub itl_ns: Vec<u64>,
    /// From the start of the `generate` call to this row's last token.
    pub e2e_ns: u64,
    pub stop_reason: StopReason,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutput {
    pub sequences: Vec<GeneratedSequence>,
    /// Time in the prefill forward pass (logits copied out included).
    pub prefill_ns: u64,
    /// Sum of the decode forward passes.
    pub decode_ns: u64,
    /// The whole `generate` call.
    pub wall_ns: u64,
}

/// Cache capacity rounds up to this many columns so runs of slightly different lengths
/// reuse one allocation.
const CACHE_GRANULE: usize = 256;

struct Row {
    sampler: Sampler,
    /// Prompt then output: the repetition penalty's context.
    context: Vec<u32>,
    prompt_len: usize,
    times_ns: Vec<u64>,
    stop: Option<StopReason>,
}

impl Engine {
    /// Generates for every prompt in one batch. Prompts may differ in length: they are
    /// left-padded, each row keeps its own rotary positions and attends only over its
    /// own columns, so a row gives the same greedy tokens as the prompt alone.
    pub fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &GenerationParams,
        observer: &mut dyn GenerationObserver,
    ) -> Result<BatchOutput, EngineError> {
        let t0 = Instant::now();
        let since = |t0: Instant| t0.elapsed().as_nanos() as u64;
        let sampling = params.sampling_config()?;
        if prompts.is_empty() {
            return Err(EngineError::InvalidParams(
                "no prompts to generate for".into(),
            ));
        }
        let vocab = self.model.config().vocab_size;
        for (row, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(EngineError::BadPrompt {
                    row,
                    reason: "empty prompt (no tokens)".into(),
                });
            }
            if let Some(bad) = p.iter().find(|&&t| t as usize >= vocab) {
                return Err(EngineError::BadPrompt {
                    row,
                    reason: format!("token id {bad} is outside the vocabulary ({vocab})"),
                });
            }
        }
        let b = prompts.len();
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let max_new = params.max_new_tokens as usize;
        // The last sampled token is never fed back, so it needs no cache column.
        let needed = width + max_new - 1;
        if needed > self.max_seq_len {
            return Err(EngineError::BadPrompt {
                row: prompts.iter().position(|p| p.len() == width).unwrap_or(0),
                reason: format!(
                    "{width} prompt tokens + {max_new} new tokens exceed max_seq_len {} (LoadOptions::max_seq_len)",
                    self.max_seq_len
                ),
            });
        }
        self.check_window(needed)?;
        let mut cache = self.take_cache(b, needed)?;

        let eos = self.tokenizer.eos_token_ids().to_vec();
        let pad_id = eos[0];
        let (tokens, pads) = left_pad(prompts, width, pad_id);
        let mut rows: Vec<Row> = prompts
            .iter()
            .enumerate()
            .map(|(r, p)| {
                let mut context = Vec::with_capacity(p.len() + max_new);
                context.extend_from_slice(p);
                Row {
                    sampler: Sampler::new(sampling.clone(), params.seed.wrapping_add(r as u64)),
                    context,
                    prompt_len: p.len(),
                    times_ns: Vec::with_capacity(max_new),
                    stop: None,
                }
            })
            .collect();

        if observer.should_stop() {
            self.cache = Some(cache);
            return Err(EngineError::Interrupted);
        }
        let t = Instant::now();
        let mut logits = self
            .model
            .forward(&tokens, width, 0, &pads, &mut cache)
            .and_then(|l| to_host(&l))
            .map_err(EngineError::compute("prefill forward pass"))?;
        let prefill_ns = since(t);
        observer.on_prefill_done(b);

        let mut decode_ns = 0u64;
        let mut step_tokens = vec![pad_id; b];
        let mut offset = width;
        // Batch position → row; finished rows are dropped from the batch (see below).
        let mut active: Vec<usize> = (0..b).collect();
        let mut active_pads = pads.clone();
        loop {
            for (pos, &r) in active.iter().enumerate() {
                let row = &mut rows[r];
                if row.stop.is_some() {
                    continue;
                }
                let produced = row.context.len() - row.prompt_len;
                let banned: &[u32] = if produced < params.min_new_tokens as usize {
                    &eos
                } else {
                    &[]
                };
                let tok = row.sampler.next(&mut logits[pos], &row.context, banned);
                row.context.push(tok);
                row.times_ns.push(since(t0));
                step_tokens[pos] = tok;
                observer.on_token(r, tok);
                if eos.contains(&tok) {
                    row.stop = Some(StopReason::Eos);
                } else if produced + 1 >= max_new {
                    row.stop = Some(StopReason::MaxTokens);
                }
            }
            if rows.iter().all(|r| r.stop.is_some()) {
                break;
            }
            if observer.should_stop() {
                self.cache = Some(cache);
                return Err(EngineError::Interrupted);
            }
            // Finished rows leave the batch once they are a quarter of it: copying the
            // cache costs about as much as a few steps of a row, so one straggler is
            // cheaper to carry. Rows are computed independently, so a row's tokens do not
            // change when others leave.
            let keep: Vec<usize> = (0..active.len())
                .filter(|&pos| rows[active[pos]].stop.is_none())
                .collect();
            if (active.len() - keep.len()) * 4 >= active.len() {
                cache.retain_rows(&keep).map_err(EngineError::compute(
                    "dropping finished rows from the KV cache",
                ))?;
                active = keep.iter().map(|&pos| active[pos]).collect();
                active_pads = keep.iter().map(|&pos| active_pads[pos]).collect();
                step_tokens = keep.iter().map(|&pos| step_tokens[pos]).collect();
            }
            let t = Instant::now();
            logits = self
                .model
                .forward(&step_tokens, 1, offset, &active_pads, &mut cache)
                .and_then(|l| to_host(&l))
                .map_err(EngineError::compute("decode forward pass"))?;
            decode_ns += since(t);
            offset += 1;
        }
        self.cache = Some(cache);

        let mut sequences = Vec::with_capacity(b);
        for row in rows {
            let output = row.context[row.prompt_len..].to_vec();
            let text = self.tokenizer.decode(&output)?;
            let itl_ns = row.times_ns.windows(2).map(|w| w[1] - w[0]).collect();
            sequences.push(GeneratedSequence {
                input_tokens: row.prompt_len as u32,
                text,
                ttft_ns: row.times_ns[0],
                e2e_ns: *row.times_ns.last().unwrap_or(&0),
                itl_ns,
                output_token_ids: output,
                stop_reason: row.stop.unwrap_or(StopReason::MaxTokens),
            });
        }
        Ok(BatchOutput {
            sequences,
            prefill_ns,
            decode_ns,
            wall_ns: since(t0),
        })
    }

    /// Next-token logits (vocab-sized, before any sampling rule) of each prompt, run as
    /// one left-padded batch: for checks against reference implementations.
    pub fn next_token_logits(
        &mut self,
        prompts: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let vocab = self.model.config().vocab_size;
        for (row, p) in prompts.iter().enumerate() {
            if p.is_empty() || p.iter().any(|&t| t as usize >= vocab) {
                return Err(EngineError::BadPrompt {
                    row,
                    reason: format!("empty or has ids outside the vocabulary ({vocab})"),
                });
            }
        }
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if prompts.is_empty() || width > self.max_seq_len {
            return Err(EngineError::InvalidParams(format!(
                "{} prompts of up to {width} tokens (max_seq_len {})",
                prompts.len(),
                self.max_seq_len
            )));
        }
        self.check_window(width)?;
        let mut cache = self.take_cache(prompts.len(), width)?;
        let (tokens, pads) = left_pad(prompts, width, self.tokenizer.eos_token_ids()[0]);
        let logits = self
            .model
            .forward(&tokens, width, 0, &pads, &mut cache)
            .and_then(|l| to_host(&l))
            .map_err(EngineError::compute("forward pass"))?;
        self.cache = Some(cache);
        Ok(logits)
    }

    /// Mistral-style sliding-window models: lem attends over the whole context, which
    /// equals windowed attention only while every sequence fits in the window.
    fn check_window(&self, positions: usize) -> Result<(), EngineError> {
        match self.model.config().sliding_window {
            Some(w) if positions > w => Err(EngineError::InvalidParams(format!(
                "{positions} positions (prompt + new tokens) exceed the model's sliding_window {w} (config.json); lem does not implement sliding-window attention"
            ))),
            _ => Ok(()),
        }
    }

    /// The KV cache for a `batch`-row run of `needed` columns: the previous one when it
    /// fits (stale contents are never read: attention only reads columns written in this
    /// run), else a fresh allocation.
    fn take_cache(&mut self, batch: usize, needed: usize) -> Result<KvCache, EngineError> {
        if let Some(c) = self.cache.take() {
            if c.batch() == batch && c.capacity() >= needed {
                return Ok(c);
            }
        }
        let capacity = needed
            .div_ceil(CACHE_GRANULE)
            .saturating_mul(CACHE_GRANULE)
            .min(self.max_seq_len)
            .max(needed);
        KvCache::new(self.model.config(), batch, capacity, self.model.device())
            .map_err(EngineError::compute("allocating the KV cache"))
    }
}

/// The logits in host memory, once the device has finished all queued work (a no-op on
/// the CPU), so the timing stamp taken next, and any energy read at it, covers the step.
fn to_host(logits: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    let v = logits.to_vec2::<f32>()?;
    logits.device().synchronize()?;
    Ok(v)
}

/// Row-major (rows × width) tokens with each prompt right-aligned, and each row's number
/// of padding columns. The pad id's value never matters: padding is never attended to.
fn left_pad(prompts: &[Vec<u32>], width: usize, pad_id: u32) -> (Vec<u32>, Vec<usize>) {
    let pads: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
    let mut tokens = Vec::with_capacity(prompts.len() * width);
    for (p, &pad) in prompts.iter().zip(&pads) {
        tokens.extend(std::iter::repeat_n(pad_id, pad));
        tokens.extend_from_slice(p);
    }
    (tokens, pads)
}
