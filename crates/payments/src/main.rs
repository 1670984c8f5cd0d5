//! The `payments` binary: one subcommand per service, plus the load generator.
//!
//! `payments account-service` etc. read their settings from the environment (see `--help`);
//! logs go to stderr (text, or JSON with `LOG_FORMAT=json`; filter with `RUST_LOG`), and the
//! one stdout line `<service> listening on <addr>` tells supervisors and tests the real port.

use std::io::IsTerminal as _;

use clap::{Parser, Subcommand};
use paymesh_payments::server::Shutdown;
use paymesh_payments::{account, load, payment, saga, validation};

#[derive(Debug, Parser)]
#[command(name = "payments", version, about = "The Payments Engine reference services")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// payment-service: the public payments API (port 8081).
    PaymentService(payment::Config),
    /// validation-service: payment rules, limits and blocked accounts (port 8082).
    ValidationService(validation::Config),
    /// account-service: accounts, balances and transfer steps on a double-entry ledger (port 8083).
    AccountService(account::Config),
    /// saga-service: runs payments as sagas over the ledger, with compensation and recovery (port 8084).
    SagaService(saga::Config),
    /// Open-loop load generator with a money check at the end.
    Load(load::Args),
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(&cli.log_format);
    match cli.command {
        Command::PaymentService(config) => payment::run(config, Shutdown::on_signals()?).await,
        Command::ValidationService(config) => validation::run(config, Shutdown::on_signals()?).await,
        Command::AccountService(config) => account::run(config, Shutdown::on_signals()?).await,
        Command::SagaService(config) => saga::run(config, Shutdown::on_signals()?).await,
        Command::Load(args) => load::run(args).await,
    }
}
