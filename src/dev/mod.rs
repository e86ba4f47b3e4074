//! `hookstream dev`: the whole pipeline in one process. Without `--brokers` it embeds
//! librdkafka's mock cluster (in-process, nothing to install; not durable), otherwise it uses
//! the given Kafka/Redpanda and creates the topics there.

mod demo;
mod sample;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::mocking::MockCluster;

#[derive(clap::Args)]
pub struct DevArgs {
    /// Use this Kafka/Redpanda (host:port) instead of the embedded mock broker.
    #[arg(long)]
    brokers: Option<String>,
    /// Address of the ingest's HTTP listener (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Send a small stream of signed webhooks (with a duplicate and an out-of-order pair)
    /// and print the resulting entity states.
    #[arg(long)]
    demo: bool,
    /// Stop after the demo instead of serving until Ctrl-C.
    #[arg(long, requires = "demo")]
    exit_after_demo: bool,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
}

pub async fn run(args: DevArgs, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let state = tempfile::Builder::new()
        .prefix("hookstream-dev-")
        .tempdir()
        .context("creating a state directory")?;
    let mock = match args.brokers {
        Some(_) => None,
        None => Some(MockCluster::new(1).context("starting the embedded mock broker")?),
    };
    let brokers = match (&args.brokers, &mock) {
        (Some(brokers), _) => brokers.clone(),
        (None, Some(mock)) => mock.bootstrap_servers(),
        (None, None) => unreachable!("a mock cluster is started when no brokers are given"),
    };
    let create_topics = mock.is_none();
    let config = sample::config(&brokers, &args.listen, state.path(), args.partitions);
    let topics = config.topics();
    if let Some(mock) = &mock {
        for (_, name) in topics.all() {
            mock.create_topic(&name, args.partitions, 1)
                .with_context(|| format!("creating topic {name}"))?;
        }
    }
    let processor = processor::ProcessorService::start(
        &config,
        processor::StartOptions {
            create_topics,
            check_topics: create_topics,
            reload: None,
        },
    )
    .await?;
    let ingest_options = ingest::StartOptions {
        create_topics,
        workers: Some(2),
        discard_appends: false,
        reload: None,
    };
    let ingest = ingest::IngestService::start(&config, metrics, ingest_options).await?;
    let addr = *ingest
        .addrs()
        .first()
        .context("the ingest is not listening")?;
    let base = format!("http://{addr}");

    let now = chrono::Utc::now();
    let sample_order = sample::order(
        "evt_1001",
        "order.created",
        "ord_1",
        &now.to_rfc3339(),
        r#","amount":42"#,
    );
    let sample_invoice = sample::invoice(
        "msg_1001",
        "invoice.paid",
        "in_1",
        &now.to_rfc3339(),
        now.timestamp(),
    );
    let shutdown = crate::shutdown_signal();
    println!("hookstream dev is running");
    println!(
        "  broker    {brokers}{}",
        if create_topics {
            ""
        } else {
            "  (embedded mock cluster: in memory, gone on exit)"
        }
    );
    println!("  ingest    {base}   (GET /healthz /readyz /metrics)");
    println!("  state     {}", state.path().display());
    println!(
        "  topics    {}",
        topics
            .all()
            .into_iter()
            .map(|(_, n)| n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  tenant    acme: source `orders` (hmac, x-signature: sha256=<hex>), source `billing` (Standard Webhooks)");
    println!();
    println!("Send a signed order event (generic HMAC; valid any time):");
    println!("{}", sample_order.curl(&base));
    println!();
    println!(
        "Send a signed invoice event (Standard Webhooks; its timestamp is valid for 5 minutes):"
    );
    println!("{}", sample_invoice.curl(&base));
    println!();

    let mut shutdown = std::pin::pin!(shutdown);
    let outcome = if args.demo {
        tokio::select! {
            outcome = demo::run(&base, &config) => Some(outcome),
            () = &mut shutdown => None,
        }
    } else {
        Some(Ok(()))
    };
    let outcome = match outcome {
        Some(outcome) if outcome.is_ok() && !args.exit_after_demo => {
            println!("Serving until Ctrl-C.");
            shutdown.await;
            outcome
        }
        Some(outcome) => outcome,
        None => Ok(()),
    };
    ingest.stop().await;
    processor.stop().await?;
    outcome
}
