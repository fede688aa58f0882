//! `lem --coordinator X sweep submit|list|show|cancel|resume`. A submission's configs are
//! resolved here exactly as `lem batch` resolves them (file, presets, `_extends`, the
//! same override flags); the coordinator receives finished configs. A prompt file a config
//! names is read here and shipped inside the config (bytes and SHA-256, size-limited).

use super::error::outln;
use super::experiment::{resolve_config, to_cli_overrides};
use super::remote::{unexpected, Remote};
use super::sweep_devices::{apply_device_flags, needs_of};
use super::sweep_grid::expand_base;
use super::{CliError, Outcome, SweepArgsSubmit, SweepCommand};
use lem_common::config::{ExperimentConfig, PromptSource};
use lem_common::shipped_prompt;
use lem_common::wire::cli::{
    CliReply, CliRequest, ExperimentSubmission, SweepDetail, SweepSubmission, SweepSummary,
};
use sha2::{Digest, Sha256};

pub fn run(remote: &Remote, cmd: SweepCommand) -> Result<Outcome, CliError> {
    match cmd {
        SweepCommand::Submit(args) => submit(remote, *args),
        SweepCommand::List { json } => match remote.request(&CliRequest::ListSweeps)? {
            CliReply::Sweeps(sweeps) => {
                if json {
                    outln!(
                        "{}",
                        serde_json::to_string_pretty(&sweeps).expect("plain data")
                    );
                } else {
                    print_sweeps(&sweeps)?;
                }
                Ok(Outcome::Success)
            }
            other => Err(unexpected("sweep list", &other)),
        },
        SweepCommand::Show { sweep, json } => {
            match remote.request(&CliRequest::ShowSweep { sweep: sweep.0 })? {
                CliReply::Sweep(detail) => {
                    if json {
                        outln!(
                            "{}",
                            serde_json::to_string_pretty(&detail).expect("plain data")
                        );
                    } else {
                        print_detail(&detail)?;
                    }
                    Ok(Outcome::Success)
                }
                other => Err(unexpected("sweep show", &other)),
            }
        }
        SweepCommand::Cancel { sweep } => {
            match remote.request(&CliRequest::CancelSweep { sweep: sweep.0 })? {
                CliReply::SweepCancelled {
                    sweep,
                    jobs_cancelled,
                } => {
                    outln!("sweep-{sweep}: {jobs_cancelled} job(s) cancelled");
                    Ok(Outcome::Success)
                }
                other => Err(unexpected("sweep cancel", &other)),
            }
        }
        SweepCommand::Resume { sweep } => {
            match remote.request(&CliRequest::ResumeSweep { sweep: sweep.0 })? {
                CliReply::SweepResumed {
                    sweep,
                    jobs_requeued,
                } => {
                    outln!("sweep-{sweep}: {jobs_requeued} job(s) queued again");
                    Ok(Outcome::Success)
                }
                other => Err(unexpected("sweep resume", &other)),
            }
        }
    }
}

/// `sweep-3` or `3`.
pub fn parse_sweep_id(text: &str) -> Result<SweepRef, String> {
    let digits = text.trim().strip_prefix("sweep-").unwrap_or(text.trim());
    digits
        .parse::<u64>()
        .map(SweepRef)
        .map_err(|_| format!("`{text}` is not a sweep id (e.g. sweep-3 or 3)"))
}

/// A sweep's number as the user named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepRef(pub u64);

fn submit(remote: &Remote, args: SweepArgsSubmit) -> Result<Outcome, CliError> {
    let submission = build_submission(&args)?;
    let experiments = submission.experiments.len();
    match remote.request(&CliRequest::SubmitSweep(submission))? {
        CliReply::SweepSubmitted {
            sweep,
            created,
            jobs,
        } => {
            if created {
                outln!("sweep-{sweep}: submitted {experiments} experiment(s), {jobs} job(s)");
            } else {
                outln!("sweep-{sweep}: already submitted ({jobs} job(s)); nothing new created");
            }
            Ok(Outcome::Success)
        }
        other => Err(unexpected("sweep submit", &other)),
    }
}

/// Resolves every config (all before anything is sent) and makes the idempotency token
/// the retries of this one submission share. With `--vary`, each config is a base
/// expanded into its grid.
fn build_submission(args: &SweepArgsSubmit) -> Result<SweepSubmission, CliError> {
    let overrides = to_cli_overrides(&args.overrides, args.cycles);
    let mut experiments = Vec::new();
    for path in &args.configs {
        let invalid = |msg: String| {
            CliError::usage(format!(
                "{msg}\n{}: invalid; nothing was submitted",
                path.display()
            ))
        };
        let named: Vec<(String, ExperimentConfig)> = if args.vary.is_empty() {
            let resolved =
                resolve_config(Some(path), None, &overrides).map_err(|e| invalid(e.to_string()))?;
            vec![(file_stem(path), resolved.config)]
        } else {
            let read = |p: &std::path::Path| std::fs::read_to_string(p);
            expand_base(path, &args.vary, &overrides, &read)
                .map_err(invalid)?
                .into_iter()
                .map(|point| {
                    for w in &point.resolved.warnings {
                        eprintln!("warning: {}: {w}", point.name);
                    }
                    (point.name, point.resolved.config)
                })
                .collect()
        };
        for (stem, mut config) in named {
            ship_local_inputs(&mut config, &|p| std::fs::read(p)).map_err(invalid)?;
            apply_device_flags(&mut config, &args.devices)
                .map_err(|e| invalid(format!("{stem}: {e}")))?;
            experiments.push(ExperimentSubmission {
                name: experiment_name(&stem, &experiments),
                needs: needs_of(&config),
                config: config.to_json(),
            });
        }
    }
    let cycles = args
        .cycles
        .unwrap_or_else(|| experiments_cycles(&experiments));
    let name = args.name.clone().unwrap_or_else(|| {
        args.configs
            .first()
            .map(|p| file_stem(p))
            .unwrap_or_else(|| "sweep".into())
    });
    let mut submission = SweepSubmission {
        idempotency_token: String::new(),
        name,
        experiments,
        cycles,
        pin_device_model: !args.mixed_device_models,
    };
    submission.idempotency_token = idempotency_token(&submission);
    Ok(submission)
}

/// The cycles of a sweep without `--cycles`: the largest `num_cycles` of its configs.
fn experiments_cycles(experiments: &[ExperimentSubmission]) -> u32 {
    experiments
        .iter()
        .filter_map(|e| e.config.get("num_cycles").and_then(|v| v.as_u64()))
        .max()
        .map_or(1, |n| n.clamp(1, u64::from(u32::MAX)) as u32)
}

fn file_stem(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "experiment".into())
}

/// `stem`, made unique within the sweep (`quick`, `quick-2`).
fn experiment_name(stem: &str, earlier: &[ExperimentSubmission]) -> String {
    let mut name = stem.to_owned();
    let mut n = 1;
    while earlier.iter().any(|e| e.name == name) {
        n += 1;
        name = format!("{stem}-{n}");
    }
    name
}

/// A prompt file travels with the job: its bytes (read by `read`, relative paths from the
/// working directory as `lem batch` reads them) and SHA-256 go into the config. A hash the
/// config already names must match the file.
fn ship_local_inputs(
    config: &mut ExperimentConfig,
    read: &dyn Fn(&str) -> std::io::Result<Vec<u8>>,
) -> Result<(), String> {
    if let Some(PromptSource::File {
        path,
        sha256,
        content_base64,
        ..
    }) = &mut config.prompt_source
    {
        let bytes = read(path).map_err(|e| format!("prompt file {path}: {e}"))?;
        let (hash, content) = shipped_prompt::encode(path, &bytes).map_err(|e| e.to_string())?;
        if let Some(expected) = sha256.as_deref() {
            shipped_prompt::check_hash(path, expected, &bytes).map_err(|e| e.to_string())?;
        }
        *sha256 = Some(hash);
        *content_base64 = Some(content);
    }
    Ok(())
}

/// Random enough to tell this submission from every other (time, process, contents),
/// made once per `sweep submit` and reused by its retries.
fn idempotency_token(submission: &SweepSubmission) -> String {
    let mut hash = Sha256::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hash.update(now.to_le_bytes());
    hash.update(std::process::id().to_le_bytes());
    hash.update(serde_json::to_vec(submission).expect("plain data"));
    let digest = hash.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn print_sweeps(sweeps: &[SweepSummary]) -> std::io::Result<()> {
    if sweeps.is_empty() {
        outln!("No sweeps.");
        return Ok(());
    }
    let header = [
        "SWEEP",
        "NAME",
        "ACCEPTED",
        "LEASED",
        "PENDING",
        "FAILED",
        "CANCELLED",
    ]
    .map(String::from);
    let cells: Vec<[String; 7]> = sweeps
        .iter()
        .map(|s| {
            let p = s.progress;
            let total = p.pending + p.leased + p.accepted + p.failed + p.cancelled;
            [
                format!("sweep-{}", s.sweep),
                s.name.clone(),
                format!("{}/{total}", p.accepted),
                p.leased.to_string(),
                p.pending.to_string(),
                p.failed.to_string(),
                p.cancelled.to_string(),
            ]
        })
        .collect();
    let w = super::table::column_widths(&header, &cells);
    for r in [&header].into_iter().chain(&cells) {
        let line: Vec<String> = r
            .iter()
            .zip(w)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        outln!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

fn print_detail(detail: &SweepDetail) -> std::io::Result<()> {
    print_sweeps(std::slice::from_ref(&detail.summary))?;
    outln!();
    for job in &detail.jobs {
        outln!(
            "  job-{:<5} {:<24} cycle {:<3} {}",
            job.job,
            job.experiment_name,
            job.cycle + 1,
            job.status
        );
        for error in &job.errors {
            outln!("      {error}");
        }
        if let Some(reason) = &job.pending_reason {
            outln!("      {reason}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lem_common::wire::cli::DeviceNeeds;

    #[test]
    fn sweep_ids_parse_with_or_without_their_prefix() {
        assert_eq!(parse_sweep_id("sweep-3"), Ok(SweepRef(3)));
        assert_eq!(parse_sweep_id("12"), Ok(SweepRef(12)));
        assert!(parse_sweep_id("sweep-x").unwrap_err().contains("sweep-x"));
    }

    #[test]
    fn experiment_names_stay_unique_within_a_sweep() {
        let exp = |name: &str| ExperimentSubmission {
            name: name.into(),
            config: serde_json::Value::Null,
            needs: DeviceNeeds::CpuPackages,
        };
        let earlier = vec![exp("quick"), exp("quick-2")];
        assert_eq!(
            experiment_name(&file_stem(std::path::Path::new("a/quick.yaml")), &earlier),
            "quick-3"
        );
        assert_eq!(
            experiment_name(&file_stem(std::path::Path::new("b/other.yaml")), &earlier),
            "other"
        );
    }

    fn file_source(path: &str, sha256: Option<String>) -> PromptSource {
        PromptSource::File {
            path: path.into(),
            column: None,
            sample_size: None,
            shuffle: false,
            seed: 0,
            sha256,
            content_base64: None,
        }
    }

    #[test]
    fn a_prompt_file_travels_in_the_config_with_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mine.txt");
        let body = b"What is 2 + 2?\nName a colour.\n";
        std::fs::write(&file, body).unwrap();
        let mut config = ExperimentConfig::default_for("c", "m");
        config.prompt_source = Some(file_source(file.to_str().unwrap(), None));
        ship_local_inputs(&mut config, &|p| std::fs::read(p)).unwrap();

        // Checked against sha2 directly and a decode of the shipped text.
        let expected: String = Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let json = config.to_json();
        let source = &json["prompt_source"];
        assert_eq!(source["sha256"], serde_json::json!(expected));
        let shipped = shipped_prompt::decode(
            "mine.txt",
            &expected,
            source["content_base64"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(shipped, body);
    }

    #[test]
    fn a_missing_oversized_or_altered_prompt_file_is_refused_naming_it() {
        let mut config = ExperimentConfig::default_for("c", "m");
        config.prompt_source = Some(file_source("prompts/gone.txt", None));
        let err = ship_local_inputs(&mut config, &|p| std::fs::read(p)).unwrap_err();
        assert!(err.contains("prompts/gone.txt"), "{err}");

        let huge = shipped_prompt::MAX_SHIPPED_PROMPT_BYTES as usize + 10;
        config.prompt_source = Some(file_source("prompts/huge.txt", None));
        let err = ship_local_inputs(&mut config, &|_| Ok(vec![b'x'; huge])).unwrap_err();
        assert!(err.contains("prompts/huge.txt"), "{err}");
        assert!(
            err.contains(&shipped_prompt::MAX_SHIPPED_PROMPT_BYTES.to_string()),
            "{err}"
        );

        let pinned = "0".repeat(64);
        config.prompt_source = Some(file_source("prompts/p.txt", Some(pinned.clone())));
        let err = ship_local_inputs(&mut config, &|_| Ok(b"a\n".to_vec())).unwrap_err();
        assert!(
            err.contains("prompts/p.txt") && err.contains(&pinned),
            "{err}"
        );
    }
}

#[cfg(test)]
mod submit_flag_tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use lem_common::wire::cli::DeviceNeeds;

    /// `lem --coordinator … sweep submit <args>` as clap parses it.
    fn submit_args(args: &[&str]) -> SweepArgsSubmit {
        let mut argv = vec!["lem", "--coordinator", "127.0.0.1:1", "sweep", "submit"];
        argv.extend(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Sweep(SweepCommand::Submit(args)) => *args,
            other => panic!("not a sweep submit: {other:?}"),
        }
    }

    fn base_config(dir: &std::path::Path) -> String {
        let path = dir.join("base.yaml");
        std::fs::write(
            &path,
            "config_name: base\nmodel_name: m\ngpu_list: [0, 1]\n",
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    }

    #[test]
    fn device_flags_set_every_experiments_needs_and_models_stay_pinned_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let base = base_config(dir.path());
        let plain = build_submission(&submit_args(&[&base])).unwrap();
        assert!(plain.pin_device_model);
        assert_eq!(
            plain.experiments[0].needs,
            DeviceNeeds::Gpus {
                count: 2,
                model: None
            }
        );
        let sub = build_submission(&submit_args(&[
            &base,
            "--vary",
            "batch_size=1,2",
            "--gpu-model",
            "NVIDIA A100-SXM4-40GB",
            "--mig-profile",
            "3g.20gb",
            "--exclusive-parent",
            "--mixed-device-models",
        ]))
        .unwrap();
        assert!(!sub.pin_device_model);
        let names: Vec<&str> = sub.experiments.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["base__batch_size-1", "base__batch_size-2"]);
        for e in &sub.experiments {
            assert_eq!(
                e.needs,
                DeviceNeeds::MigSlice {
                    profile: "3g.20gb".into(),
                    exclusive_parent: true,
                    model: Some("NVIDIA A100-SXM4-40GB".into())
                }
            );
            assert_eq!(e.config["devices"]["mig_profile"], "3g.20gb");
        }
        // The older spelling of --mixed-device-models still works.
        assert!(submit_args(&[&base, "--allow-mixed-gpu-models"]).mixed_device_models);
    }

    #[test]
    fn blank_or_contradicting_device_flags_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = base_config(dir.path());
        let argv = ["lem", "--coordinator", "x:1", "sweep", "submit", &base];
        for bad in [["--gpu-model", " "], ["--mig-profile", ""]] {
            let err = Cli::try_parse_from(argv.iter().chain(&bad)).unwrap_err();
            assert!(err.to_string().contains("must not be empty"), "{err}");
        }
        let err = build_submission(&submit_args(&[&base, "--exclusive-parent"])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--exclusive-parent needs a MIG profile"),
            "{text}"
        );
        assert!(text.contains("nothing was submitted"), "{text}");
    }
}
