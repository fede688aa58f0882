//! QUIC transport settings shared by both sides: keep-alives well inside the idle
//! timeout, so a quiet but healthy connection is never dropped, and a dead one is.

use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            // A killed peer sends no close: silence for the idle timeout is how the
            // other side learns it is gone, so keep it short; keep-alives several times
            // within it keep a quiet but live connection open on a loaded machine.
            keep_alive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimersError {
    #[error(
        "keep-alive interval {keep_alive:?} must be shorter than the idle timeout {idle_timeout:?}"
    )]
    KeepAliveNotBelowIdle {
        keep_alive: Duration,
        idle_timeout: Duration,
    },
    #[error("idle timeout {idle_timeout:?} is out of QUIC's range")]
    IdleOutOfRange { idle_timeout: Duration },
}

impl Timers {
    pub fn transport_config(&self) -> Result<Arc<quinn::TransportConfig>, TimersError> {
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return Err(TimersError::KeepAliveNotBelowIdle {
                keep_alive: self.keep_alive,
                idle_timeout: self.idle_timeout,
            });
        }
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout).map_err(|_| {
            TimersError::IdleOutOfRange {
                idle_timeout: self.idle_timeout,
            }
        })?;
        let mut config = quinn::TransportConfig::default();
        config.keep_alive_interval(Some(self.keep_alive));
        config.max_idle_timeout(Some(idle));
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_must_be_below_the_idle_timeout() {
        assert!(Timers::default().transport_config().is_ok());
        let secs = Duration::from_secs;
        for (keep_alive, idle_timeout) in [
            (secs(30), secs(30)),
            (secs(31), secs(30)),
            (secs(0), secs(30)),
        ] {
            let timers = Timers {
                keep_alive,
                idle_timeout,
            };
            assert_eq!(
                timers.transport_config().err(),
                Some(TimersError::KeepAliveNotBelowIdle {
                    keep_alive,
                    idle_timeout
                })
            );
        }
    }
}
