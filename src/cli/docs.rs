//! `airlock completions` and `airlock man`, from the clap tree.

use std::io::Write;

use crate::Error;

pub fn completions(shell: clap_complete::Shell, mut command: clap::Command) {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "airlock", &mut script);
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = std::io::stdout().write_all(&script);
}

pub fn man(command: clap::Command) -> Result<(), Error> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .map_err(Error::Manual)?;
    let _ = std::io::stdout().write_all(&page);
    Ok(())
}
