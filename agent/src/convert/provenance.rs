//! What a converted model records about where it came from: `lem-convert.json` in a
//! safetensors directory, `lem.convert.*` keys in a GGUF.

use super::source::Source;
use super::target::{TargetDtype, TargetFormat};
use candle_core::quantized::gguf_file::Value;
use serde_json::{json, Value as Json};

/// The provenance file written into converted safetensors directories.
pub const PROVENANCE_FILE: &str = "lem-convert.json";
/// GGUF metadata key prefix for the same provenance in converted GGUF files.
pub const PROVENANCE_KEY_PREFIX: &str = "lem.convert.";

pub(super) fn provenance(src: &Source, format: TargetFormat, dtype: TargetDtype) -> Json {
    json!({
        "lem_version": env!("CARGO_PKG_VERSION"),
        "created": chrono::Utc::now().to_rfc3339(),
        "source": src.provenance(),
        "target": { "format": format.name(), "dtype": dtype.name() },
        "qk_rows": "Hugging Face rotate-half order in safetensors, llama.cpp interleaved order in GGUF",
    })
}

/// The provenance as `lem.convert.*` GGUF keys (strings), in a fixed order.
pub(super) fn gguf_keys(prov: &Json, dtype: TargetDtype) -> Vec<(String, Value)> {
    let p = |k: &str| format!("{PROVENANCE_KEY_PREFIX}{k}");
    let s = |v: &Json| Value::String(v.as_str().map_or_else(|| v.to_string(), str::to_string));
    vec![
        (p("lem_version"), s(&prov["lem_version"])),
        (p("created"), s(&prov["created"])),
        (p("source"), s(&prov["source"]["path"])),
        (p("source_format"), s(&prov["source"]["format"])),
        (p("source_size_bytes"), s(&prov["source"]["size_bytes"])),
        (p("source_modified"), s(&prov["source"]["modified"])),
        (p("source_dtypes"), s(&prov["source"]["dtypes"])),
        (p("target_dtype"), Value::String(dtype.name().into())),
    ]
}
