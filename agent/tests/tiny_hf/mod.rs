//! A tiny Hugging Face Llama or Qwen2 checkpoint for the tests that convert or load one
//! (`convert_bytes`, `engine_tiny_llamacpp`): its `config.json`, `tokenizer_config.json`
//! and an f32 safetensors file, next to the test's own `tokenizer.json`. The tensor names and shapes are the model layer's
//! (`LlamaParams::expected_tensors`, which llama.cpp's converter and the byte fixtures
//! check independently); the two file formats are written here by hand, independently of
//! lem's readers.

use lem_agent::model::LlamaParams;
use serde_json::{json, Value as Json};
use std::path::Path;

/// A tiny checkpoint's shape.
pub struct TinyHf {
    /// `llama` or `qwen2` (Qwen2: biases on Q, K and V).
    pub model_type: &'static str,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub layers: usize,
    pub vocab: usize,
    /// No `lm_head.weight`: the head is the embedding.
    pub tied: bool,
    pub rope_theta: f64,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
}

impl TinyHf {
    /// Every tensor, Hugging Face name and shape, in the order they are written.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let params = LlamaParams {
            architecture: self.model_type.to_string(),
            hidden_size: self.hidden,
            intermediate_size: self.ffn,
            num_layers: self.layers,
            num_heads: self.heads,
            num_kv_heads: self.kv_heads,
            head_dim: self.hidden / self.heads,
            vocab_size: self.vocab,
            rms_norm_eps: 1e-5,
            rope_theta: self.rope_theta,
            context_length: Some(256),
            sliding_window: None,
            gemma3: None,
            tie_word_embeddings: self.tied,
            bos_token_id: Some(self.bos_token_id),
            eos_token_id: Some(self.eos_token_id),
            pad_token_id: None,
        };
        params.expected_tensors()
    }

    /// Writes the checkpoint into `dir` (created): `config.json`, the given
    /// `tokenizer.json`, a `tokenizer_config.json` (no BOS added, a one-line chat template)
    /// and `model.safetensors` (see `write_safetensors`).
    pub fn write_dir(
        &self,
        dir: &Path,
        tokenizer_json: &Json,
        values: impl FnMut(usize, &str, &[usize]) -> Vec<f32>,
    ) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), self.config_json().to_string()).unwrap();
        std::fs::write(dir.join("tokenizer.json"), tokenizer_json.to_string()).unwrap();
        let tok_cfg = json!({
            "add_bos_token": false,
            "chat_template": "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}",
        });
        std::fs::write(dir.join("tokenizer_config.json"), tok_cfg.to_string()).unwrap();
        self.write_safetensors(&dir.join("model.safetensors"), values);
    }

    /// The checkpoint's `config.json`.
    pub fn config_json(&self) -> Json {
        let class = match self.model_type {
            "llama" => "LlamaForCausalLM",
            "qwen2" => "Qwen2ForCausalLM",
            other => panic!("tiny_hf: no Hugging Face class for model_type {other:?}"),
        };
        json!({
            "architectures": [class],
            "model_type": self.model_type,
            "hidden_size": self.hidden,
            "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5,
            "rope_theta": self.rope_theta,
            "vocab_size": self.vocab,
            "max_position_embeddings": 256,
            "tie_word_embeddings": self.tied,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": "float32",
        })
    }

    /// Writes `tensors()` as one f32 safetensors file: a u64 header length, the JSON
    /// header padded with spaces to a multiple of 8, then the data. `values(index, name,
    /// shape)` gives each tensor's values, in the order of `tensors()`.
    pub fn write_safetensors(
        &self,
        path: &Path,
        mut values: impl FnMut(usize, &str, &[usize]) -> Vec<f32>,
    ) {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (i, (name, shape)) in self.tensors().into_iter().enumerate() {
            let start = data.len();
            let vals = values(i, &name, &shape);
            assert_eq!(
                vals.len(),
                shape.iter().product::<usize>(),
                "{name} {shape:?}"
            );
            for v in vals {
                data.extend_from_slice(&v.to_le_bytes());
            }
            header.insert(
                name,
                json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let mut h = Json::Object(header).to_string();
        while !h.len().is_multiple_of(8) {
            h.push(' ');
        }
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(&data);
        std::fs::write(path, bytes).unwrap();
    }
}
