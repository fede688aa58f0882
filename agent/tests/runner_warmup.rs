//! Warmup until steady state through the job runner with SmolLM2: the rounds and their
//! throughput are recorded, and the record obeys its own rule (checked here from the
//! recorded figures). Skips without the model, except under CI.

use lem_agent::runner::{JobRunner, NoProgress, RunContext};
use lem_common::config::ExperimentConfig;
use lem_common::domain::JobSpec;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[path = "../../tests/support.rs"]
mod support;

#[test]
fn warmup_until_stable_records_its_rounds() {
    // The CPU pool is sized once per process (as lem does at start).
    lem_agent::threads::init(Some(2));
    let Some(model) = support::model_path() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut ctx = RunContext::from_env(Arc::new(AtomicBool::new(false)));
    ctx.resolve.offline = true;
    ctx.powercap_root = root.path().join("no-powercap");
    let mut c = ExperimentConfig::default_for("t", model.to_str().unwrap());
    c.num_input_prompts = Some(2);
    c.max_input_tokens = 16;
    c.max_output_tokens = 4;
    c.warmup_prompts = 1;
    c.idle_baseline_s = 0.0;
    c.cpu_threads = Some(2);
    c.warmup_until_stable.enabled = true;
    c.warmup_until_stable.max_rounds = 4;
    c.warmup_until_stable.tolerance = 0.5;
    let tolerance = c.warmup_until_stable.tolerance;
    let job = JobSpec {
        experiment_id: "t".into(),
        job_key: "k".into(),
        cycle: 0,
        attempt: 0,
        config: c,
        cli_overrides: BTreeMap::new(),
    };
    let r = JobRunner::new()
        .run(&job, &ctx, &mut NoProgress)
        .expect("run");
    let w = r.warmup.expect("a warmup record");
    assert!((1..=4).contains(&w.rounds), "{w:?}");
    assert_eq!(w.output_tokens_per_s.len(), w.rounds as usize);
    assert!(w.output_tokens_per_s.iter().all(|&t| t > 0.0), "{w:?}");
    // No meter reads here (no powercap, no NVML): power is unknown, not 0.
    assert!(w.power_w.iter().all(Option::is_none), "{w:?}");
    let t = &w.output_tokens_per_s;
    if w.stable {
        let (a, b) = (t[t.len() - 2], t[t.len() - 1]);
        assert!(((b - a) / a).abs() <= tolerance, "{w:?}");
        // It stopped at the first agreeing pair.
        assert!(t
            .windows(2)
            .rev()
            .skip(1)
            .all(|p| ((p[1] - p[0]) / p[0]).abs() > tolerance));
    } else {
        assert_eq!(w.rounds, 4);
        assert!(
            r.warnings.iter().any(|x| x.contains("steady state")),
            "{:?}",
            r.warnings
        );
    }
    assert!(w.wall_ns > 0);
}
