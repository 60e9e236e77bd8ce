//! `firstmile replay --source NAME (--from TIME [--to TIME] | --offsets SPEC |
//! --resume) [--dry-run] [--rate N]`: reprocess a retained range of a
//! source's raw topic through the current parse and enrich chain.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use firstmile_replay::diff::Report;
use firstmile_replay::range::{self, Plan};
use firstmile_replay::{Options, Phase, Setup, Summary};
use firstmile_stages::Chain;
use indicatif::{ProgressBar, ProgressStyle};
use jiff::Timestamp;

use super::parse_time;
use crate::settings::Settings;

#[derive(Args)]
#[command(group(clap::ArgGroup::new("range").required(true).args(["from", "offsets", "resume"])))]
pub struct ReplayArgs {
    /// The source whose raw topic to replay.
    #[arg(long)]
    source: String,
    /// Replay records received from this time on: RFC 3339
    /// (`2026-11-23T08:00:00Z`) or a time ago (`90m`, `6h`, `2d`).
    #[arg(long, value_parser = parse_time)]
    from: Option<Timestamp>,
    /// Up to this time (exclusive); default: everything there is when the
    /// replay starts.
    #[arg(long, value_parser = parse_time, requires = "from")]
    to: Option<Timestamp>,
    /// Offsets instead of times: `PARTITION:START-END` (END exclusive) or
    /// `PARTITION:START-`, comma-separated; unnamed partitions are skipped.
    #[arg(long)]
    offsets: Option<String>,
    /// Go on with the last replay of the source that was stopped, from the
    /// last batch it wrote to the ends it fixed when it started.
    #[arg(long)]
    resume: bool,
    /// Run the chain without writing anything; print what would change.
    #[arg(long)]
    dry_run: bool,
    /// At most this many records a second, so live traffic keeps its share.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rate: Option<u32>,
    /// Records per transaction, at most.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    batch_records: u64,
}

pub async fn run(settings: &Settings, args: ReplayArgs) -> Result<()> {
    let config = Arc::new(settings.config.clone());
    let topology = Arc::new(settings.topology.clone());
    let topic = topology
        .sources
        .get(&args.source)
        .map(|s| s.raw_topic.clone())
        .with_context(|| format!("unknown source `{}` (not in [sources])", args.source))?;
    let mut chain = Chain::new(&config, &topology)
        .await
        .context("setting up the chain")?;
    let output = topology.events_topic().to_string();
    let consumer = firstmile_replay::consumer(&config, &topology, &args.source)?;
    let plan = match (&args.from, &args.offsets, args.resume) {
        (Some(from), _, _) => range::by_time(&consumer, &args.source, &topic, *from, args.to)?,
        (_, Some(spec), _) => {
            let specs = range::parse_offsets(spec)?;
            range::by_offsets(&consumer, &args.source, &topic, &specs)?
        }
        _ => range::resumed(&consumer, &args.source, &topic)?,
    };
    let total = plan.offsets();
    eprintln!(
        "{} {plan} ({total} offsets) through pipeline_version {}",
        if args.dry_run {
            "dry run:"
        } else {
            "replaying"
        },
        config.stages.pipeline_version
    );
    if total == 0 {
        if args.resume {
            say!(
                "the last replay of source {} had finished: nothing to resume",
                args.source
            );
        } else {
            say!("nothing to replay: the range holds no records");
        }
        return Ok(());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let stopper = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            super::shutdown_signal().await;
            eprintln!("stopping after the current batch…");
            stop.store(true, Ordering::SeqCst);
        })
    };
    let runtime = tokio::runtime::Handle::current();
    let dry_run = args.dry_run;
    let options = Options {
        rate: args.rate,
        batch_records: usize::try_from(args.batch_records).unwrap_or(usize::MAX),
    };
    let worker_stop = Arc::clone(&stop);
    let worker_config = Arc::clone(&config);
    let worker_topology = Arc::clone(&topology);
    let worker_plan = plan.clone();
    let outcome = tokio::task::spawn_blocking(move || -> Result<Done> {
        let mut display = Progress::new(total);
        let stop = &worker_stop;
        let setup = Setup {
            config: &worker_config,
            topology: &worker_topology,
            consumer: &consumer,
        };
        if dry_run {
            let report = firstmile_replay::dry_run(
                &setup,
                &worker_plan,
                &mut chain,
                &runtime,
                stop,
                &mut |phase, n| display.dry_run(phase, n),
            )?;
            display.finish();
            Ok(Done::DryRun(report, stop.load(Ordering::SeqCst)))
        } else {
            let summary = firstmile_replay::run(
                &setup,
                &worker_plan,
                &mut chain,
                &options,
                stop,
                &mut |s| display.replay(s.read),
            )?;
            display.finish();
            Ok(Done::Replay(summary))
        }
    })
    .await
    .map_err(|e| anyhow!("replay panicked: {e}"))?;
    stopper.abort();
    match outcome? {
        Done::DryRun(report, stopped) => {
            print_report(&report, &plan);
            if stopped {
                bail!("dry run interrupted: the report covers only the records read");
            }
        }
        Done::Replay(summary) => {
            let Summary {
                read,
                written,
                dead_lettered,
                dropped,
                finished,
                elapsed,
            } = summary;
            let seconds = elapsed.as_secs_f64();
            say!(
                "read {read} records in {seconds:.1} s ({:.0} records/s): {written} events, {dead_lettered} dead letters, {dropped} dropped",
                read as f64 / seconds.max(0.001)
            );
            if !finished {
                say!(
                    "stopped before the end; to go on: firstmile replay --source {} --resume",
                    plan.source
                );
                // 130: interrupted, as a shell reports Ctrl-C.
                std::process::exit(130);
            }
            say!("replay finished; the sinks converge as they consume {output}");
        }
    }
    Ok(())
}

enum Done {
    DryRun(Report, bool),
    Replay(Summary),
}

/// A progress bar with rate and ETA on a terminal; a log line every 10 s
/// otherwise.
struct Progress {
    total: u64,
    bar: Option<ProgressBar>,
    started: Instant,
    logged: Instant,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{msg} {bar:40} {pos}/{len} records {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            )
        });
        Progress {
            total,
            bar,
            started: Instant::now(),
            logged: Instant::now(),
        }
    }

    fn replay(&mut self, done: u64) {
        self.show("replay", done, true);
    }

    fn dry_run(&mut self, phase: Phase, done: u64) {
        match phase {
            // How much of the events topic there is to read is not known
            // up front: a count, no ETA.
            Phase::Earlier => self.show("reading earlier outcomes", done, false),
            Phase::Chain => self.show("dry run", done, true),
        }
    }

    fn show(&mut self, what: &str, done: u64, of_total: bool) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.to_string());
            if of_total {
                bar.set_length(self.total);
            }
            bar.set_position(done);
            return;
        }
        if self.logged.elapsed() < Duration::from_secs(10) {
            return;
        }
        self.logged = Instant::now();
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        if of_total {
            let left = self.total.saturating_sub(done) as f64 / rate.max(0.001);
            tracing::info!(
                done,
                total = self.total,
                rate = rate as u64,
                eta_s = left as u64,
                "{what}"
            );
        } else {
            tracing::info!(done, "{what}");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn print_report(report: &Report, plan: &Plan) {
    say!("dry run of {plan}: nothing was written");
    say!("{} records run through the chain, compared with each one's latest earlier outcome in the events and dead-letter topics:", report.records);
    say!("  {:>9}  unchanged events", report.unchanged);
    say!("  {:>9}  changed events", report.changed);
    say!("  {:>9}  now parse (dead letters before)", report.now_parse);
    say!(
        "  {:>9}  now fail (events before){}",
        report.now_fail.values().sum::<u64>(),
        by_kind(&report.now_fail)
    );
    say!(
        "  {:>9}  now dropped (events before){}",
        report.now_dropped.values().sum::<u64>(),
        by_kind(&report.now_dropped)
    );
    say!("  {:>9}  still fail", report.still_fail);
    let not_seen: u64 = report.not_seen.values().sum();
    if not_seen > 0 {
        let what: Vec<String> = report
            .not_seen
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        say!(
            "  {not_seen:>9}  without an earlier outcome (dropped before, not processed yet, or past the events topic's retention); now: {}",
            what.join(", ")
        );
    }
    if !report.earlier_versions.is_empty() {
        let versions: Vec<String> = report
            .earlier_versions
            .iter()
            .map(|(v, n)| format!("{v} ({n})"))
            .collect();
        say!("earlier pipeline_version: {}", versions.join(", "));
    }
    if report.fields.is_empty() {
        say!("no field changes");
    } else {
        say!("field changes (events, examples as partition@offset: before → after):");
        let width = report.fields.keys().map(String::len).max().unwrap_or(0);
        for (field, change) in &report.fields {
            say!("  {field:<width$}  {:>9}", change.events);
            for e in &change.examples {
                say!(
                    "  {:<width$}             {}@{}: {} → {}",
                    "",
                    e.origin.0,
                    e.origin.1,
                    shown(e.old.as_deref()),
                    shown(e.new.as_deref())
                );
            }
        }
    }
    if report.is_noop() {
        say!("a replay would change nothing downstream");
    }
}

fn by_kind(counts: &std::collections::BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    format!(" — {}", parts.join(", "))
}

/// A value for one line of the report: quoted, cut at 80 characters.
fn shown(value: Option<&str>) -> String {
    match value {
        None => "(none)".into(),
        Some(v) if v.chars().count() > 80 => {
            format!("{:?}…", v.chars().take(80).collect::<String>())
        }
        Some(v) => format!("{v:?}"),
    }
}
