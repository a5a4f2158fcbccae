//! The `cairn` command. All of it lives in `cli/`; the work is in the library.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
