//! The `hookstream` command as users run it: `check-config`, `dev`, and `--help`.

mod harness;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::process::binary;

#[test]
fn check_config_accepts_a_good_file_and_lists_every_problem_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        r#"
[kafka]
brokers = "127.0.0.1:9092"
[[tenants]]
id = "acme"
[[tenants.sources]]
id = "billing"
scheme = "standard"
secrets = [{ id = "k1", env = "HOOKSTREAM_CLI_TEST_SECRET" }]
"#,
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["check-config"])
        .arg(&good)
        .env("HOOKSTREAM_CLI_TEST_SECRET", "whsec_c2VjcmV0")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok (1 tenant(s), 1 source(s)"));

    // The same file without the variable, and overridden by HOOKSTREAM_* to a bad value.
    let output = Command::new(binary())
        .args(["check-config"])
        .arg(&good)
        .env_remove("HOOKSTREAM_CLI_TEST_SECRET")
        .env("HOOKSTREAM_KAFKA__PARTITIONS", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("2 problem(s)"), "{stderr}");
    assert!(
        stderr.contains("`HOOKSTREAM_CLI_TEST_SECRET` is not set"),
        "{stderr}"
    );
    assert!(stderr.contains("kafka.partitions: 0"), "{stderr}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[kafka]\nbrokers = 9092\n").unwrap();
    let output = Command::new(binary())
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("kafka.brokers") || stderr.contains("brokers"),
        "{stderr}"
    );

    let output = Command::new(binary())
        .arg("check-config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
}

#[test]
fn every_command_explains_itself() {
    for command in [
        &["--help"][..],
        &["dev", "--help"],
        &["ingest", "--help"],
        &["process", "--help"],
        &["check-config", "--help"],
        &["topics", "--help"],
        &["replay", "-h"],
        &["tail", "-h"],
        &["admin", "-h"],
        &["deliver", "--help"],
        &["trail", "--help"],
    ] {
        let output = Command::new(binary()).args(command).output().unwrap();
        assert!(output.status.success(), "{command:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Usage: hookstream"), "{command:?}: {text}");
        // Every flag and argument line carries an explanation after its name.
        for line in text.lines().map(str::trim_start) {
            if line.starts_with('-') || (line.starts_with('<') && !line.starts_with("<COMMAND>")) {
                let explained = line
                    .split_once("  ")
                    .is_some_and(|(_, help)| help.split_whitespace().count() >= 2);
                assert!(explained, "{command:?}: `{line}` is not explained");
            }
        }
        // Every subcommand shows how it is used, with runnable examples.
        if command.len() == 2 {
            let examples = text
                .split_once("Examples:")
                .unwrap_or_else(|| panic!("{command:?} has no examples: {text}"))
                .1;
            assert!(
                examples
                    .lines()
                    .any(|l| l.trim_start().starts_with("hookstream ")),
                "{command:?}: {examples}"
            );
        }
    }
}

#[test]
fn dev_demo_runs_the_whole_pipeline_on_the_embedded_broker() {
    let output = Command::new(binary())
        .args([
            "dev",
            "--demo",
            "--exit-after-demo",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Resulting entity states"), "{stdout}");
    assert_eq!(stdout.matches("  202  ").count(), 8, "{stdout}");
    assert!(stdout.contains("deleted true"), "{stdout}");
}

#[test]
fn dev_prints_a_signed_curl_that_works() {
    let mut child = Command::new(binary())
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut printed = Vec::new();
    while !printed
        .iter()
        .any(|l: &String| l.contains("Serving until Ctrl-C"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("dev did not finish starting:\n{}", printed.join("\n"));
            }
        }
    }
    let mut curls = Vec::new();
    let mut current: Option<String> = None;
    for line in &printed {
        match &mut current {
            None if line.starts_with("curl ") => current = Some(line.clone()),
            Some(command) => {
                command.push('\n');
                command.push_str(line);
            }
            None => {}
        }
        if current.as_ref().is_some_and(|c| !c.ends_with('\\')) {
            curls.push(current.take().unwrap());
        }
    }
    assert_eq!(curls.len(), 2, "{}", printed.join("\n"));
    for curl in curls {
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("{curl} -w ' %{{http_code}}'"))
            .output()
            .unwrap();
        let reply = String::from_utf8_lossy(&output.stdout);
        assert!(
            reply.ends_with(" 202") && reply.contains("\"accepted\""),
            "{curl}\n=> {reply}"
        );
    }
    // SIGTERM, as Ctrl-C would: dev shuts down cleanly and removes its state directory.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "dev exited with {status} after SIGTERM");
}

#[test]
fn dev_with_brokers_runs_the_demo_on_a_real_broker() {
    let broker = harness::Broker::start();
    let output = Command::new(binary())
        .args([
            "dev",
            "--demo",
            "--exit-after-demo",
            "--listen",
            "127.0.0.1:0",
            "--brokers",
        ])
        .arg(broker.address())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("broker    {}", broker.address())),
        "{stdout}"
    );
    assert!(!stdout.contains("embedded mock cluster"), "{stdout}");
    assert!(stdout.contains("Resulting entity states"), "{stdout}");
}
