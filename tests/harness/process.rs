//! `hookstream` processes started as users start them, with their output captured.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hookstream"))
}

pub struct Service {
    name: &'static str,
    child: Child,
    base_url: Option<String>,
    lines: Option<mpsc::Receiver<String>>,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Service {
    /// Starts `hookstream ingest` and waits for the address it prints.
    pub fn ingest(config: &Path) -> Self {
        Self::http("ingest", config)
    }

    /// Starts `hookstream admin` and waits for the address it prints.
    pub fn admin(config: &Path) -> Self {
        Self::http("admin", config)
    }

    /// [`Self::ingest`] with extra environment variables (OpenTelemetry's).
    pub fn ingest_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        Self::http_with_env("ingest", config, env)
    }

    fn http(name: &'static str, config: &Path) -> Self {
        Self::http_with_env(name, config, &[])
    }

    fn http_with_env(name: &'static str, config: &Path, env: &[(&str, &str)]) -> Self {
        let mut service = Self::spawn_with_env(name, &[name, "--config"], config, env);
        let line = service.wait_for_line("listening on http");
        let url = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .trim()
            .to_owned();
        service.base_url = Some(url);
        service
    }

    /// Starts `hookstream process` and waits until it has subscribed; its base URL is its
    /// status endpoint's, when `processor.listen` is set.
    pub fn processor(config: &Path) -> Self {
        Self::processor_with_env(config, &[])
    }

    /// [`Self::processor`] with extra environment variables (failpoints).
    pub fn processor_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut service = Self::spawn_with_env("processor", &["process", "--config"], config, env);
        let status = service.wait_for_line("status on http://|processor started");
        if let Some(url) = status.split("status on ").nth(1) {
            service.base_url = Some(url.split_whitespace().next().unwrap().to_owned());
            service.wait_for_line("processor started");
        }
        service
    }

    /// Starts `hookstream deliver` and waits until it has started.
    pub fn deliver(config: &Path) -> Self {
        Self::deliver_with_env(config, &[])
    }

    /// [`Self::deliver`] with extra environment variables.
    pub fn deliver_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        let args = ["deliver", "--listen", "127.0.0.1:0", "--config"];
        let mut service = Self::spawn_with_env("deliver", &args, config, env);
        let line = service.wait_for_line("metrics on http://");
        let url = line.split("metrics on ").nth(1).unwrap();
        service.base_url = Some(url.split_whitespace().next().unwrap().to_owned());
        service.wait_for_line("deliver started");
        service
    }

    fn spawn(name: &'static str, args: &[&str], config: &Path) -> Self {
        Self::spawn_with_env(name, args, config, &[])
    }

    fn spawn_with_env(
        name: &'static str,
        args: &[&str],
        config: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let log_dir = tempfile::Builder::new()
            .prefix("hookstream-log-")
            .tempdir()
            .unwrap();
        let log = log_dir.path().join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary())
            .args(args)
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("HOOKSTREAM_TEST_LOG")
                    .unwrap_or_else(|_| "info,librdkafka=warn,rdkafka=warn".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("hookstream binary runs");
        Self {
            name,
            child,
            base_url: None,
            lines: None,
            log,
            _log_dir: log_dir,
        }
    }

    /// Waits for a printed line containing one of `needles` (separated by `|`).
    pub fn wait_for_line(&mut self, needles: &str) -> String {
        if self.lines.is_none() {
            let stdout = self.child.stdout.take().expect("stdout is piped");
            let (lines, received) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if lines.send(line).is_err() {
                        break;
                    }
                }
            });
            self.lines = Some(received);
        }
        let received = self.lines.as_ref().unwrap();
        let deadline = Instant::now() + super::DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(line) if needles.split('|').any(|n| line.contains(n)) => return line,
                Ok(_) => continue,
                Err(_) => panic!(
                    "hookstream {} did not print `{needles}` (exit: {:?}); its log:\n{}",
                    self.name,
                    self.child.try_wait().ok().flatten(),
                    self.log()
                ),
            }
        }
    }

    pub fn base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .expect("a service that serves HTTP (ingest, admin, a processor with `listen`)")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGHUP (the ingest reloads its TLS certificate).
    pub fn hangup(&self) {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -HUP failed");
    }

    /// Stops with SIGTERM and waits for a clean exit (a processor leaves its group).
    pub fn terminate(&mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + super::DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "hookstream {} exited with {status}:\n{}",
                    self.name,
                    self.log()
                );
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "hookstream {} ignored SIGTERM",
                self.name
            );
            std::thread::sleep(std::time::Duration::from_millis(50)); // polling interval
        }
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Stops with SIGKILL (a crash, as far as the process is concerned).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- hookstream {} log ---\n{}", self.name, self.log());
        }
    }
}

/// Runs a `hookstream` command to its end (at most `DEADLINE` × 3) and returns its output.
pub fn run(args: &[&str]) -> std::process::Output {
    let child = Command::new(binary())
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("HOOKSTREAM_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hookstream binary runs");
    let pid = child.id();
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(super::DEADLINE * 3).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let output = child.wait_with_output().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    output
}

/// Runs a `hookstream` command that must succeed; returns its stdout and stderr.
pub fn run_ok(args: &[&str]) -> (String, String) {
    let output = run(args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "hookstream {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    (stdout, stderr)
}
