//! Lease grants/s and grant latency of the sans-IO scheduler with 1,000 simulated agents
//! × 8 GPUs, in virtual time (no network, no store: the scheduler alone).
//!
//! ```text
//! cargo run --release -p lem-coordinator --example scheduler_bench
//! ```
//!
//! Every agent heartbeats every 5 s (virtual) with the attempts it holds; every job runs
//! 60–600 s (virtual) and then reports a result, which frees its GPU for the next job.
//! Grant latency is the wall time of the `handle` call that emitted the lease: the time a
//! grantable job spends inside the scheduler. Throughput counts every call (heartbeats
//! and results included) against the leases granted.

use lem_common::rng::SplitMix64;
use lem_coordinator::scheduler::{
    Action, AgentId, DeviceKey, DeviceNeeds, Event, ExperimentSubmission, GpuDevice, HeldAttempt,
    Inventory, Outcome, RequestId, Scheduler, SchedulerConfig, SweepSubmission, TimeMs, ToAgent,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

const AGENTS: usize = 1_000;
const GPUS_PER_AGENT: usize = 8;
const EXPERIMENTS: usize = 2_000;
const CYCLES: u32 = 20;
const HEARTBEAT_MS: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Heartbeat(usize),
    Finish(usize, u64, u64),
}

struct Bench {
    s: Scheduler,
    rng: SplitMix64,
    queue: BinaryHeap<Reverse<(TimeMs, u64, Due)>>,
    seq: u64,
    /// Per agent: attempt → epoch of what it runs.
    running: Vec<BTreeMap<u64, u64>>,
    grant_latencies: Vec<Duration>,
    /// The same calls in this thread's CPU time: what the scheduler itself cost, without
    /// the waits of a preempted thread on a loaded machine.
    grant_cpu: Vec<Duration>,
    grants: usize,
    busy: Duration,
    calls: usize,
}

impl Bench {
    fn at(&mut self, t: TimeMs, due: Due) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, due)));
    }

    fn call(&mut self, event: Event, now: TimeMs) {
        let cpu_started = thread_cpu_time();
        let started = Instant::now();
        let actions = self.s.handle(event, now);
        let took = started.elapsed();
        let cpu = thread_cpu_time().saturating_sub(cpu_started);
        self.busy += took;
        self.calls += 1;
        let mut granted = 0;
        for a in actions {
            if let Action::Send {
                agent,
                msg: ToAgent::Lease(l),
            } = a
            {
                granted += 1;
                let i: usize = agent.0[5..].parse().expect("agent-N");
                self.running[i].insert(l.attempt.0, l.epoch.0);
                let run_ms = 60_000 + self.rng.below(540_000);
                self.at(now.plus_ms(run_ms), Due::Finish(i, l.attempt.0, l.epoch.0));
            }
        }
        self.grants += granted;
        // Every lease of one call waited the whole call.
        self.grant_latencies
            .extend(std::iter::repeat_n(took, granted));
        self.grant_cpu.extend(std::iter::repeat_n(cpu, granted));
    }
}

fn inventory(i: usize) -> Inventory {
    Inventory {
        gpus: (0..GPUS_PER_AGENT)
            .map(|g| GpuDevice {
                key: DeviceKey(format!("gpu:node{i}-{g}")),
                model: "H100".into(),
                mig_slices: vec![],
            })
            .collect(),
        cpu_packages: vec![DeviceKey(format!("rapl:node{i}:package-0"))],
        runner_slots: vec![],
    }
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn main() {
    let config = SchedulerConfig {
        lease_ttl_ms: 30_000,
        agent_timeout_ms: 20_000,
        ..SchedulerConfig::default()
    };
    let mut b = Bench {
        s: Scheduler::new(config),
        rng: SplitMix64::new(1),
        queue: BinaryHeap::new(),
        seq: 0,
        running: vec![BTreeMap::new(); AGENTS],
        grant_latencies: Vec::new(),
        grant_cpu: Vec::new(),
        grants: 0,
        busy: Duration::ZERO,
        calls: 0,
    };
    for i in 0..AGENTS {
        let hello = Event::AgentHello {
            agent: AgentId(format!("agent{i}")),
            inventory: inventory(i),
            held: vec![],
            lost: vec![],
        };
        b.call(hello, TimeMs(0));
        let first = b.rng.below(HEARTBEAT_MS);
        b.at(TimeMs(first), Due::Heartbeat(i));
    }
    let submission = SweepSubmission {
        idempotency_token: "bench".into(),
        name: "bench".into(),
        experiments: (0..EXPERIMENTS)
            .map(|e| ExperimentSubmission {
                name: format!("exp{e}"),
                config: serde_json::json!({ "experiment": e }),
                needs: DeviceNeeds::Gpus {
                    count: 1,
                    model: None,
                },
            })
            .collect(),
        cycles: CYCLES,
        pin_device_model: true,
    };
    let started = Instant::now();
    b.call(
        Event::SubmitSweep {
            request: RequestId(0),
            submission,
        },
        TimeMs(0),
    );
    let submit_took = started.elapsed();
    let initial_grants = b.grants;
    println!(
        "submit: {} jobs expanded and persisted, {initial_grants} leases granted in one call: {:.1} ms",
        EXPERIMENTS * CYCLES as usize,
        submit_took.as_secs_f64() * 1e3
    );
    b.grant_latencies.clear();
    b.grant_cpu.clear();
    let (grants_before, busy_before, calls_before) = (b.grants, b.busy, b.calls);

    let total_jobs = EXPERIMENTS * CYCLES as usize;
    let mut accepted = 0;
    let mut now = TimeMs(0);
    while accepted < total_jobs {
        let Reverse((t, _, due)) = b.queue.pop().expect("work remains");
        now = t;
        match due {
            Due::Heartbeat(i) => {
                let held = b.running[i]
                    .iter()
                    .map(|(a, e)| HeldAttempt {
                        attempt: lem_coordinator::scheduler::AttemptId(*a),
                        epoch: lem_coordinator::scheduler::Epoch(*e),
                        running: true,
                    })
                    .collect();
                let agent = AgentId(format!("agent{i}"));
                b.call(Event::Heartbeat { agent, held }, now);
                b.at(now.plus_ms(HEARTBEAT_MS), Due::Heartbeat(i));
            }
            Due::Finish(i, attempt, epoch) => {
                b.running[i].remove(&attempt);
                accepted += 1;
                let event = Event::AttemptFinished {
                    agent: AgentId(format!("agent{i}")),
                    attempt: lem_coordinator::scheduler::AttemptId(attempt),
                    epoch: lem_coordinator::scheduler::Epoch(epoch),
                    outcome: Outcome::Succeeded,
                };
                b.call(event, now);
            }
        }
    }
    let grants = b.grants - grants_before;
    let busy = b.busy - busy_before;
    let calls = b.calls - calls_before;
    let mut lat = std::mem::take(&mut b.grant_latencies);
    lat.sort();
    println!(
        "steady state: {grants} grants over {calls} events ({:.0} s virtual), scheduler busy {:.2} s",
        now.0 as f64 / 1e3,
        busy.as_secs_f64()
    );
    println!(
        "grants/s (all events counted): {:.0}",
        grants as f64 / busy.as_secs_f64()
    );
    let mut cpu = std::mem::take(&mut b.grant_cpu);
    cpu.sort();
    let in_grant_calls: Duration = lat.iter().sum();
    println!(
        "grants/s (time in grant-producing calls only): {:.0}",
        grants as f64 / in_grant_calls.as_secs_f64()
    );
    println!(
        "grant latency: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        percentile(&lat, 0.50).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6,
        percentile(&lat, 0.999).as_secs_f64() * 1e6,
        lat.last().expect("grants happened").as_secs_f64() * 1e6
    );
    println!(
        "grant latency in thread CPU time: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        percentile(&cpu, 0.50).as_secs_f64() * 1e6,
        percentile(&cpu, 0.99).as_secs_f64() * 1e6,
        percentile(&cpu, 0.999).as_secs_f64() * 1e6,
        cpu.last().expect("grants happened").as_secs_f64() * 1e6
    );
    let p =
        b.s.sweep_progress(lem_coordinator::scheduler::SweepId(0))
            .expect("sweep");
    assert_eq!(p.accepted, total_jobs, "every job accepted once: {p:?}");
}
