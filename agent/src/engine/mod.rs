//! Inference engine: model loading, tokenizer, batched generation with per-token timing.
//!
//! `Engine::load_gguf` reads a Llama-family, Qwen2 or Gemma 3 GGUF (optionally re-quantising Q4_1 weights to
//! Q8_0 for candle's AVX2 kernels); `Engine::load_safetensors` reads a Hugging Face
//! Llama/Mistral/Qwen2 directory at f32/f16/bf16 or quantised on load. Both build the same
//! model; `Engine::generate` runs a batch of token prompts with a preallocated KV cache.
//! See docs/engine.md.

mod attention;
mod error;
mod generate;
mod grouped_matmul;
mod model;
mod q8_matmul;
mod quantized_matmul;
mod requantize;
mod safetensors;
#[cfg(test)]
mod safetensors_tests;
pub mod sampling;
mod spm;
mod tokenizer;
mod weight_matmul;

/// ggml's spelling of a storage type (`Q4_K`, not candle's `Q4K`).
pub use crate::model::ggml_name;
/// A GGUF integer of any width as u64 (`None` if negative or not an integer).
pub use crate::model::gguf_unsigned;
pub use error::{without_backtrace, EngineError};
pub use generate::{
    BatchOutput, GeneratedSequence, GenerationObserver, GenerationParams, NoopObserver,
};
pub use safetensors::{FloatPrecision, LoadQuantization};
pub use tokenizer::{ChatFormat, LemTokenizer};

use crate::model::config_json::HfConfig;
use crate::model::safetensors::SafetensorsSet;
use crate::model::{GgufFile, LlamaParams};
use candle_core::Device;
use lem_common::domain::{ComputeDevice, ModelInfo, TransformerShape};
use model::{KvCache, LlamaModel, MatmulMode};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Worker threads for candle's CPU kernels; None = candle's default (physical cores,
    /// or `CANDLE_NUM_THREADS` / `RAYON_NUM_THREADS`). Fixed for the life of the process
    /// by the first load (candle's pools are global).
    pub cpu_threads: Option<usize>,
    /// Re-quantise Q4_1 weights to Q8_0 at load (CPU). Default false: Q4_1 runs as stored
    /// through lem's Q4_1 × Q8_1 kernel (as llama.cpp), reading 84 instead of 143 MB per
    /// SmolLM2 token; the Q8_0 copy is kept as an option (config
    /// `quantization_config.load_in_8bit` on a GGUF).
    pub requantize_q4_1_to_q8_0: bool,
    /// KV cache capacity per row (prompt + generated tokens) and rotary table length.
    pub max_seq_len: usize,
    /// Safetensors models: the dtype weights are stored and multiplied in (norms, softmax,
    /// attention and the KV cache stay f32). GGUF weights keep their stored types.
    pub precision: FloatPrecision,
    /// Safetensors models: quantise the decoder layers' linear weights at load (the
    /// embedding and LM head stay in `precision`). Ignored for GGUF (already quantised).
    pub quantization: Option<LoadQuantization>,
    /// Where the model runs. Default: the CPU.
    pub device: DeviceRequest,
    /// CUDA ordinal (among the visible devices) for `Auto` / `Cuda`.
    pub cuda_ordinal: usize,
}

/// The compute device asked for (config `device:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    #[default]
    Cpu,
    /// CUDA when this build has it and the device opens, else the CPU with a note why.
    Auto,
    /// CUDA, or an error saying why not.
    Cuda,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            cpu_threads: None,
            requantize_q4_1_to_q8_0: false,
            max_seq_len: 2048,
            precision: FloatPrecision::F32,
            quantization: None,
            device: DeviceRequest::Cpu,
            cuda_ordinal: 0,
        }
    }
}

/// What was loaded and how it computes.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineInfo {
    /// The GGUF file or the safetensors model directory.
    pub path: PathBuf,
    /// `gguf` or `safetensors`.
    pub format: String,
    /// e.g. `Q8_0 (requantised from Q4_1)`, `BF16`,
    /// `Q8_0 (quantised on load from BF16); embeddings and LM head BF16`.
    pub weight_dtype: String,
    /// `f32` (activations, attention and the KV cache), or e.g.
    /// `bf16 matmuls (f32 accumulation), f32 norms/softmax/attention/KV cache`.
    pub compute_dtype: String,
    pub num_parameters: u64,
    pub shape: TransformerShape,
    /// `tokenizer.json` or `gguf-metadata`.
    pub tokenizer_source: String,
    pub eos_token_ids: Vec<u32>,
    /// `llama.context_length` / `max_position_embeddings` (what the model was trained for).
    pub context_length: Option<u64>,
    /// KV cache capacity per row in this engine.
    pub max_seq_len: usize,
    pub device: ComputeDevice,
    /// Time the load took.
    pub load_ns: u64,
}

/// What a model's files say without its weights (`Engine::read_gguf_headers`).
#[derive(Debug)]
pub struct ModelHeaders {
    pub tokenizer: LemTokenizer,
    pub shape: TransformerShape,
    pub context_length: Option<u64>,
    /// `gguf` or `safetensors`.
    pub format: &'static str,
}

/// What differs between the formats' loads, for `Engine::assembled`.
struct Loaded<'a> {
    /// The GGUF file or the safetensors model directory.
    path: &'a Path,
    format: &'static str,
    weight_dtype: String,
    compute_dtype: String,
    num_parameters: u64,
}

pub struct Engine {
    model: LlamaModel,
    tokenizer: LemTokenizer,
    info: EngineInfo,
    max_seq_len: usize,
    /// Kept between `generate` calls so equal-shaped batches reuse the allocation.
    cache: Option<KvCache>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("info", &self.info).finish()
    }
}

impl Engine {
    /// Loads a Llama-family GGUF. The tokenizer comes from `tokenizer_json` when given,
    /// else from the GGUF metadata.
    pub fn load_gguf(
        path: &Path,
        tokenizer_json: Option<&Path>,
        opts: &LoadOptions,
    ) -> Result<Engine, EngineError> {
        let prepared = prepare(opts)?;
        let device = &prepared.device;
        let mut g = GgufFile::open(path)?;
        let cfg = LlamaParams::from_gguf(&g)?;
        let tokenizer = LemTokenizer::load(&g, tokenizer_json)?;
        let num_parameters = g.num_parameters();
        let (model, weights) = LlamaModel::load(
            &mut g,
            cfg.clone(),
            // A CPU-kernel choice: candle's CUDA backend has Q4_1 kernels.
            opts.requantize_q4_1_to_q8_0 && device.is_cpu(),
            opts.max_seq_len,
            device,
        )?;
        let compute_dtype = if device.is_cpu() {
            // Which variant of lem's CPU kernels ran (chosen once per process).
            format!(
                "f32 (CPU kernels: {})",
                lem_kernels::dispatch::selected().name()
            )
        } else {
            "f32".into()
        };
        let loaded = Loaded {
            path,
            format: "gguf",
            weight_dtype: weights.describe(),
            compute_dtype,
            num_parameters,
        };
        Ok(Engine::assembled(
            model, tokenizer, &cfg, loaded, opts, prepared,
        ))
    }

    /// Loads a Hugging Face model directory: `config.json` (`LlamaForCausalLM`,
    /// `MistralForCausalLM` or `Qwen2ForCausalLM`) with `model.safetensors`, or shards
    /// listed in `model.safetensors.index.json`. The tokenizer is `tokenizer_json` when
    /// given, else `dir/tokenizer.json`; EOS ids come from `config.json`,
    /// `generation_config.json` and `tokenizer_config.json`, the chat template from the
    /// latter. Weights are converted to `opts.precision`, or the decoder layers' linear
    /// weights quantised to `opts.quantization`; Q/K rows are reordered at load for the
    /// interleaved rotary the forward pass uses. Errors name the file and the field or
    /// tensor.
    pub fn load_safetensors(
        dir: &Path,
        tokenizer_json: Option<&Path>,
        opts: &LoadOptions,
    ) -> Result<Engine, EngineError> {
        let prepared = prepare(opts)?;
        let device = &prepared.device;
        let hf = HfConfig::read(dir)?;
        let tokenizer = LemTokenizer::for_hf_dir(dir, tokenizer_json, &hf)?;
        let files = SafetensorsSet::open(dir)?;
        let num_parameters = files.num_parameters();
        let (weights, report) =
            safetensors::load_weights(&files, &hf, opts.precision, opts.quantization)?;
        drop(files);
        let cfg = hf.cfg.clone();
        if let Some(w) = cfg.sliding_window.filter(|&w| w < opts.max_seq_len) {
            tracing::warn!(
                sliding_window = w,
                max_seq_len = opts.max_seq_len,
                "lem attends over the full context; sequences longer than the sliding window are refused"
            );
        }
        let model = LlamaModel::assemble(
            cfg.clone(),
            weights,
            MatmulMode::Native,
            opts.max_seq_len,
            device,
        )?;
        let compute_dtype = if device.is_cpu() {
            report.compute_dtype()
        } else {
            gpu_compute_dtype(opts.precision, opts.quantization)
        };
        let loaded = Loaded {
            path: dir,
            format: "safetensors",
            weight_dtype: report.weight_dtype(),
            compute_dtype,
            num_parameters,
        };
        Ok(Engine::assembled(
            model, tokenizer, &cfg, loaded, opts, prepared,
        ))
    }

    /// The engine over a loaded model, with its description; logs the load.
    fn assembled(
        model: LlamaModel,
        tokenizer: LemTokenizer,
        cfg: &LlamaParams,
        loaded: Loaded,
        opts: &LoadOptions,
        prepared: Prepared,
    ) -> Engine {
        let Prepared {
            device,
            note,
            cpu_threads,
            t0,
        } = prepared;
        let info = EngineInfo {
            path: loaded.path.to_path_buf(),
            format: loaded.format.into(),
            weight_dtype: loaded.weight_dtype,
            compute_dtype: loaded.compute_dtype,
            num_parameters: loaded.num_parameters,
            shape: cfg.shape(),
            tokenizer_source: tokenizer.source().to_string(),
            eos_token_ids: tokenizer.eos_token_ids().to_vec(),
            context_length: cfg.context_length,
            max_seq_len: opts.max_seq_len,
            device: compute_device(&device, opts.cuda_ordinal, cpu_threads, note),
            load_ns: t0.elapsed().as_nanos() as u64,
        };
        tracing::info!(
            path = %info.path.display(),
            weights = %info.weight_dtype,
            compute = %info.compute_dtype,
            params = info.num_parameters,
            threads = cpu_threads,
            "model loaded"
        );
        Engine {
            model,
            tokenizer,
            info,
            max_seq_len: opts.max_seq_len,
            cache: None,
        }
    }

    /// Reads a GGUF's header (metadata and tensor table, no weights) and checks that the
    /// file is whole and its architecture is one this engine runs: the cheap check made
    /// before an experiment is stored.
    pub fn check_gguf(path: &Path) -> Result<TransformerShape, EngineError> {
        let g = GgufFile::open(path)?;
        Ok(LlamaParams::from_gguf(&g)?.shape())
    }

    /// The safetensors counterpart of [`check_gguf`](Self::check_gguf): `config.json`'s
    /// architecture and the weight files' headers, no weights.
    pub fn check_safetensors(dir: &Path) -> Result<TransformerShape, EngineError> {
        let hf = HfConfig::read(dir)?;
        SafetensorsSet::open(dir)?;
        Ok(hf.cfg.shape())
    }

    /// A GGUF model's tokenizer and shape, weights not loaded: what lem needs to drive
    /// an external server that serves this model (`engine: openai`).
    pub fn read_gguf_headers(
        path: &Path,
        tokenizer_json: Option<&Path>,
    ) -> Result<ModelHeaders, EngineError> {
        let g = GgufFile::open(path)?;
        let cfg = LlamaParams::from_gguf(&g)?;
        Ok(ModelHeaders {
            tokenizer: LemTokenizer::load(&g, tokenizer_json)?,
            shape: cfg.shape(),
            context_length: cfg.context_length,
            format: "gguf",
        })
    }

    /// The safetensors counterpart of [`read_gguf_headers`](Self::read_gguf_headers).
    pub fn read_safetensors_headers(
        dir: &Path,
        tokenizer_json: Option<&Path>,
    ) -> Result<ModelHeaders, EngineError> {
        let hf = HfConfig::read(dir)?;
        let tokenizer = LemTokenizer::for_hf_dir(dir, tokenizer_json, &hf)?;
        Ok(ModelHeaders {
            tokenizer,
            shape: hf.cfg.shape(),
            context_length: hf.cfg.context_length,
            format: "safetensors",
        })
    }

    /// Storage of the matmul weights (layer 0's projections, embedding, LM head), for
    /// tests that check what precision and quantisation options did.
    #[cfg(test)]
    pub(crate) fn weight_storage(&self) -> Vec<(&'static str, model::WeightStorage)> {
        self.model.weight_storage()
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &LemTokenizer {
        &self.tokenizer
    }

    /// The result record's description of this model.
    pub fn model_info(
        &self,
        requested: &str,
        resolved_path: &Path,
        resolved_from: &str,
    ) -> ModelInfo {
        ModelInfo {
            requested: requested.to_string(),
            resolved_path: resolved_path.display().to_string(),
            resolved_from: resolved_from.to_string(),
            format: self.info.format.clone(),
            weight_dtype: self.info.weight_dtype.clone(),
            compute_dtype: self.info.compute_dtype.clone(),
            num_parameters: Some(self.info.num_parameters),
            shape: self.info.shape.clone(),
            tokenizer_source: self.info.tokenizer_source.clone(),
            eos_token_ids: self.info.eos_token_ids.clone(),
            context_length: self.info.context_length,
            weights_sha256: None,
        }
    }
}

/// What `prepare` set up for a load.
struct Prepared {
    device: Device,
    /// Why the device was chosen.
    note: String,
    cpu_threads: usize,
    /// When the load started (for `EngineInfo::load_ns`).
    t0: Instant,
}

/// Checks `opts` and opens the device and thread pool a load uses.
fn prepare(opts: &LoadOptions) -> Result<Prepared, EngineError> {
    let t0 = Instant::now();
    if opts.max_seq_len < 2 {
        return Err(EngineError::InvalidParams(format!(
            "max_seq_len {} is too small",
            opts.max_seq_len
        )));
    }
    let (device, note) = select_device(opts)?;
    if device.is_cpu() {
        // A LEM_CPU_KERNEL this CPU cannot run is refused here, not silently replaced.
        lem_kernels::dispatch::check_override().map_err(|e| EngineError::Device(e.to_string()))?;
    }
    Ok(Prepared {
        device,
        note,
        cpu_threads: configure_threads(opts.cpu_threads),
        t0,
    })
}

/// The CPU thread count in use, fixed when the process started (`crate::threads::init`);
/// a different request is not applied, only warned about (the runner says so in the
/// result).
fn configure_threads(requested: Option<usize>) -> usize {
    let actual = crate::threads::in_use();
    if let Some(r) = requested.filter(|&r| r != actual) {
        tracing::warn!(
            requested = r,
            using = actual,
            "the CPU thread pool was sized when the process started; cpu_threads not applied"
        );
    }
    actual
}

/// Whether this build has candle's CUDA backend (`--features cuda`).
pub fn cuda_in_build() -> bool {
    candle_core::utils::cuda_is_available()
}

/// What opening the CUDA device gave.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CudaProbe {
    /// This build has no CUDA backend; `gpu_node`: `/dev/nvidia0` exists.
    NotBuilt {
        gpu_node: bool,
    },
    Opened,
    /// The CUDA error (no device, no driver, ordinal out of range, ...).
    Failed(String),
}

/// Where the model runs and why.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DeviceDecision {
    Cpu { note: String },
    Cuda { note: String },
}

/// Maps `device:` to a device. `probe` opens CUDA device `ordinal` and is called only when
/// CUDA is wanted. Err: `device: cuda` cannot be honoured (the message says why).
fn decide_device(
    request: DeviceRequest,
    ordinal: usize,
    probe: impl FnOnce() -> CudaProbe,
) -> Result<DeviceDecision, String> {
    let cpu = |why: String| DeviceDecision::Cpu {
        note: format!("{why}: running on the CPU"),
    };
    if request == DeviceRequest::Cpu {
        return Ok(cpu("device: cpu requested".into()));
    }
    let strict = request == DeviceRequest::Cuda;
    match probe() {
        CudaProbe::Opened => Ok(DeviceDecision::Cuda {
            note: if strict {
                format!("device: cuda requested: CUDA device {ordinal}")
            } else {
                format!("device: auto: CUDA device {ordinal} opened")
            },
        }),
        CudaProbe::NotBuilt { .. } if strict => Err(
            "device: cuda requested, but this lem build has no CUDA support; rebuild with `--features cuda` (scripts/build-cuda.sh) or use device: auto or cpu".into(),
        ),
        CudaProbe::Failed(e) if strict => Err(format!(
            "device: cuda requested, but CUDA device {ordinal} could not be opened: {e}"
        )),
        CudaProbe::NotBuilt { gpu_node: true } => Ok(cpu(
            "this lem build has no CUDA support (build with --features cuda)".into(),
        )),
        CudaProbe::NotBuilt { gpu_node: false } => Ok(cpu("no CUDA device".into())),
        CudaProbe::Failed(e) => Ok(cpu(format!("CUDA device {ordinal} did not open ({e})"))),
    }
}

/// Opens the device `opts` asks for; the note says why it was chosen.
fn select_device(opts: &LoadOptions) -> Result<(Device, String), EngineError> {
    let ordinal = opts.cuda_ordinal;
    let mut opened = None;
    let decision = decide_device(opts.device, ordinal, || {
        if !cuda_in_build() {
            return CudaProbe::NotBuilt {
                gpu_node: Path::new("/dev/nvidia0").exists(),
            };
        }
        match Device::new_cuda(ordinal) {
            Ok(d) => {
                opened = Some(d);
                CudaProbe::Opened
            }
            // candle appends a backtrace when RUST_BACKTRACE is set; the note keeps the
            // error itself.
            Err(e) => {
                CudaProbe::Failed(e.to_string().lines().next().unwrap_or_default().to_string())
            }
        }
    })
    .map_err(EngineError::Device)?;
    match (decision, opened) {
        (DeviceDecision::Cuda { note }, Some(d)) => Ok((d, note)),
        (DeviceDecision::Cpu { note }, _) => Ok((Device::Cpu, note)),
        (DeviceDecision::Cuda { .. }, None) => Err(EngineError::Device(
            "CUDA device reported open but not returned".into(),
        )),
    }
}

/// `compute_dtype` of a safetensors model on a GPU, where `model::device_matmul` decides
/// the matmul types.
fn gpu_compute_dtype(precision: FloatPrecision, quantization: Option<LoadQuantization>) -> String {
    let float = match precision {
        FloatPrecision::F32 => "f32",
        FloatPrecision::F16 => "f16 (cuBLAS)",
        FloatPrecision::BF16 => "f32 (BF16 weights widened to f32 on the GPU)",
    };
    let rest = "f32 norms/softmax/attention/KV cache";
    match quantization {
        None if precision == FloatPrecision::F32 => "f32".into(),
        None => format!("{float} matmuls, {rest}"),
        Some(q) => format!("{q:?} linear matmuls (candle CUDA kernels), {float} LM head, {rest}"),
    }
}

fn compute_device(device: &Device, ordinal: usize, threads: usize, note: String) -> ComputeDevice {
    if device.is_cpu() {
        return cpu_device(threads, note);
    }
    ComputeDevice {
        kind: "cuda".into(),
        name: gpu_name(device).unwrap_or_else(|| format!("CUDA device {ordinal}")),
        ordinal: Some(ordinal as u32),
        threads: None,
        note: Some(note),
    }
}

/// The GPU's name as the driver reports it (e.g. "NVIDIA H100 80GB HBM3").
#[cfg(feature = "cuda")]
fn gpu_name(device: &Device) -> Option<String> {
    match device {
        Device::Cuda(d) => d.cuda_stream().context().name().ok(),
        _ => None,
    }
}

#[cfg(not(feature = "cuda"))]
fn gpu_name(_device: &Device) -> Option<String> {
    None
}

fn cpu_device(threads: usize, note: String) -> ComputeDevice {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    ComputeDevice {
        kind: "cpu".into(),
        name: format!("{model} ({threads} threads)"),
        ordinal: None,
        threads: Some(threads as u32),
        note: Some(note),
    }
}

#[cfg(test)]
mod device_tests {
    use super::*;

    fn decide(request: DeviceRequest, probe: CudaProbe) -> Result<DeviceDecision, String> {
        decide_device(request, 1, || probe)
    }

    fn cpu_note(d: Result<DeviceDecision, String>) -> String {
        match d {
            Ok(DeviceDecision::Cpu { note }) => note,
            other => panic!("expected the CPU, got {other:?}"),
        }
    }

    #[test]
    fn cpu_request_never_probes_cuda() {
        let d = decide_device(DeviceRequest::Cpu, 0, || panic!("probed"));
        assert_eq!(cpu_note(d), "device: cpu requested: running on the CPU");
    }

    #[test]
    fn auto_uses_cuda_when_it_opens() {
        let d = decide(DeviceRequest::Auto, CudaProbe::Opened).unwrap();
        assert!(matches!(&d, DeviceDecision::Cuda { note } if note.contains("CUDA device 1")));
        let d = decide(DeviceRequest::Cuda, CudaProbe::Opened).unwrap();
        assert!(matches!(&d, DeviceDecision::Cuda { note } if note.contains("cuda requested")));
    }

    #[test]
    fn auto_falls_back_to_the_cpu_saying_why() {
        let n = cpu_note(decide(
            DeviceRequest::Auto,
            CudaProbe::NotBuilt { gpu_node: true },
        ));
        assert!(
            n.contains("no CUDA support") && n.contains("--features cuda"),
            "{n}"
        );
        let n = cpu_note(decide(
            DeviceRequest::Auto,
            CudaProbe::NotBuilt { gpu_node: false },
        ));
        assert_eq!(n, "no CUDA device: running on the CPU");
        let n = cpu_note(decide(
            DeviceRequest::Auto,
            CudaProbe::Failed("CUDA_ERROR_NO_DEVICE".into()),
        ));
        assert!(
            n.contains("CUDA device 1") && n.contains("CUDA_ERROR_NO_DEVICE"),
            "{n}"
        );
        assert!(n.ends_with("running on the CPU"), "{n}");
    }

    #[test]
    fn cuda_request_is_refused_with_the_reason() {
        let e = decide(DeviceRequest::Cuda, CudaProbe::NotBuilt { gpu_node: true }).unwrap_err();
        assert!(
            e.contains("no CUDA support") && e.contains("--features cuda"),
            "{e}"
        );
        let e = decide(
            DeviceRequest::Cuda,
            CudaProbe::Failed("CUDA_ERROR_NO_DEVICE".into()),
        )
        .unwrap_err();
        assert!(
            e.contains("device 1") && e.contains("CUDA_ERROR_NO_DEVICE"),
            "{e}"
        );
    }

    #[test]
    fn select_device_follows_the_build() {
        let opts = LoadOptions {
            device: DeviceRequest::Auto,
            ..LoadOptions::default()
        };
        let (device, note) = select_device(&opts).unwrap();
        if !cuda_in_build() {
            assert!(device.is_cpu());
            assert!(note.ends_with("running on the CPU"), "{note}");
            let cuda = LoadOptions {
                device: DeviceRequest::Cuda,
                ..LoadOptions::default()
            };
            assert!(matches!(select_device(&cuda), Err(EngineError::Device(_))));
        }
        let d = compute_device(&device, 0, 2, note);
        assert_eq!(d.kind, if device.is_cpu() { "cpu" } else { "cuda" });
    }
}
