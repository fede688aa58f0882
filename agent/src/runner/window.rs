//! Generation under the meters: discarded warmup, warmup until stable, and the measured
//! window itself, with the observer that marks phases and advances progress, the
//! idle-baseline cache and the totals a window accumulates batch by batch.

use super::planning::plan_batches;
use super::{map_engine_err, RunError, RunProgress};
use crate::engine::{BatchOutput, Engine, EngineError, GenerationObserver, GenerationParams};
use crate::meter::phases::PhaseRecorder;
use crate::meter::rapl::CpuMeters;
use crate::meter::{self, BaselineCache, EnergyMeter, BASELINE_TTL};
use crate::metered_window;
use lem_common::config::{BatchingStrategy, ExperimentConfig};
use lem_common::domain::{
    EnergyReading, FlopsBreakdown, RequestRecord, TransformerShape, WarmupRecord,
};
use lem_common::phases::Phase;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// Discarded runs of the first `warmup` prompts so caches and allocators settle before
/// the window.
pub(super) fn discarded_warmup(
    engine: &mut Engine,
    prompts: &[Vec<u32>],
    params: &GenerationParams,
    stop: &AtomicBool,
    progress: &mut dyn RunProgress,
) -> Result<(), EngineError> {
    if prompts.is_empty() {
        return Ok(());
    }
    progress.phase("warmup");
    let warm_params = GenerationParams {
        max_new_tokens: params.max_new_tokens.min(8),
        ..params.clone()
    };
    let mut observer = Observer {
        stop,
        progress,
        window: None,
    };
    engine.generate(prompts, &warm_params, &mut observer)?;
    Ok(())
}

/// Warmup until steady state (`warmup_until_stable`), metered round by round; `None`
/// when the config does not ask for it. Not reaching steady state is said in `warnings`.
#[allow(clippy::too_many_arguments)]
pub(super) fn warmup_until_stable(
    engine: &mut Engine,
    cfg: &ExperimentConfig,
    round_prompts: &[Vec<u32>],
    params: &GenerationParams,
    meters: &mut [Box<dyn EnergyMeter>],
    stop: &AtomicBool,
    progress: &mut dyn RunProgress,
    warnings: &mut Vec<String>,
) -> Result<Option<WarmupRecord>, EngineError> {
    if !cfg.warmup_until_stable.enabled {
        return Ok(None);
    }
    progress.phase("warmup until stable");
    let round_params = GenerationParams {
        max_new_tokens: params.max_new_tokens.min(32),
        ..params.clone()
    };
    let mut observer = Observer {
        stop,
        progress,
        window: None,
    };
    let record = crate::warmup::until_stable(&cfg.warmup_until_stable, || {
        steady_warmup_round(engine, round_prompts, &round_params, meters, &mut observer)
    })?;
    if !record.stable {
        warnings.push(format!(
            "warmup did not reach steady state within {} rounds (throughput per round: {:?} tok/s); measuring anyway",
            record.rounds, record.output_tokens_per_s
        ));
    }
    Ok(Some(record))
}

/// What the measured window gives the result.
pub(super) struct WindowOutcome {
    pub records: Vec<RequestRecord>,
    pub wall_ns: u64,
    pub prefill_ns: u64,
    pub decode_ns: u64,
    pub flops: FlopsBreakdown,
    pub energy: Vec<EnergyReading>,
}

/// The measured window: idle baselines (measured or cached), meters started, every
/// prompt generated (in planned batches, or served as it arrives under
/// `latency_simulation`), meters stopped and their readings turned into energy.
#[allow(clippy::too_many_arguments)]
pub(super) fn measure(
    engine: &mut Engine,
    shape: &TransformerShape,
    cfg: &ExperimentConfig,
    prompts: &[Vec<u32>],
    params: &GenerationParams,
    meters: &mut CpuMeters,
    baseline_cache: &mut BaselineCache,
    stop: &AtomicBool,
    progress: &mut dyn RunProgress,
    warnings: &mut Vec<String>,
) -> Result<WindowOutcome, RunError> {
    let engine_err = |e| map_engine_err(&cfg.model_name, e);
    let batches = plan_batches(cfg, prompts);
    let arrivals_ns = lem_common::arrivals::schedule_for(cfg, prompts.len())
        .map_err(|e| RunError::Unsupported(e.to_string()))?;
    let baselines =
        metered_window::prepare_baselines(baseline_cache, &mut meters.meters, cfg, progress);
    // The baseline wait (up to idle_baseline_s) does not watch Ctrl+C; honour it
    // before the window rather than after.
    if stop.load(Ordering::Relaxed) {
        return Err(RunError::Interrupted);
    }
    progress.phase("measuring");
    progress.prompts_total(prompts.len() as u64);
    metered_window::start_meters(&mut meters.meters, warnings);
    let window_start = Instant::now();
    let mut observer = Observer {
        stop,
        progress,
        window: Some((&mut meters.meters, PhaseRecorder::new(window_start))),
    };
    let mut window = WindowTotals::new(prompts.len(), shape, cfg.save_outputs);
    if let Some(arrivals_ns) = &arrivals_ns {
        // Requests are served as they arrive (see `serving`): batches form in arrival
        // order, so sorting and token budgets do not apply.
        if cfg.batching_options.strategy != BatchingStrategy::Static
            || cfg.batching_options.max_tokens_per_batch.is_some()
        {
            warnings.push("latency_simulation: batching_options.strategy and max_tokens_per_batch do not apply; up to batch_size arrived requests run together, in arrival order".into());
        }
        crate::serving::run(
            prompts,
            arrivals_ns,
            cfg.batching_options.batch_size.max(1) as usize,
            window_start,
            &mut observer,
            |inputs, obs| {
                obs.mark(Phase::Prefill);
                engine.generate(inputs, params, obs)
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
        .map_err(engine_err)?;
    } else {
        for batch in &batches {
            let inputs: Vec<Vec<u32>> = batch.iter().map(|&i| prompts[i].clone()).collect();
            observer.mark(Phase::Prefill);
            let start_offset_ns = window_start.elapsed().as_nanos() as u64;
            let out: BatchOutput = engine
                .generate(&inputs, params, &mut observer)
                .map_err(engine_err)?;
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
    let energy =
        metered_window::close_meters(meters, wall_ns, phases.as_ref(), &baselines, cfg, warnings);
    records.sort_by_key(|r| r.index);
    Ok(WindowOutcome {
        records,
        wall_ns,
        prefill_ns,
        decode_ns,
        flops,
        energy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
