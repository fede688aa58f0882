//! Loading a job's model: what a loaded engine was loaded for ([`LoadKey`]) and the load
//! itself (resolve → engine → model info with the weights' hash), kept across cycles.

use super::placement::DevicePlacement;
use super::RunError;
use crate::engine::{DeviceRequest, Engine, FloatPrecision, LoadOptions, LoadQuantization};
use crate::hub::{self, ModelFormat, ResolveOptions};
use lem_common::config::{Device, ExperimentConfig, Precision};
use lem_common::domain::ModelInfo;

/// The last loaded model, so cycles of one experiment load it once.
#[derive(Default)]
pub(super) struct LoadedModel {
    loaded: Option<(LoadKey, Engine, ModelInfo)>,
}

impl LoadedModel {
    /// The engine for `cfg` on `placement`, loading it unless the one held fits.
    pub(super) fn ensure(
        &mut self,
        cfg: &ExperimentConfig,
        placement: &DevicePlacement,
        seq_len_needed: usize,
        resolve: &ResolveOptions,
    ) -> Result<(&mut Engine, &ModelInfo), RunError> {
        let key = LoadKey::for_job(cfg, placement);
        let fits = |e: &Engine| e.info().max_seq_len >= seq_len_needed;
        // A GGUF model ignores precision and quantisation, but reloading it when they
        // change costs only a load and keeps the key simple.
        if !matches!(&self.loaded, Some((k, e, _)) if *k == key && fits(e)) {
            self.loaded = None; // free the old model before loading the next
            let (engine, info) = load(cfg, &key, seq_len_needed, resolve)?;
            self.loaded = Some((key, engine, info));
        }
        let (_, engine, info) = self.loaded.as_mut().expect("loaded above");
        Ok((engine, info))
    }
}

fn load(
    cfg: &ExperimentConfig,
    key: &LoadKey,
    seq_len_needed: usize,
    resolve: &ResolveOptions,
) -> Result<(Engine, ModelInfo), RunError> {
    let model_name = cfg.model_name.as_str();
    let resolved = hub::resolve_model(model_name, resolve).map_err(|source| RunError::Model {
        model: model_name.to_string(),
        source: Box::new(source),
    })?;
    let defaults = LoadOptions::default();
    let opts = LoadOptions {
        // A request only: the pool was sized when the process started (`crate::threads`).
        cpu_threads: cfg.cpu_threads.map(|t| t as usize),
        // Rotary tables cover the longest sequence this job can make.
        max_seq_len: defaults.max_seq_len.max(seq_len_needed),
        precision: key.precision,
        quantization: key.quantization,
        // A GGUF's Q4_1 weights run as stored unless an 8-bit load is asked for, which
        // keeps the Q8_0 re-quantisation available (safetensors: `quantization` above).
        requantize_q4_1_to_q8_0: key.quantization == Some(LoadQuantization::Q8_0),
        device: key.device,
        cuda_ordinal: key.cuda_ordinal,
    };
    let tokenizer = resolved.tokenizer_json.as_deref();
    let (path, loaded) = match &resolved.format {
        ModelFormat::Gguf { file } => (file, Engine::load_gguf(file, tokenizer, &opts)),
        ModelFormat::Safetensors { dir } => (dir, Engine::load_safetensors(dir, tokenizer, &opts)),
    };
    let engine = loaded.map_err(|source| RunError::Engine {
        model: model_name.to_string(),
        source,
    })?;
    let mut info = engine.model_info(model_name, path, resolved.resolved_from);
    // Once per load (the model stays cached across cycles).
    info.weights_sha256 = Some(crate::model_hash::weights_sha256(path));
    Ok((engine, info))
}

/// What a loaded engine was loaded for: a different model, precision, quantisation or
/// device needs a fresh load.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoadKey {
    model: String,
    precision: FloatPrecision,
    quantization: Option<LoadQuantization>,
    device: DeviceRequest,
    /// CUDA ordinal from the job's placement.
    cuda_ordinal: usize,
}

impl LoadKey {
    fn for_job(cfg: &ExperimentConfig, placement: &DevicePlacement) -> Self {
        let q = &cfg.quantization_config;
        Self {
            model: cfg.model_name.clone(),
            precision: match cfg.fp_precision {
                Precision::Float32 => FloatPrecision::F32,
                Precision::Float16 => FloatPrecision::F16,
                Precision::Bfloat16 => FloatPrecision::BF16,
            },
            // bitsandbytes' 8-bit and 4-bit loads map to candle's nearest block formats.
            quantization: if q.load_in_8bit {
                Some(LoadQuantization::Q8_0)
            } else if q.load_in_4bit {
                Some(LoadQuantization::Q4_0)
            } else {
                None
            },
            device: match cfg.device {
                Device::Auto => DeviceRequest::Auto,
                Device::Cpu => DeviceRequest::Cpu,
                Device::Cuda => DeviceRequest::Cuda,
            },
            cuda_ordinal: placement.cuda_ordinal(&cfg.gpu_list),
        }
    }
}
