//! `lem presets`, `lem datasets`, `lem gpus`.

use super::error::outln;
use super::{CliError, Outcome};
use lem_agent::meter::nvml::{discover_gpus, resolve_lib_path};
use lem_common::config::datasets::DATASET_ALIASES;
use std::path::Path;

pub fn presets(json: bool) -> Result<Outcome, CliError> {
    let presets = lem_common::config::presets();
    if json {
        let v: Vec<serde_json::Value> = presets
            .iter()
            .map(|p| serde_json::json!({ "name": p.name, "description": p.description }))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
        return Ok(Outcome::Success);
    }
    outln!("{:<12} DESCRIPTION", "PRESET");
    for p in presets {
        outln!("{:<12} {}", p.name, p.description);
    }
    outln!("\nUse: lem experiment --preset <name> --model <model>");
    Ok(Outcome::Success)
}

pub fn datasets(json: bool) -> Result<Outcome, CliError> {
    if json {
        let v: Vec<serde_json::Value> = DATASET_ALIASES
            .iter()
            .map(|a| {
                serde_json::json!({ "alias": a.alias, "repo": a.repo, "subset": a.subset,
                    "split": a.split, "column": a.column, "description": a.description })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
        return Ok(Outcome::Success);
    }
    outln!(
        "{:<10} {:<45} {:<8} {:<14} DESCRIPTION",
        "ALIAS",
        "DATASET",
        "SPLIT",
        "COLUMN"
    );
    for a in DATASET_ALIASES {
        let repo = match a.subset {
            Some(s) => format!("{} ({s})", a.repo),
            None => a.repo.to_string(),
        };
        outln!(
            "{:<10} {:<45} {:<8} {:<14} {}",
            a.alias,
            repo,
            a.split,
            a.column,
            a.description
        );
    }
    outln!("\nAlso: any Hugging Face dataset id, a local .txt/.jsonl/.json/.csv file, or");
    outln!("`prompt_source: {{type: synthetic}}` (no download). Datasets are read from the");
    outln!("Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub).");
    Ok(Outcome::Success)
}

/// GPU topology from NVML (`lib`, else `LEM_NVML_LIB`, else the system library).
/// Without NVIDIA it says so and succeeds: lem then runs on the CPU.
pub fn gpus(json: bool, lib: Option<&Path>) -> Result<Outcome, CliError> {
    let library = resolve_lib_path(lib).map_or_else(
        || "libnvidia-ml.so.1".to_owned(),
        |p| p.display().to_string(),
    );
    let found = discover_gpus(lib);
    if json {
        let v = match &found {
            Ok(gpus) => serde_json::json!({
                "nvml_available": true,
                "nvml_library": library,
                "driver_version": gpus.iter().find_map(|g| g.driver_version.clone()),
                "gpus": gpus,
                "note": if gpus.is_empty() { Some(NO_GPU_NOTE) } else { None },
            }),
            Err(e) => serde_json::json!({
                "nvml_available": false,
                "nvml_library": library,
                "reason": e.reason,
                "gpus": [],
                "note": NO_GPU_NOTE,
            }),
        };
        outln!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
        return Ok(Outcome::Success);
    }
    let gpus = match found {
        Ok(gpus) if !gpus.is_empty() => gpus,
        Ok(_) => {
            outln!("No NVIDIA GPU found (NVML at {library} reports 0 devices).");
            outln!("lem runs inference on the CPU; GPU energy is not measured.");
            return Ok(Outcome::Success);
        }
        Err(e) => {
            outln!("No NVIDIA GPU found: {}", e.reason);
            outln!(
                "(NVML library tried: {library}; set --nvml-lib or LEM_NVML_LIB to use another.)"
            );
            outln!("lem runs inference on the CPU; GPU energy is not measured.");
            return Ok(Outcome::Success);
        }
    };
    let na = || "n/a".to_owned();
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    // One row per GPU, its MIG devices indented under it.
    let mut rows: Vec<[String; 7]> = Vec::new();
    for g in &gpus {
        rows.push([
            g.index.to_string(),
            g.name.clone().unwrap_or_else(na),
            g.uuid.clone().unwrap_or_else(na),
            g.memory_total_bytes.map_or_else(na, gib),
            g.power_limit_w.map_or_else(na, |w| format!("{w:.0} W")),
            g.mig_mode.as_ref().map_or_else(na, |m| {
                let on = |b: bool| if b { "enabled" } else { "disabled" };
                if m.current == m.pending {
                    on(m.current).to_owned()
                } else {
                    format!("{} ({} after reset)", on(m.current), on(m.pending))
                }
            }),
            String::new(),
        ]);
        for m in &g.mig_instances {
            let id = |v: Option<u32>| v.map_or_else(na, |v| v.to_string());
            rows.push([
                format!("  {}:{}", g.index, m.mig_index),
                format!("  MIG {}", m.profile.clone().unwrap_or_else(na)),
                m.uuid.clone().unwrap_or_else(na),
                m.memory_total_bytes.map_or_else(na, gib),
                String::new(),
                format!(
                    "GI {} CI {}",
                    id(m.gpu_instance_id),
                    id(m.compute_instance_id)
                ),
                format!("{} slices, {} SMs", id(m.compute_slices), id(m.sm_count)),
            ]);
        }
    }
    let header = [
        "IDX",
        "NAME",
        "UUID",
        "MEMORY",
        "POWER LIMIT",
        "MIG",
        "COMPUTE",
    ];
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> std::io::Result<()> {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        outln!("{}", parts.join("  ").trim_end());
        Ok(())
    };
    line(&header.map(String::from))?;
    for r in &rows {
        line(r)?;
    }
    let driver = gpus.iter().find_map(|g| g.driver_version.clone());
    outln!(
        "\nDriver {} · NVML library {library}",
        driver.as_deref().unwrap_or("n/a")
    );
    if gpus.iter().any(|g| !g.mig_instances.is_empty()) {
        outln!(
            "MIG profile names are derived from each instance's slices and memory \
             (NVML reports profile ids)."
        );
    }
    for g in &gpus {
        for (field, reason) in &g.unavailable {
            outln!("GPU {} {field}: {reason}", g.index);
        }
        for m in &g.mig_instances {
            for (field, reason) in &m.unavailable {
                outln!("MIG {}:{} {field}: {reason}", g.index, m.mig_index);
            }
        }
    }
    Ok(Outcome::Success)
}

const NO_GPU_NOTE: &str = "no NVIDIA GPU found; lem runs inference on the CPU";
