//! `firstmile produce --source NAME [FILE|-]`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use firstmile_metrics::{Kind, Metrics};
use firstmile_receivers::{produce, Shared};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncRead;

use crate::settings::Settings;

#[derive(Args)]
pub struct ProduceArgs {
    /// The source (from [sources]) whose raw topic receives the events.
    #[arg(long)]
    source: String,
    /// Host name for the record key (default: this machine's name).
    #[arg(long)]
    host: Option<String>,
    /// File to read; `-` or nothing reads stdin.
    file: Option<PathBuf>,
}

pub async fn run(settings: &Settings, args: ProduceArgs) -> Result<()> {
    let shared = Shared::new(&settings.config)?;
    let metrics = Metrics::new().component(Kind::Receiver, "file");
    let host = args
        .host
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let (input, label, size): (Box<dyn AsyncRead + Unpin>, String, Option<u64>) = match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            let file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?;
            let size = file.metadata().await.ok().map(|m| m.len());
            (Box::new(file), format!("file:{}", path.display()), size)
        }
        _ => (Box::new(tokio::io::stdin()), "stdin".to_string(), None),
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = match size {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        Some(bar)
    } else {
        None
    };
    let report = produce(
        shared,
        metrics,
        &args.source,
        &host,
        &label,
        input,
        |read| {
            if let Some(b) = &bar {
                b.set_position(read);
            }
        },
    )
    .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let topic = settings.config.raw_topic(&args.source).unwrap_or_default();
    say!(
        "{}: {} events ({} bytes read) -> {topic}: {} stored{}{}",
        label,
        report.events,
        report.read_bytes,
        report.stored,
        if report.empty_lines > 0 {
            format!(", {} empty lines skipped", report.empty_lines)
        } else {
            String::new()
        },
        if report.too_large > 0 {
            format!(", {} events over the size limit dropped", report.too_large)
        } else {
            String::new()
        },
    );
    if report.failed() > 0 || report.too_large > 0 {
        bail!(
            "not everything was stored: {} events failed in Kafka, {} were over ingest.max_event_bytes",
            report.failed(),
            report.too_large
        );
    }
    Ok(())
}
