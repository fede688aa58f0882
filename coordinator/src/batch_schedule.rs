//! Which experiment of a `lem batch` starts next: experiments start in the order given,
//! and one starts only when no running experiment meters a device it meters (the devices
//! come from `lem_agent::meter::ownership::plan_metered_devices`). Where all experiments
//! share one RAPL package they therefore run one after another, whatever `--parallel`
//! says: the package's counter cannot tell whose work it counted.

use lem_agent::meter::ownership::{first_conflict, DeviceKey, MeteredDevice};

/// The batch's state: what each experiment meters, what runs, what is next.
#[derive(Debug)]
pub struct BatchSchedule {
    devices: Vec<Vec<MeteredDevice>>,
    next: usize,
    running: Vec<usize>,
}

/// What the next experiment (index in the order given) may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// Start it.
    Start(usize),
    /// It must wait: `running` (an experiment started earlier) meters `key` too.
    Wait {
        next: usize,
        running: usize,
        key: DeviceKey,
    },
    /// Every experiment has started.
    AllStarted,
}

impl BatchSchedule {
    /// `devices[i]`: the devices experiment `i` meters.
    pub fn new(devices: Vec<Vec<MeteredDevice>>) -> Self {
        Self {
            devices,
            next: 0,
            running: Vec::new(),
        }
    }

    /// The next experiment's turn, given what runs now.
    pub fn turn(&self) -> Turn {
        let Some(wanted) = self.devices.get(self.next) else {
            return Turn::AllStarted;
        };
        for &r in &self.running {
            if let Some(key) = first_conflict(wanted, &self.devices[r]) {
                return Turn::Wait {
                    next: self.next,
                    running: r,
                    key: key.clone(),
                };
            }
        }
        Turn::Start(self.next)
    }

    /// Marks the experiment [`Turn::Start`] named as running.
    pub fn start(&mut self, experiment: usize) {
        debug_assert_eq!(experiment, self.next, "experiments start in order");
        self.running.push(experiment);
        self.next += 1;
    }

    /// Marks `experiment` as finished: its devices are free.
    pub fn finish(&mut self, experiment: usize) {
        self.running.retain(|&r| r != experiment);
    }

    /// Experiments running now.
    pub fn running(&self) -> &[usize] {
        &self.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lem_agent::meter::ownership::Access;

    fn ex(key: &str) -> MeteredDevice {
        MeteredDevice {
            key: if let Some(uuid) = key.strip_prefix("gpu:") {
                DeviceKey::gpu(uuid)
            } else {
                DeviceKey::rapl(None, key.trim_start_matches("rapl:"))
            },
            access: Access::Exclusive,
        }
    }

    #[test]
    fn experiments_on_one_package_run_one_after_another_in_order() {
        let pkg = || vec![ex("rapl:package-0")];
        let mut s = BatchSchedule::new(vec![pkg(), pkg(), pkg()]);
        assert_eq!(s.turn(), Turn::Start(0));
        s.start(0);
        assert_eq!(
            s.turn(),
            Turn::Wait {
                next: 1,
                running: 0,
                key: DeviceKey::rapl(None, "package-0")
            }
        );
        s.finish(0);
        assert_eq!(s.turn(), Turn::Start(1));
        s.start(1);
        s.finish(1);
        s.start(2);
        assert_eq!(s.turn(), Turn::AllStarted);
        assert_eq!(s.running(), [2]);
    }

    #[test]
    fn disjoint_devices_run_together_and_a_shared_one_waits_its_turn() {
        let mut s = BatchSchedule::new(vec![
            vec![ex("gpu:GPU-a")],
            vec![ex("gpu:GPU-b")],
            vec![ex("gpu:GPU-a"), ex("gpu:GPU-c")],
            vec![ex("gpu:GPU-c")],
        ]);
        s.start(0);
        assert_eq!(s.turn(), Turn::Start(1));
        s.start(1);
        // The third needs GPU-a; the fourth, though free, starts after it (order given).
        assert!(matches!(
            s.turn(),
            Turn::Wait {
                next: 2,
                running: 0,
                ..
            }
        ));
        s.finish(1);
        assert!(matches!(s.turn(), Turn::Wait { next: 2, .. }));
        s.finish(0);
        assert_eq!(s.turn(), Turn::Start(2));
        s.start(2);
        assert!(matches!(
            s.turn(),
            Turn::Wait {
                next: 3,
                running: 2,
                ..
            }
        ));
    }

    #[test]
    fn experiments_that_meter_nothing_never_wait() {
        let mut s = BatchSchedule::new(vec![Vec::new(), Vec::new()]);
        s.start(0);
        assert_eq!(s.turn(), Turn::Start(1));
    }
}
