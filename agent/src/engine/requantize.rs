//! The load-time Q4_1 → Q8_0 re-quantisation of GGUF weights (a CPU-kernel choice).

use super::error::EngineError;
use crate::model::ModelError;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use std::path::Path;

/// Q4_1 has no SIMD `vec_dot` in candle 0.11 while Q8_0 has an AVX2 one; the Q8_0 copy
/// is exact enough that greedy output does not change (see docs/engine.md).
pub(crate) fn requantize_q4_1(t: QTensor, path: &Path, name: &str) -> Result<QTensor, EngineError> {
    if t.dtype() != GgmlDType::Q4_1 {
        return Ok(t);
    }
    let bad = |e: candle_core::Error| {
        EngineError::from(ModelError::BadTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            reason: format!(
                "re-quantising Q4_1 to Q8_0: {}",
                super::error::without_backtrace(e)
            ),
        })
    };
    let f = t.dequantize(&Device::Cpu).map_err(bad)?;
    QTensor::quantize(&f, GgmlDType::Q8_0).map_err(bad)
}
