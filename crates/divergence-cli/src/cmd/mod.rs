//! One module per subcommand: its clap arguments and its `run` function.

pub mod diff;
pub mod inspect;
pub mod run;
