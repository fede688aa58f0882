//! Model conversion between GGUF files and Hugging Face safetensors directories, at a
//! chosen precision, so precision × quantisation sweeps can run offline from one model.
//!
//! - GGUF → safetensors: every tensor is dequantised to f32 and cast to `f32|f16|bf16`,
//!   renamed to Hugging Face names, with `config.json`, `generation_config.json`,
//!   `tokenizer.json` (the engine's GGUF-metadata tokenizer, serialised),
//!   `tokenizer_config.json` and a `lem-convert.json` provenance file.
//! - safetensors → GGUF: `llama.*` (or `qwen2.*`) metadata from config.json, `tokenizer.ggml.*` from
//!   tokenizer.json, tensors quantised with candle to `f32|f16|q8_0|q4_0` (norms stay f32).
//! - GGUF → GGUF re-quantises; safetensors → safetensors re-casts.
//!
//! The converter is a client of the model layer (`crate::model`: readers, writers,
//! names, parameters, the Q/K rotary permutation, tokenizer conversion); this module
//! only decides what to write. Families: `llama` and `qwen2` (`source.rs` lists them;
//! refusals name them). Converting undoes (or redoes) llama.cpp's Q/K row permutation
//! where llama.cpp makes one (`llama`, not `qwen2`), so both outputs are true checkpoints of their format. Outputs are written
//! to a temporary sibling and renamed into place, so a failed conversion never leaves a
//! half-written model where resolution would find it.
//!
//! One job per file: `source.rs` (the model read), `to_safetensors.rs` / `to_gguf.rs`
//! (the writers), `output.rs` (overwrite rules, staging), `provenance.rs`,
//! `target.rs` (format and dtype), `naming.rs` (default names), `inspect.rs`
//! (`lem models`), `error.rs`.

mod error;
mod inspect;
mod naming;
mod output;
mod provenance;
mod source;
mod target;
#[cfg(test)]
mod tests;
mod to_gguf;
mod to_safetensors;

pub use error::ConvertError;
pub use inspect::{inspect_stored, StoredInfo};
pub use naming::{base_model_id, default_output, strip_dtype_suffix};
pub use provenance::{PROVENANCE_FILE, PROVENANCE_KEY_PREFIX};
pub use target::{TargetDtype, TargetFormat};

use error::invalid;
use output::check_output;
use source::Source;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a conversion did.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertReport {
    /// The directory (safetensors) or file (GGUF) written.
    pub output: PathBuf,
    pub format: TargetFormat,
    pub dtype: TargetDtype,
    pub source_format: &'static str,
    /// Stored type → tensor count, in the source and in the output.
    pub source_dtypes: BTreeMap<String, usize>,
    pub output_dtypes: BTreeMap<String, usize>,
    pub tensors: usize,
    /// Size of the weights file written.
    pub weights_bytes: u64,
    pub elapsed_s: f64,
    /// Things the user should know (kept norms, fallbacks, missing tokenizer).
    pub notes: Vec<String>,
}

/// Converts the model at `input` (a GGUF file or a safetensors directory) into `output`
/// (a directory for safetensors, a `.gguf` file for GGUF). An existing output is replaced
/// only with `force`, and then only if it looks like a converted model.
pub fn convert(
    input: &Path,
    format: TargetFormat,
    dtype: TargetDtype,
    output: &Path,
    force: bool,
) -> Result<ConvertReport, ConvertError> {
    let t0 = Instant::now();
    if !dtype.supported_by(format) {
        return Err(invalid(
            output,
            format!(
                "{} cannot hold {} weights; use one of {}",
                format.name(),
                dtype.name(),
                TargetDtype::names_for(format)
            ),
        ));
    }
    let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(input, output) || output.starts_with(input) && input.is_dir() {
        return Err(invalid(output, "the output would overwrite the input"));
    }
    check_output(output, format, force)?;
    let mut src = Source::open(input)?;
    let mut report = match format {
        TargetFormat::Safetensors => {
            to_safetensors::write_safetensors_dir(&mut src, output, dtype)?
        }
        TargetFormat::Gguf => to_gguf::write_gguf_file(&mut src, output, dtype)?,
    };
    report.elapsed_s = t0.elapsed().as_secs_f64();
    Ok(report)
}
