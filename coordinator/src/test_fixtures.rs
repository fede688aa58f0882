//! Records for unit tests of the store and the experiment lifecycle: a tempdir store and
//! small raw results, so those tests need no model.

use lem_common::config::{self, CliOverrides, ResolvedConfig};
use lem_common::domain::*;

/// A resolved config (the quick-test preset) for model `model`; nothing is loaded.
pub fn resolved_config(model: &str) -> ResolvedConfig {
    let cli = CliOverrides {
        model: Some(model.to_string()),
        ..Default::default()
    };
    config::resolve(Some("quick-test"), None, &cli).expect("the quick-test preset resolves")
}

/// A raw result of `experiment_id`'s `cycle` with two requests of `output_tokens` each,
/// measured over `wall_ns`.
pub fn raw_result(experiment_id: &str, cycle: u32, output_tokens: u32, wall_ns: u64) -> RawResult {
    let request = |index| RequestRecord {
        index,
        input_tokens: 8,
        output_tokens,
        ttft_ns: 1_000_000,
        itl_ns: vec![500_000; output_tokens.saturating_sub(1) as usize],
        e2e_ns: 1_000_000 + 500_000 * output_tokens.saturating_sub(1) as u64,
        stop_reason: StopReason::MaxTokens,
        output_text: None,
        arrival_offset_ns: None,
        start_offset_ns: None,
        finish_offset_ns: None,
    };
    RawResult {
        schema_version: RAW_RESULT_SCHEMA_VERSION,
        experiment_id: experiment_id.to_string(),
        job_key: format!("{experiment_id}-{cycle}"),
        cycle,
        attempt: 0,
        started_at: String::new(),
        finished_at: String::new(),
        effective_config: serde_json::json!({}),
        cli_overrides: Default::default(),
        compute_device: ComputeDevice {
            kind: "cpu".into(),
            name: "test cpu".into(),
            ordinal: None,
            threads: Some(2),
            note: None,
        },
        model: ModelInfo {
            requested: "m".into(),
            resolved_path: "m.gguf".into(),
            resolved_from: "local".into(),
            format: "gguf".into(),
            weight_dtype: "Q8_0 (requantised from Q4_1)".into(),
            compute_dtype: "f32".into(),
            num_parameters: None,
            shape: TransformerShape {
                architecture: "llama".into(),
                hidden_size: 4,
                intermediate_size: 8,
                num_layers: 1,
                num_attention_heads: 2,
                num_kv_heads: 1,
                head_dim: 2,
                vocab_size: 10,
                gated_mlp: true,
                sliding_window: None,
            },
            tokenizer_source: "gguf-metadata".into(),
            eos_token_ids: vec![2],
            context_length: None,
            weights_sha256: None,
        },
        requests: vec![request(0), request(1)],
        wall_ns,
        prefill_ns: wall_ns / 4,
        decode_ns: wall_ns / 2,
        energy: vec![EnergyReading::unavailable(
            DeviceKind::CpuPackage,
            "package-0",
            "no RAPL under the test's powercap root",
            wall_ns,
        )],
        flops: FlopsBreakdown {
            prefill_flops: 1000.0,
            decode_flops: 500.0,
        },
        peak_memory_bytes: Measured::unavailable("test"),
        warmup: None,
        warmup_requests: 0,
        warnings: Vec::new(),
        server: None,
        hostname: "test-host".into(),
        lem_version: "0".into(),
    }
}
