//! One job: resolve model → load (cached across cycles) → prompts → warmup → measured
//! window (meters started, batches generated, meters stopped) → `RawResult`.

use crate::engine::{
    BatchOutput, DeviceRequest, Engine, EngineError, FloatPrecision, GenerationObserver,
    GenerationParams, LoadOptions, LoadQuantization,
};
use crate::hub::{self, ModelFormat, ResolveOptions};
use crate::meter::phases::PhaseRecorder;
use crate::meter::{self, BaselineCache, EnergyMeter, BASELINE_TTL};
use crate::metered_window;
use crate::prompts::{self, PromptContext, PromptSpec, Sampling};
use lem_common::config::{
    BatchingStrategy, Device, EngineKind, ExperimentConfig, Precision, PromptSource,
};
use lem_common::domain::{
    FlopsBreakdown, JobSpec, ModelInfo, RawResult, RequestRecord, TransformerShape,
    RAW_RESULT_SCHEMA_VERSION,
};
use lem_common::phases::Phase;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Warning on every result metered with the fake NVML library.
pub const SIMULATED_WARNING: &str =
    "simulated GPU node: energies come from the fake NVML scenario, not hardware";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{source}")]
    Model {
        model: String,
        source: Box<hub::HubError>,
    },
    #[error("model `{model}`: {source}")]
    Engine { model: String, source: EngineError },
    #[error("prompts: {0}")]
    Prompts(#[from] prompts::PromptError),
    #[error("cannot run this config: {0}")]
    Unsupported(String),
    #[error("interrupted")]
    Interrupted,
    /// `engine: openai`: the server could not be used at all (per-request failures are
    /// results, not this).
    #[error("{0}")]
    Server(#[from] crate::openai::OpenAiError),
}

/// Where the runner finds models, prompts and meters.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub resolve: ResolveOptions,
    pub powercap_root: PathBuf,
    /// Set by a Ctrl+C handler; the runner stops at the next token.
    pub stop: Arc<AtomicBool>,
}

impl RunContext {
    pub fn from_env(stop: Arc<AtomicBool>) -> Self {
        Self {
            resolve: ResolveOptions::from_env(),
            powercap_root: std::env::var_os("LEM_POWERCAP_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/sys/class/powercap")),
            stop,
        }
    }
}

/// Progress callbacks for a CLI progress bar.
pub trait RunProgress {
    fn phase(&mut self, _message: &str) {}
    fn prompts_total(&mut self, _n: u64) {}
    fn tokens(&mut self, _n: u64) {}
    fn prompts_done(&mut self, _n: u64) {}
}

/// A progress sink that shows nothing.
pub struct NoProgress;
impl RunProgress for NoProgress {}

/// Runs jobs, keeping the last loaded model so cycles of one experiment load it once.
#[derive(Default)]
pub struct JobRunner {
    loaded: Option<(LoadKey, Engine, ModelInfo)>,
    /// Idle power per device, reused across cycles until `BASELINE_TTL` passes.
    baselines: BaselineCache,
}

struct Observer<'a> {
    stop: &'a AtomicBool,
    progress: &'a mut dyn RunProgress,
    /// In the measured window: the meters, checkpointed at every phase boundary.
    window: Option<(&'a mut [Box<dyn EnergyMeter>], PhaseRecorder)>,
}

impl Observer<'_> {
    /// `phase` starts now: reads the meters' cumulative energy (measured window only).
    fn mark(&mut self, phase: Phase) {
        if let Some((meters, recorder)) = &mut self.window {
            recorder.mark(phase, meters);
        }
    }

    /// After every batch: the gap before the next batch starts, progress advances.
    fn after_batch(&mut self, n: usize) {
        if let Some((meters, _)) = &mut self.window {
            // Meters that cannot checkpoint still read their counters between batches.
            meters.iter_mut().for_each(|m| m.poll());
        }
        self.mark(Phase::Other);
        self.progress.prompts_done(n as u64);
    }
}

impl GenerationObserver for Observer<'_> {
    fn on_prefill_done(&mut self, _batch: usize) {
        self.mark(Phase::Decode);
    }
    fn on_token(&mut self, _row: usize, _token: u32) {
        self.progress.tokens(1);
    }
    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

impl JobRunner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn run(
        &mut self,
        job: &JobSpec,
        ctx: &RunContext,
        progress: &mut dyn RunProgress,
    ) -> Result<RawResult, RunError> {
        let cfg = &job.config;
        refuse_unsupported(cfg)?;
        if cfg.engine == EngineKind::Openai {
            return crate::openai::job::run(job, ctx, progress, &mut self.baselines);
        }
        // Refused before the model is resolved (possibly downloaded); a device that does not
        // open is the engine's error at load.
        if cfg.device == Device::Cuda && !crate::engine::cuda_in_build() {
            return Err(RunError::Unsupported(
                "device: cuda requested, but this lem build has no CUDA support; rebuild with `--features cuda` (scripts/build-cuda.sh) or use device: auto or cpu".into(),
            ));
        }
        let started_at = now_rfc3339();
        let mut warnings = Vec::new();

        progress.phase("loading model");
        let cpu_threads = cfg.cpu_threads.map(|t| t as usize);
        let seq_len_needed = (cfg.max_input_tokens + cfg.max_output_tokens) as usize;
        self.ensure_loaded(cfg, cpu_threads, seq_len_needed, &ctx.resolve)?;
        let Self {
            loaded,
            baselines: baseline_cache,
            ..
        } = self;
        let (_, engine, model_info) = loaded.as_mut().expect("loaded above");
        warnings.extend(config_notes(cfg, model_info));
        if let Some(ctx_len) = model_info.context_length {
            if seq_len_needed as u64 > ctx_len {
                warnings.push(format!(
                    "max_input_tokens + max_output_tokens = {seq_len_needed} exceeds the model's trained context length {ctx_len}"
                ));
            }
        }

        progress.phase("loading prompts");
        let token_prompts: Vec<Vec<u32>> =
            load_token_prompts(cfg, ctx, engine.tokenizer(), &mut warnings)?
                .into_iter()
                .map(|p| p.ids)
                .collect();

        let params = generation_params(cfg, job.cycle);
        let mut observer = Observer {
            stop: &ctx.stop,
            progress,
            window: None,
        };

        // Warmup: discarded runs so caches and allocators settle before the window.
        let warmup = (cfg.warmup_prompts as usize).min(token_prompts.len());
        if warmup > 0 {
            observer.progress.phase("warmup");
            let warm_params = GenerationParams {
                max_new_tokens: params.max_new_tokens.min(8),
                ..params.clone()
            };
            engine
                .generate(&token_prompts[..warmup], &warm_params, &mut observer)
                .map_err(|e| map_engine_err(&cfg.model_name, e))?;
        }

        let on_gpu = engine.info().device.kind == "cuda";
        let mut meters = metered_window::open_meters(cfg, ctx, on_gpu, &mut warnings);
        // Every metered device is this job's alone from before the metered warmup and
        // the baseline until the window closes (`_claim` drops at return; invariant 4).
        let holder = format!("experiment {} ({})", job.experiment_id, cfg.config_name);
        let _claim = meter::claims::claim_for_job(
            cfg,
            &ctx.powercap_root,
            on_gpu,
            &holder,
            &ctx.stop,
            &mut warnings,
        )
        .ok_or(RunError::Interrupted)?;
        let warmup_record = if cfg.warmup_until_stable.enabled {
            observer.progress.phase("warmup until stable");
            let round_prompts = &token_prompts[..warmup.max(1)];
            let round_params = GenerationParams {
                max_new_tokens: params.max_new_tokens.min(32),
                ..params.clone()
            };
            let record = crate::warmup::until_stable(&cfg.warmup_until_stable, || {
                steady_warmup_round(
                    engine,
                    round_prompts,
                    &round_params,
                    &mut meters.meters,
                    &mut observer,
                )
            })
            .map_err(|e| map_engine_err(&cfg.model_name, e))?;
            if !record.stable {
                warnings.push(format!(
                    "warmup did not reach steady state within {} rounds (throughput per round: {:?} tok/s); measuring anyway",
                    record.rounds, record.output_tokens_per_s
                ));
            }
            Some(record)
        } else {
            None
        };

        let Observer { progress, .. } = observer;
        let batches = plan_batches(cfg, &token_prompts);
        let arrivals_ns = lem_common::arrivals::schedule_for(cfg, token_prompts.len())
            .map_err(|e| RunError::Unsupported(e.to_string()))?;
        let baselines =
            metered_window::prepare_baselines(baseline_cache, &mut meters.meters, cfg, progress);
        // The baseline wait (up to idle_baseline_s) does not watch Ctrl+C; honour it
        // before the window rather than after.
        if ctx.stop.load(Ordering::Relaxed) {
            return Err(RunError::Interrupted);
        }
        progress.phase("measuring");
        progress.prompts_total(token_prompts.len() as u64);
        metered_window::start_meters(&mut meters.meters, &mut warnings);
        let window_start = Instant::now();
        let mut observer = Observer {
            stop: &ctx.stop,
            progress,
            window: Some((&mut meters.meters, PhaseRecorder::new(window_start))),
        };
        let mut window =
            WindowTotals::new(token_prompts.len(), &model_info.shape, cfg.save_outputs);
        if let Some(arrivals_ns) = &arrivals_ns {
            // Requests are served as they arrive (see `serving`): batches form in arrival
            // order, so sorting and token budgets do not apply.
            if cfg.batching_options.strategy != BatchingStrategy::Static
                || cfg.batching_options.max_tokens_per_batch.is_some()
            {
                warnings.push("latency_simulation: batching_options.strategy and max_tokens_per_batch do not apply; up to batch_size arrived requests run together, in arrival order".into());
            }
            crate::serving::run(
                &token_prompts,
                arrivals_ns,
                cfg.batching_options.batch_size.max(1) as usize,
                window_start,
                &mut observer,
                |inputs, obs| {
                    obs.mark(Phase::Prefill);
                    engine.generate(inputs, &params, obs)
                },
                |obs, served| {
                    let batch: Vec<usize> = served.requests.collect();
                    let arrived = BatchArrivals {
                        arrivals_ns,
                        start_offset_ns: served.start_offset_ns,
                    };
                    window.add_batch(
                        &batch,
                        &served.output,
                        served.start_offset_ns,
                        Some(arrived),
                    );
                    obs.after_batch(batch.len());
                },
            )
            .map_err(|e| map_engine_err(&cfg.model_name, e))?;
        } else {
            for batch in &batches {
                let inputs: Vec<Vec<u32>> =
                    batch.iter().map(|&i| token_prompts[i].clone()).collect();
                observer.mark(Phase::Prefill);
                let start_offset_ns = window_start.elapsed().as_nanos() as u64;
                let out: BatchOutput = engine
                    .generate(&inputs, &params, &mut observer)
                    .map_err(|e| map_engine_err(&cfg.model_name, e))?;
                window.add_batch(batch, &out, start_offset_ns, None);
                observer.after_batch(batch.len());
            }
        }
        let WindowTotals {
            mut records,
            prefill_ns,
            decode_ns,
            flops,
            ..
        } = window;
        let wall_ns = window_start.elapsed().as_nanos() as u64;
        let phases = observer.window.take().map(|(_, recorder)| recorder);
        let energy = metered_window::close_meters(
            &mut meters,
            wall_ns,
            phases.as_ref(),
            &baselines,
            cfg,
            &mut warnings,
        );
        records.sort_by_key(|r| r.index);

        let mut model = model_info.clone();
        model.requested = cfg.model_name.clone();
        Ok(RawResult {
            schema_version: RAW_RESULT_SCHEMA_VERSION,
            experiment_id: job.experiment_id.clone(),
            job_key: job.job_key.clone(),
            cycle: job.cycle,
            attempt: job.attempt,
            started_at,
            finished_at: now_rfc3339(),
            effective_config: cfg.to_json(),
            cli_overrides: job.cli_overrides.clone(),
            compute_device: engine.info().device.clone(),
            model,
            requests: records,
            wall_ns,
            prefill_ns,
            decode_ns,
            energy,
            flops,
            peak_memory_bytes: crate::sysinfo::peak_rss_bytes(),
            warmup_requests: warmup as u32,
            warmup: warmup_record,
            warnings,
            server: None,
            hostname: crate::sysinfo::hostname(),
            lem_version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    fn ensure_loaded(
        &mut self,
        cfg: &ExperimentConfig,
        cpu_threads: Option<usize>,
        seq_len_needed: usize,
        resolve: &ResolveOptions,
    ) -> Result<(), RunError> {
        let model_name = cfg.model_name.as_str();
        let key = LoadKey::for_config(cfg);
        let fits = |e: &Engine| e.info().max_seq_len >= seq_len_needed;
        // A GGUF model ignores precision and quantisation, but reloading it when they
        // change costs only a load and keeps the key simple.
        if matches!(&self.loaded, Some((k, e, _)) if *k == key && fits(e)) {
            return Ok(());
        }
        self.loaded = None; // free the old model before loading the next
        let resolved =
            hub::resolve_model(model_name, resolve).map_err(|source| RunError::Model {
                model: model_name.to_string(),
                source: Box::new(source),
            })?;
        let defaults = LoadOptions::default();
        let opts = LoadOptions {
            cpu_threads,
            // Rotary tables cover the longest sequence this job can make.
            max_seq_len: defaults.max_seq_len.max(seq_len_needed),
            precision: key.precision,
            quantization: key.quantization,
            device: key.device,
            cuda_ordinal: key.cuda_ordinal,
            ..defaults
        };
        let tokenizer = resolved.tokenizer_json.as_deref();
        let (path, loaded) = match &resolved.format {
            ModelFormat::Gguf { file } => (file, Engine::load_gguf(file, tokenizer, &opts)),
            ModelFormat::Safetensors { dir } => {
                (dir, Engine::load_safetensors(dir, tokenizer, &opts))
            }
        };
        let engine = loaded.map_err(|source| RunError::Engine {
            model: model_name.to_string(),
            source,
        })?;
        let mut info = engine.model_info(model_name, path, resolved.resolved_from);
        // Once per load (the model stays cached across cycles).
        info.weights_sha256 = Some(crate::model_hash::weights_sha256(path));
        self.loaded = Some((key, engine, info));
        Ok(())
    }
}

/// What a loaded engine was loaded for: a different model, precision or quantisation
/// needs a fresh load.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoadKey {
    model: String,
    precision: FloatPrecision,
    quantization: Option<LoadQuantization>,
    device: DeviceRequest,
    /// CUDA ordinal: `gpu_list[0]` (an index among the visible devices, as CUDA counts).
    cuda_ordinal: usize,
}

impl LoadKey {
    fn for_config(cfg: &ExperimentConfig) -> Self {
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
            cuda_ordinal: cfg.gpu_list.first().map_or(0, |&g| g as usize),
        }
    }
}

impl BaselineCache {
    /// Baseline power by device id for the devices `meters` can measure: cached values
    /// while fresh, else all meters measured idle together for `duration`. Nothing is
    /// measured (and no time spent) when no device gives a reading.
    pub(crate) fn ensure(
        &mut self,
        meters: &mut [Box<dyn EnergyMeter>],
        duration: Duration,
        now: Instant,
    ) -> BTreeMap<String, meter::IdleBaseline> {
        // A zero-length window says which devices can be read at all.
        let mut available = Vec::new();
        for m in meters.iter_mut() {
            if m.start().is_ok() {
                available.extend(
                    m.stop()
                        .into_iter()
                        .filter(|r| r.energy_mj.is_some())
                        .map(|r| r.device_id),
                );
            }
        }
        if available.is_empty() {
            return BTreeMap::new();
        }
        if !self.all_fresh(&available, now, BASELINE_TTL) {
            // Measured in parallel so the wait is `duration`, not one per meter.
            let measured: Vec<meter::IdleBaseline> = std::thread::scope(|s| {
                let handles: Vec<_> = meters
                    .iter_mut()
                    .map(|m| s.spawn(move || m.idle_baselines(duration)))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect()
            });
            let at = Instant::now();
            for b in measured {
                self.insert_baseline(b, at);
            }
        }
        let now = Instant::now();
        available
            .into_iter()
            .filter_map(|id| Some((id.clone(), self.entry(&id, now, BASELINE_TTL)?)))
            .collect()
    }
}

/// One round of warmup until steady state: the prompts generated inside a metered window;
/// mean power = Σ over readable devices of energy / window.
fn steady_warmup_round(
    engine: &mut Engine,
    prompts: &[Vec<u32>],
    params: &GenerationParams,
    meters: &mut [Box<dyn EnergyMeter>],
    observer: &mut Observer<'_>,
) -> Result<crate::warmup::Round, crate::engine::EngineError> {
    let metered: Vec<bool> = meters.iter_mut().map(|m| m.start().is_ok()).collect();
    let out = engine.generate(prompts, params, observer);
    let mut watts = Vec::new();
    for (m, started) in meters.iter_mut().zip(metered) {
        if started {
            watts.extend(m.stop().into_iter().filter_map(|r| {
                let mj = r.energy_mj?;
                (r.window_ns > 0).then(|| mj * 1e6 / r.window_ns as f64)
            }));
        }
    }
    let out = out?;
    Ok(crate::warmup::Round {
        output_tokens: out
            .sequences
            .iter()
            .map(|s| s.output_token_ids.len() as u64)
            .sum(),
        wall_ns: out.wall_ns,
        power_w: (!watts.is_empty()).then(|| watts.iter().sum()),
    })
}

/// Sets each reading's baseline from `baselines` (net energy where there is a power): a
/// device's own, or for a MIG slice its parent's, which in shared mode was measured while
/// other tenants may have run on the other slices.
pub(crate) fn apply_baselines(
    energy: &mut [lem_common::domain::EnergyReading],
    baselines: &BTreeMap<String, meter::IdleBaseline>,
) {
    for reading in energy.iter_mut() {
        if let Some(b) = baselines.get(&reading.device_id) {
            if let Some(power_w) = b.info.power_w {
                reading.apply_baseline(power_w);
            }
            reading.baseline = Some(b.info.clone());
        } else if let Some(a) = &reading.mig {
            // The slice's net energy was set by the meter from the parent's power.
            if let Some(b) = baselines.get(&a.parent_id) {
                let mut info = b.info.clone();
                if a.mode == lem_common::mig::MigMode::Shared {
                    info.note = Some(format!(
                        "shared MIG: the parent's idle baseline includes whatever other tenants ran on its other slices while it was measured; this slice's idle is its {}/{} compute-slice share",
                        a.slices
                            .iter()
                            .find(|s| s.slice_id == reading.device_id)
                            .map_or(0, |s| s.compute_slices),
                        a.total_compute_slices
                    ));
                }
                reading.baseline = Some(info);
            }
        }
    }
}

/// What the measured window accumulates, batch by batch, whichever way batches form.
struct WindowTotals<'a> {
    records: Vec<RequestRecord>,
    prefill_ns: u64,
    decode_ns: u64,
    flops: FlopsBreakdown,
    shape: &'a TransformerShape,
    save_outputs: bool,
}

/// When a served batch's requests arrived and when the batch started, both from the
/// window start (`latency_simulation`).
#[derive(Clone, Copy)]
struct BatchArrivals<'a> {
    /// Indexed by prompt index.
    arrivals_ns: &'a [u64],
    start_offset_ns: u64,
}

impl<'a> WindowTotals<'a> {
    fn new(capacity: usize, shape: &'a TransformerShape, save_outputs: bool) -> Self {
        Self {
            records: Vec::with_capacity(capacity),
            prefill_ns: 0,
            decode_ns: 0,
            flops: FlopsBreakdown::default(),
            shape,
            save_outputs,
        }
    }

    /// Adds one generated batch (`batch[row]` = prompt index). With arrivals, TTFT and e2e
    /// count from each request's arrival: the engine's times (from the batch start) plus
    /// the time it queued. `start_offset_ns`: when the batch started, from the window start.
    fn add_batch(
        &mut self,
        batch: &[usize],
        out: &BatchOutput,
        start_offset_ns: u64,
        arrivals: Option<BatchArrivals>,
    ) {
        self.prefill_ns += out.prefill_ns;
        self.decode_ns += out.decode_ns;
        for (seq, &prompt_index) in out.sequences.iter().zip(batch) {
            let f = lem_common::flops::request_flops(
                self.shape,
                seq.input_tokens as u64,
                seq.output_token_ids.len() as u64,
            );
            self.flops.prefill_flops += f.prefill_flops;
            self.flops.decode_flops += f.decode_flops;
            let arrival_offset_ns = arrivals.map(|a| a.arrivals_ns[prompt_index]);
            let queued_ns = arrivals
                .map(|a| {
                    a.start_offset_ns
                        .saturating_sub(a.arrivals_ns[prompt_index])
                })
                .unwrap_or(0);
            self.records.push(RequestRecord {
                index: prompt_index as u32,
                input_tokens: seq.input_tokens,
                output_tokens: seq.output_token_ids.len() as u32,
                ttft_ns: seq.ttft_ns + queued_ns,
                itl_ns: seq.itl_ns.clone(),
                e2e_ns: seq.e2e_ns + queued_ns,
                stop_reason: seq.stop_reason,
                output_text: self.save_outputs.then(|| seq.text.clone()),
                arrival_offset_ns,
                start_offset_ns: Some(start_offset_ns),
                finish_offset_ns: Some(start_offset_ns + seq.e2e_ns),
            });
        }
    }
}

fn map_engine_err(model: &str, e: EngineError) -> RunError {
    if matches!(e, EngineError::Interrupted) {
        RunError::Interrupted
    } else {
        RunError::Engine {
            model: model.to_string(),
            source: e,
        }
    }
}

/// Checks before anything is stored that `cfg` can run here: nothing it asks for is
/// refused, a prompt file opens, and its model resolves, opens and has an architecture
/// the engine runs.
/// Reads headers only; the weights load when the job runs.
pub fn preflight(cfg: &ExperimentConfig, resolve: &ResolveOptions) -> Result<(), RunError> {
    refuse_unsupported(cfg)?;
    if cfg.engine == EngineKind::Openai {
        // The server must be up; the model is read for its tokenizer, not its weights.
        crate::openai::job::preflight(cfg)?;
    }
    // A prompt file that cannot be opened is the user's input too, found before a record
    // exists; its content is checked when the prompts load.
    if let Some(PromptSource::File { path, .. }) = &cfg.prompt_source {
        let path = PathBuf::from(path);
        if let Err(source) = std::fs::File::open(&path) {
            return Err(RunError::Prompts(prompts::PromptError::Io { path, source }));
        }
    }
    let model = cfg.model_name.as_str();
    let resolved = hub::resolve_model(model, resolve).map_err(|source| RunError::Model {
        model: model.to_string(),
        source: Box::new(source),
    })?;
    match &resolved.format {
        ModelFormat::Gguf { file } => Engine::check_gguf(file),
        ModelFormat::Safetensors { dir } => Engine::check_safetensors(dir),
    }
    .map_err(|source| RunError::Engine {
        model: model.to_string(),
        source,
    })?;
    Ok(())
}

/// Config features lem accepts but cannot honour yet are refused, not silently ignored.
fn refuse_unsupported(cfg: &ExperimentConfig) -> Result<(), RunError> {
    let problems = lem_common::config::unsupported(cfg);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RunError::Unsupported(
            problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        ))
    }
}

/// Settings that were accepted but act differently on this engine, said in the result.
fn config_notes(cfg: &ExperimentConfig, model: &ModelInfo) -> Vec<String> {
    let mut notes = Vec::new();
    if model.format == "gguf" && cfg.fp_precision != Precision::Float32 {
        notes.push(format!(
            "fp_precision {} requested: GGUF quantised weights ({}) compute in {} here",
            serde_json::to_value(cfg.fp_precision)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            model.weight_dtype,
            model.compute_dtype
        ));
    }
    let q = &cfg.quantization_config;
    if model.format == "gguf" && (q.quantization || q.load_in_4bit || q.load_in_8bit) {
        notes.push(format!(
            "quantization_config ignored: the GGUF model is already quantised ({})",
            model.weight_dtype
        ));
    }
    if model.format == "safetensors" {
        if q.load_in_8bit {
            notes.push(format!(
                "quantization_config.load_in_8bit: weights quantised on load to Q8_0 (blockwise 8-bit, no LLM.int8 outlier decomposition): {}",
                model.weight_dtype
            ));
        }
        if q.load_in_4bit {
            let kind = q.bnb_4bit_quant_type.as_deref().unwrap_or("fp4");
            notes.push(format!(
                "quantization_config.bnb_4bit_quant_type {kind} has no candle equivalent: weights quantised on load to Q4_0 (4-bit blocks of 32 with an f16 scale) instead: {}",
                model.weight_dtype
            ));
            if let Some(dtype) = &q.bnb_4bit_compute_dtype {
                notes.push(format!(
                    "quantization_config.bnb_4bit_compute_dtype {dtype} not applied: Q4_0 matmuls run on 8-bit-quantised activations; compute is {}",
                    model.compute_dtype
                ));
            }
            if q.bnb_4bit_use_double_quant {
                notes.push(
                    "quantization_config.bnb_4bit_use_double_quant not applied: Q4_0 block scales are f16".into(),
                );
            }
        }
    }
    notes
}

/// One prompt as the window runs it.
pub(crate) struct TokenPrompt {
    /// The prompt's text as the source gave it.
    pub text: String,
    /// Its token ids, truncated to `max_input_tokens`.
    pub ids: Vec<u32>,
    pub truncated: bool,
}

/// The config's prompts, tokenized and truncated to `max_input_tokens`; empty ones are
/// dropped. Notes (truncation, source warnings) go to `warnings`.
pub(crate) fn load_token_prompts(
    cfg: &ExperimentConfig,
    ctx: &RunContext,
    tokenizer: &crate::engine::LemTokenizer,
    warnings: &mut Vec<String>,
) -> Result<Vec<TokenPrompt>, RunError> {
    let (spec, sampling) = prompt_spec(cfg);
    let count_tokens = |s: &str| tokenizer.count(s);
    let pctx = PromptContext {
        hf_cache_dir: ctx.resolve.hf_cache_dir.clone(),
        offline: ctx.resolve.offline,
        count_tokens: &count_tokens,
    };
    let loaded = prompts::load_prompts(&spec, &sampling, cfg.num_input_prompts, &pctx)?;
    warnings.extend(loaded.warnings);
    let mut token_prompts = Vec::with_capacity(loaded.prompts.len());
    let mut truncated_count = 0;
    for text in loaded.prompts {
        let mut ids = tokenizer.encode(&text).map_err(|source| RunError::Engine {
            model: cfg.model_name.clone(),
            source,
        })?;
        let truncated = ids.len() > cfg.max_input_tokens as usize;
        if truncated {
            ids.truncate(cfg.max_input_tokens as usize);
            truncated_count += 1;
        }
        if ids.is_empty() {
            continue;
        }
        token_prompts.push(TokenPrompt {
            text,
            ids,
            truncated,
        });
    }
    if truncated_count > 0 {
        warnings.push(format!(
            "{truncated_count} prompt(s) truncated to max_input_tokens = {}",
            cfg.max_input_tokens
        ));
    }
    if token_prompts.is_empty() {
        return Err(RunError::Unsupported("no non-empty prompts to run".into()));
    }
    Ok(token_prompts)
}

fn prompt_spec(cfg: &ExperimentConfig) -> (PromptSpec, Sampling) {
    match &cfg.prompt_source {
        None => (
            PromptSpec::Synthetic {
                input_tokens: cfg.max_input_tokens,
            },
            Sampling {
                sample_size: None,
                shuffle: false,
                seed: cfg.random_seed.unwrap_or(42),
            },
        ),
        Some(src) => {
            let sampling = Sampling {
                sample_size: src.sample_size(),
                shuffle: src.shuffle(),
                seed: src.seed(),
            };
            let spec = match src {
                PromptSource::Synthetic { input_tokens, .. } => PromptSpec::Synthetic {
                    input_tokens: input_tokens.unwrap_or(cfg.max_input_tokens),
                },
                PromptSource::File { path, column, .. } => PromptSpec::File {
                    path: path.into(),
                    column: column.clone(),
                },
                PromptSource::Huggingface {
                    dataset,
                    split,
                    subset,
                    column,
                    ..
                } => PromptSpec::HuggingFace {
                    dataset: dataset.clone(),
                    split: split.clone(),
                    subset: subset.clone(),
                    column: column.clone(),
                },
            };
            (spec, sampling)
        }
    }
}

pub(crate) fn generation_params(cfg: &ExperimentConfig, cycle: u32) -> GenerationParams {
    let d = &cfg.decoder_config;
    GenerationParams {
        max_new_tokens: cfg.max_output_tokens,
        min_new_tokens: cfg.min_output_tokens,
        temperature: d.temperature,
        do_sample: d.do_sample && d.temperature > 0.0,
        top_p: d.top_p,
        top_k: d.top_k,
        min_p: d.min_p,
        repetition_penalty: d.repetition_penalty,
        // Each cycle samples differently but reproducibly.
        seed: cfg
            .random_seed
            .unwrap_or(0)
            .wrapping_add(cycle as u64 * 1_000_003),
    }
}

/// The NVML meter for the job's GPUs, when they are to be metered: inference runs on a
/// GPU (the system's NVML, or the library named) or `LEM_NVML_LIB` names a library (a
/// simulated node). CPU inference on a GPU box is not charged the idle GPUs' energy.
/// Why GPUs go unmetered is pushed to `warnings`.
pub(crate) fn open_gpu_meter(
    cfg: &ExperimentConfig,
    on_gpu: bool,
    warnings: &mut Vec<String>,
) -> Option<meter::nvml::NvmlMeter> {
    let nvml_lib = meter::nvml::resolve_lib_path(None);
    if nvml_lib.is_none() && !on_gpu {
        return None;
    }
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let opened = gpu_targets(visible.as_deref(), &cfg.gpu_list).and_then(|targets| {
        meter::nvml::NvmlMeter::open_targets(nvml_lib.as_deref(), &targets)
            .map_err(|e| e.to_string())
    });
    let mut m = match opened {
        Ok(m) => m,
        Err(why) => {
            warnings.push(format!("GPU energy not measured: {why}"));
            return None;
        }
    };
    if let Some(why) = m.simulation_reason() {
        warnings.push(format!("{SIMULATED_WARNING} ({why})"));
    }
    m.set_sample_period(Duration::from_secs_f64(cfg.sample_period_ms / 1000.0));
    Some(m)
}

/// The GPUs a job uses, as NVML targets: `gpu_list` indexes the visible devices, which
/// are `CUDA_VISIBLE_DEVICES` (indices, GPU UUIDs or MIG UUIDs) when set, else all GPUs
/// by index. An empty or `-1` `CUDA_VISIBLE_DEVICES` hides every GPU.
pub fn gpu_targets(cuda_visible: Option<&str>, gpu_list: &[u32]) -> Result<Vec<String>, String> {
    let Some(visible) = cuda_visible else {
        return Ok(gpu_list.iter().map(u32::to_string).collect());
    };
    let visible: Vec<&str> = visible
        .split(',')
        .map(str::trim)
        .take_while(|v| !v.is_empty() && *v != "-1" && *v != "NoDevFiles")
        .collect();
    if visible.is_empty() {
        return Err("CUDA_VISIBLE_DEVICES hides every GPU".into());
    }
    gpu_list
        .iter()
        .map(|&i| {
            visible.get(i as usize).map(|v| v.to_string()).ok_or_else(|| {
                format!(
                    "gpu_list entry {i} is out of range: CUDA_VISIBLE_DEVICES makes {} device(s) visible",
                    visible.len()
                )
            })
        })
        .collect()
}

/// Groups prompt indices into batches by the config's strategy.
pub fn plan_batches(cfg: &ExperimentConfig, prompts: &[Vec<u32>]) -> Vec<Vec<usize>> {
    let b = &cfg.batching_options;
    let batch_size = b.batch_size.max(1) as usize;
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    let sorted = matches!(
        b.strategy,
        BatchingStrategy::SortedStatic | BatchingStrategy::SortedDynamic
    );
    if sorted {
        order.sort_by_key(|&i| (prompts[i].len(), i));
    }
    let dynamic = matches!(
        b.strategy,
        BatchingStrategy::Dynamic | BatchingStrategy::SortedDynamic
    );
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_tokens = 0usize;
    for i in order {
        let len = prompts[i].len();
        let over_tokens = dynamic
            && b.max_tokens_per_batch
                .is_some_and(|max| !current.is_empty() && current_tokens + len > max as usize);
        if current.len() == batch_size || over_tokens {
            batches.push(std::mem::take(&mut current));
            current_tokens = 0;
        }
        current.push(i);
        current_tokens += len;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(
        batch_size: u32,
        strategy: BatchingStrategy,
        max_tokens: Option<u32>,
    ) -> ExperimentConfig {
        let mut c = ExperimentConfig::default_for("t", "m");
        c.batching_options.batch_size = batch_size;
        c.batching_options.strategy = strategy;
        c.batching_options.max_tokens_per_batch = max_tokens;
        c
    }

    fn baseline(id: &str, power_w: Option<f64>, age_ns: u64) -> meter::IdleBaseline {
        meter::IdleBaseline {
            device_id: id.into(),
            info: lem_common::domain::BaselineInfo {
                power_w,
                unavailable_reason: power_w.is_none().then(|| "did not move".to_string()),
                method: "counter-changes".into(),
                measured_ns: 2_000_000_000,
                settle_ns: Some(1_000_000_000),
                settled: Some(true),
                spread_w: Some(0.5),
                age_ns,
                note: None,
            },
            counter_period: None,
        }
    }

    #[test]
    fn baselines_reach_readings_with_net_energy_age_and_the_shared_mig_caveat() {
        use lem_common::domain::{DeviceKind, EnergyReading, EnergySource};
        use lem_common::mig::{attribute, MigMode, SliceInput};
        let window_ns = 4_000_000_000;
        let measured = |kind, id: &str, mj: f64| EnergyReading {
            source: EnergySource::NvmlCounter,
            energy_mj: Some(mj),
            unavailable_reason: None,
            ..EnergyReading::unavailable(kind, id, "", window_ns)
        };
        let slice = |id: &str, owned: bool| SliceInput {
            slice_id: id.into(),
            profile: "3g.40gb".into(),
            compute_slices: 3,
            sm_count: 42,
            allocated: true,
            owned_by_job: owned,
            sm_activity: None,
        };
        let mut shared = measured(DeviceKind::MigSlice, "MIG-a", 500_000.0);
        let a = attribute(
            "GPU-p",
            1_000_000,
            Some(50.0),
            window_ns,
            7,
            vec![slice("MIG-a", true), slice("MIG-b", false)],
        )
        .unwrap();
        assert_eq!(a.mode, MigMode::Shared);
        shared.mig = Some(a);
        let mut energy = vec![
            measured(DeviceKind::Gpu, "GPU-0", 800_000.0),
            measured(DeviceKind::Gpu, "GPU-still", 100.0),
            shared,
        ];
        let baselines = BTreeMap::from([
            ("GPU-0".to_string(), baseline("GPU-0", Some(60.0), 7_000)),
            ("GPU-still".to_string(), baseline("GPU-still", None, 0)),
            ("GPU-p".to_string(), baseline("GPU-p", Some(50.0), 9_000)),
        ]);
        apply_baselines(&mut energy, &baselines);
        // 800 J − 60 W × 4 s = 560 J.
        assert_eq!(energy[0].net_energy_mj, Some(800_000.0 - 60.0 * 4_000.0));
        assert_eq!(energy[0].baseline.as_ref().unwrap().age_ns, 7_000);
        // No baseline power: no net, the reason kept, not 0 W.
        assert_eq!(energy[1].baseline_power_w, None);
        assert_eq!(energy[1].net_energy_mj, None);
        assert_eq!(
            energy[1]
                .baseline
                .as_ref()
                .unwrap()
                .unavailable_reason
                .as_deref(),
            Some("did not move")
        );
        // The shared slice carries the parent's baseline and says idle had other tenants.
        let b = energy[2].baseline.as_ref().unwrap();
        assert_eq!(b.power_w, Some(50.0));
        assert_eq!(b.age_ns, 9_000);
        let note = b.note.as_deref().unwrap();
        assert!(
            note.contains("other tenants") && note.contains("3/7"),
            "{note}"
        );
    }

    /// Prompts of lengths 5, 1, 4, 2, 3 (index = position).
    fn prompts() -> Vec<Vec<u32>> {
        [5usize, 1, 4, 2, 3].iter().map(|&n| vec![7; n]).collect()
    }

    #[test]
    fn gpu_targets_follow_cuda_visible_devices() {
        assert_eq!(gpu_targets(None, &[0, 2]).unwrap(), vec!["0", "2"]);
        assert_eq!(
            gpu_targets(Some("MIG-aaaa,MIG-bbbb"), &[1]).unwrap(),
            vec!["MIG-bbbb"]
        );
        assert_eq!(gpu_targets(Some("3, 1"), &[0, 1]).unwrap(), vec!["3", "1"]);
        // CUDA stops at the first invalid entry.
        assert_eq!(gpu_targets(Some("2,-1,3"), &[0]).unwrap(), vec!["2"]);
        assert!(gpu_targets(Some("2,-1,3"), &[1])
            .unwrap_err()
            .contains("out of range"));
        assert!(gpu_targets(Some(""), &[0])
            .unwrap_err()
            .contains("hides every GPU"));
        assert!(gpu_targets(Some("-1"), &[0]).is_err());
    }

    #[test]
    fn static_keeps_order_and_fills_batches() {
        let b = plan_batches(&cfg(2, BatchingStrategy::Static, None), &prompts());
        assert_eq!(b, vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn sorted_static_groups_similar_lengths() {
        let b = plan_batches(&cfg(2, BatchingStrategy::SortedStatic, None), &prompts());
        assert_eq!(b, vec![vec![1, 3], vec![4, 2], vec![0]]);
    }

    #[test]
    fn dynamic_respects_the_token_budget_and_batch_size() {
        // Budget 6, in order: 5+1 | 4+2 | 3.
        let b = plan_batches(&cfg(4, BatchingStrategy::Dynamic, Some(6)), &prompts());
        assert_eq!(b, vec![vec![0, 1], vec![2, 3], vec![4]]);
        let b = plan_batches(
            &cfg(4, BatchingStrategy::SortedDynamic, Some(6)),
            &prompts(),
        );
        // Sorted 1,2,3 (=6) | 4 | 5.
        assert_eq!(b, vec![vec![1, 3, 4], vec![2], vec![0]]);
        // A prompt over the budget still runs, alone.
        let b = plan_batches(&cfg(4, BatchingStrategy::Dynamic, Some(2)), &prompts());
        assert!(b.iter().all(|batch| batch.len() == 1
            || batch.iter().map(|&i| prompts()[i].len()).sum::<usize>() <= 2));
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 5);
    }

    #[test]
    fn every_prompt_runs_exactly_once() {
        for strategy in [
            BatchingStrategy::Static,
            BatchingStrategy::SortedStatic,
            BatchingStrategy::Dynamic,
            BatchingStrategy::SortedDynamic,
        ] {
            let mut all: Vec<usize> = plan_batches(&cfg(3, strategy, Some(7)), &prompts())
                .into_iter()
                .flatten()
                .collect();
            all.sort();
            assert_eq!(all, vec![0, 1, 2, 3, 4], "{strategy:?}");
        }
    }

    #[test]
    fn served_requests_count_latency_from_their_arrival() {
        let shape = TransformerShape {
            architecture: "llama".into(),
            hidden_size: 4,
            intermediate_size: 8,
            num_layers: 1,
            num_attention_heads: 2,
            num_kv_heads: 1,
            head_dim: 2,
            vocab_size: 10,
            gated_mlp: true,
            sliding_window: None,
        };
        let seq = |ttft_ns, e2e_ns| crate::engine::GeneratedSequence {
            input_tokens: 3,
            output_token_ids: vec![1, 2],
            text: "hi".into(),
            ttft_ns,
            itl_ns: vec![e2e_ns - ttft_ns],
            e2e_ns,
            stop_reason: lem_common::domain::StopReason::MaxTokens,
        };
        let out = BatchOutput {
            sequences: vec![seq(10, 30), seq(10, 25)],
            prefill_ns: 10,
            decode_ns: 20,
            wall_ns: 30,
        };
        // Prompts 1 and 2 arrived at 100 and 140 ns; their batch started at 150 ns.
        let arrivals_ns = [0, 100, 140];
        let mut w = WindowTotals::new(2, &shape, false);
        let arrived = BatchArrivals {
            arrivals_ns: &arrivals_ns,
            start_offset_ns: 150,
        };
        w.add_batch(&[1, 2], &out, 150, Some(arrived));
        let got: Vec<_> = w
            .records
            .iter()
            .map(|r| (r.index, r.arrival_offset_ns, r.ttft_ns, r.e2e_ns))
            .collect();
        assert_eq!(got, [(1, Some(100), 60, 80), (2, Some(140), 20, 35)]);
        assert_eq!(w.records[0].itl_ns, [20], "ITL is not shifted");
        // In the window: batch start 150 ns + the engine's e2e (30 and 25 ns).
        let placed: Vec<_> = w
            .records
            .iter()
            .map(|r| (r.start_offset_ns, r.finish_offset_ns))
            .collect();
        assert_eq!(placed, [(Some(150), Some(180)), (Some(150), Some(175))]);
        // All at once: the engine's times, no arrival.
        w.add_batch(&[0], &out, 400, None);
        let r = &w.records[2];
        assert_eq!((r.arrival_offset_ns, r.ttft_ns, r.e2e_ns), (None, 10, 30));
        assert_eq!(
            (r.start_offset_ns, r.finish_offset_ns),
            (Some(400), Some(430))
        );
        assert_eq!((w.prefill_ns, w.decode_ns), (20, 40));
        assert!(w.flops.prefill_flops > 0.0 && w.flops.decode_flops > 0.0);
    }
}
