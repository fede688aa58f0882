//! One `engine: openai` job: preflight (the server answers `/models`), the model's
//! tokenizer and shape read locally (no weights), the config's prompts, warmup requests,
//! then the measured window — the same meters, device claims, idle baseline and reading
//! checks as lem's own engine (`metered_window`) around the requests the server serves —
//! and the `RawResult`, with the server's identity and every failed request.

use super::drive::{drive, PlannedRequest, SentRequest, Target};
use super::endpoint::Endpoint;
use super::identity::{self, ServerIdentity};
use super::records::{window_requests, Counting};
use super::request::completion_body;
use super::OpenAiError;
use crate::engine::{Engine, LemTokenizer, ModelHeaders};
use crate::hub::{self, ModelFormat};
use crate::meter::{self, BaselineCache};
use crate::metered_window;
use crate::runner::{
    generation_params, load_token_prompts, now_rfc3339, plan_batches, EnvSnapshot, RunContext,
    RunError, RunProgress, TokenPrompt,
};
use lem_common::config::{Device, ExperimentConfig, OpenAiServerConfig};
use lem_common::domain::{
    ComputeDevice, FlopsBreakdown, JobSpec, Measured, ModelInfo, RawResult,
    RAW_RESULT_SCHEMA_VERSION,
};
use lem_common::server::ServerRecord;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Bound on the preflight's `GET /models`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Warmup requests generate at most this many tokens (as lem's own warmup).
const WARMUP_MAX_TOKENS: u32 = 8;

/// The `openai` section of an `engine: openai` config.
fn server_config(cfg: &ExperimentConfig) -> Result<&OpenAiServerConfig, OpenAiError> {
    cfg.openai.as_ref().ok_or(OpenAiError::MissingSection)
}

/// The API key from `api_key_env`, looked up in the context's variables, when one is
/// named; a named variable that is unset is an error (the server would refuse every
/// request).
fn api_key(server: &OpenAiServerConfig, env: &EnvSnapshot) -> Result<Option<String>, OpenAiError> {
    match &server.api_key_env {
        None => Ok(None),
        Some(var) => env
            .get(var)
            .map(|v| Some(v.to_string()))
            .ok_or_else(|| OpenAiError::MissingApiKey { var: var.clone() }),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, OpenAiError> {
    // One thread: every request is a task on it, none gets a thread of its own.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(OpenAiError::Runtime)
}

/// Checks before an experiment is stored: the endpoint parses, the key is set, and the
/// server answers.
pub fn preflight(cfg: &ExperimentConfig, env: &EnvSnapshot) -> Result<ServerIdentity, OpenAiError> {
    let server = server_config(cfg)?;
    let endpoint = Endpoint::parse(&server.endpoint)?;
    let key = api_key(server, env)?;
    runtime()?.block_on(identity::probe(&endpoint, key.as_deref(), PROBE_TIMEOUT))
}

/// The model's tokenizer and shape (weights are the server's), and how it was found.
fn read_model(
    cfg: &ExperimentConfig,
    ctx: &RunContext,
) -> Result<(ModelHeaders, ModelInfo), RunError> {
    let name = cfg.model_name.as_str();
    let resolved = hub::resolve_model(name, &ctx.resolve).map_err(|source| RunError::Model {
        model: name.to_string(),
        source: Box::new(source),
    })?;
    let tokenizer_json = resolved.tokenizer_json.as_deref();
    let (path, headers) = match &resolved.format {
        ModelFormat::Gguf { file } => (file, Engine::read_gguf_headers(file, tokenizer_json)),
        ModelFormat::Safetensors { dir } => {
            (dir, Engine::read_safetensors_headers(dir, tokenizer_json))
        }
    };
    let headers = headers.map_err(|source| RunError::Engine {
        model: name.to_string(),
        source,
    })?;
    let info = ModelInfo {
        requested: name.to_string(),
        resolved_path: path.display().to_string(),
        resolved_from: resolved.resolved_from.to_string(),
        format: headers.format.to_string(),
        weight_dtype: "served by the external server (not known to lem)".into(),
        compute_dtype: "served by the external server (not known to lem)".into(),
        num_parameters: None,
        shape: headers.shape.clone(),
        tokenizer_source: headers.tokenizer.source().to_string(),
        eos_token_ids: headers.tokenizer.eos_token_ids().to_vec(),
        context_length: headers.context_length,
        weights_sha256: Some(Measured::unavailable(
            "the external server loads its own weights; lem reads only the tokenizer and shape \
             from the local file",
        )),
    };
    Ok((headers, info))
}

/// What lem sends for a prompt: its text, or the decoded truncated ids when it was cut
/// to `max_input_tokens`.
fn prompt_text(p: &TokenPrompt, tokenizer: &LemTokenizer, model: &str) -> Result<String, RunError> {
    if !p.truncated {
        return Ok(p.text.clone());
    }
    tokenizer.decode(&p.ids).map_err(|source| RunError::Engine {
        model: model.to_string(),
        source,
    })
}

/// Tokens of generated text by the model's tokenizer, no BOS.
fn count_output_tokens(tokenizer: &LemTokenizer, text: &str) -> u32 {
    tokenizer.count_continuation(text) as u32
}

pub(crate) fn run(
    job: &JobSpec,
    ctx: &RunContext,
    progress: &mut dyn RunProgress,
    baseline_cache: &mut BaselineCache,
) -> Result<RawResult, RunError> {
    let cfg = &job.config;
    let server = server_config(cfg)?;
    let started_at = now_rfc3339();
    let mut warnings = Vec::new();
    let endpoint = Endpoint::parse(&server.endpoint)?;
    let key = api_key(server, &ctx.env)?;
    let rt = runtime()?;

    progress.phase("asking the server what it serves");
    let identity = rt.block_on(identity::probe(&endpoint, key.as_deref(), PROBE_TIMEOUT))?;
    if let Some(why) = &identity.models_unavailable_reason {
        warnings.push(format!("server identity incomplete: {why}"));
    }
    if !identity.model_ids.is_empty() && !identity.model_ids.contains(&server.model) {
        warnings.push(format!(
            "openai.model `{}` is not among the models the server lists ({}); requests may fail",
            server.model,
            identity.model_ids.join(", ")
        ));
    }

    progress.phase("reading the model's tokenizer");
    let (headers, model_info) = read_model(cfg, ctx)?;
    progress.phase("loading prompts");
    let prompts = load_token_prompts(cfg, ctx, &headers.tokenizer, &mut warnings)?;
    let texts = prompts
        .iter()
        .map(|p| prompt_text(p, &headers.tokenizer, &cfg.model_name))
        .collect::<Result<Vec<_>, _>>()?;
    let seed = generation_params(cfg, job.cycle).seed;
    let max_concurrency = server
        .max_concurrency
        .unwrap_or(cfg.batching_options.batch_size)
        .max(1);
    let target = Target {
        endpoint: endpoint.clone(),
        api_key: key,
        request_timeout: Duration::from_secs_f64(server.request_timeout_s),
        max_concurrency: max_concurrency as usize,
    };
    warnings.push(
        "external server: prefill/decode time and the phase split of energy are not attributable (prefill_ns and decode_ns are 0, not measured)".into(),
    );

    let warmup = (cfg.warmup_prompts as usize).min(prompts.len());
    if warmup > 0 {
        progress.phase("warmup");
        let mut warm_cfg = cfg.clone();
        warm_cfg.max_output_tokens = cfg.max_output_tokens.min(WARMUP_MAX_TOKENS);
        warm_cfg.min_output_tokens = cfg.min_output_tokens.min(warm_cfg.max_output_tokens);
        let planned = (0..warmup)
            .map(|i| PlannedRequest {
                index: i as u32,
                body: completion_body(&warm_cfg, &server.model, &texts[i], seed),
                arrival_ns: None,
            })
            .collect();
        let sent = rt
            .block_on(drive(planned, &target, Instant::now(), &ctx.stop, |_| {}))
            .ok_or(RunError::Interrupted)?;
        for s in sent {
            if let Err(f) = s.outcome {
                warnings.push(format!("warmup request {} failed: {}", s.index, f.reason));
            }
        }
    }

    // GPUs are metered when the config says inference runs on them (the server's GPUs
    // on this node), or a library is named (a simulated node).
    let meter_gpus = cfg.device == Device::Cuda;
    let mut meters = metered_window::open_meters(cfg, ctx, meter_gpus, &mut warnings);
    let holder = format!("experiment {} ({})", job.experiment_id, cfg.config_name);
    let _claim =
        meter::claims::claim_for_job(cfg, ctx, meter_gpus, &holder, &ctx.stop, &mut warnings)
            .ok_or(RunError::Interrupted)?;
    let arrivals_ns = lem_common::arrivals::schedule_for(cfg, prompts.len())
        .map_err(|e| RunError::Unsupported(e.to_string()))?;
    // Without arrivals, requests go in the order lem's engine would batch them.
    let order: Vec<usize> = match &arrivals_ns {
        Some(_) => (0..prompts.len()).collect(),
        None => {
            let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
            plan_batches(cfg, &ids).into_iter().flatten().collect()
        }
    };
    let planned: Vec<PlannedRequest> = order
        .into_iter()
        .map(|i| PlannedRequest {
            index: i as u32,
            body: completion_body(cfg, &server.model, &texts[i], seed),
            arrival_ns: arrivals_ns.as_ref().map(|a| a[i]),
        })
        .collect();
    let baselines =
        metered_window::prepare_baselines(baseline_cache, &mut meters.meters, cfg, progress);
    if ctx.stop.load(Ordering::Relaxed) {
        return Err(RunError::Interrupted);
    }
    progress.phase("measuring");
    progress.prompts_total(planned.len() as u64);
    let requests_sent = planned.len() as u32;
    metered_window::start_meters(&mut meters.meters, &mut warnings);
    let window_start = Instant::now();
    let sent: Option<Vec<SentRequest>> =
        rt.block_on(drive(planned, &target, window_start, &ctx.stop, |_| {
            progress.prompts_done(1)
        }));
    let wall_ns = window_start.elapsed().as_nanos() as u64;
    let energy =
        metered_window::close_meters(&mut meters, wall_ns, None, &baselines, cfg, &mut warnings);
    let sent = sent.ok_or(RunError::Interrupted)?;

    let lem_input_tokens = |i: u32| prompts[i as usize].ids.len() as u32;
    let lem_output_tokens = |text: &str| count_output_tokens(&headers.tokenizer, text);
    let window = window_requests(
        sent,
        &Counting {
            lem_input_tokens: &lem_input_tokens,
            lem_output_tokens: &lem_output_tokens,
            max_output_tokens: cfg.max_output_tokens,
            save_outputs: cfg.save_outputs,
        },
    );
    let mut flops = FlopsBreakdown::default();
    for r in &window.records {
        let f = lem_common::flops::request_flops(
            &model_info.shape,
            r.input_tokens as u64,
            r.output_tokens as u64,
        );
        flops.prefill_flops += f.prefill_flops;
        flops.decode_flops += f.decode_flops;
    }
    let server_record = ServerRecord {
        endpoint: endpoint.url.clone(),
        model: server.model.clone(),
        engine_name: server.engine_name.clone(),
        engine_version: server.engine_version.clone(),
        models_response: identity.models_response,
        models_unavailable_reason: identity.models_unavailable_reason,
        response_headers: identity.headers,
        max_concurrency,
        requests_sent,
        failed_requests: window.failed,
        output_tokens_counted_by_lem: window.output_tokens_counted_by_lem,
        input_tokens_counted_by_lem: window.input_tokens_counted_by_lem,
    };
    if !server_record.failed_requests.is_empty() {
        let kinds: Vec<String> = server_record
            .failures_by_kind()
            .into_iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect();
        warnings.push(format!(
            "partial: {} of {requests_sent} requests failed ({}); latency, throughput and per-token energy cover the {} that succeeded",
            server_record.failed_requests.len(),
            kinds.join(", "),
            window.records.len()
        ));
    }
    if !server_record.output_tokens_counted_by_lem.is_empty() {
        warnings.push(format!(
            "{} request(s) had no `usage` from the server: their output tokens were counted with the model's tokenizer ({})",
            server_record.output_tokens_counted_by_lem.len(),
            model_info.tokenizer_source
        ));
    }
    let engine_label = match (&server.engine_name, &server.engine_version) {
        (Some(n), Some(v)) => format!("{n} {v}"),
        (Some(n), None) => n.clone(),
        _ => "OpenAI-compatible server".to_string(),
    };
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
        compute_device: ComputeDevice {
            kind: "openai-server".into(),
            name: format!("{engine_label} at {}", endpoint.url),
            ordinal: None,
            threads: None,
            note: Some(
                "inference ran in an external server; lem metered this node's devices around it"
                    .into(),
            ),
        },
        model: model_info,
        requests: window.records,
        wall_ns,
        prefill_ns: 0,
        decode_ns: 0,
        energy,
        flops,
        peak_memory_bytes: Measured::unavailable(
            "external server: its memory is not lem's process's (lem's own RSS would mislead)",
        ),
        warmup_requests: warmup as u32,
        warmup: None,
        warnings,
        server: Some(server_record),
        hostname: crate::sysinfo::hostname(),
        lem_version: env!("CARGO_PKG_VERSION").to_string(),
    })
}
