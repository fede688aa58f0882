//! One job: resolve model → load (cached across cycles) → prompts → warmup → measured
//! window (meters started, batches generated, meters stopped) → `RawResult`.
//!
//! Invariants: the runner reads no environment variable and sets none — everything it
//! needs from its surroundings arrives in the [`RunContext`], its devices included
//! ([`DevicePlacement`]); CPU thread counts are fixed when the process starts
//! (`crate::threads`). A `JobRunner` is `Send`, so an agent runs it on a dedicated OS
//! thread.

mod context;
mod load;
mod memory;
mod notes;
mod placement;
mod planning;
mod preflight;
mod token_prompts;
mod window;

pub use context::{EnvSnapshot, RunContext};
pub use placement::{gpu_targets, DevicePlacement};
pub(crate) use planning::generation_params;
pub use planning::plan_batches;
pub use preflight::preflight;
pub(crate) use token_prompts::{load_token_prompts, TokenPrompt};
pub(crate) use window::apply_baselines;

use crate::engine::EngineError;
use crate::hub;
use crate::meter::{self, BaselineCache};
use crate::metered_window;
use crate::prompts;
use lem_common::config::{Device, EngineKind};
use lem_common::domain::{JobSpec, RawResult, RAW_RESULT_SCHEMA_VERSION};
use load::LoadedModel;
use memory::JobMemory;
use notes::{config_notes, context_note, refuse_unsupported, thread_note};

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
    model: LoadedModel,
    /// Idle power per device, reused across cycles until `BASELINE_TTL` passes.
    baselines: BaselineCache,
}

// An agent moves its runner (and the context of each job) onto a dedicated OS thread.
const _: () = {
    fn assert_send<T: Send>() {}
    let _ = assert_send::<JobRunner>;
    let _ = assert_send::<RunContext>;
};

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
        let memory = JobMemory::start();
        let started_at = now_rfc3339();
        let mut warnings = Vec::new();
        let engine_err = |e| map_engine_err(&cfg.model_name, e);

        progress.phase("loading model");
        let seq_len_needed = (cfg.max_input_tokens + cfg.max_output_tokens) as usize;
        let (engine, model_info) =
            self.model
                .ensure(cfg, &ctx.placement, seq_len_needed, &ctx.resolve)?;
        warnings.extend(config_notes(cfg, model_info));
        warnings.extend(context_note(model_info, seq_len_needed));
        warnings.extend(thread_note(cfg, &engine.info().device));

        progress.phase("loading prompts");
        let prompts: Vec<Vec<u32>> =
            load_token_prompts(cfg, ctx, engine.tokenizer(), &mut warnings)?
                .into_iter()
                .map(|p| p.ids)
                .collect();
        let params = generation_params(cfg, job.cycle);
        let warmup = (cfg.warmup_prompts as usize).min(prompts.len());
        window::discarded_warmup(engine, &prompts[..warmup], &params, &ctx.stop, progress)
            .map_err(engine_err)?;

        let on_gpu = engine.info().device.kind == "cuda";
        let mut meters = metered_window::open_meters(cfg, ctx, on_gpu, &mut warnings);
        // Every metered device is this job's alone from before the metered warmup and
        // the baseline until the window closes (`_claim` drops at return; invariant 4).
        let holder = format!("experiment {} ({})", job.experiment_id, cfg.config_name);
        let _claim =
            meter::claims::claim_for_job(cfg, ctx, on_gpu, &holder, &ctx.stop, &mut warnings)
                .ok_or(RunError::Interrupted)?;
        let warmup_record = window::warmup_until_stable(
            engine,
            cfg,
            &prompts[..warmup.max(1)],
            &params,
            &mut meters.meters,
            &ctx.stop,
            progress,
            &mut warnings,
        )
        .map_err(engine_err)?;
        let window = window::measure(
            engine,
            &model_info.shape,
            cfg,
            &prompts,
            &params,
            &mut meters,
            &mut self.baselines,
            &ctx.stop,
            progress,
            &mut warnings,
        )?;

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
            requests: window.records,
            wall_ns: window.wall_ns,
            prefill_ns: window.prefill_ns,
            decode_ns: window.decode_ns,
            energy: window.energy,
            flops: window.flops,
            peak_memory_bytes: memory.finish(),
            warmup_requests: warmup as u32,
            warmup: warmup_record,
            warnings,
            server: None,
            hostname: crate::sysinfo::hostname(),
            lem_version: env!("CARGO_PKG_VERSION").to_string(),
        })
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

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
