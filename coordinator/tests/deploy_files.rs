//! The deployment files in deploy/ parse and say what deploy/README.md promises: unit files
//! are `Key=Value` sections with the hardening and state directory, the Kubernetes
//! manifests carry the fields the cluster needs, the Slurm script is valid bash.
//! `deploy_run.rs` runs them where this machine can (`systemd-analyze`, Slurm).

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(rel: &str) -> String {
    let path = deploy_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `[Section]` → `Key=Value` lines of a unit file; panics on a line that is neither.
fn unit_sections(text: &str, name: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((section.to_string(), Vec::new()));
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}:{}: not `Key=Value`: {line}", i + 1));
        let (_, entries) = sections
            .last_mut()
            .unwrap_or_else(|| panic!("{name}:{}: entry before any [Section]", i + 1));
        entries.push((key.to_string(), value.to_string()));
    }
    sections
}

fn unit_value<'a>(
    sections: &'a [(String, Vec<(String, String)>)],
    section: &str,
    key: &str,
) -> Vec<&'a str> {
    sections
        .iter()
        .filter(|(s, _)| s == section)
        .flat_map(|(_, entries)| entries.iter())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn systemd_units_are_hardened_services_with_their_own_state_directory() {
    for (file, binary, state) in [
        (
            "systemd/lem-serve.service",
            "/usr/local/bin/lem serve",
            "lem",
        ),
        (
            "systemd/lem-agent.service",
            "/usr/local/bin/lem-agent",
            "lem-agent",
        ),
    ] {
        let sections = unit_sections(&read(file), file);
        let names: Vec<&str> = sections.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["Unit", "Service", "Install"], "{file}");
        assert_eq!(
            unit_value(&sections, "Service", "ExecStart"),
            [binary],
            "{file}"
        );
        assert_eq!(
            unit_value(&sections, "Service", "StateDirectory"),
            [state],
            "{file}"
        );
        let user = unit_value(&sections, "Service", "User");
        assert!(
            user.len() == 1 && user[0] != "root",
            "{file}: a dedicated user"
        );
        for key in ["NoNewPrivileges", "ProtectSystem", "ProtectHome"] {
            assert!(
                !unit_value(&sections, "Service", key).is_empty(),
                "{file}: {key} missing"
            );
        }
        assert_eq!(
            unit_value(&sections, "Service", "Environment")
                .iter()
                .filter(|v| v.starts_with("LEM_DATA_DIR=/var/lib/"))
                .count(),
            1,
            "{file}: LEM_DATA_DIR in the state directory"
        );
    }
}

fn yaml_docs(rel: &str) -> Vec<serde_yaml::Value> {
    let text = read(rel);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .collect()
}

use serde::Deserialize;

fn field<'a>(v: &'a serde_yaml::Value, path: &str) -> &'a serde_yaml::Value {
    path.split('.')
        .fold(v, |v, key| match key.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[key],
        })
}

fn str_field<'a>(v: &'a serde_yaml::Value, path: &str) -> &'a str {
    field(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path}: not a string in {v:?}"))
}

fn by_kind<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn kubernetes_manifests_have_a_stateful_coordinator_and_a_gpu_agent_daemonset() {
    let docs = [
        yaml_docs("kubernetes/coordinator.yaml"),
        yaml_docs("kubernetes/agent-daemonset.yaml"),
    ]
    .concat();
    for doc in &docs {
        for key in ["apiVersion", "kind", "metadata.name"] {
            assert!(
                field(doc, key).as_str().is_some(),
                "{key} missing in {doc:?}"
            );
        }
    }

    let service = by_kind(&docs, "Service");
    let coordinator = by_kind(&docs, "StatefulSet");
    assert_eq!(field(coordinator, "spec.replicas").as_u64(), Some(1));
    assert_eq!(
        field(coordinator, "spec.serviceName"),
        field(service, "metadata.name")
    );
    // The Service selects the coordinator's pods and targets ports the pod declares.
    let pod_labels = field(coordinator, "spec.template.metadata.labels");
    for (k, v) in field(service, "spec.selector").as_mapping().unwrap() {
        assert_eq!(&pod_labels[k], v, "selector {k:?}");
    }
    let container = field(coordinator, "spec.template.spec.containers.0");
    let port_names: Vec<&str> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for port in service["spec"]["ports"].as_sequence().unwrap() {
        assert!(port_names.contains(&str_field(port, "targetPort")));
    }
    assert_eq!(
        str_field(service, "spec.ports.0.protocol"),
        "UDP",
        "QUIC runs over UDP"
    );
    // The store lives on the claimed volume.
    let claim = str_field(coordinator, "spec.volumeClaimTemplates.0.metadata.name");
    let data_dir = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "LEM_DATA_DIR")
        .map(|e| str_field(e, "value"))
        .expect("LEM_DATA_DIR");
    assert!(container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|m| m["name"] == claim && m["mountPath"] == data_dir));

    let agent = by_kind(&docs, "DaemonSet");
    let container = field(agent, "spec.template.spec.containers.0");
    assert_eq!(str_field(container, "command.0"), "lem-agent");
    assert!(
        field(container, "resources.limits")["nvidia.com/gpu"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "the agent requests the node's GPUs"
    );
    let env = container["env"].as_sequence().unwrap();
    let token = env
        .iter()
        .find(|e| e["name"] == "LEM_JOIN_TOKEN")
        .expect("LEM_JOIN_TOKEN");
    let secret = by_kind(&docs, "Secret");
    assert_eq!(
        field(token, "valueFrom.secretKeyRef.name"),
        field(secret, "metadata.name")
    );
    assert!(env.iter().any(|e| e["name"] == "LEM_COORDINATOR"
        && e["value"]
            .as_str()
            .is_some_and(|v| v.starts_with(str_field(service, "metadata.name")))));
}

#[test]
fn slurm_script_is_valid_bash_and_starts_one_agent_per_node() {
    let path = deploy_dir().join("slurm/lem-agents.sbatch");
    let out = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = read("slurm/lem-agents.sbatch");
    assert!(text.starts_with("#!/usr/bin/env bash\n"));
    assert!(text.contains("#SBATCH --ntasks-per-node=1"));
    assert!(text.contains("srun --ntasks-per-node=1"));
    assert!(text.contains("exec lem-agent --coordinator"));
}

#[test]
fn container_file_builds_both_binaries_and_runs_unprivileged() {
    let text = read("container/Containerfile");
    assert_eq!(text.lines().filter(|l| l.starts_with("FROM ")).count(), 2);
    assert!(text.contains("--bin lem --bin lem-agent"));
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(!user.starts_with("root") && !user.starts_with("0"));
}
