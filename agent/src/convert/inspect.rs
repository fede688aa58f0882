//! What a stored model holds (tensor types, `torch_dtype`, where a converted model came
//! from), from headers only, for `lem models`.

use super::error::ConvertError;
use super::provenance::{PROVENANCE_FILE, PROVENANCE_KEY_PREFIX};
use crate::model::config_json::read_optional_json;
use crate::model::safetensors::SafetensorsSet;
use crate::model::{ggml_name, GgufFile};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;

/// What a stored model holds, for `lem models`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredInfo {
    /// Stored type (`Q4_1`, `F16`, ...) → tensor count.
    pub dtypes: BTreeMap<String, usize>,
    /// `torch_dtype` (or `dtype`) from config.json.
    pub torch_dtype: Option<String>,
    /// The source path, for models `lem model convert` wrote.
    pub converted_from: Option<String>,
}

/// Tensor types of a GGUF file or a safetensors directory, from headers only.
pub fn inspect_stored(format: &str, path: &Path) -> Result<StoredInfo, ConvertError> {
    let mut info = StoredInfo::default();
    if format == "gguf" {
        let g = GgufFile::open(path)?;
        for i in g.tensor_infos().values() {
            *info
                .dtypes
                .entry(ggml_name(i.ggml_dtype).to_string())
                .or_insert(0) += 1;
        }
        let key = format!("{PROVENANCE_KEY_PREFIX}source");
        info.converted_from = g.opt_str(&key)?.map(str::to_string);
    } else {
        for e in SafetensorsSet::open(path)?.entries() {
            *info.dtypes.entry(e.dtype).or_insert(0) += 1;
        }
        if let Some(cfg) = read_optional_json(&path.join("config.json"))? {
            info.torch_dtype = cfg
                .get("torch_dtype")
                .or_else(|| cfg.get("dtype"))
                .and_then(Json::as_str)
                .map(str::to_string);
        }
        if let Some(p) = read_optional_json(&path.join(PROVENANCE_FILE))? {
            info.converted_from = p["source"]["path"].as_str().map(str::to_string);
        }
    }
    Ok(info)
}
