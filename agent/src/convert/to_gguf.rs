//! Writes a GGUF file: `llama.*` or `qwen2.*` metadata, the tokenizer (kept from a GGUF source,
//! converted from tokenizer.json otherwise), the provenance, and the tensors quantised to
//! the target type with Q/K rows in llama.cpp's order (interleaved for `llama`, as
//! stored for `qwen2`).

use super::error::{invalid, io_err, tensor_err, ConvertError};
use super::output::staged;
use super::provenance::{self, provenance, PROVENANCE_KEY_PREFIX};
use super::source::{Source, Weights};
use super::target::{TargetDtype, TargetFormat};
use super::ConvertReport;
use crate::model::config_json::{read_json, read_optional_json};
use crate::model::names::{hf_to_gguf_name, qk_heads};
use crate::model::rope_permute::to_interleaved;
use crate::model::{ggml_name, gguf, tokenizer};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use std::collections::BTreeMap;
use std::path::Path;

pub(super) fn write_gguf_file(
    src: &mut Source,
    output: &Path,
    dtype: TargetDtype,
) -> Result<ConvertReport, ConvertError> {
    let target = dtype.ggml_dtype().expect("checked by convert");
    let mut metadata = src.params.gguf_metadata();
    let mut notes = Vec::new();
    match &src.weights {
        Weights::Gguf(g) => {
            // Keep the tokenizer and descriptive keys; re-derive the shape and file type.
            // `general.alignment` goes too: candle's writer always aligns to 32 bytes.
            let shape_prefix = format!("{}.", src.params.architecture);
            let mut keys: Vec<&String> = g.metadata().keys().collect();
            keys.sort();
            for k in keys {
                let derived = k.starts_with(&shape_prefix)
                    || k.starts_with(PROVENANCE_KEY_PREFIX)
                    || matches!(
                        k.as_str(),
                        "general.architecture"
                            | "general.file_type"
                            | "general.quantization_version"
                            | "general.alignment"
                    );
                if !derived {
                    metadata.push((k.clone(), g.metadata()[k].clone()));
                }
            }
        }
        Weights::Safetensors(_) => {
            let dir = src.path.clone();
            let tok_path = dir.join("tokenizer.json");
            if !tok_path.is_file() {
                return Err(invalid(
                    &dir,
                    "no tokenizer.json; a GGUF needs one to carry the tokenizer",
                ));
            }
            let tok = read_json(&tok_path)?;
            let tok_cfg = read_optional_json(&dir.join("tokenizer_config.json"))?;
            let jinja_path = dir.join("chat_template.jinja");
            let jinja = if jinja_path.is_file() {
                Some(std::fs::read_to_string(&jinja_path).map_err(io_err(&jinja_path))?)
            } else {
                None
            };
            metadata.extend(tokenizer::to_gguf::gguf_metadata(
                &tok,
                tok_cfg.as_ref(),
                jinja.as_deref(),
                &src.params,
                &tok_path,
            )?);
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            metadata.push(("general.name".into(), Value::String(name)));
        }
    }
    metadata.push((
        "general.file_type".into(),
        Value::U32(gguf::file_type(target)),
    ));
    metadata.push(("general.quantization_version".into(), Value::U32(2)));
    let prov = provenance(src, TargetFormat::Gguf, dtype);
    metadata.extend(provenance::gguf_keys(&prov, dtype));

    let mut qtensors: Vec<(String, QTensor)> = Vec::new();
    let mut output_dtypes = BTreeMap::new();
    for (hf, shape) in src.params.expected_tensors() {
        let gguf_name = hf_to_gguf_name(&hf).expect("expected tensors all map");
        let mut t = src.read(&hf)?;
        if let Some(n) = qk_heads(&hf, &src.params) {
            t = to_interleaved(&t, n)
                .map_err(|e| tensor_err(&src.path, &hf, format!("permuting: {e}")))?;
        }
        let ty = gguf::tensor_dtype(&shape, target);
        if ty != target && shape.len() >= 2 {
            notes.push(format!(
                "{gguf_name}: rows of {} do not split into {} blocks; stored as F16",
                shape[shape.len() - 1],
                ggml_name(target)
            ));
        }
        let q = QTensor::quantize(&t, ty)
            .map_err(|e| tensor_err(&src.path, &hf, format!("quantising: {e}")))?;
        *output_dtypes.entry(ggml_name(ty).to_string()).or_insert(0) += 1;
        qtensors.push((gguf_name, q));
    }
    if target != GgmlDType::F32 {
        notes.push("norm weights (1-D) are stored as F32, as llama.cpp does".into());
    }
    let weights_bytes = staged(output, false, |tmp| {
        Ok(gguf::write(tmp, &metadata, &qtensors)?)
    })?;
    Ok(ConvertReport {
        output: output.to_path_buf(),
        format: TargetFormat::Gguf,
        dtype,
        source_format: src.format(),
        source_dtypes: src.dtypes.clone(),
        output_dtypes,
        tensors: qtensors.len(),
        weights_bytes,
        elapsed_s: 0.0,
        notes,
    })
}
