use std::process::ExitCode;

use clap::Parser;
use reconciler::cli::{self, Cli, LogFormat};
use reconciler::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format == LogFormat::Json, &cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::exit::ERROR);
        }
    };
    runtime.block_on(cli::run(cli))
}
