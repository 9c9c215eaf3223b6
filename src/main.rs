//! The `atelier` binary: parses the command line and runs a subcommand.

use std::process::ExitCode;

use atelier::config::{Cli, Command};
use atelier::http::server;
use atelier::{db, telemetry};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("atelier: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = match cli.command {
        Command::Serve(config) => {
            telemetry::init_logs(config.log_format);
            // actix-web's server needs a LocalSet-capable system; run it inside actix's runtime.
            actix_web::rt::System::with_tokio_rt(|| runtime)
                .block_on(server::run(*config))
                .map_err(|e| e.to_string())
        }
        Command::Worker(config) => {
            telemetry::init_logs(atelier::config::LogFormat::Human);
            runtime
                .block_on(atelier::worker::run_remote(config))
                .map_err(|e| e.to_string())
        }
        Command::Admin(command) => {
            telemetry::init_logs(atelier::config::LogFormat::Human);
            runtime.block_on(atelier::admin_cli::run(command))
        }
        Command::Migrate(config) => {
            telemetry::init_logs(atelier::config::LogFormat::Human);
            runtime.block_on(async {
                let db = db::Db::connect(&config.database_url, config.database_max_connections)
                    .await
                    .map_err(|e| e.to_string())?;
                db.close().await;
                println!("migrations applied");
                Ok(())
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("atelier: {e}");
            ExitCode::FAILURE
        }
    }
}
