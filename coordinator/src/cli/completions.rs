//! `lem completions <shell>`: a completion script generated from the clap definitions,
//! so it never drifts from the flags `lem` really takes.

use super::error::out;
use super::{Cli, CliError, Outcome};
use clap::CommandFactory;
use clap_complete::Shell;

/// Writes the completion script for `shell` to stdout.
pub fn run(shell: Shell) -> Result<Outcome, CliError> {
    out!("{}", script(shell));
    Ok(Outcome::Success)
}

/// The completion script for `shell`, as text.
pub fn script(shell: Shell) -> String {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "lem", &mut buf);
    String::from_utf8(buf).expect("clap_complete writes UTF-8")
}
