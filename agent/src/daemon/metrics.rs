//! The agent's Prometheus text endpoint (`--metrics-listen`): per GPU the power draw,
//! the energy counter and the temperature as NVML reports them at scrape time, under
//! dcgm-exporter's names and labels, and the agent's own state (connected, draining,
//! jobs running, outcomes spooled). A reading NVML cannot give is left out, with the
//! reason in a comment line: never a zero. The HTTP side is lem-net's `metrics_http`.

use crate::meter::nvml::{init_nvml, simulation_reason};
use lem_common::prometheus::{self, escape_label as escape, one_line, Kind};
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Nvml;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The agent's state as the endpoint shows it; the session keeps it current.
#[derive(Debug, Default)]
pub struct AgentGauges {
    pub connected: AtomicBool,
    pub draining: AtomicBool,
    pub jobs_running: AtomicU64,
    pub spooled: AtomicU64,
}

/// One GPU's readings at scrape time; `Err` holds why NVML could not give one.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSample {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub power_w: Result<f64, String>,
    pub energy_mj: Result<u64, String>,
    pub temperature_c: Result<u32, String>,
}

/// Reads the GPUs through one NVML handle, opened when the endpoint starts.
pub struct GpuReader {
    nvml: Result<Nvml, String>,
    pub simulated: Option<String>,
}

impl GpuReader {
    pub fn open(lib: Option<PathBuf>) -> Self {
        match init_nvml(lib.as_deref()) {
            Ok(nvml) => {
                let driver = nvml.sys_driver_version().ok();
                let simulated = simulation_reason(lib.as_deref(), driver.as_deref());
                Self {
                    nvml: Ok(nvml),
                    simulated,
                }
            }
            Err(unavailable) => Self {
                nvml: Err(format!("{}: {}", unavailable.library, unavailable.reason)),
                simulated: None,
            },
        }
    }

    /// Every GPU's readings now, or why there are none.
    pub fn sample(&self) -> Result<Vec<GpuSample>, String> {
        let nvml = self.nvml.as_ref().map_err(Clone::clone)?;
        let count = nvml.device_count().map_err(|e| e.to_string())?;
        let mut samples = Vec::new();
        for index in 0..count {
            let device = match nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(index, error = %e, "metrics: GPU unreadable");
                    continue;
                }
            };
            let Ok(uuid) = device.uuid() else { continue };
            samples.push(GpuSample {
                index,
                uuid,
                model: device.name().unwrap_or_else(|_| "unknown".into()),
                power_w: device
                    .power_usage()
                    .map(|mw| f64::from(mw) / 1000.0)
                    .map_err(|e| e.to_string()),
                energy_mj: device.total_energy_consumption().map_err(|e| e.to_string()),
                temperature_c: device
                    .temperature(TemperatureSensor::Gpu)
                    .map_err(|e| e.to_string()),
            });
        }
        Ok(samples)
    }
}

/// The exposition text for `gpus` (or why there are none) and `gauges`.
pub fn render(
    hostname: &str,
    gpus: &Result<Vec<GpuSample>, String>,
    simulated: Option<&str>,
    gauges: &AgentGauges,
) -> String {
    let mut out = String::new();
    match gpus {
        Err(why) => {
            let _ = writeln!(out, "# lem: no GPU metrics: {}", one_line(why));
        }
        Ok(gpus) => {
            if let Some(why) = simulated {
                let _ = writeln!(out, "# lem: simulated GPUs: {}", one_line(why));
            }
            family(
                &mut out,
                hostname,
                gpus,
                Family {
                    name: "DCGM_FI_DEV_POWER_USAGE",
                    help: "Power draw (in W).",
                    kind: Kind::Gauge,
                    value: &|g| g.power_w.as_ref().map(|w| format!("{w:.3}")),
                },
            );
            family(
                &mut out,
                hostname,
                gpus,
                Family {
                    name: "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
                    help: "Total energy consumption since the driver last loaded (in mJ).",
                    kind: Kind::Counter,
                    value: &|g| g.energy_mj.as_ref().map(u64::to_string),
                },
            );
            family(
                &mut out,
                hostname,
                gpus,
                Family {
                    name: "DCGM_FI_DEV_GPU_TEMP",
                    help: "GPU temperature (in C).",
                    kind: Kind::Gauge,
                    value: &|g| g.temperature_c.as_ref().map(u32::to_string),
                },
            );
        }
    }
    let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
        prometheus::single(out, name, help, Kind::Gauge, &value.to_string());
    };
    let flag = |b: &AtomicBool| u64::from(b.load(Ordering::Relaxed));
    gauge(
        &mut out,
        "lem_agent_nvml_simulated",
        "1 when the GPU readings come from a simulated NVML (tests/fake-nvml or a named library).",
        u64::from(simulated.is_some() && gpus.is_ok()),
    );
    gauge(
        &mut out,
        "lem_agent_connected",
        "1 while a session with the coordinator is up.",
        flag(&gauges.connected),
    );
    gauge(
        &mut out,
        "lem_agent_draining",
        "1 once the coordinator asked this agent to drain.",
        flag(&gauges.draining),
    );
    gauge(
        &mut out,
        "lem_agent_jobs_running",
        "Leased jobs running now.",
        gauges.jobs_running.load(Ordering::Relaxed),
    );
    gauge(
        &mut out,
        "lem_agent_spool_entries",
        "Outcomes spooled and not yet acknowledged by the coordinator.",
        gauges.spooled.load(Ordering::Relaxed),
    );
    out
}

struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: Kind,
    value: &'a dyn Fn(&GpuSample) -> Result<String, &String>,
}

fn family(out: &mut String, hostname: &str, gpus: &[GpuSample], f: Family<'_>) {
    prometheus::header(out, f.name, f.help, f.kind);
    for g in gpus {
        match (f.value)(g) {
            Ok(value) => {
                let _ = writeln!(
                    out,
                    "{}{{gpu=\"{}\",UUID=\"{}\",modelName=\"{}\",Hostname=\"{}\"}} {value}",
                    f.name,
                    g.index,
                    escape(&g.uuid),
                    escape(&g.model),
                    escape(hostname)
                );
            }
            Err(why) => {
                let _ = writeln!(
                    out,
                    "# lem: {} unavailable for {}: {}",
                    f.name,
                    g.uuid,
                    one_line(why)
                );
            }
        }
    }
}

/// Binds `listen` and serves scrapes until the runtime stops (lem-net's responder).
/// Returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    hostname: String,
    reader: GpuReader,
    gauges: Arc<AgentGauges>,
) -> std::io::Result<SocketAddr> {
    let reader = Arc::new(reader);
    lem_net::metrics_http::serve(listen, move || {
        let (reader, gauges, hostname) = (reader.clone(), gauges.clone(), hostname.clone());
        async move { Ok(scrape(&hostname, reader, &gauges).await) }
    })
    .await
}

/// The text of one scrape; a GPU that cannot be read is a note in it, so it always has one.
async fn scrape(hostname: &str, reader: Arc<GpuReader>, gauges: &AgentGauges) -> String {
    // NVML calls block: off the async workers.
    let sampler = reader.clone();
    let gpus = tokio::task::spawn_blocking(move || sampler.sample())
        .await
        .unwrap_or_else(|e| Err(format!("sampling failed: {e}")));
    render(hostname, &gpus, reader.simulated.as_deref(), gauges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(index: u32, uuid: &str, temperature: Result<u32, String>) -> GpuSample {
        GpuSample {
            index,
            uuid: uuid.into(),
            model: "NVIDIA \"X\"".into(),
            power_w: Ok(212.5),
            energy_mj: Ok(1_234_567),
            temperature_c: temperature,
        }
    }

    #[test]
    fn readings_render_in_dcgm_names_and_unavailable_ones_are_left_out() {
        let gauges = AgentGauges::default();
        gauges.connected.store(true, Ordering::Relaxed);
        gauges.jobs_running.store(2, Ordering::Relaxed);
        let gpus = Ok(vec![
            sample(0, "GPU-a", Ok(41)),
            sample(1, "GPU-b", Err("Not supported".into())),
        ]);
        let text = render("node-a", &gpus, None, &gauges);
        let labels = |i: u32, uuid: &str| {
            format!("{{gpu=\"{i}\",UUID=\"{uuid}\",modelName=\"NVIDIA \\\"X\\\"\",Hostname=\"node-a\"}}")
        };
        for line in [
            format!("DCGM_FI_DEV_POWER_USAGE{} 212.500", labels(0, "GPU-a")),
            format!(
                "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{} 1234567",
                labels(1, "GPU-b")
            ),
            format!("DCGM_FI_DEV_GPU_TEMP{} 41", labels(0, "GPU-a")),
            "lem_agent_connected 1".into(),
            "lem_agent_jobs_running 2".into(),
            "lem_agent_nvml_simulated 0".into(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains(&format!("DCGM_FI_DEV_GPU_TEMP{}", labels(1, "GPU-b"))));
        assert!(text.contains("# lem: DCGM_FI_DEV_GPU_TEMP unavailable for GPU-b: Not supported"));
    }

    #[test]
    fn without_nvml_there_are_no_gpu_samples_and_the_reason_is_given() {
        let text = render(
            "n",
            &Err("libnvidia-ml.so.1: cannot load".into()),
            None,
            &AgentGauges::default(),
        );
        assert!(!text.contains("DCGM_"), "{text}");
        assert!(text.contains("# lem: no GPU metrics: libnvidia-ml.so.1: cannot load"));
        assert!(text.lines().any(|l| l == "lem_agent_connected 0"));
    }
}
