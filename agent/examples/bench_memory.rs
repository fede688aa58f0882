//! Peak RSS and load time of one model variant, for the memory table of
//! docs/benchmarks.md (driven by scripts/bench-memory.sh, one process per variant so each
//! VmHWM is that variant's own).
//!
//! ```text
//! bench_memory <gguf|safetensors> <PATH> [requant|keep] [f32|f16|bf16] [none|q8_0|q4_0]
//! ```
//!
//! Prints one line: load time, VmHWM after the load, and VmHWM after generating 16 tokens
//! from a 128-token prompt at batch 1 (KV cache, activations and scratch included).

use lem_agent::engine::{
    Engine, FloatPrecision, GenerationParams, LoadOptions, LoadQuantization, NoopObserver,
};
use lem_agent::sysinfo::peak_rss_bytes;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let (format, path) = (arg(1, "gguf"), arg(2, ""));
    let opts = LoadOptions {
        cpu_threads: Some(2),
        requantize_q4_1_to_q8_0: arg(3, "requant") == "requant",
        precision: match arg(4, "f32").as_str() {
            "f16" => FloatPrecision::F16,
            "bf16" => FloatPrecision::BF16,
            _ => FloatPrecision::F32,
        },
        quantization: match arg(5, "none").as_str() {
            "q8_0" => Some(LoadQuantization::Q8_0),
            "q4_0" => Some(LoadQuantization::Q4_0),
            _ => None,
        },
        ..LoadOptions::default()
    };
    let path = Path::new(&path);
    let mut engine = match format.as_str() {
        "gguf" => Engine::load_gguf(path, None, &opts),
        _ => Engine::load_safetensors(path, None, &opts),
    }
    .expect("loading the model");
    let mib = |b: Option<u64>| b.map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0));
    let after_load = mib(peak_rss_bytes().value);
    let text = "The river flows through the old town, past the market and the bridge. ".repeat(20);
    let mut prompt = engine.tokenizer().encode(&text).expect("tokenizing");
    prompt.truncate(128);
    let params = GenerationParams {
        max_new_tokens: 16,
        min_new_tokens: 16,
        ..GenerationParams::default()
    };
    engine
        .generate(&[prompt], &params, &mut NoopObserver)
        .expect("generating");
    println!(
        "weights {} | load {:.2} s | VmHWM after load {:.0} MiB | after generate {:.0} MiB",
        engine.info().weight_dtype,
        engine.info().load_ns as f64 / 1e9,
        after_load,
        mib(peak_rss_bytes().value)
    );
}
