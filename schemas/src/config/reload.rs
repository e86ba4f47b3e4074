//! Live configuration: a service keeps serving while its configuration file changes.
//!
//! [`watch`] re-reads the file on `SIGHUP` and whenever its bytes change (polled every
//! `poll`, if given, so a Kubernetes ConfigMap's symlink swap or an editor's rename are seen like an
//! in-place write). A candidate is validated as a whole — [`Config::load`]'s rules plus the
//! service's own checks (`check-config` runs the same) — before anything sees it:
//!
//! * valid: it is published on the returned [`tokio::sync::watch`] channel; the service swaps
//!   it in between requests (or batches). Work already started keeps the configuration it
//!   started with. Counted in `hookstream_config_reloads_total{service}`.
//! * invalid: nothing changes; every problem is logged (with the key it concerns, never a
//!   secret) and counted in `hookstream_config_reload_failures_total{service}`, and
//!   `hookstream_config_last_reload_successful{service}` drops to 0 until a reload succeeds.
//!   The same bytes are not tried again until they change or a `SIGHUP` asks.
//!
//! Secrets named by `env` or `file` are resolved again on each reload, so rotating a secret
//! file and sending `SIGHUP` takes the new value.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch as channel;

use super::Config;

/// What a service checks beyond [`Config::problems`], which [`candidate`] always runs (e.g.
/// that every source's verifier builds); an empty list accepts the candidate.
pub type Check = Box<dyn Fn(&Config) -> Vec<String> + Send + Sync>;

/// Why a candidate was refused: one entry per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub Vec<String>);

/// Loads `path` and validates it as a whole, as a reload does.
pub fn candidate(path: &std::path::Path, check: &Check) -> Result<Config, Refused> {
    let config = Config::parse(path).map_err(|e| Refused(vec![e.to_string()]))?;
    let mut problems = config.problems();
    problems.extend(check(&config));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(Refused(problems))
    }
}

/// Reload attempts so far (what the metrics count), and the last refusal's problems.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    pub reloads: u64,
    pub failures: u64,
    /// The problems of the last refused candidate, until a reload succeeds.
    pub refused: Vec<String>,
}

/// The receiving ends of [`watch`].
pub struct Watched {
    pub config: channel::Receiver<Arc<Config>>,
    pub status: channel::Receiver<ReloadStatus>,
}

/// Publishes every valid new version of the file at `path` (see the module docs). The
/// initial value is `initial`, the configuration the service started with (read from the
/// same file). The watcher stops when every configuration receiver is dropped.
pub fn watch(
    path: PathBuf,
    initial: Arc<Config>,
    service: &'static str,
    check: Check,
    poll: Option<Duration>,
) -> Watched {
    let (tx, rx) = channel::channel(initial);
    let (status_tx, status) = channel::channel(ReloadStatus::default());
    metrics::counter!("hookstream_config_reloads_total", "service" => service).absolute(0);
    metrics::counter!("hookstream_config_reload_failures_total", "service" => service).absolute(0);
    metrics::gauge!("hookstream_config_last_reload_successful", "service" => service).set(1.0);
    let mut seen = std::fs::read(&path).ok();
    tokio::spawn(async move {
        let mut hangups = hangups();
        let mut ticks = poll.map(|poll| {
            let mut ticks = tokio::time::interval(poll.max(Duration::from_millis(10)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        loop {
            let tick = async {
                match ticks.as_mut() {
                    Some(ticks) => drop(ticks.tick().await),
                    None => std::future::pending().await,
                }
            };
            let forced = tokio::select! {
                () = tx.closed() => return,
                () = next_hangup(&mut hangups) => true,
                () = tick => false,
            };
            let bytes = std::fs::read(&path).ok();
            if !forced && bytes == seen {
                continue;
            }
            seen = bytes;
            let why = if forced { "SIGHUP" } else { "file changed" };
            match candidate(&path, &check) {
                Ok(config) => {
                    tracing::info!(service, trigger = why, file = %path.display(), "configuration reloaded");
                    metrics::counter!("hookstream_config_reloads_total", "service" => service)
                        .increment(1);
                    metrics::gauge!("hookstream_config_last_reload_successful", "service" => service)
                        .set(1.0);
                    status_tx.send_modify(|s| {
                        s.reloads += 1;
                        s.refused.clear();
                    });
                    if tx.send(Arc::new(config)).is_err() {
                        return;
                    }
                }
                Err(Refused(problems)) => {
                    tracing::error!(
                        service,
                        trigger = why,
                        file = %path.display(),
                        problems = %problems.join("; "),
                        "configuration reload refused: the running configuration stays"
                    );
                    metrics::counter!("hookstream_config_reload_failures_total", "service" => service)
                        .increment(1);
                    metrics::gauge!("hookstream_config_last_reload_successful", "service" => service)
                        .set(0.0);
                    status_tx.send_modify(|s| {
                        s.failures += 1;
                        s.refused = problems;
                    });
                }
            }
        }
    });
    Watched { config: rx, status }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangups {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .map_err(|error| tracing::error!(%error, "cannot listen for SIGHUP: only file changes reload the configuration"))
        .ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {
    None
}

#[cfg(unix)]
async fn next_hangup(hangups: &mut Hangups) {
    let Some(signal) = hangups else {
        return std::future::pending().await;
    };
    if signal.recv().await.is_none() {
        *hangups = None;
        std::future::pending::<()>().await;
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) {
    std::future::pending().await
}

/// How a section of a configuration compares (its `Debug` text; secrets print redacted).
type SectionView = fn(&Config) -> String;

/// The sections of `next` that differ from `running` and that no service reloads (they are
/// read at start-up): the services log them as waiting for a restart. Tenants, the ingest's
/// rate limits and `[reload]` itself are not among them.
pub fn restart_sections(running: &Config, next: &Config) -> Vec<&'static str> {
    let fixed_ingest = |config: &Config| {
        let mut ingest = config.ingest.clone();
        ingest.rate_limit = None;
        ingest.replicas = 1;
        format!("{ingest:?}")
    };
    let sections: [(&'static str, SectionView); 10] = [
        ("kafka", |c| format!("{:?}", c.kafka)),
        ("ingest (other than rate_limit and replicas)", fixed_ingest),
        ("processor", |c| format!("{:?}", c.processor)),
        ("schema_registry", |c| format!("{:?}", c.schema_registry)),
        ("admin", |c| format!("{:?}", c.admin)),
        ("deliver", |c| format!("{:?}", c.deliver)),
        ("trail", |c| format!("{:?}", c.trail)),
        ("log", |c| format!("{:?}", c.log)),
        ("telemetry", |c| format!("{:?}", c.telemetry)),
        ("alerts", |c| format!("{:?}", c.alerts)),
    ];
    sections
        .into_iter()
        .filter(|(_, view)| view(running) != view(next))
        .map(|(name, _)| name)
        .collect()
}

/// Logs the [`restart_sections`] that `service` reads, if any.
pub fn warn_restart_sections(service: &str, running: &Config, next: &Config) {
    let reads: &[&str] = match service {
        "ingest" => &["kafka", "ingest", "schema_registry", "log", "telemetry"],
        "processor" => &["kafka", "processor", "schema_registry", "log", "telemetry"],
        "deliver" => &[
            "kafka",
            "processor",
            "deliver",
            "alerts",
            "log",
            "telemetry",
        ],
        _ => &["kafka", "admin", "trail", "log"],
    };
    let waiting: Vec<&str> = restart_sections(running, next)
        .into_iter()
        .filter(|section| reads.iter().any(|r| section.starts_with(r)))
        .collect();
    if !waiting.is_empty() {
        tracing::warn!(
            service,
            sections = %waiting.join(", "),
            "these settings changed but are read at start-up only: restart to apply them"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[kafka]\nbrokers = \"localhost:9092\"\n[[tenants]]\nid = \"acme\"\n";

    fn accept_all() -> Check {
        Box::new(|_| Vec::new())
    }

    async fn changed(rx: &mut channel::Receiver<Arc<Config>>) -> Arc<Config> {
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("a reload within 10 s")
            .expect("the watcher runs");
        rx.borrow_and_update().clone()
    }

    #[tokio::test]
    async fn a_changed_file_is_published_and_a_bad_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookstream.toml");
        std::fs::write(&path, GOOD).unwrap();
        let initial = Arc::new(Config::load(&path).unwrap());
        let Watched {
            config: mut rx,
            mut status,
        } = watch(
            path.clone(),
            initial,
            "test",
            accept_all(),
            Some(Duration::from_millis(20)),
        );
        std::fs::write(&path, format!("{GOOD}[[tenants]]\nid = \"globex\"\n")).unwrap();
        let next = changed(&mut rx).await;
        assert_eq!(next.tenants.len(), 2);

        std::fs::write(&path, "[kafka\nbrokers = ").unwrap();
        let refused = tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.failures == 1),
        )
        .await
        .expect("the bad file is seen within 10 s")
        .unwrap()
        .clone();
        assert_eq!(refused.reloads, 1);
        assert_eq!(refused.refused.len(), 1);
        assert!(!rx.has_changed().unwrap(), "a bad file publishes nothing");
        assert_eq!(rx.borrow().tenants.len(), 2);

        std::fs::write(&path, format!("{GOOD}[[tenants]]\nid = \"initech\"\n")).unwrap();
        let next = changed(&mut rx).await;
        assert_eq!(next.tenants[1].id, "initech");
        assert!(status.borrow().refused.is_empty());
    }

    #[test]
    fn only_settings_read_at_start_up_need_a_restart() {
        let config = |toml: &str| Config::parse_str(toml).unwrap();
        let base = config("[ingest]\nack_timeout_ms = 100\n[[tenants]]\nid = \"a\"\n");
        let tenants_and_limits = config(
            "[ingest]\nack_timeout_ms = 100\nreplicas = 3\nrate_limit = { per_second = 9 }\n[reload]\npoll_ms = 5\n[[tenants]]\nid = \"a\"\n[[tenants]]\nid = \"b\"\n",
        );
        assert!(restart_sections(&base, &tenants_and_limits).is_empty());
        // (Not max_body_bytes: another test overrides it through the environment.)
        let body = config("[ingest]\nack_timeout_ms = 200\n[[tenants]]\nid = \"a\"\n");
        assert_eq!(
            restart_sections(&base, &body),
            vec!["ingest (other than rate_limit and replicas)"]
        );
        let brokers = config(
            "[kafka]\nbrokers = \"elsewhere:9092\"\n[ingest]\nack_timeout_ms = 100\n[processor]\nbatch_max = 7\n[[tenants]]\nid = \"a\"\n",
        );
        assert_eq!(
            restart_sections(&base, &brokers),
            vec!["kafka", "processor"]
        );
    }

    #[test]
    fn a_candidate_is_refused_with_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookstream.toml");
        std::fs::write(&path, "[kafka\n").unwrap();
        assert!(candidate(&path, &accept_all()).is_err());
        std::fs::write(&path, GOOD).unwrap();
        let refuse: Check = Box::new(|_| vec!["one".into(), "two".into()]);
        assert_eq!(
            candidate(&path, &refuse).unwrap_err(),
            Refused(vec!["one".into(), "two".into()])
        );
        assert!(candidate(&path, &accept_all()).is_ok());
    }
}
