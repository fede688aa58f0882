//! `lem man`: roff man pages generated from the clap definitions: `lem(1)` on stdout, or
//! one page per command (`lem-config-validate.1`, ...) written into a folder.

use super::error::out;
use super::{Cli, CliError, Outcome};
use clap::CommandFactory;
use std::path::Path;

/// Prints `lem(1)`, or writes every command's page into `out_dir`.
pub fn run(out_dir: Option<&Path>) -> Result<Outcome, CliError> {
    match out_dir {
        None => {
            out!("{}", top_page());
            Ok(Outcome::Success)
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::failure(format!("cannot create {}: {e}", dir.display())))?;
            clap_mangen::generate_to(Cli::command(), dir).map_err(|e| {
                CliError::failure(format!("cannot write man pages to {}: {e}", dir.display()))
            })?;
            Ok(Outcome::Success)
        }
    }
}

/// The `lem(1)` page, as roff text.
pub fn top_page() -> String {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut buf)
        .expect("rendering into memory cannot fail");
    String::from_utf8(buf).expect("clap_mangen writes UTF-8")
}
