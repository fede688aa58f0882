//! An agent that stops while it holds nothing says goodbye and is disconnected at once;
//! one the scheduler still counts a lease of is left to the agent timeout, as before.

use super::tests::{agent, gpus, heartbeat, hello, leases, one_gpu, persisted, submission, submit};
use super::*;

fn goodbye(s: &mut Scheduler, name: &str, now: u64) -> Vec<Action> {
    s.handle(Event::AgentGoodbye { agent: agent(name) }, TimeMs(now))
}

fn alive(s: &Scheduler, name: &str) -> bool {
    s.agents()
        .find(|a| a.agent == &agent(name))
        .is_some_and(|a| a.alive)
}

#[test]
fn an_agent_holding_nothing_that_says_goodbye_is_disconnected_at_once_and_gets_no_lease() {
    let cfg = SchedulerConfig::default();
    let mut s = Scheduler::new(cfg.clone());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    assert!(alive(&s, "a"));
    let out = goodbye(&mut s, "a", 1_000);
    assert!(
        persisted(&out).is_empty(),
        "nothing durable changes: {out:?}"
    );
    assert!(
        !alive(&s, "a"),
        "disconnected at the goodbye, not at the timeout"
    );
    assert_eq!(s.live_agents().count(), 0);
    // Its loss deadline is gone: nothing is left to fire.
    assert_eq!(s.poll_timeout(), None);
    assert!(leases(&submit(&mut s, submission("t1", &[one_gpu()], 1), 2_000)).is_empty());

    // It comes back with a Hello and takes the queued job.
    let out = hello(&mut s, "a", gpus("a", 1, "H100"), 3_000);
    assert!(alive(&s, "a"));
    assert_eq!(leases(&out).len(), 1);
}

#[test]
fn a_goodbye_from_an_agent_with_a_lease_changes_nothing_until_the_agent_timeout() {
    let cfg = SchedulerConfig::default();
    let mut s = Scheduler::new(cfg.clone());
    let _ = hello(&mut s, "a", gpus("a", 1, "H100"), 0);
    let lease = leases(&submit(&mut s, submission("t1", &[one_gpu()], 1), 0)).remove(0);
    let renewed_at = 1_000;
    let _ = heartbeat(&mut s, "a", &[&lease], renewed_at);
    // The goodbye crossed the lease (or the agent lost track of it): the scheduler
    // still counts the lease, so the agent stays until its timeout, as before.
    let out = goodbye(&mut s, "a", renewed_at + 1);
    assert!(out.is_empty(), "{out:?}");
    assert!(alive(&s, "a"));
    let lost_at = renewed_at + cfg.agent_timeout_ms;
    assert_eq!(s.poll_timeout(), Some(TimeMs(lost_at)));
    let ended = persisted(&s.handle(Event::Tick, TimeMs(lost_at)));
    assert_eq!(
        ended,
        vec![Record::AttemptEnded {
            attempt: lease.attempt,
            job: lease.job,
            end: AttemptEnd::Lost {
                reason: "agent a lost (no heartbeat)".into()
            },
            fence_ms: Some(renewed_at + cfg.lease_ttl_ms - lost_at),
        }]
    );
    assert!(!alive(&s, "a"));
}

#[test]
fn a_goodbye_from_an_unknown_agent_changes_nothing() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    assert!(goodbye(&mut s, "nobody", 0).is_empty());
    assert_eq!(s.agents().count(), 0);
}
