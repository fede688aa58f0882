//! Built-in experiment presets (the seed's names and settings). A preset is a layer of
//! values: CLI flags > config file > preset > defaults.

use super::schema::{BatchingStrategy, DecoderPreset, Precision};
use serde_yaml::{Mapping, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    pub batch_size: u32,
    pub max_input_tokens: u32,
    pub max_output_tokens: u32,
    /// `None` leaves the default (float16).
    pub fp_precision: Option<Precision>,
    pub batching_strategy: Option<BatchingStrategy>,
    pub decoder_preset: Option<DecoderPreset>,
}

const PRESETS: &[Preset] = &[
    Preset {
        name: "quick-test",
        description: "Fast validation: batch 1, 64 input / 32 output tokens, float32, greedy",
        batch_size: 1,
        max_input_tokens: 64,
        max_output_tokens: 32,
        // float32: what the CPU computes in, and no precision note on GGUF weights
        // (which keep their own types) for a choice the user never made.
        fp_precision: Some(Precision::Float32),
        batching_strategy: None,
        decoder_preset: Some(DecoderPreset::Deterministic),
    },
    Preset {
        name: "benchmark",
        description: "Formal measurements: batch 1, 2048 input / 512 output tokens, fp16, greedy",
        batch_size: 1,
        max_input_tokens: 2048,
        max_output_tokens: 512,
        fp_precision: Some(Precision::Float16),
        batching_strategy: None,
        decoder_preset: Some(DecoderPreset::Deterministic),
    },
    Preset {
        name: "throughput",
        description:
            "Throughput testing: batch 8, 512 input / 256 output tokens, fp16, dynamic batching",
        batch_size: 8,
        max_input_tokens: 512,
        max_output_tokens: 256,
        fp_precision: Some(Precision::Float16),
        batching_strategy: Some(BatchingStrategy::Dynamic),
        decoder_preset: None,
    },
];

pub fn presets() -> &'static [Preset] {
    PRESETS
}

pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

impl Preset {
    /// The preset as a raw config layer. The decoder preset is named, not expanded, so
    /// that it is expanded like any layer's (see `tree::expand_decoder_preset`).
    pub fn layer(&self) -> Value {
        let mut top = Mapping::new();
        top.insert("max_input_tokens".into(), self.max_input_tokens.into());
        top.insert("max_output_tokens".into(), self.max_output_tokens.into());
        if let Some(p) = self.fp_precision {
            top.insert(
                "fp_precision".into(),
                serde_yaml::to_value(p).expect("enum"),
            );
        }
        let mut batching = Mapping::new();
        batching.insert("batch_size".into(), self.batch_size.into());
        if let Some(s) = self.batching_strategy {
            batching.insert("strategy".into(), serde_yaml::to_value(s).expect("enum"));
        }
        top.insert("batching_options".into(), Value::Mapping(batching));
        if let Some(d) = self.decoder_preset {
            let mut dec = Mapping::new();
            dec.insert("preset".into(), d.name().into());
            top.insert("decoder_config".into(), Value::Mapping(dec));
        }
        Value::Mapping(top)
    }
}
