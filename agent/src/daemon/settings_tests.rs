use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path.to_str().unwrap().to_owned())
}

#[test]
fn flag_beats_env_beats_file() {
    let (_dir, path) = config_file(
        "coordinator: file:1\ndata_dir: /file\nheartbeat_interval_ms: 700\nnode_name: from-file\n",
    );
    let flags = Flags {
        coordinator: Some("flag:2".into()),
        config: Some(path),
        ..Flags::default()
    };
    let env = env_of(&[("LEM_COORDINATOR", "env:3"), ("LEM_DATA_DIR", "/env")]);
    let s = resolve(&flags, &env).unwrap();
    assert_eq!(s.coordinator, "flag:2");
    assert_eq!(s.data_dir, PathBuf::from("/env"));
    assert_eq!(s.heartbeat_interval, Duration::from_millis(700));
    assert_eq!(s.node_name, "from-file");
    // Defaults where nothing is given.
    assert_eq!(s.reconnect_max, Duration::from_millis(30_000));
    assert_eq!(s.max_connect_attempts, None);
}

#[test]
fn agent_data_dir_variable_wins_over_the_shared_one() {
    let flags = Flags {
        coordinator: Some("h:1".into()),
        ..Flags::default()
    };
    let env = env_of(&[
        ("LEM_DATA_DIR", "/shared"),
        ("LEM_AGENT_DATA_DIR", "/agent"),
    ]);
    assert_eq!(
        resolve(&flags, &env).unwrap().data_dir,
        PathBuf::from("/agent")
    );
}

#[test]
fn a_bad_value_names_its_place() {
    let env = env_of(&[
        ("LEM_COORDINATOR", "h:1"),
        ("LEM_DATA_DIR", "/d"),
        ("LEM_HEARTBEAT_INTERVAL_MS", "soon"),
    ]);
    let err = resolve(&Flags::default(), &env).unwrap_err().to_string();
    assert!(
        err.contains("environment variable LEM_HEARTBEAT_INTERVAL_MS") && err.contains("soon"),
        "{err}"
    );

    let (_dir, path) = config_file("coordinator: h:1\ndata_dir: /d\nreconnect_max_ms: -5\n");
    let flags = Flags {
        config: Some(path.clone()),
        ..Flags::default()
    };
    let err = resolve(&flags, &env_of(&[])).unwrap_err().to_string();
    assert!(
        err.contains(&path) && err.contains("key `reconnect_max_ms`"),
        "{err}"
    );

    let flags = Flags {
        coordinator: Some("h:1".into()),
        data_dir: Some("/d".into()),
        node_name: Some("bad name!".into()),
        ..Flags::default()
    };
    let err = resolve(&flags, &env_of(&[])).unwrap_err().to_string();
    assert!(err.contains("flag --node-name"), "{err}");
}

#[test]
fn missing_settings_say_every_way_to_give_them() {
    let err = resolve(&Flags::default(), &env_of(&[("LEM_DATA_DIR", "/d")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--coordinator") && err.contains("LEM_COORDINATOR"),
        "{err}"
    );
}

#[test]
fn config_file_problems_name_the_file() {
    let (_dir, path) = config_file("coordinator: h:1\nheartbeat_ms: 5\n");
    let flags = Flags {
        config: Some(path.clone()),
        ..Flags::default()
    };
    let err = resolve(&flags, &env_of(&[])).unwrap_err().to_string();
    assert!(
        err.contains(&path) && err.contains("unknown key `heartbeat_ms`"),
        "{err}"
    );

    let (_dir, path) = config_file("coordinator: [unclosed\n");
    let flags = Flags {
        config: Some(path.clone()),
        ..Flags::default()
    };
    let err = resolve(&flags, &env_of(&[])).unwrap_err().to_string();
    assert!(err.contains(&path), "{err}");

    let flags = Flags {
        config: Some("/nonexistent/agent.yaml".into()),
        ..Flags::default()
    };
    let err = resolve(&flags, &env_of(&[])).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/agent.yaml"), "{err}");
}
