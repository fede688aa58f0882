//! A weight matrix as the forward pass multiplies it: a candle `QMatMul` (through lem's
//! Q8_0 kernel where it applies, `q8_matmul`) or a Q4_1 or Q5_0 matrix repacked for lem's
//! native kernels (`grouped_matmul`, CPU only).

use super::grouped_matmul::{PackedQ4_1, PackedQ5_0};
use super::q8_matmul;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::Tensor;

pub(crate) enum WeightMatmul {
    Candle(QMatMul),
    Q4_1(PackedQ4_1),
    Q5_0(PackedQ5_0),
}

impl WeightMatmul {
    /// A CPU Q4_1 tensor repacked for lem's kernel; None for any other type, and None
    /// while candle is switched to dequantise every matmul (`CANDLE_DEQUANTIZE_ALL`, the
    /// f32 reference check): then candle's `QMatMul` runs the dequantised weights.
    pub(crate) fn native_q4_1(t: &QTensor) -> candle_core::Result<Option<Self>> {
        if t.dtype() != GgmlDType::Q4_1
            || !t.shape().dims2()?.1.is_multiple_of(32)
            || candle_dequantizes_all()?
        {
            return Ok(None);
        }
        PackedQ4_1::new(t).map(|p| Some(Self::Q4_1(p)))
    }

    /// A CPU tensor of a type with a native kernel (Q4_1, Q5_0) repacked for it; None for
    /// other types and while candle dequantises every matmul (as `native_q4_1`).
    pub(crate) fn native(t: &QTensor) -> candle_core::Result<Option<Self>> {
        if t.dtype() != GgmlDType::Q5_0 {
            return Self::native_q4_1(t);
        }
        if !t.shape().dims2()?.1.is_multiple_of(32) || candle_dequantizes_all()? {
            return Ok(None);
        }
        PackedQ5_0::new(t).map(|p| Some(Self::Q5_0(p)))
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Candle(w) => q8_matmul::forward(w, x),
            Self::Q4_1(w) => w.forward(x),
            Self::Q5_0(w) => w.forward(x),
        }
    }
}

/// Whether candle's `QMatMul` dequantises quantised weights in this process. Asked of
/// candle itself (a one-block Q4_1 matrix), so lem reads no variable of its own.
fn candle_dequantizes_all() -> candle_core::Result<bool> {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if let Some(answer) = ANSWER.get() {
        return Ok(*answer);
    }
    let probe = Tensor::zeros((1, 32), candle_core::DType::F32, &candle_core::Device::Cpu)?;
    let q = QTensor::quantize(&probe, GgmlDType::Q4_1)?;
    let answer = matches!(
        QMatMul::from_arc(std::sync::Arc::new(q))?,
        QMatMul::Tensor(_) | QMatMul::TensorF16(_)
    );
    Ok(*ANSWER.get_or_init(|| answer))
}
