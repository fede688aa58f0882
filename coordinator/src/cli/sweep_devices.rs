//! What each job of a submitted experiment needs on the cluster: the config's `devices`
//! section with the `sweep submit` flags laid over it, mapped to the scheduler's
//! `DeviceNeeds`. The flags are written into the config, so the stored config says what
//! was asked for.

use super::SweepDeviceArgs;
use lem_common::config::{Device, DeviceRequirements, ExperimentConfig};
use lem_common::wire::cli::DeviceNeeds;

/// Lays the sweep-wide flags over `config.devices` and checks the result as config
/// validation checks a `devices` section (flags can make a valid section invalid).
pub fn apply_device_flags(
    config: &mut ExperimentConfig,
    flags: &SweepDeviceArgs,
) -> Result<(), String> {
    let any_flag =
        flags.gpu_model.is_some() || flags.mig_profile.is_some() || flags.exclusive_parent;
    if any_flag {
        let devices = config
            .devices
            .get_or_insert_with(DeviceRequirements::default);
        if let Some(model) = &flags.gpu_model {
            devices.gpu_model = Some(model.clone());
        }
        if let Some(profile) = &flags.mig_profile {
            devices.mig_profile = Some(profile.clone());
        }
        if flags.exclusive_parent {
            if devices.mig_profile.is_none() {
                return Err(
                    "--exclusive-parent needs a MIG profile (devices.mig_profile or --mig-profile)"
                        .into(),
                );
            }
            devices.exclusive_parent = true;
        }
    }
    check_devices(config)
}

/// The rules of a `devices` section that must hold after the flags.
fn check_devices(config: &ExperimentConfig) -> Result<(), String> {
    let Some(devices) = &config.devices else {
        return Ok(());
    };
    for (key, value) in [
        ("gpu_model", &devices.gpu_model),
        ("mig_profile", &devices.mig_profile),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(format!("devices.{key}: must not be empty"));
        }
    }
    let mig = devices.mig_profile.is_some();
    if let (true, Some(n)) = (mig, devices.gpus.filter(|n| *n > 1)) {
        return Err(format!(
            "devices.gpus: a job with mig_profile runs on one MIG slice; gpus must be 1 or left out (found {n})"
        ));
    }
    let asks_gpus = devices.gpus.is_some() || devices.gpu_model.is_some() || mig;
    if config.device == Device::Cpu && asks_gpus {
        return Err(
            "device: cpu runs on the CPU packages; GPU needs (devices.*, --gpu-model, --mig-profile) do not apply"
                .into(),
        );
    }
    Ok(())
}

/// What one job of `config` needs: CPU inference meters the host's CPU packages; with a
/// MIG profile, one slice of that profile; else `devices.gpus` whole GPUs (default: as
/// many as `gpu_list` names, at least one). `devices.gpu_model` restricts the GPU (for a
/// slice: its parent).
pub fn needs_of(config: &ExperimentConfig) -> DeviceNeeds {
    let devices = config.devices.clone().unwrap_or_default();
    match config.device {
        Device::Cpu => DeviceNeeds::CpuPackages,
        Device::Auto | Device::Cuda => match devices.mig_profile {
            Some(profile) => DeviceNeeds::MigSlice {
                profile,
                exclusive_parent: devices.exclusive_parent,
                model: devices.gpu_model,
            },
            None => DeviceNeeds::Gpus {
                count: devices
                    .gpus
                    .unwrap_or_else(|| u32::try_from(config.gpu_list.len()).unwrap_or(u32::MAX))
                    .max(1),
                model: devices.gpu_model,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ExperimentConfig {
        ExperimentConfig::default_for("c", "m")
    }

    #[test]
    fn cpu_configs_need_the_cpu_packages_and_others_their_gpu_count() {
        let mut config = config();
        config.device = Device::Cpu;
        assert_eq!(needs_of(&config), DeviceNeeds::CpuPackages);
        config.device = Device::Cuda;
        config.gpu_list = vec![0, 1, 2];
        assert_eq!(
            needs_of(&config),
            DeviceNeeds::Gpus {
                count: 3,
                model: None
            }
        );
    }

    #[test]
    fn a_devices_section_sets_the_count_the_model_and_mig_slices() {
        let mut config = config();
        config.gpu_list = vec![0];
        config.devices = Some(DeviceRequirements {
            gpus: Some(2),
            gpu_model: Some("NVIDIA H100 80GB HBM3".into()),
            ..DeviceRequirements::default()
        });
        assert_eq!(
            needs_of(&config),
            DeviceNeeds::Gpus {
                count: 2,
                model: Some("NVIDIA H100 80GB HBM3".into())
            }
        );
        config.devices = Some(DeviceRequirements {
            gpu_model: Some("NVIDIA A100-SXM4-40GB".into()),
            mig_profile: Some("1g.10gb".into()),
            exclusive_parent: true,
            ..DeviceRequirements::default()
        });
        assert_eq!(
            needs_of(&config),
            DeviceNeeds::MigSlice {
                profile: "1g.10gb".into(),
                exclusive_parent: true,
                model: Some("NVIDIA A100-SXM4-40GB".into())
            }
        );
    }

    #[test]
    fn flags_override_the_section_and_are_written_into_the_config() {
        let mut config = config();
        config.devices = Some(DeviceRequirements {
            gpu_model: Some("NVIDIA H100 80GB HBM3".into()),
            ..DeviceRequirements::default()
        });
        let flags = SweepDeviceArgs {
            gpu_model: Some("NVIDIA A100-SXM4-40GB".into()),
            mig_profile: Some("2g.10gb".into()),
            exclusive_parent: true,
        };
        apply_device_flags(&mut config, &flags).unwrap();
        assert_eq!(
            config.devices,
            Some(DeviceRequirements {
                gpus: None,
                gpu_model: Some("NVIDIA A100-SXM4-40GB".into()),
                mig_profile: Some("2g.10gb".into()),
                exclusive_parent: true,
            })
        );
        assert_eq!(
            config.to_json()["devices"]["mig_profile"],
            serde_json::json!("2g.10gb")
        );
        // No flags, no section: the config is left as it was (no `devices` key).
        let mut plain = self::config();
        apply_device_flags(&mut plain, &SweepDeviceArgs::default()).unwrap();
        assert_eq!(plain.devices, None);
    }

    #[test]
    fn flags_that_make_the_needs_contradict_are_refused_naming_the_key() {
        let mut config = config();
        config.devices = Some(DeviceRequirements {
            gpus: Some(2),
            ..DeviceRequirements::default()
        });
        let mig = SweepDeviceArgs {
            mig_profile: Some("1g.10gb".into()),
            ..SweepDeviceArgs::default()
        };
        let err = apply_device_flags(&mut config, &mig).unwrap_err();
        assert!(
            err.starts_with("devices.gpus:") && err.contains("found 2"),
            "{err}"
        );

        let exclusive_only = SweepDeviceArgs {
            exclusive_parent: true,
            ..SweepDeviceArgs::default()
        };
        let err = apply_device_flags(&mut self::config(), &exclusive_only).unwrap_err();
        assert!(err.contains("--exclusive-parent"), "{err}");

        let mut cpu = self::config();
        cpu.device = Device::Cpu;
        let model = SweepDeviceArgs {
            gpu_model: Some("NVIDIA H100 80GB HBM3".into()),
            ..SweepDeviceArgs::default()
        };
        let err = apply_device_flags(&mut cpu, &model).unwrap_err();
        assert!(err.contains("device: cpu"), "{err}");
    }
}
