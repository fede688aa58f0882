//! `lem presets`, `lem datasets`, `lem gpus`.

use super::exit;
use lem_common::config::datasets::DATASET_ALIASES;
use std::path::Path;

pub fn presets(json: bool) -> i32 {
    let presets = lem_common::config::presets();
    if json {
        let v: Vec<serde_json::Value> = presets
            .iter()
            .map(|p| serde_json::json!({ "name": p.name, "description": p.description }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
        return exit::OK;
    }
    println!("{:<12} DESCRIPTION", "PRESET");
    for p in presets {
        println!("{:<12} {}", p.name, p.description);
    }
    println!("\nUse: lem experiment --preset <name> --model <model>");
    exit::OK
}

pub fn datasets(json: bool) -> i32 {
    if json {
        let v: Vec<serde_json::Value> = DATASET_ALIASES
            .iter()
            .map(|a| {
                serde_json::json!({ "alias": a.alias, "repo": a.repo, "subset": a.subset,
                    "split": a.split, "column": a.column, "description": a.description })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
        return exit::OK;
    }
    println!(
        "{:<10} {:<45} {:<8} {:<14} DESCRIPTION",
        "ALIAS", "DATASET", "SPLIT", "COLUMN"
    );
    for a in DATASET_ALIASES {
        let repo = match a.subset {
            Some(s) => format!("{} ({s})", a.repo),
            None => a.repo.to_string(),
        };
        println!(
            "{:<10} {:<45} {:<8} {:<14} {}",
            a.alias, repo, a.split, a.column, a.description
        );
    }
    println!("\nAlso: any Hugging Face dataset id, a local .txt/.jsonl/.json/.csv file, or");
    println!("`prompt_source: {{type: synthetic}}` (no download). Datasets are read from the");
    println!("Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub).");
    exit::OK
}

/// GPU topology. Until the NVML reader lands this reports what the driver exposes.
pub fn gpus(json: bool) -> i32 {
    let driver = Path::new("/proc/driver/nvidia/gpus");
    let gpus: Vec<String> = std::fs::read_dir(driver)
        .map(|d| {
            let mut v: Vec<String> = d
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    if json {
        let v = serde_json::json!({
            "nvidia_driver": driver.exists(),
            "gpus": gpus.iter().map(|bus| serde_json::json!({"pci_bus_id": bus})).collect::<Vec<_>>(),
            "note": if gpus.is_empty() { "no NVIDIA GPU found; lem runs inference on the CPU" } else { "detailed NVML topology (memory, power limit, MIG) is not available in this build" },
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
        return exit::OK;
    }
    if gpus.is_empty() {
        println!(
            "No NVIDIA GPU found (no NVIDIA driver at {}).",
            driver.display()
        );
        println!("lem runs inference on the CPU; GPU energy is not measured.");
    } else {
        println!("NVIDIA driver reports {} GPU(s):", gpus.len());
        for (i, bus) in gpus.iter().enumerate() {
            println!("  {i}: PCI {bus}");
        }
        println!(
            "Detailed NVML topology (memory, power limit, MIG) is not available in this build."
        );
    }
    exit::OK
}
