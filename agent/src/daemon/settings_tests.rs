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

/// Flags as clap parses them from `args` (after the program name).
fn flags_from(args: &[&str]) -> Flags {
    Flags::try_parse_from(std::iter::once("lem-agent").chain(args.iter().copied())).unwrap()
}

#[test]
fn every_flag_is_a_setting_that_reads_its_own_field() {
    use clap::CommandFactory;
    let command = Flags::command();
    let longs: Vec<&str> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| !["config", "help", "version"].contains(long))
        .collect();
    assert_eq!(longs.len(), SETTINGS.len(), "flags {longs:?}");
    for long in longs {
        let flag = format!("--{long}");
        let setting = SETTINGS
            .iter()
            .find(|s| s.flag() == flag)
            .unwrap_or_else(|| panic!("{flag} has no setting"));
        assert_eq!(setting.key, long.replace('-', "_"));
        let value = format!("value of {long}");
        let flags = flags_from(&[&flag, &value]);
        assert_eq!((setting.flag_value)(&flags).as_deref(), Some(&*value));
        // The one flag given, every other setting reads nothing from the flags.
        for other in SETTINGS.iter().filter(|s| s.key != setting.key) {
            assert_eq!(
                (other.flag_value)(&flags),
                &None,
                "{} via {flag}",
                other.key
            );
        }
    }
}

#[test]
fn each_setting_takes_the_flag_then_each_variable_in_turn_then_the_file() {
    for setting in SETTINGS {
        let file = FileValues::parse(
            Path::new("/etc/lem/agent.yaml"),
            &format!("{}: from-file\n", setting.key),
        )
        .unwrap();
        let flag = setting.flag();
        let mut envs: Vec<(String, String)> = setting
            .envs
            .iter()
            .map(|name| (name.to_string(), format!("from-{name}")))
            .collect();
        let layered = |flags: &Flags, envs: &[(String, String)]| {
            let env = |name: &str| envs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
            let layers = Layers {
                flags,
                env: &env,
                file: Some(&file),
            };
            layers.text(setting).map(|(text, origin)| {
                let place = place_of(setting, origin);
                (text, place)
            })
        };
        assert_eq!(
            layered(&flags_from(&[&flag, "from-flag"]), &envs),
            Some(("from-flag".into(), format!("flag {flag}")))
        );
        // An empty flag counts as not given.
        let empty_flag = flags_from(&[&flag, ""]);
        while !envs.is_empty() {
            let (name, value) = envs[0].clone();
            assert_eq!(
                layered(&empty_flag, &envs),
                Some((value, format!("environment variable {name}")))
            );
            envs.remove(0);
        }
        assert_eq!(
            layered(&Flags::default(), &envs),
            Some((
                "from-file".into(),
                format!("config file /etc/lem/agent.yaml: key `{}`", setting.key)
            ))
        );
    }
}

#[test]
fn every_number_or_address_setting_refuses_text_naming_its_place() {
    let required = [("LEM_COORDINATOR", "h:1"), ("LEM_DATA_DIR", "/d")];
    for (flag, env) in [
        ("--heartbeat-interval-ms", "LEM_HEARTBEAT_INTERVAL_MS"),
        ("--reconnect-initial-ms", "LEM_RECONNECT_INITIAL_MS"),
        ("--reconnect-max-ms", "LEM_RECONNECT_MAX_MS"),
        ("--max-connect-attempts", "LEM_MAX_CONNECT_ATTEMPTS"),
        ("--metrics-listen", "LEM_AGENT_METRICS_LISTEN"),
    ] {
        let err = resolve(&flags_from(&[flag, "soon"]), &env_of(&required))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("flag {flag}: \"soon\" is not ")),
            "{err}"
        );
        let mut with_env = required.to_vec();
        with_env.push((env, "later"));
        let err = resolve(&Flags::default(), &env_of(&with_env))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("environment variable {env}: \"later\" is not ")),
            "{err}"
        );
    }
}

#[test]
fn the_missing_data_dir_message_names_flag_both_variables_and_key() {
    let err = resolve(&flags_from(&["--coordinator", "h:1"]), &env_of(&[]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "no data directory given: pass --data-dir, set LEM_AGENT_DATA_DIR or LEM_DATA_DIR, \
         or put `data_dir:` in the config file"
    );
}

#[test]
fn an_unknown_key_lists_every_known_one() {
    let err = FileValues::parse(Path::new("a.yaml"), "heartbeat: 5\n")
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "config file a.yaml: unknown key `heartbeat` (known: coordinator, join_token, \
         data_dir, node_name, heartbeat_interval_ms, reconnect_initial_ms, reconnect_max_ms, \
         max_connect_attempts, nvml_lib, powercap_root, metrics_listen)"
    );
}
