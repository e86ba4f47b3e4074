//! The `replay` and `tail` commands' flags and what they do; `src/main.rs` only wires them.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use clap::{ArgGroup, Args};
use schemas::config::Config;
use schemas::kafka::{client_config, Role};
use schemas::scope::RecordFilter;
use schemas::topics::Topic;

use crate::job::{execute, FromTopic, JobResult, JobSpec, Mode};
use crate::position::Position;
use crate::progress::{Display, Tracker};
use crate::record::Record;
use crate::select::Selection;
use crate::tail::Format;
use crate::{reader, tail, ReplayError};
use schemas::avro::unframe;

/// Which records: partitions, range, fields.
#[derive(Debug, Clone, Args)]
pub struct SelectArgs {
    /// Only this partition (repeat for several). Default: every partition.
    #[arg(long = "partition", value_name = "N")]
    pub partitions: Vec<i32>,
    /// First record: `beginning`, `end`, an offset, an RFC 3339 time (first record at or after
    /// it, by the broker's time index) or a relative time such as `-2h`, `-30m`, `-1d`.
    #[arg(
        long,
        default_value = "beginning",
        value_name = "POSITION",
        allow_hyphen_values = true
    )]
    pub start: String,
    /// Stop before this position (same forms as --start); `end` is the end of the topic when
    /// the command starts.
    #[arg(
        long,
        default_value = "end",
        value_name = "POSITION",
        allow_hyphen_values = true
    )]
    pub end: String,
    /// Only records of this tenant (repeat for several).
    #[arg(long = "tenant", value_name = "ID")]
    pub tenants: Vec<String>,
    /// Only records of this source (repeat for several).
    #[arg(long = "source", value_name = "ID")]
    pub sources: Vec<String>,
    /// Only records of this entity (repeat for several).
    #[arg(long = "entity", value_name = "ID")]
    pub entities: Vec<String>,
    /// Only records of this event type (repeat for several).
    #[arg(long = "event-type", value_name = "TYPE")]
    pub event_types: Vec<String>,
}

impl SelectArgs {
    fn filter(&self) -> RecordFilter {
        RecordFilter {
            tenants: self.tenants.clone(),
            sources: self.sources.clone(),
            entities: self.entities.clone(),
            event_types: self.event_types.clone(),
        }
    }
}

/// `hookstream replay`: select records, then count, rebuild or redrive them.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["dry_run", "rebuild", "redrive"])))]
pub struct ReplayArgs {
    /// Topic to read: `raw` (rebuild or redrive), `dlq` or `deferred` (redrive).
    #[arg(long, value_enum, default_value = "raw")]
    pub from_topic: FromTopic,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Only dead letters whose `hs-error` matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub error: Option<String>,
    /// Count what would be selected, per partition and tenant; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run a processor under a fresh group over the selection, into fresh topics (--into);
    /// the live pipeline is not touched.
    #[arg(long, requires = "into")]
    pub rebuild: bool,
    /// Topic prefix of the rebuild's fresh output topics (e.g. `hookstream.rebuild1.`).
    #[arg(long, value_name = "PREFIX")]
    pub into: Option<String>,
    /// Re-append the selected records to the live `raw` topic with a redrive marker; the
    /// processor handles each once per redrive id.
    #[arg(long)]
    pub redrive: bool,
    /// Id of the redrive or rebuild. Running again with the same id resumes it and processes
    /// nothing twice. Default: made from the current time (printed).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Start these partitions at these offsets instead of --start (`0=120,1=88`), as printed
    /// by a stopped run.
    #[arg(long, value_name = "P=OFFSET,...", value_parser = parse_resume)]
    pub resume: Option<BTreeMap<i32, i64>>,
    /// Stop these partitions before these offsets instead of --end (`0=500,1=430`), as printed
    /// by a stopped run, so a resumed run covers exactly what the first one was to cover.
    #[arg(long, value_name = "P=OFFSET,...", value_parser = parse_resume)]
    pub until: Option<BTreeMap<i32, i64>>,
    /// Redrive `delivery-dlq` instead: the outbound deliveries `hookstream deliver` gave up
    /// on go back to the running `deliver` as first attempts (the same as `hookstream deliver
    /// --redrive`). Selected by --endpoint, --reason and --start (a time or a relative time:
    /// dead-lettered at or after it).
    #[arg(long, requires = "redrive", conflicts_with_all = ["rebuild", "dry_run", "into"])]
    pub deliveries: bool,
    /// With --deliveries: only this endpoint's dead letters.
    #[arg(long, value_name = "TENANT/ENDPOINT", requires = "deliveries")]
    pub endpoint: Option<String>,
    /// With --deliveries: only dead letters with this reason (endpoint_disabled, http_404,
    /// timeout…).
    #[arg(long, requires = "deliveries")]
    pub reason: Option<String>,
    /// Print the result as JSON instead of a table or summary line.
    #[arg(long)]
    pub json: bool,
}

fn parse_resume(text: &str) -> Result<BTreeMap<i32, i64>, String> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (p, o) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected PARTITION=OFFSET"))?;
            let p = p
                .trim()
                .parse()
                .map_err(|_| format!("`{p}`: not a partition"))?;
            let o = o
                .trim()
                .parse()
                .map_err(|_| format!("`{o}`: not an offset"))?;
            Ok((p, o))
        })
        .collect()
}

impl ReplayArgs {
    pub fn spec(&self) -> JobSpec {
        let mode = if self.rebuild {
            Mode::Rebuild
        } else if self.redrive {
            Mode::Redrive
        } else {
            Mode::DryRun
        };
        JobSpec {
            mode,
            from_topic: self.from_topic,
            partitions: self.select.partitions.clone(),
            start: self.select.start.clone(),
            end: self.select.end.clone(),
            resume: self.resume.clone().unwrap_or_default(),
            until: self.until.clone().unwrap_or_default(),
            filter: self.select.filter(),
            error: self.error.clone(),
            id: self.id.clone(),
            into: self.into.clone(),
        }
    }
}

/// Sets the returned flag on Ctrl-C or SIGTERM.
fn cancel_on_signal() -> Arc<AtomicBool> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("stopping: finishing what is in flight…");
        flag.store(true, Ordering::Relaxed);
    });
    cancel
}

/// The command line that resumes a stopped run: the same flags, with `--id`, `--resume` (where
/// each partition stopped) and `--until` (where it was to stop), quoted for a POSIX shell.
fn resume_command(
    command: impl IntoIterator<Item = String>,
    next: &BTreeMap<i32, i64>,
    until: &BTreeMap<i32, i64>,
    id: &str,
) -> String {
    let mut args: Vec<String> = Vec::new();
    let mut skip = false;
    for arg in command {
        if skip {
            skip = false;
            continue;
        }
        if ["--resume", "--until", "--id"].contains(&arg.as_str()) {
            skip = true;
            continue;
        }
        if ["--resume=", "--until=", "--id="]
            .iter()
            .any(|f| arg.starts_with(f))
        {
            continue;
        }
        args.push(arg);
    }
    let list = |offsets: &BTreeMap<i32, i64>| {
        offsets
            .iter()
            .map(|(p, o)| format!("{p}={o}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    args.extend([
        "--id".into(),
        id.to_owned(),
        "--resume".into(),
        list(next),
        "--until".into(),
        list(until),
    ]);
    shell_words::join(args)
}

/// `replay --redrive --deliveries`: `delivery-dlq` back to the running `deliver`.
async fn redrive_deliveries(config: &Config, args: &ReplayArgs) -> Result<(), ReplayError> {
    let since =
        match crate::position::Position::parse(&args.select.start, schemas::time::now_millis())? {
            crate::position::Position::Beginning => None,
            crate::position::Position::Time(ms) => Some(ms),
            _ => {
                return Err(ReplayError::invalid(
                    "--start with --deliveries: `beginning`, a time or a relative time (-2h)",
                ))
            }
        };
    let filter = deliver::RedriveFilter {
        endpoint: args.endpoint.clone(),
        reason: args.reason.clone(),
        since,
    };
    let count = deliver::redrive(config, &filter).await?;
    if args.json {
        println!("{}", serde_json::json!({ "redriven": count }));
    } else {
        println!("{count} dead letters of delivery-dlq sent back for delivery");
    }
    Ok(())
}

/// How a `replay` command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Complete,
    /// Stopped by Ctrl-C (or SIGTERM) before the end; the resume command was printed. The
    /// command exits 130, as a shell reports a command ended by SIGINT.
    Interrupted,
}

pub async fn replay(config: Config, args: ReplayArgs) -> Result<Finished, ReplayError> {
    if args.deliveries {
        redrive_deliveries(&config, &args).await?;
        return Ok(Finished::Complete);
    }
    let spec = args.spec();
    spec.validate(&config)?;
    let id = spec.id_or_new();
    let tracker = Arc::new(Tracker::default());
    let cancel = cancel_on_signal();
    let label = match spec.mode {
        Mode::DryRun => "dry run",
        Mode::Rebuild => "rebuild",
        Mode::Redrive => "redrive",
    };
    if spec.mode != Mode::DryRun {
        eprintln!("{label} id: {id}");
    }
    let display = Display::start(label, tracker.clone());
    let result = execute(&config, &spec, &id, tracker, cancel).await;
    drop(display);
    let result = result?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).expect("result serializes")
        );
    }
    match result {
        JobResult::DryRun(counts) => {
            if !args.json {
                print!("{}", counts.render());
            }
        }
        JobResult::Redrive {
            id,
            from_topic,
            to_topic,
            matched,
            written,
            cancelled,
            next,
            until,
        } => {
            if !args.json {
                println!(
                    "redrive {id}: {written} of {matched} selected records of `{from_topic}` appended to `{to_topic}`"
                );
            }
            if cancelled {
                eprintln!(
                    "stopped before the end; resume with:\n  {}",
                    resume_command(std::env::args(), &next, &until, &id)
                );
                return Ok(Finished::Interrupted);
            }
        }
        JobResult::Rebuild(rebuilt) => {
            if !args.json {
                let total: i64 = rebuilt.ranges.values().map(|r| r.len()).sum();
                println!(
                    "rebuild {id}: {total} records of `{}` processed by group `{}` into topics `{}*`",
                    config.topics().name(Topic::Raw),
                    rebuilt.group_id,
                    rebuilt.output_prefix
                );
            }
            if rebuilt.cancelled {
                // The same ranges as this run (not re-resolved); the rebuild's group keeps its
                // offsets and state, so it goes on where it stopped.
                let starts = rebuilt.ranges.iter().map(|(p, r)| (*p, r.start)).collect();
                let ends = rebuilt.ranges.iter().map(|(p, r)| (*p, r.end)).collect();
                eprintln!(
                    "stopped before the end; resume with the same command and `--id {id}`:\n  {}",
                    resume_command(std::env::args(), &starts, &ends, &id)
                );
                return Ok(Finished::Interrupted);
            }
        }
    }
    Ok(Finished::Complete)
}

/// `hookstream tail`: print records of a topic, decoded.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Topic: `raw`, `events`, `state`, `dlq`, `deferred`, `alerts`, `usage`, `rejected`,
    /// `changelog` (under kafka.topic_prefix), or a full topic name.
    pub topic: String,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Output: `pretty` for people, `json` for one JSON object per line (pipe to jq).
    #[arg(long, value_enum, default_value = "pretty")]
    pub format: Format,
    /// Keep printing new records as they arrive (until Ctrl-C).
    #[arg(long, short)]
    pub follow: bool,
    /// Stop after printing this many records.
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<u64>,
    /// Only dead letters (`dlq`, `delivery-dlq`) whose `hs-error` matches this regular
    /// expression.
    #[arg(long, value_name = "REGEX")]
    pub error: Option<String>,
}

pub async fn tail(config: Config, args: TailArgs) -> Result<(), ReplayError> {
    let topic = Topic::ALL
        .into_iter()
        .find(|t| t.suffix() == args.topic)
        .map(|t| config.topics().name(t))
        .unwrap_or_else(|| args.topic.clone());
    let now = schemas::time::now_millis();
    let selection = Selection {
        topic,
        partitions: args.select.partitions.clone(),
        start: Position::parse(&args.select.start, now)?,
        end: Position::parse(&args.select.end, now)?,
        resume: BTreeMap::new(),
        until: BTreeMap::new(),
        filter: args.select.filter(),
        error: crate::job::error_filter(args.error.as_deref())?,
    };
    let cancel = cancel_on_signal();
    let client = client_config(&config.kafka, Role::Consumer);
    let decoder = config
        .schema_registry
        .url
        .as_deref()
        .map(schemas::registry::Decoder::new);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let consumer = reader::consumer(client)?;
        let ranges = selection.resolve(&consumer)?;
        let printed = AtomicU64::new(0);
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        reader::scan(
            &consumer,
            &selection.topic,
            &ranges,
            args.follow,
            &cancel,
            |record| {
                let avro = match (&decoder, record.value.as_deref().and_then(unframe)) {
                    (Some(decoder), Some((schema_id, _))) => {
                        // A value that only looks framed (a binary body starting with 0) or
                        // whose schema is unknown is shown raw, not fatal.
                        let bytes = record.value.as_deref().unwrap_or_default();
                        runtime
                            .block_on(decoder.decode(bytes))
                            .ok()
                            .map(|value| tail::Avro { schema_id, value })
                    }
                    _ => None,
                };
                let matched = match &avro {
                    // Filter on the decoded fields, as for a JSON value.
                    Some(avro) => selection.matches(&Record {
                        value: Some(serde_json::to_vec(&avro.value).expect("json serializes")),
                        ..record.clone()
                    }),
                    None => selection.matches(&record),
                };
                if !matched {
                    return Ok(ControlFlow::Continue(()));
                }
                tail::print(&mut out, &record, avro.as_ref(), args.format)?;
                if args.follow {
                    out.flush()?;
                }
                let printed = printed.fetch_add(1, Ordering::Relaxed) + 1;
                Ok(if args.limit.is_some_and(|limit| printed >= limit) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            },
        )?;
        out.flush()?;
        Ok(())
    })
    .await
    .map_err(|e| ReplayError::invalid(format!("tail failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_run_prints_the_same_command_with_its_id_and_offsets() {
        let command = [
            "hookstream",
            "replay",
            "-c",
            "x.toml",
            "--redrive",
            "--id",
            "r1",
            "--resume",
            "0=5",
            "--error",
            "missing header",
            "--start",
            "-2h",
        ];
        let resume = resume_command(
            command.map(str::to_owned),
            &[(0, 120), (1, 88)].into(),
            &[(0, 500), (1, 430)].into(),
            "r1",
        );
        assert_eq!(
            resume,
            "hookstream replay -c x.toml --redrive --error 'missing header' --start -2h --id r1 --resume '0=120,1=88' --until '0=500,1=430'"
        );
    }

    #[test]
    fn relative_times_parse_as_values_not_flags() {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ReplayArgs,
        }
        let parsed = <Wrapper as clap::Parser>::try_parse_from([
            "replay",
            "--start",
            "-2h",
            "--end",
            "-30m",
            "--dry-run",
        ])
        .unwrap();
        assert_eq!(
            (
                parsed.args.select.start.as_str(),
                parsed.args.select.end.as_str()
            ),
            ("-2h", "-30m")
        );
    }

    #[test]
    fn resume_offsets_parse_and_reject_nonsense() {
        assert_eq!(parse_resume("0=12,2=7").unwrap(), [(0, 12), (2, 7)].into());
        assert!(parse_resume("0:12").unwrap_err().contains("0:12"));
        assert!(parse_resume("x=1").unwrap_err().contains("`x`"));
    }
}
