//! `lem-agent`'s command line: `--help` documents every setting with its variable, and a
//! bad flag, variable or config file is refused with an error naming the place, before
//! anything is dialled.

use std::process::{Command, Output};

fn lem_agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lem-agent"));
    for var in [
        "LEM_COORDINATOR",
        "LEM_JOIN_TOKEN",
        "LEM_DATA_DIR",
        "LEM_AGENT_DATA_DIR",
        "LEM_NODE_NAME",
        "LEM_AGENT_CONFIG",
        "LEM_HEARTBEAT_INTERVAL_MS",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_names_every_flag_and_its_variable() {
    let out = lem_agent(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, var) in [
        ("--coordinator", "LEM_COORDINATOR"),
        ("--join-token", "LEM_JOIN_TOKEN"),
        ("--data-dir", "LEM_AGENT_DATA_DIR"),
        ("--node-name", "LEM_NODE_NAME"),
        ("--config", "LEM_AGENT_CONFIG"),
        ("--heartbeat-interval-ms", "LEM_HEARTBEAT_INTERVAL_MS"),
        ("--reconnect-initial-ms", "LEM_RECONNECT_INITIAL_MS"),
        ("--reconnect-max-ms", "LEM_RECONNECT_MAX_MS"),
        ("--max-connect-attempts", "LEM_MAX_CONNECT_ATTEMPTS"),
        ("--nvml-lib", "LEM_NVML_LIB"),
        ("--powercap-root", "LEM_POWERCAP_ROOT"),
        ("--metrics-listen", "LEM_AGENT_METRICS_LISTEN"),
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
        assert!(help.contains(var), "--help lacks {var}:\n{help}");
    }
}

#[test]
fn a_missing_coordinator_says_every_way_to_give_it() {
    let out = lem_agent(&["--data-dir", "/nonexistent/x"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--coordinator")
            && err.contains("LEM_COORDINATOR")
            && err.contains("coordinator:"),
        "{err}"
    );
}

#[test]
fn bad_values_name_their_flag_variable_or_file() {
    let out = lem_agent(&["--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--no-such-flag"), "{}", stderr(&out));

    let out = lem_agent(
        &[
            "--coordinator",
            "127.0.0.1:1",
            "--data-dir",
            "/nonexistent/x",
        ],
        &[("LEM_HEARTBEAT_INTERVAL_MS", "often")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("environment variable LEM_HEARTBEAT_INTERVAL_MS") && err.contains("often"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, "coordinator: 127.0.0.1:1\ndata-dir: /x\n").unwrap();
    let out = lem_agent(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("unknown key `data-dir`"),
        "{err}"
    );

    std::fs::write(
        &file,
        "coordinator: 127.0.0.1:1\ndata_dir: /x\nmax_connect_attempts: many\n",
    )
    .unwrap();
    let out = lem_agent(&[], &[("LEM_AGENT_CONFIG", file.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("key `max_connect_attempts`"),
        "{err}"
    );
}

#[test]
fn without_credential_or_token_it_says_it_is_not_enrolled() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = lem_agent(
        &[
            "--coordinator",
            "127.0.0.1:1",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(data.to_str().unwrap()), "{err}");
}
