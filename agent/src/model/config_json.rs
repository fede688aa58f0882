//! Hugging Face `config.json` (and its siblings generation_config.json and
//! tokenizer_config.json): the one reader, typed field access with errors naming the file
//! and field, and the writer for the configs lem's converter produces.

use super::error::ModelError;
use super::params::LlamaParams;
use candle_core::DType;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The architectures this loader accepts (`architectures[0]` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfArch {
    Llama,
    Mistral,
    Qwen2,
}

impl HfArch {
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "LlamaForCausalLM" => Some(Self::Llama),
            "MistralForCausalLM" => Some(Self::Mistral),
            "Qwen2ForCausalLM" => Some(Self::Qwen2),
            _ => None,
        }
    }

    /// The class `architectures` names for a `model_type`.
    fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" => Some(Self::Llama),
            "mistral" => Some(Self::Mistral),
            "qwen2" => Some(Self::Qwen2),
            _ => None,
        }
    }

    pub fn class_name(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// The short name `TransformerShape::architecture` uses.
    pub fn short(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
        }
    }
}

/// What config.json (and its sibling files) say about the model.
#[derive(Debug, Clone)]
pub struct HfConfig {
    pub config_path: PathBuf,
    pub architecture: HfArch,
    pub cfg: LlamaParams,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub rope_freq_factors: Option<Vec<f32>>,
    /// `eos_token_id` of config.json and generation_config.json.
    pub eos_token_ids: Vec<u32>,
    /// `eos_token` of tokenizer_config.json.
    pub eos_token: Option<String>,
    pub chat_template: Option<String>,
}

/// Typed access to a JSON object with errors naming the file and field.
pub(crate) struct JsonFields<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl<'a> JsonFields<'a> {
    pub(crate) fn err(&self, field: &str, reason: impl Into<String>) -> ModelError {
        ModelError::Config {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// None when absent or null.
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        self.v.get(field).filter(|v| !v.is_null())
    }

    pub(crate) fn opt_usize(&self, field: &str) -> Result<Option<usize>, ModelError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 && n <= u32::MAX as u64 => Ok(Some(n as usize)),
                _ => Err(self.err(field, format!("{v} is not a plausible size"))),
            },
        }
    }

    pub(crate) fn usize(&self, field: &str) -> Result<usize, ModelError> {
        self.opt_usize(field)?
            .ok_or_else(|| self.err(field, "missing"))
    }

    pub(crate) fn opt_f64(&self, field: &str) -> Result<Option<f64>, ModelError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(self.err(field, format!("{v} is not a number"))),
            },
        }
    }

    pub(crate) fn f64(&self, field: &str) -> Result<f64, ModelError> {
        self.opt_f64(field)?
            .ok_or_else(|| self.err(field, "missing"))
    }

    pub(crate) fn opt_bool(&self, field: &str) -> Result<Option<bool>, ModelError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(field, format!("{v} is not a boolean"))),
        }
    }

    pub(crate) fn opt_str(&self, field: &str) -> Result<Option<&'a str>, ModelError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.err(field, format!("{v} is not a string"))),
        }
    }

    /// An id or a list of ids (`eos_token_id` takes both forms).
    pub(crate) fn ids(&self, field: &str) -> Result<Vec<u32>, ModelError> {
        let one = |v: &Value| {
            v.as_u64()
                .filter(|&n| n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or_else(|| self.err(field, format!("{v} is not a token id")))
        };
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        field: "(file)".into(),
        reason: format!("not valid JSON: {e}"),
    })
}

/// A sibling JSON file that may be absent (generation_config.json, tokenizer_config.json).
pub(crate) fn read_optional_json(path: &Path) -> Result<Option<Value>, ModelError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

impl HfConfig {
    /// The model's part of config.json (`config_path` names it in errors); EOS ids,
    /// EOS token and chat template from the sibling files are left empty.
    pub(crate) fn from_config_json(root: &Value, config_path: &Path) -> Result<Self, ModelError> {
        let j = JsonFields {
            path: config_path,
            v: root,
        };
        let arch_name = match (j.get("architectures"), j.opt_str("model_type")?) {
            (Some(Value::Array(a)), _) if !a.is_empty() => a[0]
                .as_str()
                .ok_or_else(|| j.err("architectures", "not a list of strings"))?
                .to_string(),
            (Some(_), _) => return Err(j.err("architectures", "not a non-empty list")),
            // Without `architectures`, the class `model_type` stands for (as AutoModel does).
            (None, Some(t)) => HfArch::from_model_type(t)
                .map(|a| a.class_name().to_string())
                .unwrap_or_else(|| t.to_string()),
            (None, None) => return Err(j.err("architectures", "missing")),
        };
        let arch =
            HfArch::from_name(&arch_name).ok_or_else(|| ModelError::UnsupportedHfArchitecture {
                path: config_path.to_path_buf(),
                architecture: arch_name.clone(),
            })?;
        if let Some(act) = j.opt_str("hidden_act")? {
            if act != "silu" {
                return Err(j.err(
                    "hidden_act",
                    format!("`{act}` is not supported (silu only)"),
                ));
            }
        }
        if j.opt_bool("mlp_bias")? == Some(true) {
            return Err(j.err("mlp_bias", "MLP biases are not supported"));
        }

        let hidden_size = j.usize("hidden_size")?;
        let num_heads = j.usize("num_attention_heads")?;
        let num_kv_heads = j.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
        if num_heads % num_kv_heads != 0 {
            return Err(j.err(
                "num_key_value_heads",
                format!("{num_kv_heads} does not divide num_attention_heads {num_heads}"),
            ));
        }
        let head_dim = match j.opt_usize("head_dim")? {
            Some(n) => n,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(j.err(
                        "num_attention_heads",
                        format!("{num_heads} does not divide hidden_size {hidden_size}"),
                    ));
                }
                hidden_size / num_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(j.err("head_dim", format!("{head_dim} is odd; rotary needs pairs")));
        }
        if let Some(f) = j.opt_f64("partial_rotary_factor")? {
            if f != 1.0 {
                return Err(j.err("partial_rotary_factor", "partial rotary is not supported"));
            }
        }
        let rope_theta = j.opt_f64("rope_theta")?.unwrap_or(10_000.0);
        let rope_freq_factors = rope_scaling_factors(&j, head_dim, rope_theta)?;
        let sliding_window = match arch {
            HfArch::Llama => None,
            HfArch::Mistral => j.opt_usize("sliding_window")?,
            // Qwen2 lists a window but uses it only when `use_sliding_window` is true.
            HfArch::Qwen2 => {
                if j.opt_bool("use_sliding_window")?.unwrap_or(false) {
                    j.opt_usize("sliding_window")?
                } else {
                    None
                }
            }
        };
        let attention_bias = j.opt_bool("attention_bias")?.unwrap_or(false);
        let cfg = LlamaParams {
            architecture: arch.short().into(),
            hidden_size,
            intermediate_size: j.usize("intermediate_size")?,
            num_layers: j.usize("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size: j.usize("vocab_size")?,
            rms_norm_eps: j.f64("rms_norm_eps")?,
            rope_theta,
            context_length: j.opt_usize("max_position_embeddings")?.map(|n| n as u64),
            sliding_window,
            gemma3: None,
            // Llama, Mistral and Qwen2 configs all default to untied heads.
            tie_word_embeddings: j.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            bos_token_id: j.ids("bos_token_id")?.first().copied(),
            // GGUF has one EOS key: the first listed is the primary one.
            eos_token_id: j.ids("eos_token_id")?.first().copied(),
            pad_token_id: j.ids("pad_token_id")?.first().copied(),
        };
        Ok(Self {
            config_path: config_path.to_path_buf(),
            architecture: arch,
            cfg,
            qkv_bias: arch == HfArch::Qwen2 || attention_bias,
            o_bias: arch != HfArch::Qwen2 && attention_bias,
            rope_freq_factors,
            eos_token_ids: j.ids("eos_token_id")?,
            eos_token: None,
            chat_template: None,
        })
    }

    /// config.json of the model directory `dir`, with EOS ids added from
    /// generation_config.json and the EOS token and chat template from
    /// tokenizer_config.json.
    pub(crate) fn read(dir: &Path) -> Result<Self, ModelError> {
        let config_path = dir.join("config.json");
        let mut hf = Self::from_config_json(&read_json(&config_path)?, &config_path)?;
        let gen_path = dir.join("generation_config.json");
        if let Some(gen) = read_optional_json(&gen_path)? {
            let g = JsonFields {
                path: &gen_path,
                v: &gen,
            };
            for id in g.ids("eos_token_id")? {
                if !hf.eos_token_ids.contains(&id) {
                    hf.eos_token_ids.push(id);
                }
            }
        }
        let tc_path = dir.join("tokenizer_config.json");
        if let Some(tc) = read_optional_json(&tc_path)? {
            let t = JsonFields {
                path: &tc_path,
                v: &tc,
            };
            // `eos_token` is a string or an AddedToken object with `content`.
            hf.eos_token = match t.get("eos_token") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(v) => v.get("content").and_then(Value::as_str).map(str::to_string),
                None => None,
            };
            hf.chat_template = t.opt_str("chat_template")?.map(str::to_string);
        }
        Ok(hf)
    }
}

/// Divisors of the default rotary frequencies for `rope_scaling`: none for the default
/// rope, a constant for `linear`, the Llama 3.1 wavelength-dependent blend for `llama3`.
fn rope_scaling_factors(
    j: &JsonFields,
    head_dim: usize,
    theta: f64,
) -> Result<Option<Vec<f32>>, ModelError> {
    let Some(rs) = j.get("rope_scaling") else {
        return Ok(None);
    };
    let s = JsonFields {
        path: j.path,
        v: rs,
    };
    let field = |f: &str| format!("rope_scaling.{f}");
    let kind = match (s.opt_str("rope_type")?, s.opt_str("type")?) {
        (Some(k), _) | (None, Some(k)) => k,
        (None, None) => return Err(j.err(&field("rope_type"), "missing")),
    };
    let half = head_dim / 2;
    let inv_freq = |i: usize| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64);
    let number = |f: &str| -> Result<f64, ModelError> {
        s.opt_f64(f)?.ok_or_else(|| j.err(&field(f), "missing"))
    };
    match kind {
        "default" => Ok(None),
        "linear" => {
            let factor = number("factor")?;
            Ok(Some(vec![factor as f32; half]))
        }
        "llama3" => {
            let factor = number("factor")?;
            let low = number("low_freq_factor")?;
            let high = number("high_freq_factor")?;
            let old_ctx = number("original_max_position_embeddings")?;
            if high <= low {
                return Err(j.err(
                    &field("high_freq_factor"),
                    format!("{high} must exceed low_freq_factor {low}"),
                ));
            }
            let low_wavelen = old_ctx / low;
            let high_wavelen = old_ctx / high;
            let factors = (0..half)
                .map(|i| {
                    let f = inv_freq(i);
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    let scaled = if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old_ctx / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    };
                    (f / scaled) as f32
                })
                .collect();
            Ok(Some(factors))
        }
        other => Err(j.err(
            &field("rope_type"),
            format!("`{other}` is not supported (default, linear, llama3)"),
        )),
    }
}

impl LlamaParams {
    /// A `config.json` for `LlamaForCausalLM` (or `Qwen2ForCausalLM`, for `qwen2`) with
    /// weights stored as `dtype`.
    pub(crate) fn to_config_json(&self, dtype: DType) -> Value {
        let mut cfg = json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.context_length.unwrap_or(2048),
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "initializer_range": 0.02,
            "pretraining_tp": 1,
            "use_cache": true,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": torch_dtype_name(dtype),
        });
        if self.architecture == "qwen2" {
            // Qwen2's class always has Q/K/V biases and no `attention_bias` switch.
            let m = cfg.as_object_mut().expect("an object");
            for gone in ["attention_bias", "mlp_bias", "pretraining_tp"] {
                m.remove(gone);
            }
            m.insert("architectures".into(), json!(["Qwen2ForCausalLM"]));
            m.insert("model_type".into(), json!("qwen2"));
            m.insert("use_sliding_window".into(), json!(false));
        }
        cfg
    }
}

/// `torch_dtype` in config.json for a weight dtype.
fn torch_dtype_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_config_reads_back_as_the_same_parameters() {
        let p = crate::model::params::tiny_llama_params();
        let cfg = p.to_config_json(DType::BF16);
        assert_eq!(cfg["torch_dtype"], "bfloat16");
        assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
        let back = HfConfig::from_config_json(&cfg, Path::new("c.json")).unwrap();
        assert_eq!(back.cfg, p);
        assert_eq!(back.architecture, HfArch::Llama);
        assert_eq!(back.eos_token_ids, vec![2]);
        assert!(!back.qkv_bias && !back.o_bias && back.rope_freq_factors.is_none());
        // `model_type` stands in for a missing `architectures`.
        let mut bare = cfg.clone();
        bare.as_object_mut().unwrap().remove("architectures");
        let back = HfConfig::from_config_json(&bare, Path::new("c.json")).unwrap();
        assert_eq!(back.architecture, HfArch::Llama);
        let mut other = cfg;
        other["architectures"] = json!(["GPT2LMHeadModel"]);
        let e = HfConfig::from_config_json(&other, Path::new("c.json")).unwrap_err();
        assert!(
            matches!(&e, ModelError::UnsupportedHfArchitecture { architecture, .. } if architecture == "GPT2LMHeadModel"),
            "{e}"
        );
    }

    #[test]
    fn eos_lists_give_the_first_as_the_primary_id() {
        let mut cfg = crate::model::params::tiny_llama_params().to_config_json(DType::F32);
        cfg["eos_token_id"] = json!([7, 9]);
        cfg["bos_token_id"] = json!(null);
        let hf = HfConfig::from_config_json(&cfg, Path::new("c.json")).unwrap();
        assert_eq!(hf.cfg.eos_token_id, Some(7));
        assert_eq!(hf.eos_token_ids, vec![7, 9]);
        assert_eq!(hf.cfg.bos_token_id, None);
        cfg["eos_token_id"] = json!("x");
        let e = HfConfig::from_config_json(&cfg, Path::new("c.json")).unwrap_err();
        assert!(e.to_string().contains("c.json: `eos_token_id`"), "{e}");
    }

    #[test]
    fn a_qwen2_config_reads_back_as_qwen2_with_qkv_biases() {
        let mut p = crate::model::params::tiny_llama_params();
        p.architecture = "qwen2".into();
        p.rope_theta = 1e6;
        let cfg = p.to_config_json(DType::F32);
        assert_eq!(cfg["architectures"][0], "Qwen2ForCausalLM");
        assert!(cfg.get("attention_bias").is_none());
        let back = HfConfig::from_config_json(&cfg, Path::new("c.json")).unwrap();
        assert_eq!(back.cfg, p);
        assert_eq!(back.architecture, HfArch::Qwen2);
        assert!(back.qkv_bias && !back.o_bias);
    }
}
