//! `firstmile`: every role and admin command of the pipeline behind one CLI.

#[macro_use]
mod output;
mod commands;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

// glibc's malloc spent a fifth of the ingest CPU on lock contention between
// the tokio and librdkafka threads (perf, BENCHMARKS.md); mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "firstmile",
    version,
    about = "Kafka-centric first-mile pipeline for logs and security events"
)]
struct Cli {
    /// Configuration file. Default: ./firstmile.toml if it exists, else built-in
    /// defaults for the local stack. Every key can be overridden by
    /// FIRSTMILE_<SECTION>__<KEY> environment variables.
    #[arg(long, global = true, env = "FIRSTMILE_CONFIG")]
    config: Option<PathBuf>,

    /// Log format: human-readable text, or JSON lines for log shippers.
    #[arg(
        long,
        global = true,
        env = "FIRSTMILE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and the topic declarations; report every error.
    Check,
    /// Topics as code: compare topics/*.toml with the broker and apply them.
    #[command(subcommand)]
    Topics(commands::topics::TopicsCommand),
    /// Value schemas of the topics against the schema registry.
    #[command(subcommand)]
    Schemas(commands::schemas::SchemasCommand),
    /// Apply the database migrations (TimescaleDB or plain PostgreSQL).
    Migrate(commands::migrate::MigrateArgs),
    /// Run the receivers (HTTP, syslog) that land events in raw topics.
    Ingest,
    /// Run every role of the pipeline in this process: the receivers, every
    /// stage (parse, enrich) and both sinks (TimescaleDB, Elasticsearch).
    Run,
    /// Run one processing stage (a consumer group member) until SIGINT/SIGTERM.
    Process(commands::process::ProcessArgs),
    /// Run a sink (a consumer group member) until SIGINT/SIGTERM.
    #[command(subcommand)]
    Sink(commands::sink::SinkCommand),
    /// Send a file or stdin into a source's raw topic, one event per line.
    Produce(commands::produce::ProduceArgs),
    /// Run a source's parser on lines from a file or stdin, without Kafka;
    /// print the normalized events (and failures with their dlq reason) as JSON lines.
    Parse(commands::parse::ParseArgs),
    /// Reprocess a retained range of a source's raw topic through the current
    /// parse and enrich chain into the events topic (exactly once,
    /// resumable); `--dry-run` reports what would change.
    Replay(commands::replay::ReplayArgs),
    /// The whole pipeline on one screen: per source the rate and volume, per
    /// stage and sink the lag, rate and dead letters, per target the newest
    /// row; flags what is stalled or stopped updating, with likely causes.
    Status(commands::status::StatusArgs),
    /// Follow a time range's raw records to events, dead letters and both
    /// sinks; report the counts and the event ids a sink is missing.
    Audit(commands::audit::AuditArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let settings = settings::Settings::load(cli.config.as_deref())?;
        match cli.command {
            Command::Check => commands::check::run(&settings),
            Command::Topics(cmd) => commands::topics::run(&settings, cmd).await,
            Command::Migrate(args) => commands::migrate::run(&settings, args).await,
            Command::Schemas(cmd) => commands::schemas::run(&settings, cmd).await,
            Command::Ingest => commands::ingest::run(&settings).await,
            Command::Run => commands::run::run(&settings).await,
            Command::Process(args) => commands::process::run(&settings, args).await,
            Command::Sink(cmd) => commands::sink::run(&settings, cmd).await,
            Command::Produce(args) => commands::produce::run(&settings, args).await,
            Command::Parse(args) => commands::parse::run(&settings, args),
            Command::Replay(args) => commands::replay::run(&settings, args).await,
            Command::Status(args) => commands::status::run(&settings, args).await,
            Command::Audit(args) => commands::audit::run(&settings, args).await,
        }
    });
    // A worker thread left behind by a stop that ran out of grace (blocked on
    // Kafka) must not hold the process: blocking threads are not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", firstmile_config::redact(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Standard error with every secret redacted: each log line goes through
/// `firstmile_config::redact` (the formatter writes a line at once).
struct RedactedStderr;

impl std::io::Write for RedactedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(firstmile_config::redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // Server notices ("relation already exists, skipping") are not news.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| RedactedStderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
