//! What a conversion writes: the container format and the weights' precision.

use candle_core::quantized::GgmlDType;
use candle_core::DType;
use std::str::FromStr;

/// Output container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetFormat {
    Safetensors,
    Gguf,
}

impl TargetFormat {
    pub fn name(self) -> &'static str {
        match self {
            TargetFormat::Safetensors => "safetensors",
            TargetFormat::Gguf => "gguf",
        }
    }
}

impl FromStr for TargetFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "safetensors" => Ok(TargetFormat::Safetensors),
            "gguf" => Ok(TargetFormat::Gguf),
            _ => Err(format!("unknown format `{s}`; use safetensors or gguf")),
        }
    }
}

/// Precision of the written weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetDtype {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
}

impl TargetDtype {
    pub const ALL: [TargetDtype; 5] = [
        TargetDtype::F32,
        TargetDtype::F16,
        TargetDtype::Bf16,
        TargetDtype::Q8_0,
        TargetDtype::Q4_0,
    ];

    /// Lower-case name, also the suffix of default output names.
    pub fn name(self) -> &'static str {
        match self {
            TargetDtype::F32 => "f32",
            TargetDtype::F16 => "f16",
            TargetDtype::Bf16 => "bf16",
            TargetDtype::Q8_0 => "q8_0",
            TargetDtype::Q4_0 => "q4_0",
        }
    }

    /// The safetensors dtype, for the float types.
    pub fn safetensors_dtype(self) -> Option<DType> {
        match self {
            TargetDtype::F32 => Some(DType::F32),
            TargetDtype::F16 => Some(DType::F16),
            TargetDtype::Bf16 => Some(DType::BF16),
            TargetDtype::Q8_0 | TargetDtype::Q4_0 => None,
        }
    }

    /// The GGUF storage type. bf16 is left out: candle 0.11 has no CPU matmul for BF16
    /// GGUF weights, so lem could not run what it wrote.
    pub fn ggml_dtype(self) -> Option<GgmlDType> {
        match self {
            TargetDtype::F32 => Some(GgmlDType::F32),
            TargetDtype::F16 => Some(GgmlDType::F16),
            TargetDtype::Q8_0 => Some(GgmlDType::Q8_0),
            TargetDtype::Q4_0 => Some(GgmlDType::Q4_0),
            TargetDtype::Bf16 => None,
        }
    }

    pub fn supported_by(self, format: TargetFormat) -> bool {
        match format {
            TargetFormat::Safetensors => self.safetensors_dtype().is_some(),
            TargetFormat::Gguf => self.ggml_dtype().is_some(),
        }
    }

    /// The dtypes `format` can hold, for messages.
    pub fn names_for(format: TargetFormat) -> String {
        Self::ALL
            .iter()
            .filter(|d| d.supported_by(format))
            .map(|d| d.name())
            .collect::<Vec<_>>()
            .join("|")
    }
}

impl FromStr for TargetDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(TargetDtype::F32),
            "f16" | "float16" | "fp16" => Ok(TargetDtype::F16),
            "bf16" | "bfloat16" => Ok(TargetDtype::Bf16),
            "q8_0" => Ok(TargetDtype::Q8_0),
            "q4_0" => Ok(TargetDtype::Q4_0),
            _ => Err(format!(
                "unknown dtype `{s}`; use one of f32, f16, bf16, q8_0, q4_0"
            )),
        }
    }
}
