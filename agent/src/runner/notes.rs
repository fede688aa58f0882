//! Settings a job accepts or refuses: features lem cannot honour are refused before
//! anything runs; settings that act differently on this engine are said in the result.

use super::RunError;
use lem_common::config::{ExperimentConfig, Precision};
use lem_common::domain::{ComputeDevice, ModelInfo};

/// Config features lem accepts but cannot honour yet are refused, not silently ignored.
/// Config features lem accepts but cannot honour yet are refused, not silently ignored.
pub(super) fn refuse_unsupported(cfg: &ExperimentConfig) -> Result<(), RunError> {
    let problems = lem_common::config::unsupported(cfg);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RunError::Unsupported(
            problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        ))
    }
}

/// Settings that were accepted but act differently on this engine, said in the result.
pub(super) fn config_notes(cfg: &ExperimentConfig, model: &ModelInfo) -> Vec<String> {
    let mut notes = Vec::new();
    if model.format == "gguf" && cfg.fp_precision != Precision::Float32 {
        notes.push(format!(
            "fp_precision {} requested: GGUF quantised weights ({}) compute in {} here",
            serde_json::to_value(cfg.fp_precision)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            model.weight_dtype,
            model.compute_dtype
        ));
    }
    let q = &cfg.quantization_config;
    let requantised = model.weight_dtype.contains("requantised");
    if model.format == "gguf" && q.load_in_8bit && requantised {
        notes.push(format!(
            "quantization_config.load_in_8bit: the GGUF's Q4_1 weights re-quantised to Q8_0 on load: {}",
            model.weight_dtype
        ));
    } else if model.format == "gguf" && (q.quantization || q.load_in_4bit || q.load_in_8bit) {
        notes.push(format!(
            "quantization_config ignored: the GGUF model is already quantised ({})",
            model.weight_dtype
        ));
    }
    if model.format == "safetensors" {
        if q.load_in_8bit {
            notes.push(format!(
                "quantization_config.load_in_8bit: weights quantised on load to Q8_0 (blockwise 8-bit, no LLM.int8 outlier decomposition): {}",
                model.weight_dtype
            ));
        }
        if q.load_in_4bit {
            let kind = q.bnb_4bit_quant_type.as_deref().unwrap_or("fp4");
            notes.push(format!(
                "quantization_config.bnb_4bit_quant_type {kind} has no candle equivalent: weights quantised on load to Q4_0 (4-bit blocks of 32 with an f16 scale) instead: {}",
                model.weight_dtype
            ));
            if let Some(dtype) = &q.bnb_4bit_compute_dtype {
                notes.push(format!(
                    "quantization_config.bnb_4bit_compute_dtype {dtype} not applied: Q4_0 matmuls run on 8-bit-quantised activations; compute is {}",
                    model.compute_dtype
                ));
            }
            if q.bnb_4bit_use_double_quant {
                notes.push(
                    "quantization_config.bnb_4bit_use_double_quant not applied: Q4_0 block scales are f16".into(),
                );
            }
        }
    }
    notes
}

/// A job whose prompt and output can outgrow the model's trained context.
pub(super) fn context_note(model: &ModelInfo, seq_len_needed: usize) -> Option<String> {
    let ctx_len = model.context_length?;
    (seq_len_needed as u64 > ctx_len).then(|| {
        format!(
            "max_input_tokens + max_output_tokens = {seq_len_needed} exceeds the model's trained context length {ctx_len}"
        )
    })
}

/// `cpu_threads` that could not be applied: the process's CPU thread pool is sized once,
/// at start (`crate::threads`), and CPU inference ran with what it has.
pub(super) fn thread_note(cfg: &ExperimentConfig, device: &ComputeDevice) -> Option<String> {
    let requested = cfg.cpu_threads?;
    let used = device.threads?;
    (used != requested).then(|| {
        format!(
            "cpu_threads {requested} not applied: this process's CPU thread pool was fixed at {used} thread(s) when it started"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(threads: Option<u32>) -> ComputeDevice {
        ComputeDevice {
            kind: "cpu".into(),
            name: "test cpu".into(),
            ordinal: None,
            threads,
            note: None,
        }
    }

    #[test]
    fn a_thread_count_the_pool_does_not_have_is_said() {
        let mut cfg = ExperimentConfig::default_for("t", "m");
        assert_eq!(thread_note(&cfg, &cpu(Some(4))), None, "nothing requested");
        cfg.cpu_threads = Some(4);
        assert_eq!(thread_note(&cfg, &cpu(Some(4))), None);
        assert_eq!(thread_note(&cfg, &cpu(None)), None, "not CPU inference");
        let note = thread_note(&cfg, &cpu(Some(2))).unwrap();
        assert!(
            note.contains("cpu_threads 4") && note.contains("fixed at 2"),
            "{note}"
        );
    }
}
