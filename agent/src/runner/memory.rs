//! Peak host memory of one job. Linux keeps one high-water mark per process (`VmHWM`);
//! writing `5` to `/proc/self/clear_refs` resets it. A job that starts while no other job
//! of this process runs resets it, so its peak is its own; when jobs overlap the mark is
//! shared, and the result says it is the process's peak since the earliest of them began.

use lem_common::domain::Measured;
use std::sync::Mutex;

const CLEAR_REFS: &str = "/proc/self/clear_refs";

/// Jobs of this process running now, and how many have started in all.
struct Register {
    running: usize,
    started: u64,
}

static REGISTER: Mutex<Register> = Mutex::new(Register {
    running: 0,
    started: 0,
});

/// Held for the life of one job: [`JobMemory::finish`] gives its peak.
pub(super) struct JobMemory {
    /// This job's start number.
    start: u64,
    /// Why the mark could not be reset at the start (another job ran, or the reset
    /// failed); `None` when this job's peak is its own so far.
    shared_because: Option<String>,
    finished: bool,
}

impl JobMemory {
    /// Registers a job starting now, resetting the process's mark when it runs alone.
    pub(super) fn start() -> Self {
        let mut reg = REGISTER.lock().unwrap_or_else(|e| e.into_inner());
        reg.started += 1;
        reg.running += 1;
        let shared_because = if reg.running > 1 {
            Some("another job of this process was running when it started".to_string())
        } else {
            reset_peak().err()
        };
        Self {
            start: reg.started,
            shared_because,
            finished: false,
        }
    }

    /// The job's peak resident memory, read from `status` (the text of
    /// `/proc/self/status`, or the reason it could not be read).
    pub(super) fn finish(mut self) -> Measured<u64> {
        let overlapped = {
            let mut reg = REGISTER.lock().unwrap_or_else(|e| e.into_inner());
            reg.running -= 1;
            self.finished = true;
            // A job that started after this one shares the mark from then on.
            reg.started != self.start
        };
        let shared_because = self.shared_because.take().or_else(|| {
            overlapped.then(|| "another job of this process started while it ran".to_string())
        });
        label(crate::sysinfo::peak_rss_bytes(), shared_because.as_deref())
    }
}

impl Drop for JobMemory {
    fn drop(&mut self) {
        if !self.finished {
            // A job that failed still leaves the register.
            let mut reg = REGISTER.lock().unwrap_or_else(|e| e.into_inner());
            reg.running -= 1;
        }
    }
}

/// Resets the process's `VmHWM` to its current resident size.
fn reset_peak() -> Result<(), String> {
    std::fs::write(CLEAR_REFS, "5")
        .map_err(|e| format!("VmHWM could not be reset ({CLEAR_REFS}: {e})"))
}

/// Names what a `VmHWM` reading covers: this job alone, or the process's peak and why.
fn label(peak: Measured<u64>, shared_because: Option<&str>) -> Measured<u64> {
    let Some(value) = peak.value else {
        return peak;
    };
    let source = match shared_because {
        None => "VmHWM reset at job start: this job's peak host memory".to_string(),
        Some(why) => format!("VmHWM: the process's peak host memory, not this job's alone ({why})"),
    };
    Measured::known(value, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_mark_says_it_is_the_process_peak_and_why() {
        let own = label(Measured::known(10, "VmHWM"), None);
        assert_eq!(own.value, Some(10));
        assert!(own.source.unwrap().contains("this job's peak"));
        let shared = label(Measured::known(10, "VmHWM"), Some("because"));
        let source = shared.source.unwrap();
        assert!(
            source.contains("process's peak") && source.contains("because"),
            "{source}"
        );
        let missing = label(Measured::unavailable("no proc"), None);
        assert_eq!(missing.unavailable_reason.as_deref(), Some("no proc"));
    }

    #[test]
    fn a_job_alone_measures_its_own_peak_after_a_larger_one() {
        if !cfg!(target_os = "linux") || reset_peak().is_err() {
            eprintln!("skipped: {CLEAR_REFS} cannot be written here");
            return;
        }
        // Other tests of this binary may run jobs at the same time: only the label is
        // checked when they do.
        let big = JobMemory::start();
        let before = crate::sysinfo::peak_rss_bytes().value.unwrap();
        // 256 MiB touched: the mark rises well past what the next job uses.
        let ballast = vec![1u8; 256 << 20];
        std::hint::black_box(&ballast);
        let big_peak = big.finish();
        drop(ballast);
        let small = JobMemory::start();
        let small_peak = small.finish();
        let (Some(big_b), Some(small_b)) = (big_peak.value, small_peak.value) else {
            panic!("VmHWM readable: {big_peak:?} {small_peak:?}");
        };
        assert!(
            big_b >= before + (256 << 20) - (16 << 20),
            "{big_b} vs {before}"
        );
        if small_peak
            .source
            .as_deref()
            .unwrap()
            .contains("this job's peak")
        {
            assert!(
                small_b + (128 << 20) < big_b,
                "after a reset the peak is the job's: {small_b} vs {big_b}"
            );
        }
    }
}
