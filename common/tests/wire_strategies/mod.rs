//! proptest strategies for every type that crosses the wire, shared by the wire tests.
//! Every optional field is generated both present and absent. Floats exclude NaN only
//! because NaN is not equal to itself (msgpack carries it bit for bit).

#![allow(dead_code)] // each test binary uses a different subset

use lem_common::domain::*;
use lem_common::mig::{DynamicBasis, MigAttribution, MigMode, SliceInput, SliceShare};
use lem_common::wire::*;
use proptest::collection::{btree_map, vec};
use proptest::option::of;
use proptest::prelude::*;
use serde_json::Value;

pub fn float() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("NaN is not equal to itself", |x| !x.is_nan())
}

pub fn text() -> impl Strategy<Value = String> {
    ".{0,10}"
}

pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        float()
            .prop_filter("JSON numbers are finite", |x| x.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

prop_compose! {
    fn power_sample()(
        t_ns in any::<u64>(), power_avg_w in of(float()), power_instant_w in of(float()),
        energy_counter_mj in of(any::<u64>()), temperature_c in of(any::<u32>()),
        sm_clock_mhz in of(any::<u32>()), throttle_reasons in of(any::<u64>()),
    ) -> PowerSample {
        PowerSample { t_ns, power_avg_w, power_instant_w, energy_counter_mj, temperature_c,
            sm_clock_mhz, throttle_reasons }
    }
}

prop_compose! {
    fn power_trace()(
        period_ms in float(), samples in vec(power_sample(), 0..5),
        unavailable in btree_map(text(), text(), 0..3),
    ) -> PowerTrace {
        PowerTrace { period_ms, samples, unavailable }
    }
}

prop_compose! {
    fn phase_energy()(
        method in prop_oneof![
            Just(PhaseSplitMethod::CounterAtBoundaries),
            Just(PhaseSplitMethod::TraceIntegral),
            Just(PhaseSplitMethod::TimeApportioned),
        ],
        prefill_mj in float(), decode_mj in float(), other_mj in float(),
    ) -> PhaseEnergy {
        PhaseEnergy { method, prefill_mj, decode_mj, other_mj }
    }
}

prop_compose! {
    fn slice_input()(
        slice_id in text(), profile in text(), compute_slices in any::<u32>(),
        sm_count in any::<u32>(), allocated in any::<bool>(), owned_by_job in any::<bool>(),
        sm_activity in of(float()),
    ) -> SliceInput {
        SliceInput { slice_id, profile, compute_slices, sm_count, allocated, owned_by_job,
            sm_activity }
    }
}

prop_compose! {
    fn slice_share()(
        slice_id in text(), idle_mj in any::<i64>(), dynamic_mj in any::<i64>(),
        energy_mj in any::<i64>(),
    ) -> SliceShare {
        SliceShare { slice_id, idle_mj, dynamic_mj, energy_mj }
    }
}

prop_compose! {
    fn mig_attribution()(
        mode in prop_oneof![Just(MigMode::Exclusive), Just(MigMode::Shared)],
        parent_id in text(), parent_energy_mj in any::<u64>(),
        parent_idle_power_w in of(float()), window_ns in any::<u64>(),
        total_compute_slices in any::<u32>(), total_compute_slices_assumed in of(text()),
        slices in vec(slice_input(), 0..3),
        dynamic_basis in prop_oneof![
            Just(DynamicBasis::GpmSmActivity),
            Just(DynamicBasis::ComputeSliceShare),
        ],
        shares in vec(slice_share(), 0..3), unattributed_mj in any::<i64>(),
    ) -> MigAttribution {
        MigAttribution { mode, parent_id, parent_energy_mj, parent_idle_power_w, window_ns,
            total_compute_slices, total_compute_slices_assumed, slices, dynamic_basis,
            shares, unattributed_mj }
    }
}

prop_compose! {
    fn baseline_info()(
        power_w in of(float()), unavailable_reason in of(text()), method in text(),
        measured_ns in any::<u64>(), settle_ns in of(any::<u64>()),
        settled in of(any::<bool>()), spread_w in of(float()), age_ns in any::<u64>(),
        note in of(text()),
    ) -> BaselineInfo {
        BaselineInfo { power_w, unavailable_reason, method, measured_ns, settle_ns, settled,
            spread_w, age_ns, note }
    }
}

fn device_kind() -> impl Strategy<Value = DeviceKind> {
    prop_oneof![
        Just(DeviceKind::Gpu),
        Just(DeviceKind::CpuPackage),
        Just(DeviceKind::Dram),
        Just(DeviceKind::MigSlice),
    ]
}

fn energy_source() -> impl Strategy<Value = EnergySource> {
    prop_oneof![
        Just(EnergySource::NvmlCounter),
        Just(EnergySource::NvmlPower),
        Just(EnergySource::Rapl),
        Just(EnergySource::Estimate),
        Just(EnergySource::None),
    ]
}

prop_compose! {
    fn energy_reading()(
        ids in (device_kind(), text(), text(), energy_source()),
        energy in (of(float()), of(text()), any::<u64>(), of(any::<i64>()), of(float())),
        flags in (any::<bool>(), of(float()), of(float()), any::<bool>(), of(text())),
        parts in (of(power_trace()), of(phase_energy()), of(mig_attribution())),
        quality in (of(float()), of(text()), of(text()), of(float()), of(baseline_info())),
    ) -> EnergyReading {
        let (device_kind, device_id, device_name, source) = ids;
        let (energy_mj, unavailable_reason, window_ns, window_start_offset_ns,
            sample_period_ms) = energy;
        let (estimated, baseline_power_w, net_energy_mj, simulated, driver_version) = flags;
        let (trace, phases, mig) = parts;
        let (uncertainty_mj, uncertainty_method, sample_period_method, counter_trace_ratio,
            baseline) = quality;
        EnergyReading { device_kind, device_id, device_name, source, energy_mj,
            unavailable_reason, window_ns, window_start_offset_ns, sample_period_ms,
            estimated, baseline_power_w, net_energy_mj, simulated, driver_version, trace,
            phases, mig, uncertainty_mj, uncertainty_method, sample_period_method,
            counter_trace_ratio, baseline }
    }
}

prop_compose! {
    fn request_record()(
        index in any::<u32>(), input_tokens in any::<u32>(), output_tokens in any::<u32>(),
        ttft_ns in any::<u64>(), itl_ns in vec(any::<u64>(), 0..4), e2e_ns in any::<u64>(),
        eos in any::<bool>(), output_text in of(text()),
        offsets in (of(any::<u64>()), of(any::<u64>()), of(any::<u64>())),
    ) -> RequestRecord {
        let stop_reason = if eos { StopReason::Eos } else { StopReason::MaxTokens };
        let (arrival_offset_ns, start_offset_ns, finish_offset_ns) = offsets;
        RequestRecord { index, input_tokens, output_tokens, ttft_ns, itl_ns, e2e_ns,
            stop_reason, output_text, arrival_offset_ns, start_offset_ns, finish_offset_ns }
    }
}

prop_compose! {
    fn model_info()(
        names in (text(), text(), text(), text(), text(), text(), text()),
        num_parameters in of(any::<u64>()), context_length in of(any::<u64>()),
        dims in vec(any::<u64>(), 7), gated_mlp in any::<bool>(),
        eos_token_ids in vec(any::<u32>(), 0..3),
        weights_sha256 in of(of(text()).prop_map(|value| Measured {
            unavailable_reason: value.is_none().then(|| "why".to_string()),
            source: value.as_ref().map(|_| "sha256 of the model file".to_string()),
            value,
        })),
    ) -> ModelInfo {
        let (requested, resolved_path, resolved_from, format, weight_dtype, compute_dtype,
            tokenizer_source) = names;
        ModelInfo { requested, resolved_path, resolved_from, format, weight_dtype,
            compute_dtype, num_parameters, context_length, tokenizer_source, eos_token_ids,
            weights_sha256,
            shape: TransformerShape { architecture: "llama".into(), hidden_size: dims[0],
                intermediate_size: dims[1], num_layers: dims[2], num_attention_heads: dims[3],
                num_kv_heads: dims[4], head_dim: dims[5], vocab_size: dims[6], gated_mlp,
                // Present on some records, absent on others: both must round-trip.
                sliding_window: (dims[0] % 2 == 0).then_some(
                    SlidingWindow { window: dims[1], layers: dims[2] }) } }
    }
}

prop_compose! {
    fn warmup_record()(
        rule in text(), rounds in any::<u32>(), stable in any::<bool>(),
        output_tokens_per_s in vec(float(), 0..3), power_w in vec(of(float()), 0..3),
        wall_ns in any::<u64>(),
    ) -> WarmupRecord {
        WarmupRecord { rule, rounds, stable, output_tokens_per_s, power_w, wall_ns }
    }
}

prop_compose! {
    pub fn raw_result()(
        ids in (any::<u32>(), text(), text(), any::<u32>(), any::<u32>(), text(), text()),
        effective_config in json(),
        cli_overrides in btree_map(text(), (json(), json()), 0..3),
        device in (text(), text(), of(any::<u32>()), of(any::<u32>()), of(text())),
        model in model_info(),
        requests in vec(request_record(), 0..3),
        times in (any::<u64>(), any::<u64>(), any::<u64>()),
        energy in vec(energy_reading(), 0..3),
        flops in (float(), float()),
        peak in (of(any::<u64>()), of(text()), of(text())),
        warmup_requests in any::<u32>(), warmup in of(warmup_record()),
        tail in (vec(text(), 0..3), text(), text()),
    ) -> RawResult {
        let (schema_version, experiment_id, job_key, cycle, attempt, started_at,
            finished_at) = ids;
        let (kind, name, ordinal, threads, note) = device;
        let (wall_ns, prefill_ns, decode_ns) = times;
        let (warnings, hostname, lem_version) = tail;
        RawResult { schema_version, experiment_id, job_key, cycle, attempt, started_at,
            finished_at, effective_config,
            cli_overrides: cli_overrides.into_iter()
                .map(|(k, (original, new))| (k, OverrideRecord { original, new }))
                .collect(),
            compute_device: ComputeDevice { kind, name, ordinal, threads, note },
            model, requests, wall_ns, prefill_ns, decode_ns, energy,
            flops: FlopsBreakdown { prefill_flops: flops.0, decode_flops: flops.1 },
            peak_memory_bytes: Measured { value: peak.0, unavailable_reason: peak.1,
                source: peak.2 },
            warmup_requests, warmup, warnings, server: None, hostname, lem_version }
    }
}

prop_compose! {
    fn attempt_ref()(attempt in any::<u64>(), epoch in any::<u64>()) -> AttemptRef {
        AttemptRef { attempt, epoch }
    }
}

prop_compose! {
    fn held_attempt()(attempt in any::<u64>(), epoch in any::<u64>(), running in any::<bool>())
        -> HeldAttempt {
        HeldAttempt { attempt, epoch, running }
    }
}

prop_compose! {
    fn gpu()(key in text(), model in text(),
        mig_slices in vec((text(), text()).prop_map(|(key, profile)| MigSlice { key, profile }), 0..3),
    ) -> Gpu {
        Gpu { key, model, mig_slices }
    }
}

pub fn agent_message() -> impl Strategy<Value = AgentMessage> {
    prop_oneof![
        (
            vec(gpu(), 0..3),
            vec(text(), 0..3),
            vec(held_attempt(), 0..3),
            vec(held_attempt(), 0..3)
        )
            .prop_map(|(gpus, cpu_packages, held, lost)| AgentMessage::Hello {
                inventory: Inventory { gpus, cpu_packages },
                held,
                lost,
            }),
        vec(held_attempt(), 0..4).prop_map(|held| AgentMessage::Heartbeat { held }),
        (attempt_ref(), raw_result()).prop_map(|(attempt, result)| {
            AgentMessage::AttemptResult {
                attempt,
                result: Box::new(result),
            }
        }),
        (attempt_ref(), text())
            .prop_map(|(attempt, error)| AgentMessage::AttemptFailed { attempt, error }),
        (attempt_ref(), text())
            .prop_map(|(attempt, reason)| AgentMessage::LeaseRejected { attempt, reason }),
        Just(AgentMessage::Goodbye),
    ]
}

fn claim_mode() -> impl Strategy<Value = ClaimMode> {
    prop_oneof![Just(ClaimMode::Exclusive), Just(ClaimMode::Shared)]
}

fn ack_verdict() -> impl Strategy<Value = AckVerdict> {
    prop_oneof![
        Just(AckVerdict::Accepted),
        Just(AckVerdict::Superseded),
        Just(AckVerdict::FailureRecorded),
    ]
}

prop_compose! {
    fn lease_grant()(
        attempt in attempt_ref(), job in any::<u64>(), sweep in any::<u64>(),
        experiment_name in text(), cycle in any::<u32>(), job_key in text(), config in json(),
        devices in vec(text(), 0..3),
        claims in vec((text(), claim_mode()).prop_map(|(key, mode)| DeviceClaim { key, mode }), 0..3),
        device_model in of(text()), ttl_ms in any::<u64>(),
    ) -> LeaseGrant {
        LeaseGrant { attempt, job, sweep, experiment_name, cycle, job_key, config, devices,
            claims, device_model, ttl_ms }
    }
}

pub fn coordinator_message() -> impl Strategy<Value = CoordinatorMessage> {
    prop_oneof![
        lease_grant().prop_map(CoordinatorMessage::Lease),
        (vec(attempt_ref(), 0..4), any::<u64>())
            .prop_map(|(attempts, ttl_ms)| CoordinatorMessage::Renew { attempts, ttl_ms }),
        attempt_ref().prop_map(|attempt| CoordinatorMessage::Cancel { attempt }),
        (attempt_ref(), ack_verdict())
            .prop_map(|(attempt, verdict)| CoordinatorMessage::Ack { attempt, verdict }),
        Just(CoordinatorMessage::Drain),
        Just(CoordinatorMessage::HelloRequired),
        text().prop_map(|reason| CoordinatorMessage::Refuse { reason }),
    ]
}

prop_compose! {
    pub fn handshake()(protocol_version in any::<u32>(), cli in any::<bool>(), lem_version in text())
        -> Handshake {
        let role = if cli { PeerRole::Cli } else { PeerRole::Agent };
        Handshake { protocol_version, role, lem_version }
    }
}

pub fn handshake_reply() -> impl Strategy<Value = HandshakeReply> {
    prop_oneof![
        any::<u32>().prop_map(|protocol_version| HandshakeReply::Accepted { protocol_version }),
        (any::<u32>(), any::<u32>(), text()).prop_map(|(our_version, peer_version, message)| {
            HandshakeReply::Refused(VersionRefusal {
                our_version,
                peer_version,
                message,
            })
        }),
    ]
}
