//! `vigil-gen OUT_DIR`: write man pages (`OUT_DIR/man/*.{1,8}`) and shell
//! completions (`OUT_DIR/completions/{bash,zsh,fish}/...`) for vigil-agent,
//! vigild and vigilctl, generated from their clap definitions.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn write(cmd: clap::Command, section: &str, out: &Path) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section(section)
        .render(&mut buf)?;
    std::fs::write(man.join(format!("{name}.{section}")), buf)?;
    for (shell, dir) in [
        (Shell::Bash, "bash"),
        (Shell::Zsh, "zsh"),
        (Shell::Fish, "fish"),
    ] {
        let d = out.join("completions").join(dir);
        std::fs::create_dir_all(&d)?;
        let mut c = cmd.clone();
        clap_complete::generate_to(shell, &mut c, &name, &d)?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/packaging".into()),
    );
    write(vigil_agent::cli::Args::command(), "1", &out)?;
    write(vigil_watchdog::cli::VigildArgs::command(), "8", &out)?;
    write(vigil_watchdog::cli::VigilctlArgs::command(), "8", &out)?;
    println!("man pages and completions written to {}", out.display());
    Ok(())
}
