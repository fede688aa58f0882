//! `lem completions` and `lem man` through the built binary: the scripts must be valid
//! shell and name every subcommand; the man page must be well-formed roff naming them.
//! The expected subcommands come from the clap definitions, not from the output.

use clap::CommandFactory;
use lem_coordinator::cli::Cli;
use std::process::{Command, Output};

fn lem(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_lem"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lem {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every visible top-level subcommand name of `lem`, per the clap definitions.
fn top_level_subcommands() -> Vec<String> {
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect();
    assert!(
        names.len() >= 10,
        "expected lem's subcommands, got {names:?}"
    );
    names
}

#[test]
fn bash_completion_is_valid_bash_and_names_every_subcommand() {
    let out = lem(&["completions", "bash"]);
    let script = String::from_utf8(out.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lem.bash");
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    for name in top_level_subcommands() {
        assert!(
            script.split_whitespace().any(|w| w == name),
            "bash completion lacks `{name}`"
        );
    }
    // Nested commands too (`lem config generate-grid`).
    assert!(script.contains("generate-grid"));
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    for shell in ["zsh", "fish"] {
        let script = String::from_utf8(lem(&["completions", shell]).stdout).unwrap();
        for name in top_level_subcommands() {
            assert!(script.contains(&name), "{shell} completion lacks `{name}`");
        }
    }
    let fish = String::from_utf8(lem(&["completions", "fish"]).stdout).unwrap();
    assert!(fish.contains("complete -c lem"), "{fish}");
}

#[test]
fn unknown_shell_is_a_usage_error_naming_the_choices() {
    let out = Command::new(env!("CARGO_BIN_EXE_lem"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

#[test]
fn man_page_has_name_section_and_every_subcommand() {
    let page = String::from_utf8(lem(&["man"]).stdout).unwrap();
    assert!(page.contains(".TH lem 1"), "{page}");
    assert!(page.contains(".SH NAME"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for name in top_level_subcommands() {
        // clap_mangen lists each as `lem-NAME(1)`.
        assert!(
            page.contains(&format!("lem\\-{}(1)", name.replace('-', "\\-"))),
            "man page lacks `{name}`"
        );
    }
}

#[test]
fn man_out_dir_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    lem(&["man", "--out-dir", out_dir.to_str().unwrap()]);
    let mut expected = vec!["lem.1".to_string()];
    for name in top_level_subcommands() {
        expected.push(format!("lem-{name}.1"));
    }
    expected.push("lem-config-generate-grid.1".into());
    for file in expected {
        let page =
            std::fs::read_to_string(out_dir.join(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(page.contains(".SH NAME"), "{file} has no NAME section");
    }
}
