//! A config's `devices` section in embedded mode. Embedded runs meter the GPUs their
//! `gpu_list` names on this host; they do not place jobs. A MIG profile is refused (the
//! run would meter whole GPUs and measure something else than asked); a GPU count or
//! model is noted as applying on a cluster only.

use lem_common::config::ExperimentConfig;

/// `Err` when embedded mode cannot honour the section; `Ok(Some(note))` when part of it
/// only applies on a cluster; `Ok(None)` without a section.
pub fn embedded_device_requirements(config: &ExperimentConfig) -> Result<Option<String>, String> {
    let Some(devices) = &config.devices else {
        return Ok(None);
    };
    if let Some(profile) = &devices.mig_profile {
        return Err(format!(
            "devices.mig_profile ({profile}): embedded mode (`lem experiment`, `lem batch`) meters the whole GPUs in gpu_list and cannot place a job on a MIG slice; submit it to a cluster (`lem --coordinator ADDR sweep submit`) or remove devices.mig_profile"
        ));
    }
    let mut keys = Vec::new();
    if devices.gpus.is_some() {
        keys.push("devices.gpus");
    }
    if devices.gpu_model.is_some() {
        keys.push("devices.gpu_model");
    }
    if keys.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "{} place jobs on a cluster (`sweep submit`) only; embedded mode runs on gpu_list {:?} of this host",
        keys.join(" and "),
        config.gpu_list
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lem_common::config::DeviceRequirements;

    #[test]
    fn a_mig_profile_is_refused_and_gpu_needs_are_noted() {
        let mut config = ExperimentConfig::default_for("c", "m");
        assert_eq!(embedded_device_requirements(&config), Ok(None));
        config.devices = Some(DeviceRequirements {
            mig_profile: Some("1g.10gb".into()),
            ..DeviceRequirements::default()
        });
        let err = embedded_device_requirements(&config).unwrap_err();
        assert!(
            err.starts_with("devices.mig_profile (1g.10gb): embedded mode"),
            "{err}"
        );
        assert!(err.contains("sweep submit"), "{err}");
        config.gpu_list = vec![2, 3];
        config.devices = Some(DeviceRequirements {
            gpus: Some(2),
            gpu_model: Some("NVIDIA H100 80GB HBM3".into()),
            ..DeviceRequirements::default()
        });
        let note = embedded_device_requirements(&config).unwrap().unwrap();
        assert!(
            note.starts_with("devices.gpus and devices.gpu_model place jobs on a cluster"),
            "{note}"
        );
        assert!(note.ends_with("gpu_list [2, 3] of this host"), "{note}");
        // exclusive_parent alone: nothing to say (validation warned already).
        config.devices = Some(DeviceRequirements {
            exclusive_parent: true,
            ..DeviceRequirements::default()
        });
        assert_eq!(embedded_device_requirements(&config), Ok(None));
    }
}
