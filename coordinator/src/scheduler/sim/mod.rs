//! Seeded, deterministic simulation of a coordinator, N agents and a client over a faulty
//! network, in virtual time, with invariants checked after every step.
//!
//! `cargo test -p lem-coordinator --lib scheduler::sim` runs `DEFAULT_SEEDS` seeds;
//! `LEM_SIM_SEEDS=10000` runs more; `LEM_SIM_SEED=n` replays one seed exactly (a failing
//! seed prints that command).

mod agent;
mod invariants;
mod net;
mod world;

use agent::LeaseCount;
use world::{SimParams, World};

/// Seeds run by a plain `cargo test`.
const DEFAULT_SEEDS: u64 = 200;

fn replay_command(seed: u64) -> String {
    format!("LEM_SIM_SEED={seed} cargo test -p lem-coordinator --lib scheduler::sim -- --nocapture")
}

/// Runs one seed; on a violation returns the message with the replay command.
fn run_seed(seed: u64) -> Result<world::Summary, String> {
    let mut world = World::new(seed, SimParams::for_seed(seed));
    world
        .run()
        .map_err(|e| format!("seed {seed}: {e}\n  replay: {}", replay_command(seed)))
}

fn seeds_from_env() -> Vec<u64> {
    if let Ok(one) = std::env::var("LEM_SIM_SEED") {
        let seed = one
            .parse()
            .unwrap_or_else(|_| panic!("LEM_SIM_SEED={one:?} is not an unsigned integer"));
        return vec![seed];
    }
    let count = match std::env::var("LEM_SIM_SEEDS") {
        Ok(n) => n
            .parse()
            .unwrap_or_else(|_| panic!("LEM_SIM_SEEDS={n:?} is not an unsigned integer")),
        Err(_) => DEFAULT_SEEDS,
    };
    (0..count).collect()
}

#[test]
fn seeded_faults_keep_every_invariant_and_the_sweep_completes() {
    let seeds = seeds_from_env();
    let mut totals = world::Summary::default();
    let mut failures = Vec::new();
    for &seed in &seeds {
        match run_seed(seed) {
            Ok(s) => totals.add(&s),
            Err(e) => failures.push(e),
        }
    }
    eprintln!("scheduler sim: {} seeds; {totals}", seeds.len());
    assert!(
        failures.is_empty(),
        "{} seed(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The faults must actually have happened, or the run proves nothing.
    if seeds.len() >= 50 {
        assert!(
            totals.coordinator_restarts > 0,
            "no coordinator restart was simulated"
        );
        assert!(totals.agent_crashes > 0, "no agent crash was simulated");
        assert!(totals.superseded > 0, "no stale result was ever fenced");
        assert!(totals.requeued > 0, "no lease was ever requeued");
        assert!(totals.drains > 0, "no agent was ever drained");
        assert!(
            totals.restarts_with_open_fence > 0,
            "no coordinator restarted while it held an open fence"
        );
        assert!(totals.goodbyes_taken > 0, "no goodbye was ever taken");
        assert!(
            totals.goodbyes_crossing_lease > 0,
            "no goodbye ever crossed a lease"
        );
        assert!(
            totals.dropped_at_crash > 0,
            "no coordinator crash ever cut off a message to an agent"
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 17] {
        let a = World::new(seed, SimParams::for_seed(seed))
            .run()
            .expect("seed runs");
        let b = World::new(seed, SimParams::for_seed(seed))
            .run()
            .expect("seed runs");
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "seed {seed} is not deterministic"
        );
        assert_eq!(a, b);
    }
}

/// Seeds tried against the old lease rule; the first to catch it stops the search.
const OLD_RULE_SEEDS: u64 = 2_000;

/// The rule the simulated agents followed before (a lease's whole TTL counted from the
/// arrival of the lease or renewal) lets a renewed run outlast the coordinator's count of
/// its lease, even on the clocks drawn now (the network's delay and a clock up to 4 %
/// slow); the invariant must catch it. Rare (11 of seeds 0–1,999 when written): it needs
/// an agent cut off right after a renewal while a long run has more than a TTL to go.
#[test]
fn counting_the_ttl_from_a_renewals_arrival_is_caught() {
    let caught = (0..OLD_RULE_SEEDS).find_map(|seed| {
        let mut params = SimParams::for_seed(seed);
        params.lease_count = LeaseCount::FromArrival;
        let error = World::new(seed, params).run().err()?;
        error
            .contains("no longer counts it")
            .then(|| format!("seed {seed}: {error}"))
    });
    let Some(caught) = caught else {
        panic!("seeds 0..{OLD_RULE_SEEDS} never caught the arrival rule");
    };
    eprintln!("arrival rule caught: {caught}");
}
