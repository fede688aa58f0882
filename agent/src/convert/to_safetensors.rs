//! Writes a safetensors model directory: weights at a float precision, config.json,
//! generation_config.json, the tokenizer files and the provenance.

use super::error::{io_err, ConvertError};
use super::output::{staged, write_json};
use super::provenance::{provenance, PROVENANCE_FILE};
use super::source::{Source, Weights};
use super::target::{TargetDtype, TargetFormat};
use super::ConvertReport;
use crate::model::{safetensors, tokenizer};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

pub(super) fn write_safetensors_dir(
    src: &mut Source,
    output: &Path,
    dtype: TargetDtype,
) -> Result<ConvertReport, ConvertError> {
    let st_dtype = dtype.safetensors_dtype().expect("checked by convert");
    let tensors = src.params.expected_tensors();
    let weights = "model.safetensors";
    let mut notes = Vec::new();
    let (tok_json, tok_config) = match &src.weights {
        Weights::Gguf(g) => {
            let (j, c) = tokenizer::to_hf::tokenizer_files(g, &src.params)?;
            (Some(j), Some(c))
        }
        Weights::Safetensors(_) => (None, None),
    };
    let copied = [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    ];
    let weights_bytes = staged(output, true, |dir| {
        let path = dir.join(weights);
        let bytes = safetensors::write(&path, &tensors, st_dtype, |name| src.read(name))?;
        let config = src.params.to_config_json(st_dtype);
        write_json(&dir.join("config.json"), &config)?;
        let gen = json!({
            "bos_token_id": src.params.bos_token_id,
            "eos_token_id": src.params.eos_token_id,
            "pad_token_id": src.params.pad_token_id,
        });
        write_json(&dir.join("generation_config.json"), &gen)?;
        match (&tok_json, &tok_config) {
            (Some(j), Some(c)) => {
                let p = dir.join("tokenizer.json");
                std::fs::write(&p, j).map_err(io_err(&p))?;
                write_json(&dir.join("tokenizer_config.json"), c)?;
            }
            _ => {
                for f in copied {
                    let from = src.path.join(f);
                    if from.is_file() {
                        let to = dir.join(f);
                        std::fs::copy(&from, &to).map_err(io_err(&to))?;
                    }
                }
                if !dir.join("tokenizer.json").is_file() {
                    notes.push(format!(
                        "{} has no tokenizer.json; none was written",
                        src.path.display()
                    ));
                }
            }
        }
        write_json(
            &dir.join(PROVENANCE_FILE),
            &provenance(src, TargetFormat::Safetensors, dtype),
        )?;
        Ok(bytes)
    })?;
    Ok(ConvertReport {
        output: output.to_path_buf(),
        format: TargetFormat::Safetensors,
        dtype,
        source_format: src.format(),
        source_dtypes: src.dtypes.clone(),
        output_dtypes: BTreeMap::from([(
            safetensors::dtype_name(st_dtype).to_string(),
            tensors.len(),
        )]),
        tensors: tensors.len(),
        weights_bytes,
        elapsed_s: 0.0,
        notes,
    })
}
