//! The coordinator's edge between the wire and the scheduler: agent messages become
//! scheduler events, scheduler messages for an agent become wire messages. The only
//! place the two sets of types meet, so each can change without the other.

use crate::scheduler::{
    AckVerdict, AgentId, AttemptId, ClaimMode, DeviceKey, Epoch, Event, GpuDevice, HeldAttempt,
    Inventory, MigSlice, Outcome, ToAgent,
};
use lem_common::domain::RawResult;
use lem_common::wire;

/// An agent message as the scheduler sees it. A result's body does not enter the
/// scheduler: the driver holds it until the scheduler says where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct FromAgent {
    pub event: Event,
    pub result_body: Option<Box<RawResult>>,
}

/// `agent` is the name on the connection's certificate: an agent never names itself.
pub fn event_from_agent(agent: AgentId, message: wire::AgentMessage) -> FromAgent {
    let mut result_body = None;
    let event = match message {
        wire::AgentMessage::Hello {
            inventory,
            held,
            lost,
        } => Event::AgentHello {
            agent,
            inventory: inventory_from_wire(inventory),
            held: held.into_iter().map(held_from_wire).collect(),
            lost: lost.into_iter().map(held_from_wire).collect(),
        },
        wire::AgentMessage::Heartbeat { held } => Event::Heartbeat {
            agent,
            held: held.into_iter().map(held_from_wire).collect(),
        },
        wire::AgentMessage::AttemptResult { attempt, result } => {
            result_body = Some(result);
            Event::AttemptFinished {
                agent,
                attempt: AttemptId(attempt.attempt),
                epoch: Epoch(attempt.epoch),
                outcome: Outcome::Succeeded,
            }
        }
        wire::AgentMessage::AttemptFailed { attempt, error } => Event::AttemptFinished {
            agent,
            attempt: AttemptId(attempt.attempt),
            epoch: Epoch(attempt.epoch),
            outcome: Outcome::Failed { error },
        },
        wire::AgentMessage::LeaseRejected { attempt, reason } => Event::LeaseRejected {
            agent,
            attempt: AttemptId(attempt.attempt),
            epoch: Epoch(attempt.epoch),
            reason,
        },
        wire::AgentMessage::Goodbye => Event::AgentGoodbye { agent },
    };
    FromAgent { event, result_body }
}

/// A scheduler message for one agent, as it goes on the wire.
pub fn message_to_agent(message: ToAgent) -> wire::CoordinatorMessage {
    match message {
        ToAgent::Lease(lease) => wire::CoordinatorMessage::Lease(wire::LeaseGrant {
            attempt: wire::AttemptRef {
                attempt: lease.attempt.0,
                epoch: lease.epoch.0,
            },
            job: lease.job.0,
            sweep: lease.sweep.0,
            experiment_name: lease.experiment_name,
            cycle: lease.cycle,
            job_key: lease.job_key,
            config: (*lease.config).clone(),
            devices: lease.placement.devices.into_iter().map(|d| d.0).collect(),
            claims: lease
                .placement
                .claims
                .into_iter()
                .map(|claim| wire::DeviceClaim {
                    key: claim.key.0,
                    mode: match claim.mode {
                        ClaimMode::Exclusive => wire::ClaimMode::Exclusive,
                        ClaimMode::Shared => wire::ClaimMode::Shared,
                    },
                })
                .collect(),
            device_model: lease.placement.device_model,
            ttl_ms: lease.ttl_ms,
        }),
        ToAgent::Renewed { attempts, ttl_ms } => wire::CoordinatorMessage::Renew {
            attempts: attempts.into_iter().map(attempt_to_wire).collect(),
            ttl_ms,
        },
        ToAgent::Cancel(held) => wire::CoordinatorMessage::Cancel {
            attempt: attempt_to_wire(held),
        },
        ToAgent::Ack { attempt, verdict } => wire::CoordinatorMessage::Ack {
            attempt: attempt_to_wire(attempt),
            verdict: match verdict {
                AckVerdict::Accepted => wire::AckVerdict::Accepted,
                AckVerdict::Superseded => wire::AckVerdict::Superseded,
                AckVerdict::FailureRecorded => wire::AckVerdict::FailureRecorded,
            },
        },
        ToAgent::Drain => wire::CoordinatorMessage::Drain,
        ToAgent::HelloRequired => wire::CoordinatorMessage::HelloRequired,
        ToAgent::Refused(error) => wire::CoordinatorMessage::Refuse {
            reason: error.to_string(),
        },
    }
}

fn attempt_to_wire(held: HeldAttempt) -> wire::AttemptRef {
    wire::AttemptRef {
        attempt: held.attempt.0,
        epoch: held.epoch.0,
    }
}

fn held_from_wire(held: wire::HeldAttempt) -> HeldAttempt {
    HeldAttempt {
        attempt: AttemptId(held.attempt),
        epoch: Epoch(held.epoch),
        running: held.running,
    }
}

fn inventory_from_wire(inventory: wire::Inventory) -> Inventory {
    Inventory {
        gpus: inventory
            .gpus
            .into_iter()
            .map(|gpu| GpuDevice {
                key: DeviceKey(gpu.key),
                model: gpu.model,
                mig_slices: gpu
                    .mig_slices
                    .into_iter()
                    .map(|slice| MigSlice {
                        key: DeviceKey(slice.key),
                        profile: slice.profile,
                    })
                    .collect(),
            })
            .collect(),
        cpu_packages: inventory.cpu_packages.into_iter().map(DeviceKey).collect(),
        // Networked agents take their placement from the lease: no runner slots.
        runner_slots: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    //! A scheduler driven through real frames: what the agent sends is encoded, decoded
    //! and converted; what the scheduler sends is converted, encoded and decoded, and
    //! compared with the scheduler's own lease and ack.

    use super::*;
    use crate::scheduler::{
        Action, DeviceNeeds, ExperimentSubmission, RequestId, Scheduler, SchedulerConfig,
        SweepSubmission, TimeMs,
    };
    use lem_common::wire::{decode_frame, encode_frame, Decoded, MAX_FRAME_BYTES};
    use serde::{de::DeserializeOwned, Serialize};
    use serde_json::json;

    fn through_frame<T: Serialize + DeserializeOwned>(message: &T) -> T {
        let frame = encode_frame(message, MAX_FRAME_BYTES).unwrap();
        match decode_frame(&frame, MAX_FRAME_BYTES).unwrap() {
            Decoded::Frame { message, .. } => message,
            Decoded::Incomplete { .. } => panic!("a whole frame decoded as incomplete"),
        }
    }

    fn sent_to_agent(actions: &[Action]) -> Vec<(AgentId, ToAgent)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { agent, msg } => Some((agent.clone(), msg.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn hello_lease_result_and_ack_cross_the_wire_unchanged() {
        let mut scheduler = Scheduler::new(SchedulerConfig::default());
        let agent = AgentId("node-a".into());
        let hello = wire::AgentMessage::Hello {
            inventory: wire::Inventory {
                gpus: vec![wire::Gpu {
                    key: "gpu:uuid-0".into(),
                    model: "NVIDIA H100".into(),
                    mig_slices: vec![],
                }],
                cpu_packages: vec!["rapl:node-a:package-0".into()],
            },
            held: vec![],
            lost: vec![],
        };
        let from_agent = event_from_agent(agent.clone(), through_frame(&hello));
        assert_eq!(from_agent.result_body, None);
        let actions = scheduler.handle(from_agent.event, TimeMs(0));
        // Accepted: nothing to lease yet, and no refusal.
        assert_eq!(sent_to_agent(&actions), vec![]);

        let config = json!({ "model": "m", "batch_size": 4 });
        let actions = scheduler.handle(
            Event::SubmitSweep {
                request: RequestId(1),
                submission: SweepSubmission {
                    idempotency_token: "t".into(),
                    name: "wire".into(),
                    experiments: vec![ExperimentSubmission {
                        name: "exp".into(),
                        config: config.clone(),
                        needs: DeviceNeeds::Gpus {
                            count: 1,
                            model: None,
                        },
                    }],
                    cycles: 1,
                    pin_device_model: true,
                },
            },
            TimeMs(1),
        );
        let sent = sent_to_agent(&actions);
        let [(to, ToAgent::Lease(lease))] = sent.as_slice() else {
            panic!("expected one lease in {actions:?}");
        };
        assert_eq!(to, &agent);
        let wire::CoordinatorMessage::Lease(grant) =
            through_frame(&message_to_agent(ToAgent::Lease(lease.clone())))
        else {
            panic!("a lease converted to another message");
        };
        assert_eq!(
            (
                grant.attempt.attempt,
                grant.attempt.epoch,
                grant.job,
                grant.sweep
            ),
            (lease.attempt.0, lease.epoch.0, lease.job.0, lease.sweep.0)
        );
        assert_eq!((grant.cycle, &grant.job_key), (lease.cycle, &lease.job_key));
        assert_eq!(grant.config, config);
        assert_eq!(grant.devices, vec!["gpu:uuid-0".to_string()]);
        assert_eq!(
            grant.claims,
            vec![wire::DeviceClaim {
                key: "gpu:uuid-0".into(),
                mode: wire::ClaimMode::Exclusive
            }]
        );
        assert_eq!(grant.device_model.as_deref(), Some("NVIDIA H100"));
        assert_eq!(grant.ttl_ms, lease.ttl_ms);

        let body = crate::test_fixtures::raw_result("exp", 0, 16, 1_000_000);
        let result = wire::AgentMessage::AttemptResult {
            attempt: grant.attempt,
            result: Box::new(body.clone()),
        };
        let from_agent = event_from_agent(agent.clone(), through_frame(&result));
        assert_eq!(from_agent.result_body.as_deref(), Some(&body));
        let actions = scheduler.handle(from_agent.event, TimeMs(2));
        let acks: Vec<_> = sent_to_agent(&actions)
            .into_iter()
            .map(|(_, msg)| through_frame(&message_to_agent(msg)))
            .collect();
        assert_eq!(
            acks,
            vec![wire::CoordinatorMessage::Ack {
                attempt: grant.attempt,
                verdict: wire::AckVerdict::Accepted
            }]
        );
    }

    #[test]
    fn a_failure_and_a_rejection_become_their_events() {
        let agent = AgentId("node-b".into());
        let attempt = wire::AttemptRef {
            attempt: 12,
            epoch: 3,
        };
        let failed = wire::AgentMessage::AttemptFailed {
            attempt,
            error: "out of memory".into(),
        };
        assert_eq!(
            event_from_agent(agent.clone(), through_frame(&failed)).event,
            Event::AttemptFinished {
                agent: agent.clone(),
                attempt: AttemptId(12),
                epoch: Epoch(3),
                outcome: Outcome::Failed {
                    error: "out of memory".into()
                },
            }
        );
        let rejected = wire::AgentMessage::LeaseRejected {
            attempt,
            reason: "busy".into(),
        };
        assert_eq!(
            event_from_agent(agent.clone(), through_frame(&rejected)).event,
            Event::LeaseRejected {
                agent: agent.clone(),
                attempt: AttemptId(12),
                epoch: Epoch(3),
                reason: "busy".into(),
            }
        );
        let goodbye = event_from_agent(agent.clone(), through_frame(&wire::AgentMessage::Goodbye));
        assert_eq!(goodbye.event, Event::AgentGoodbye { agent });
        assert!(goodbye.result_body.is_none());
    }
}
