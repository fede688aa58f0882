//! The model being converted: a GGUF file or a safetensors directory, opened through the
//! model layer, its tensors read by Hugging Face name as f32 in Hugging Face row order.

use super::error::{key_err, tensor_err, ConvertError};
use crate::model::config_json::{HfArch, HfConfig};
use crate::model::gguf::GgufFile;
use crate::model::names::{gguf_to_hf_name, hf_to_gguf_name, qk_heads};
use crate::model::rope_permute::to_rotate_half;
use crate::model::safetensors::SafetensorsSet;
use crate::model::{ggml_name, without_backtrace, LlamaParams};
use candle_core::quantized::gguf_file::Value;
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub(super) enum Weights {
    Gguf(GgufFile),
    Safetensors(SafetensorsSet),
}

/// An opened model: hyper-parameters and, per Hugging Face name, the stored tensor.
pub(super) struct Source {
    /// The GGUF file or the safetensors directory.
    pub path: PathBuf,
    pub params: LlamaParams,
    pub weights: Weights,
    /// Hugging Face name → name in the source.
    names: BTreeMap<String, String>,
    /// Hugging Face name → shape (outermost first), checked against `params`.
    shapes: BTreeMap<String, Vec<usize>>,
    /// Stored type → number of tensors.
    pub dtypes: BTreeMap<String, usize>,
}

/// GGUF stores these as f32: print the shortest decimal that reads back to the same f32
/// (`1e-5`, not `9.999999747378752e-06`).
pub(super) fn tidy_f32(x: f64) -> f64 {
    (x as f32).to_string().parse().unwrap_or(x)
}

impl Source {
    pub fn open(path: &Path) -> Result<Self, ConvertError> {
        if path.is_dir() {
            Self::open_safetensors(path)
        } else {
            Self::open_gguf(path)
        }
    }

    fn open_gguf(path: &Path) -> Result<Self, ConvertError> {
        let g = GgufFile::open(path)?;
        let arch = g.str("general.architecture")?;
        if !CONVERTS_GGUF.contains(&arch) {
            return Err(key_err(
                path,
                "general.architecture",
                unsupported_gguf(arch),
            ));
        }
        let mut params = LlamaParams::from_gguf(&g)?;
        // config.json gets the decimal GGUF meant, not the f32's binary expansion.
        let f32_key = |k: &str| matches!(g.value(&format!("{arch}.{k}")), Some(Value::F32(_)));
        if f32_key("attention.layer_norm_rms_epsilon") {
            params.rms_norm_eps = tidy_f32(params.rms_norm_eps);
        }
        if f32_key("rope.freq_base") {
            params.rope_theta = tidy_f32(params.rope_theta);
        }
        let mut names = BTreeMap::new();
        let mut shapes = BTreeMap::new();
        let mut dtypes = BTreeMap::new();
        for (name, info) in g.tensor_infos() {
            if name == "rope_freqs.weight" {
                return Err(tensor_err(
                    path,
                    name,
                    "Llama 3.1 rope frequency factors have no plain Llama config equivalent; \
                     converting this model is not supported",
                ));
            }
            let hf = gguf_to_hf_name(name).ok_or_else(|| {
                tensor_err(
                    path,
                    name,
                    format!("not a `{arch}` tensor lem knows how to convert"),
                )
            })?;
            *dtypes
                .entry(ggml_name(info.ggml_dtype).to_string())
                .or_insert(0) += 1;
            shapes.insert(hf.clone(), info.shape.dims().to_vec());
            names.insert(hf, name.clone());
        }
        check_tensors(path, &params, &mut names, &shapes)?;
        Ok(Self {
            path: path.to_path_buf(),
            params,
            weights: Weights::Gguf(g),
            names,
            shapes,
            dtypes,
        })
    }

    fn open_safetensors(dir: &Path) -> Result<Self, ConvertError> {
        let hf = HfConfig::read(dir)?;
        let config_path = &hf.config_path;
        if !CONVERTS_HF.contains(&hf.architecture) {
            return Err(key_err(
                config_path,
                "architectures",
                unsupported_hf(hf.architecture.class_name()),
            ));
        }
        refuse_what_gguf_cannot_hold(&hf)?;
        let set = SafetensorsSet::open(dir)?;
        let mut names = BTreeMap::new();
        let mut shapes = BTreeMap::new();
        let mut stored = BTreeMap::new();
        for e in set.entries() {
            // Old checkpoints store the rotary table; it is recomputed, not a weight.
            if e.name.ends_with(".rotary_emb.inv_freq") {
                continue;
            }
            if !matches!(e.dtype.as_str(), "F32" | "F16" | "BF16") {
                return Err(tensor_err(
                    &e.file,
                    &e.name,
                    format!("dtype {} is not supported (F32, F16, BF16)", e.dtype),
                ));
            }
            if hf_to_gguf_name(&e.name).is_none() {
                return Err(tensor_err(
                    &e.file,
                    &e.name,
                    format!(
                        "not a {} tensor lem knows how to convert",
                        hf.architecture.class_name()
                    ),
                ));
            }
            names.insert(e.name.clone(), e.name.clone());
            shapes.insert(e.name.clone(), e.shape.clone());
            stored.insert(e.name, e.dtype);
        }
        check_tensors(dir, &hf.cfg, &mut names, &shapes)?;
        let mut dtypes = BTreeMap::new();
        for n in names.values() {
            *dtypes.entry(stored[n].clone()).or_insert(0) += 1;
        }
        Ok(Self {
            path: dir.to_path_buf(),
            params: hf.cfg,
            weights: Weights::Safetensors(set),
            names,
            shapes,
            dtypes,
        })
    }

    pub fn format(&self) -> &'static str {
        match self.weights {
            Weights::Gguf(_) => "gguf",
            Weights::Safetensors(_) => "safetensors",
        }
    }

    /// A tensor as f32 in Hugging Face layout (rotate-half Q/K rows).
    pub fn read(&mut self, hf_name: &str) -> Result<Tensor, ConvertError> {
        let src_name = self.names[hf_name].clone();
        let heads = qk_heads(hf_name, &self.params);
        match &mut self.weights {
            Weights::Gguf(g) => {
                let q = g.tensor(&src_name, &Device::Cpu)?;
                let t = q.dequantize(&Device::Cpu).map_err(|e| {
                    tensor_err(
                        &self.path,
                        &src_name,
                        format!("dequantising: {}", without_backtrace(e)),
                    )
                })?;
                // GGUF rows are interleaved; safetensors rows are already rotate-half.
                match heads {
                    Some(n) => to_rotate_half(&t, n).map_err(|e| {
                        tensor_err(
                            &self.path,
                            &src_name,
                            format!("un-permuting: {}", without_backtrace(e)),
                        )
                    }),
                    None => Ok(t),
                }
            }
            Weights::Safetensors(set) => {
                let t = set.tensor(&src_name, &self.shapes[hf_name])?;
                t.to_dtype(DType::F32)
                    .map_err(|e| tensor_err(&self.path, &src_name, without_backtrace(e)))
            }
        }
    }

    /// Source file description for provenance.
    pub fn provenance(&self) -> Json {
        let weight_files: Vec<PathBuf> = match &self.weights {
            Weights::Gguf(_) => vec![self.path.clone()],
            Weights::Safetensors(set) => {
                let mut f: Vec<PathBuf> = set.entries().into_iter().map(|e| e.file).collect();
                f.sort();
                f.dedup();
                f
            }
        };
        let mut size = 0u64;
        let mut modified: Option<std::time::SystemTime> = None;
        for f in &weight_files {
            if let Ok(m) = std::fs::metadata(f) {
                size += m.len();
                if let Ok(t) = m.modified() {
                    modified = Some(modified.map_or(t, |old| old.max(t)));
                }
            }
        }
        let path = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        json!({
            "path": path.display().to_string(),
            "format": self.format(),
            "size_bytes": size,
            "modified": modified.map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()),
            "dtypes": self.dtypes,
        })
    }
}

/// The GGUF architectures lem's converter reads (and writes).
pub(super) const CONVERTS_GGUF: [&str; 2] = ["llama", "qwen2"];
/// The Hugging Face classes lem's converter reads (and writes).
pub(super) const CONVERTS_HF: [HfArch; 2] = [HfArch::Llama, HfArch::Qwen2];

/// The refusal of a GGUF architecture, listing what is supported.
pub(super) fn unsupported_gguf(arch: &str) -> String {
    let list: Vec<String> = CONVERTS_GGUF.iter().map(|a| format!("`{a}`")).collect();
    format!(
        "`{arch}` is not supported; lem converts {} (general.architecture)",
        list.join(", ")
    )
}

/// The refusal of a Hugging Face class, listing what is supported.
pub(super) fn unsupported_hf(class: &str) -> String {
    let list: Vec<&str> = CONVERTS_HF.iter().map(|a| a.class_name()).collect();
    format!(
        "`{class}` is not supported; lem converts {}",
        list.join(", ")
    )
}

/// What a GGUF `llama`/`qwen2` model (and lem's engine reading it) cannot express: rope
/// scaling (no `rope_freqs` is written), biases other than Qwen2's on Q/K/V, and a
/// sliding window.
fn refuse_what_gguf_cannot_hold(hf: &HfConfig) -> Result<(), ConvertError> {
    if hf.rope_freq_factors.is_some() {
        return Err(key_err(
            &hf.config_path,
            "rope_scaling",
            "rope scaling is not supported by lem's converter",
        ));
    }
    if hf.o_bias || hf.qkv_bias != hf.cfg.has_qkv_bias() {
        return Err(key_err(
            &hf.config_path,
            "attention_bias",
            "biases are not supported (beyond Qwen2's on Q, K and V)",
        ));
    }
    if hf.cfg.sliding_window.is_some() {
        return Err(key_err(
            &hf.config_path,
            "use_sliding_window",
            "sliding-window attention is not supported by lem's converter",
        ));
    }
    Ok(())
}

/// Every expected tensor is present with its expected shape; a tied model's stored
/// `lm_head` is dropped (it equals the embedding).
fn check_tensors(
    path: &Path,
    p: &LlamaParams,
    names: &mut BTreeMap<String, String>,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<(), ConvertError> {
    if p.tie_word_embeddings {
        names.remove("lm_head.weight");
    }
    let expected = p.expected_tensors();
    for (hf, shape) in &expected {
        let Some(src) = names.get(hf) else {
            let gguf = hf_to_gguf_name(hf).unwrap_or_default();
            return Err(tensor_err(
                path,
                hf,
                format!("missing (GGUF name `{gguf}`)"),
            ));
        };
        if &shapes[hf] != shape {
            return Err(tensor_err(
                path,
                src,
                format!("shape {:?}, expected {shape:?} from the config", shapes[hf]),
            ));
        }
    }
    if let Some(extra) = names
        .keys()
        .find(|n| !expected.iter().any(|(e, _)| e == *n))
    {
        return Err(tensor_err(
            path,
            &names[extra],
            "unexpected for this config (more layers than num_hidden_layers?)",
        ));
    }
    Ok(())
}
