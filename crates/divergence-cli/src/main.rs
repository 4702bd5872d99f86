//! `divergence`: find where a model port numerically diverges from its reference.
//!
//! A thin binary: argument parsing and glue over the library crates
//! (`divergence-dump`, `divergence-diff`, `divergence-render`, `divergence-qwen3`,
//! `divergence-inspect`). Every subcommand returns an [`Exit`] code; errors are printed
//! as one line per cause and exit with code 2.

mod cmd;
mod exit;
mod sigbus;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::Exit;

/// Find the first op where a model port numerically diverges from its reference.
///
/// Exit codes: 0 = no divergence (inspect: nothing flagged), 1 = divergence found
/// (inspect: something flagged), 2 = error (unreadable file, bad arguments).
#[derive(Debug, Parser)]
#[command(name = "divergence", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compare two dumps and report the first op where they diverge.
    Diff(cmd::diff::DiffArgs),
    /// Run the instrumented candle Qwen3 model and dump every probe.
    Run(cmd::run::RunArgs),
    /// Lint a checkpoint (config.json + *.safetensors) before blaming the kernels.
    Inspect(cmd::inspect::InspectArgs),
}

fn main() -> ExitCode {
    grow_heaps_in_large_steps();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // A rejected flag value is one line naming the flag.
            if let Some(line) = exit::value_error_line(&err) {
                exit::say(&line);
                return Exit::Error.into();
            }
            // --help and --version are not errors: printed as clap writes them. `divergence`
            // alone prints the help (the commands), as a usage error (2). Everything else is
            // a usage error on one line like every other error.
            if !err.use_stderr() {
                let _ = err.print();
                return Exit::Clean.into();
            }
            if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = err.print();
                return Exit::Error.into();
            }
            exit::say(&exit::usage_error_line(&err));
            return Exit::Error.into();
        }
    };
    // A mapped file cut short under us is one line and exit 2, not a silent death;
    // `diff` names its files (and restarts under --watch).
    sigbus::install("a memory-mapped input", false, false);
    let result = match cli.command {
        Command::Diff(args) => cmd::diff::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
    };
    match result {
        Ok(code) => code.into(),
        Err(err) => {
            exit::print_error(&err);
            Exit::Error.into()
        }
    }
}

/// glibc's malloc grows a thread's heap 128 KiB at a time, each time with an `mprotect` call
/// that takes the process's memory-map lock for writing: the 16 threads that build a decode
/// report's 150,000 rows (and their names) wait on those calls and on each other's page faults.
/// Growing a heap by 64 MiB at a time (address space only: pages are still backed when first
/// written) leaves few such calls: 256 decode steps on the GPU machine's host, 16 cores, table
/// output, median wall time 0.203 s before, 0.187 s after; the one pass of the same size
/// 0.100 s and 0.095 s (the same setting made by `GLIBC_TUNABLES=glibc.malloc.top_pad=...`;
/// docs/performance.md, "Decode steps"). Before any thread starts.
fn grow_heaps_in_large_steps() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator; called before any other thread
    // exists, and its failure (0) leaves the default.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
