//! The `hookstream` command: argument parsing and wiring of the `ingest`, `processor` and
//! `schemas` crates. Run `hookstream --help` or `hookstream <command> --help`.

mod dev;
mod otel;
mod topics;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use schemas::config::reload::{self, Watched};
use schemas::config::{Config, LogFormat};

/// mimalloc: the processor's per-event buffers (bodies, keys, store values) cost a third of its
/// time in glibc's allocator (issue 16's profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "hookstream", version, about = "Kafka-native webhook platform: verify and append webhooks to Kafka, then dedupe, order and reconcile them into clean topics.", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process (embedded broker, ingest, processor, sample tenant) and
    /// print a signed curl that works.
    #[command(after_help = "Examples:
  hookstream dev                               # embedded broker; prints a signed curl
  hookstream dev --demo                        # also sends webhooks and prints entity states
  hookstream dev --brokers localhost:19092     # against a real Kafka or Redpanda")]
    Dev(dev::DevArgs),
    /// Serve the webhook ingest: verify signatures and append requests to the `raw` topic.
    #[command(after_help = "Examples:
  hookstream ingest --config hookstream.toml
  HOOKSTREAM_INGEST__LISTEN=0.0.0.0:8080 hookstream ingest -c /etc/hookstream/hookstream.toml
  kill -HUP $(pidof hookstream)    # reload tenants, secrets and rate limits (also on file change)")]
    Ingest {
        /// Configuration file (TOML); `HOOKSTREAM_*` environment variables override it.
        #[arg(long, short, env = "HOOKSTREAM_CONFIG")]
        config: PathBuf,
        /// Benchmarks only: answer 202 without writing to Kafka (measures the HTTP ceiling).
        #[arg(long, hide = true)]
        bench_discard_appends: bool,
    },
    /// Run the processor: consume `raw`, dedupe and reconcile into `events` and `state`.
    #[command(after_help = "Examples:
  hookstream process --config hookstream.toml
  curl -s localhost:9465/readyz    # with processor.listen set: 200 once every partition runs")]
    Process {
        /// Configuration file (TOML); `HOOKSTREAM_*` environment variables override it.
        #[arg(long, short, env = "HOOKSTREAM_CONFIG")]
        config: PathBuf,
    },
    /// Send each tenant's events on to its customers' endpoints (`[[tenants.endpoints]]`) as
    /// signed Standard Webhooks, retrying through delay topics, logging every attempt to
    /// `deliveries` and giving up to `delivery-dlq` (docs/delivery.md).
    #[command(after_help = "Examples:
  hookstream deliver --config hookstream.toml --listen 0.0.0.0:9466
  hookstream deliver -c hookstream.toml --enable acme/crm
  hookstream deliver -c hookstream.toml --redrive --endpoint acme/crm --reason timeout --since 2026-11-24T00:00:00Z")]
    Deliver {
        /// Configuration file (TOML); `HOOKSTREAM_*` environment variables override it.
        #[arg(long, short, env = "HOOKSTREAM_CONFIG")]
        config: PathBuf,
        /// Instead of delivering: re-enable the endpoint TENANT/ENDPOINT (disabled by a 410
        /// or by failing for its `disable_after_failing_secs`), then exit. Running `deliver`
        /// instances take it in at once, and the deliveries refused while it was disabled are
        /// sent again (5 s later).
        #[arg(long, value_name = "TENANT/ENDPOINT")]
        enable: Option<String>,
        /// Instead of delivering: send the dead letters of `delivery-dlq` (those the filters
        /// below admit) back to the running `deliver` as first attempts, then exit.
        #[arg(long)]
        redrive: bool,
        /// With --redrive: only this endpoint's dead letters.
        #[arg(long, value_name = "TENANT/ENDPOINT", requires = "redrive")]
        endpoint: Option<String>,
        /// With --redrive: only dead letters with this reason (endpoint_disabled, http_404, timeout…).
        #[arg(long, requires = "redrive")]
        reason: Option<String>,
        /// With --redrive: only dead letters whose last attempt was due at or after this time
        /// (RFC 3339).
        #[arg(long, value_name = "TIME", requires = "redrive")]
        since: Option<String>,
        /// Serve `GET /metrics` (Prometheus) and `GET /healthz` on this `host:port` (port 0:
        /// a free one, printed at start-up).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Select records of `raw` (or `dlq`, `deferred`) by partition, offset or time range and
    /// tenant/source/entity/event type, then count them (--dry-run), rebuild from them into
    /// fresh topics (--rebuild --into PREFIX) or redrive them through the live pipeline
    /// (--redrive). Shows progress; Ctrl-C stops cleanly and prints how to resume.
    #[command(after_help = "Examples:
  hookstream replay -c hookstream.toml --dry-run --tenant acme --start 2026-11-01T00:00:00Z
  hookstream replay -c hookstream.toml --rebuild --into rebuild-1. --tenant acme --start -1d
  hookstream replay -c hookstream.toml --from-topic dlq --redrive --error 'too_large'
Exits 130 when interrupted (Ctrl-C), after printing how to resume.")]
    Replay {
        /// Configuration file (TOML); `HOOKSTREAM_*` environment variables override it.
        #[arg(long, short, env = "HOOKSTREAM_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        args: replay::cli::ReplayArgs,
    },
    /// Print records of any hookstream topic, decoded (headers, key, pretty JSON), filtered;
    /// `--format json` for JSON lines, `--follow` to keep going.
    #[command(after_help = "Examples:
  hookstream tail -c hookstream.toml events --tenant acme --start -10m --follow
  hookstream tail -c hookstream.toml dlq --error 'unreadable' --format json")]
    Tail {
        /// Configuration file (TOML); `HOOKSTREAM_*` environment variables override it.
        #[arg(long, short, env = "HOOKSTREAM_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        args: replay::cli::TailArgs,
    },
    /// What happened to an event: every fact the topics hold about it (refused, appended,
    /// deduplicated, deferred, emitted, dead-lettered, redriven, each delivery attempt), in
    /// time order with topic/partition/offset, as kept by `hookstream admin`'s trail index.
    /// Also an entity's events (--entity) or a source's refused requests (--refused).
    #[command(after_help = "Examples:
  hookstream trail -c hookstream.toml --tenant acme --source orders evt_123
  hookstream trail -c hookstream.toml --tenant acme --entity order-42 --since 2h")]
    Trail {
        /// Configuration file (TOML); `HOOKSTREAM_*` environment variables override it.
        #[arg(long, short, env = "HOOKSTREAM_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        args: trail::cli::TrailArgs,
    },
    /// Serve the admin HTTP API on `admin.listen`: start, list and cancel replay, rebuild and
    /// redrive jobs (bearer token `admin.token`).
    #[command(after_help = "Examples:
  hookstream admin --config hookstream.toml
  curl localhost:8081/healthz    # no token needed\n  curl -H \"Authorization: Bearer $TOKEN\" localhost:8081/v1/jobs")]
    Admin {
        /// Configuration file (TOML); `HOOKSTREAM_*` environment variables override it.
        #[arg(long, short, env = "HOOKSTREAM_CONFIG")]
        config: PathBuf,
    },
    /// List hookstream's topics (name, partitions, cleanup policy) as the broker has them;
    /// exits 1 if any is missing.
    #[command(after_help = "Examples:
  hookstream topics -c hookstream.toml            # exits 1 if any is missing
  hookstream topics -c hookstream.toml --create")]
    Topics {
        /// Configuration file (TOML); `HOOKSTREAM_*` environment variables override it.
        #[arg(long, short, env = "HOOKSTREAM_CONFIG")]
        config: PathBuf,
        /// Create the missing topics first, with `kafka.partitions` and
        /// `kafka.replication_factor` (`state` and `budget` compacted, `changelog` kept
        /// forever), as `ingest` and `process` do at start-up.
        #[arg(long)]
        create: bool,
    },
    /// Validate a configuration file and print every problem with the key it concerns.
    #[command(after_help = "Examples:
  hookstream check-config hookstream.toml && kill -HUP $(pidof hookstream)")]
    CheckConfig {
        /// Configuration file (TOML); `HOOKSTREAM_*` environment variables override it.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `dev` prints what a person needs on stdout; its logs stay quiet unless RUST_LOG asks.
    let quiet = matches!(
        cli.command,
        Command::Dev(_) | Command::Replay { .. } | Command::Tail { .. } | Command::Trail { .. }
    );
    let log_format = cli
        .command
        .config_path()
        .and_then(|path| Config::parse(path).ok())
        .map(|config| config.log.format)
        .unwrap_or_default();
    let default_filter = if quiet {
        "warn"
    } else {
        "info,librdkafka=warn,rdkafka=warn,actix_server=warn"
    };
    init_tracing(default_filter, log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev::run(args, metrics_recorder()?).await,
            Command::Ingest {
                config,
                bench_discard_appends,
            } => run_ingest(&config, bench_discard_appends).await,
            Command::Process { config } => run_process(&config).await,
            Command::Deliver {
                config,
                enable: Some(key),
                ..
            } => {
                let redriven = deliver::enable(&load(&config)?, &key).await?;
                println!(
                    "endpoint {key} enabled; {redriven} deliveries refused while it was disabled sent again"
                );
                Ok(())
            }
            Command::Deliver {
                config,
                redrive: true,
                endpoint,
                reason,
                since,
                ..
            } => {
                let since = since
                    .map(|t| {
                        schemas::time::parse_rfc3339(&t).ok_or_else(|| {
                            anyhow::anyhow!("--since: `{t}` is not an RFC 3339 time")
                        })
                    })
                    .transpose()?;
                let filter = deliver::RedriveFilter {
                    endpoint,
                    reason,
                    since,
                };
                let count = deliver::redrive(&load(&config)?, &filter).await?;
                println!("{count} dead letters sent back for delivery");
                Ok(())
            }
            Command::Deliver { config, listen, .. } => {
                run_deliver(&config, listen.as_deref()).await
            }
            Command::Replay { config, args } => {
                let finished = replay::cli::replay(load(&config)?, args)
                    .await
                    .context("replay")?;
                return Ok(match finished {
                    replay::cli::Finished::Complete => ExitCode::SUCCESS,
                    replay::cli::Finished::Interrupted => ExitCode::from(130),
                });
            }
            Command::Trail { config, args } => {
                let config = load(&config)?;
                let printed =
                    tokio::task::spawn_blocking(move || trail::cli::run(&config, &args)).await??;
                print!("{printed}");
                Ok(())
            }
            Command::Tail { config, args } => replay::cli::tail(load(&config)?, args)
                .await
                .context("tail"),
            Command::Admin { config } => run_admin(&config).await,
            Command::Topics { config, create } => {
                return topics::run(&load(&config)?, create).await;
            }
            Command::CheckConfig { file } => return Ok(check_config(&file)),
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// The configuration file the command reads, if any.
    fn config_path(&self) -> Option<&Path> {
        match self {
            Command::Dev(_) => None,
            Command::CheckConfig { file } => Some(file),
            Command::Ingest { config, .. }
            | Command::Process { config }
            | Command::Deliver { config, .. }
            | Command::Replay { config, .. }
            | Command::Tail { config, .. }
            | Command::Trail { config, .. }
            | Command::Admin { config }
            | Command::Topics { config, .. } => Some(config),
        }
    }
}

/// Logs to stderr, as `log.format` says: `text` (key=value) or `json` (one object per line,
/// with the current span's fields).
fn init_tracing(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
}

/// Watches the configuration file for valid new versions (schemas::config::reload), checked
/// as `check-config` would.
fn watch_config(path: &Path, config: &Config, service: &'static str) -> Watched {
    let check: reload::Check = Box::new(ingest::check);
    let poll = (config.reload.poll_ms > 0)
        .then(|| std::time::Duration::from_millis(config.reload.poll_ms));
    reload::watch(
        path.to_owned(),
        Arc::new(config.clone()),
        service,
        check,
        poll,
    )
}

fn metrics_recorder() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("loading {}", path.display()))
}

async fn run_ingest(path: &Path, discard_appends: bool) -> anyhow::Result<()> {
    let config = load(path)?;
    let _tracing = otel::install(Some(&config), "ingest")?;
    let metrics = metrics_recorder()?;
    let options = ingest::StartOptions {
        create_topics: !discard_appends,
        workers: None,
        discard_appends,
        reload: Some(watch_config(path, &config, "ingest").config),
    };
    let service = ingest::IngestService::start(&config, metrics, options).await?;
    let shutdown = shutdown_signal();
    let scheme = if config.ingest.tls.is_some() {
        "https"
    } else {
        "http"
    };
    for addr in service.addrs() {
        println!("hookstream ingest listening on {scheme}://{addr}");
    }
    for addr in service.metrics_addrs() {
        println!("hookstream ingest metrics on http://{addr} (/metrics, /healthz, /readyz)");
    }
    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    service.stop().await;
    Ok(())
}

async fn run_process(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    let _tracing = otel::install(Some(&config), "processor")?;
    let metrics = metrics_recorder()?;
    let options = processor::StartOptions {
        create_topics: true,
        check_topics: true,
        reload: Some(watch_config(path, &config, "processor").config),
    };
    let mut service = processor::ProcessorService::start(&config, options).await?;
    let shutdown = shutdown_signal();
    let _status = match &config.processor.listen {
        Some(listen) => {
            let metrics = metrics.clone();
            let status = service.serve_status(listen, Arc::new(move || metrics.render()))?;
            for addr in &status.addrs {
                println!("hookstream processor status on http://{addr} (/metrics, /healthz)");
            }
            Some(status)
        }
        None => None,
    };
    println!(
        "hookstream processor started (group `{}`)",
        config.processor.group_id
    );
    tokio::select! {
        result = service.wait() => return result.context("processor stopped"),
        () = shutdown => {}
    }
    tracing::info!("shutting down: finishing the current batch");
    service.stop().await?;
    Ok(())
}

async fn run_deliver(path: &Path, listen: Option<&str>) -> anyhow::Result<()> {
    let config = load(path)?;
    let _tracing = otel::install(Some(&config), "deliver")?;
    let metrics = metrics_recorder()?;
    let _server = match listen {
        Some(listen) => {
            let render = Arc::new(move || metrics.render());
            let server = deliver::serve::MetricsServer::start(listen, render)?;
            for addr in &server.addrs {
                println!("hookstream deliver metrics on http://{addr} (/metrics, /healthz)");
            }
            Some(server)
        }
        None => None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = shutdown_signal();
    let ready = deliver::start(&config).await.context("deliver")?;
    ready.follow(watch_config(path, &config, "deliver").config);
    let run = ready.run(stopped);
    println!("hookstream deliver started");
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => return result.context("deliver stopped"),
        () = shutdown => {}
    }
    tracing::info!("shutting down: finishing the delivery in flight");
    let _ = stop.send(true);
    run.await.context("deliver")?;
    Ok(())
}

async fn run_admin(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    let reload = watch_config(path, &config, "admin");
    let server = replay::admin::AdminServer::start(config, Some(reload))?;
    let shutdown = shutdown_signal();
    for addr in &server.addrs {
        println!("hookstream admin listening on http://{addr}");
    }
    let handle = server.handle();
    tokio::select! {
        result = server.run() => return result.context("admin API stopped"),
        () = shutdown => {}
    }
    handle.stop(true).await;
    Ok(())
}

fn check_config(path: &Path) -> ExitCode {
    let config = match Config::parse(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let mut problems = config.problems();
    if problems.is_empty() {
        problems = ingest::check(&config);
    }
    if !problems.is_empty() {
        eprintln!("{}: {} problem(s):", path.display(), problems.len());
        for problem in problems {
            eprintln!("  - {problem}");
        }
        return ExitCode::FAILURE;
    }
    let sources: usize = config.tenants.iter().map(|t| t.sources.len()).sum();
    println!(
        "{}: ok ({} tenant(s), {} source(s); brokers {}; raw topic `{}`)",
        path.display(),
        config.tenants.len(),
        sources,
        config.kafka.brokers,
        config.topics().name(schemas::topics::Topic::Raw)
    );
    ExitCode::SUCCESS
}

/// Resolves on Ctrl-C or SIGTERM.
/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled: call it before announcing readiness, so a signal sent right
/// after the announcement is a clean shutdown rather than the default (immediate) exit.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        let mut interrupt = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
        async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = term.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
