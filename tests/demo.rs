//! `meridian demo` as a new user runs it: the built binary in an empty
//! directory, with a short lead so the first zones come due in seconds.

use meridian::store::prelude::*;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian::config::DatabaseConfig;
use meridian::store::{DeliveryFilter, SqliteStore, Store};

/// What one run printed, and how it ended.
struct Run {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `meridian demo ARGS` in `dir`, failing the test after `within`.
fn demo(dir: &Path, args: &[&str], within: Duration) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("demo")
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("MERIDIAN_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "meridian demo did not finish within {within:?}\nstdout:\n{}\nstderr:\n{}",
                stdout.join().unwrap(),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Run {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The number after `label` in the line starting with `prefix` (`sent 538` → 538).
fn count_after(stdout: &str, prefix: &str, label: &str) -> i64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{stdout}"));
    let rest = line
        .split(&format!("{label} "))
        .nth(1)
        .unwrap_or_else(|| panic!("no {label:?} in {line:?}"));
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in {line:?}"))
}

/// One row of the per-zone table; `sent` and `invalid` are `-` (None) while pending.
struct ZoneRow {
    zone: String,
    state: String,
    recipients: i64,
    sent: Option<i64>,
    invalid: Option<i64>,
}

fn zone_rows(stdout: &str) -> Vec<ZoneRow> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("ZONE"));
    let header = lines.next().expect("a per-zone table");
    assert!(
        header.contains("LOCAL DUE") && header.contains("SENT") && header.contains("INVALID"),
        "{header}"
    );
    lines
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let n = words.len();
            let num = |w: &str| w.parse::<i64>().ok();
            ZoneRow {
                zone: words[0].to_owned(),
                state: words[4].trim_end_matches(',').to_owned(),
                recipients: num(words[n - 4]).unwrap_or_else(|| panic!("recipients in {l:?}")),
                sent: num(words[n - 3]),
                invalid: num(words[n - 2]),
            }
        })
        .collect()
}

async fn open(dir: &Path) -> SqliteStore {
    let url = format!("sqlite://{}", dir.join("demo-data/demo.db").display());
    SqliteStore::connect(&DatabaseConfig {
        url,
        ..DatabaseConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_demo_delivers_the_first_zones_and_says_where_to_look() {
    let dir = tempfile::tempdir().unwrap();
    let run = demo(dir.path(), &["--lead", "3s"], Duration::from_secs(180));
    assert!(
        run.status.success(),
        "{:?}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    let out = &run.stdout;

    // Per zone: the first zones completed with sends, the others still to come.
    let rows = zone_rows(out);
    assert!(rows.len() >= 40, "{out}");
    let done: Vec<_> = rows.iter().filter(|r| r.state == "completed").collect();
    assert!(done.len() >= 3, "{out}");
    for r in &done {
        let (sent, invalid) = (r.sent.unwrap(), r.invalid.unwrap());
        assert!(sent > 0, "{}: {out}", r.zone);
        assert!(sent + invalid <= r.recipients, "{}: {out}", r.zone);
    }
    assert!(rows
        .iter()
        .any(|r| r.state == "pending" && r.sent.is_none() && r.recipients > 0));
    let table_sent: i64 = done.iter().map(|r| r.sent.unwrap()).sum();
    let table_invalid: i64 = done.iter().map(|r| r.invalid.unwrap()).sum();
    assert!(
        table_invalid > 0,
        "dead tokens show as token_invalid: {out}"
    );

    // Per status, and the push sent through the REST API.
    let sent = count_after(out, "Campaign deliveries by status:", "sent");
    let invalid = count_after(out, "Campaign deliveries by status:", "token_invalid");
    assert_eq!((sent, invalid), (table_sent, table_invalid));
    assert!(
        count_after(out, "Transactional push req_", "sent") > 0,
        "{out}"
    );
    assert!(out.contains("unknown ids: no-such-user"), "{out}");

    // Where to look next.
    let api = out
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .expect("the API's URL")
        .trim_end_matches(',');
    assert!(out.contains(&format!("{api}/health")), "{out}");
    assert!(out.contains(&format!("{api}/metrics")), "{out}");
    assert!(out.contains("/v1/messages?request=req_"), "{out}");
    assert!(out.contains("KEY=mrd_"), "{out}");
    assert!(
        out.contains("--config demo-data/meridian.toml campaign show demo-local-time"),
        "{out}"
    );

    // The console, with an admin whose printed password signs in.
    let console_line = out
        .lines()
        .find(|l| {
            l.contains(&format!(
                "Console at {api}/console: sign in as demo@example.com, password "
            ))
        })
        .unwrap_or_else(|| panic!("the console's URL and account: {out}"));
    let password = console_line.rsplit(' ').next().unwrap();

    // The database holds what the summary said.
    let store = open(dir.path()).await;
    let operator = store
        .operator_get_by_email("demo@example.com")
        .await
        .unwrap()
        .expect("the demo's operator");
    assert_eq!(operator.role, meridian::domain::operator::Role::Admin);
    assert!(meridian::console::auth::verify_password(
        password,
        &operator.password_hash
    ));
    let campaigns = store.campaign_list_by_key("demo-local-time").await.unwrap();
    assert_eq!(campaigns.len(), 1);
    let counts = store
        .delivery_count_by_status(campaigns[0].id)
        .await
        .unwrap();
    assert_eq!(counts.get("sent"), Some(&sent), "{counts:?}");
    assert_eq!(counts.get("token_invalid"), Some(&invalid), "{counts:?}");
    let request = out
        .split_whitespace()
        .find(|w| w.starts_with("req_"))
        .unwrap()
        .trim_end_matches(',');
    let pushed = store
        .message_list(
            "demo",
            &DeliveryFilter {
                request_id: Some(request),
                limit: 100,
                ..DeliveryFilter::default()
            },
        )
        .await
        .unwrap();
    assert!(!pushed.is_empty());
    assert!(pushed
        .iter()
        .all(|m| m.status == "sent" || m.status == "token_invalid"));
    store.close().await;

    // Again in the same directory: a fresh database, the same population.
    let again = demo(dir.path(), &["--lead", "2s"], Duration::from_secs(180));
    assert!(again.status.success(), "{}\n{}", again.stdout, again.stderr);
    let store = open(dir.path()).await;
    let campaigns = store.campaign_list(None).await.unwrap();
    assert_eq!(campaigns.len(), 1);
    assert_eq!(campaigns[0].id, 1);
    let counts = store
        .delivery_count_by_status(campaigns[0].id)
        .await
        .unwrap();
    assert_eq!(
        counts.get("sent"),
        Some(&count_after(
            &again.stdout,
            "Campaign deliveries by status:",
            "sent"
        ))
    );
    store.close().await;
}

#[test]
fn a_bad_option_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = demo(dir.path(), &["--lead", "0s"], Duration::from_secs(30));
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        "error: --lead: must be between 1s and 1h"
    );
    assert!(!dir.path().join("demo-data").exists());
}

/// After a demo run the API it printed serves `/metrics` with the families ops
/// read (deliveries, provider latency, lag, queue depth, API requests, …); the
/// demo keeps serving with `--keep-running` until SIGTERM.
#[tokio::test]
async fn metrics_are_exposed_after_a_demo_run() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["demo", "--lead", "3s", "--keep-running"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The summary's `curl …/metrics` line comes once the first zones are delivered.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line
                .trim()
                .strip_prefix("curl ")
                .filter(|u| u.ends_with("/metrics"))
            {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(180));
    let text = match &url {
        Ok(url) => reqwest::get(url).await.unwrap().text().await.unwrap(),
        Err(_) => String::new(),
    };
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    let url = url.expect("the demo printed its /metrics URL");
    assert!(status.success(), "{status:?}");
    for family in [
        "meridian_deliveries_total{status=\"sent\",provider=\"apns\"}",
        "meridian_deliveries_total{status=\"token_invalid\",provider=",
        "meridian_provider_request_duration_seconds_bucket{provider=\"fcm\",outcome=\"accepted\"",
        "meridian_tokens_invalidated_total{provider=",
        "meridian_scheduler_lag_seconds_count",
        "meridian_lease_takeovers_total",
        "meridian_queue_depth{kind=\"slots_due\"}",
        "meridian_rate_limit_waits_total{provider=\"apns\"}",
        "meridian_api_requests_total{route=\"/v1/push\",method=\"POST\",status=\"200\"}",
    ] {
        assert!(
            text.contains(family),
            "{family} missing from {url}:\n{text}"
        );
    }
}
