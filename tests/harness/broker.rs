//! A Tansu broker process (Kafka protocol, sqlite storage) on a free loopback port.
//!
//! Tansu 0.6's sqlite schema has no index on `header (topition, offset_id)`, so every record
//! fetched scans every stored header: consuming 10 000 records with hookstream's 11 `hs-*`
//! headers took 45 s (20 000: minutes; without headers, 0.4 s), and the long fetches starved
//! producers into timeouts and Tansu panics. The harness adds that index once Tansu has created
//! its tables (20 000 records: 1.2 s). It changes no broker behaviour, only the query plan.

use std::net::TcpListener;
use std::path::PathBuf;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

pub const INSTALL: &str = "cargo install tansu --locked --version 0.6.0 --features libsql \
     --root ~/.cache/hookstream/tansu-0.6.0   (or run ./scripts/test, which does it)";

pub struct Broker {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
    engine: Engine,
}

/// The Tansu binary: `TANSU_BIN`, else `tansu` on `PATH`. A missing binary fails the test
/// with the command that installs it.
pub fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "TANSU_BIN={} does not exist; install Tansu with: {INSTALL}",
            path.display()
        );
        return path;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("the Tansu broker binary was not found (set TANSU_BIN or put `tansu` on PATH); install it with: {INSTALL}")
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Tansu's storage engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `sqlite://`: durable, survives a broker restart; 3–6 k records/s here.
    Sqlite,
    /// `memory://` (cargo feature `dynostore`): over 100 k records/s, gone with the process;
    /// for benchmarks, so the broker is not the limit.
    Memory,
}

impl Engine {
    /// `HOOKSTREAM_BENCH_ENGINE=sqlite|memory`, else `default`.
    pub fn from_env(default: Engine) -> Engine {
        match std::env::var("HOOKSTREAM_BENCH_ENGINE").as_deref() {
            Ok("sqlite") => Engine::Sqlite,
            Ok("memory") => Engine::Memory,
            _ => default,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Memory => "memory",
        }
    }
}

fn spawn(dir: &std::path::Path, port: u16, engine: Engine) -> Child {
    let binary = tansu_binary();
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tansu.log"))
        .unwrap();
    Command::new(&binary)
        .current_dir(dir)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args([
            "--storage-engine",
            match engine {
                Engine::Sqlite => "sqlite://broker.db",
                Engine::Memory => "memory://tansu/",
            },
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()))
}

impl Broker {
    pub fn start() -> Self {
        Self::start_on(Engine::Sqlite)
    }

    /// A broker on `engine` (the tests use sqlite; benchmarks choose).
    pub fn start_on(engine: Engine) -> Self {
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("hookstream-tansu-")
                .tempdir()
                .unwrap();
            let port = free_port();
            let child = spawn(dir.path(), port, engine);
            let mut broker = Self {
                port,
                child,
                dir,
                engine,
            };
            match broker.wait_ready() {
                Ok(()) => {
                    if engine == Engine::Sqlite {
                        broker.index_headers();
                    }
                    return broker;
                }
                Err(log) => last_log = log,
            }
        }
        panic!("Tansu did not start; its log:\n{last_log}");
    }

    /// Kills the broker process (SIGKILL): clients see it vanish mid-request.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the broker process in place (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} the broker");
    }

    /// Starts the broker again on the same port with the same sqlite file.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.dir.path(), self.port, self.engine);
        if let Err(log) = self.wait_ready() {
            panic!("Tansu did not restart; its log:\n{log}");
        }
    }

    /// Adds the index Tansu's header lookups need (see the module docs).
    fn index_headers(&self) {
        let db = self.dir.path().join("broker.db");
        let sql =
            "create index if not exists hookstream_header_record on header (topition, offset_id);";
        let output = Command::new("sqlite3")
            .arg(&db)
            .arg(sql)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run sqlite3 ({e}); install it with: apt-get install sqlite3 (or run ./scripts/test)")
            });
        assert!(
            output.status.success(),
            "sqlite3 could not index Tansu's headers in {}: {}",
            db.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Ready when it answers a metadata request; fails early if the process exits.
    fn wait_ready(&mut self) -> Result<(), String> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.address())
            .set("socket.connection.setup.timeout.ms", "1000")
            .create()
            .unwrap();
        let deadline = Instant::now() + super::DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}\n{}", self.log()));
            }
            if client
                .fetch_metadata(None, Duration::from_millis(1000))
                .is_ok()
            {
                return Ok(());
            }
        }
        let _ = self.child.kill();
        Err(format!(
            "no answer within {:?}\n{}",
            super::DEADLINE,
            self.log()
        ))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- tansu log ---\n{}", self.log());
        }
    }
}
