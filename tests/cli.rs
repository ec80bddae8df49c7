//! The `meridian` binary as a user runs it: exit codes, one-line errors, and
//! `campaign apply` writing all or nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A working directory with the shipped config, pointing at a fresh SQLite file.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let shipped =
            std::fs::read_to_string(repo().join("config/meridian.toml")).expect("shipped config");
        std::fs::write(dir.path().join("meridian.toml"), shipped).expect("write config");
        Self { dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_meridian"));
        c.current_dir(self.dir.path())
            .arg("--config")
            .arg(self.dir.path().join("meridian.toml"))
            .args(args)
            .env(
                "MERIDIAN_DATABASE__URL",
                format!("sqlite://{}", self.dir.path().join("m.db").display()),
            )
            .env_remove("RUST_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run meridian")
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn shipped_campaigns() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("campaigns"))
        .expect("campaigns/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_campaign_applies_and_applying_again_changes_nothing() {
    let sb = Sandbox::new();
    let files = shipped_campaigns();
    assert!(files.len() >= 2, "ship 2-3 examples");
    for file in &files {
        let out = sb.run(&["campaign", "apply", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", file.display(), stderr(&out));
        assert!(stdout(&out).contains("created"), "{}", stdout(&out));
    }
    for file in &files {
        let out = sb.run(&["campaign", "apply", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("unchanged"), "{}", stdout(&out));
    }
    let list = sb.run(&["campaign", "list"]);
    assert!(list.status.success());
    let text = stdout(&list);
    assert_eq!(text.lines().count(), files.len() + 1, "{text}");
    assert!(
        text.contains("morning-digest-2026-12-01") && text.contains("scheduled"),
        "{text}"
    );
    let show = sb.run(&["campaign", "show", "vip-flash-sale"]);
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(stdout(&show).contains("state: draft"), "{}", stdout(&show));
}

#[test]
fn a_broken_file_names_the_field_exits_2_and_writes_nothing() {
    let sb = Sandbox::new();
    let broken = sb.write(
        "broken.toml",
        r#"
key = "broken"
app = "shop"
status = "scheduled"
[message]
title = ""
body = "b"
[audience]
[schedule]
type = "local"
at = "2026-12-01T09:00"
"#,
    );
    let good = shipped_campaigns().remove(0);
    // The good file comes first: it must not be written either.
    let out = sb.run(&[
        "campaign",
        "apply",
        good.to_str().unwrap(),
        broken.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("broken.toml") && err.contains("message.title: must not be empty"),
        "{err}"
    );
    let list = sb.run(&["campaign", "list"]);
    assert_eq!(stdout(&list).trim(), "no campaigns");
}

#[test]
fn unknown_zone_and_bad_toml_are_one_line_each() {
    let sb = Sandbox::new();
    let zone = sb.write(
        "zone.toml",
        r#"
key = "z"
app = "shop"
[message]
title = "t"
body = "b"
[audience]
[schedule]
type = "cron"
cron = "0 9 * * *"
zone = "Europe/Atlantis"
"#,
    );
    let out = sb.run(&["campaign", "apply", zone.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("schedule.zone: unknown IANA time zone \"Europe/Atlantis\""),
        "{}",
        stderr(&out)
    );

    let syntax = sb.write("syntax.toml", "key = \"k\"\napp = \"shop\"\n[message\n");
    let out = sb.run(&["campaign", "apply", syntax.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim_end().lines().count(),
        1,
        "{}",
        stderr(&out)
    );

    let missing = sb.run(&["campaign", "apply", "does-not-exist.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("does-not-exist.toml"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn check_config_names_the_bad_key() {
    let sb = Sandbox::new();
    let ok = sb.run(&["check-config"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("configuration OK"));

    let bad_url = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "--config",
            sb.dir.path().join("meridian.toml").to_str().unwrap(),
            "check-config",
        ])
        .env("MERIDIAN_DATABASE__URL", "mysql://localhost/x")
        .output()
        .unwrap();
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(
        stderr(&bad_url).starts_with("error: database.url: "),
        "{}",
        stderr(&bad_url)
    );

    let cfg = sb.write(
        "creds.toml",
        "[apps.shop.fcm]\nservice_account_file = \"/nonexistent/service-account.json\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["--config", cfg.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(
            "error: apps.shop.fcm.service_account_file: /nonexistent/service-account.json"
        ),
        "{}",
        stderr(&out)
    );

    let typo = sb.write("typo.toml", "[database]\nurll = \"sqlite://x.db\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["--config", typo.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("urll"), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim_end().lines().count(),
        1,
        "{}",
        stderr(&out)
    );
}

/// A Postgres password given as `?password=…` is masked wherever the URL is
/// printed: by `check-config`, and in the error of a connection that fails.
#[test]
fn a_password_in_the_url_query_is_never_printed() {
    let sb = Sandbox::new();
    // Nothing listens on port 1: the connection fails at once.
    let url = "postgres://meridian@127.0.0.1:1/meridian?password=hunter2&sslmode=disable";
    for args in [&["check-config"][..], &["migrate"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args([
                "--config",
                sb.dir.path().join("meridian.toml").to_str().unwrap(),
            ])
            .args(args)
            .env("MERIDIAN_DATABASE__URL", url)
            .output()
            .unwrap();
        let printed = format!("{}{}", stdout(&out), stderr(&out));
        assert!(printed.contains("password=***"), "{args:?}: {printed}");
        assert!(!printed.contains("hunter2"), "{args:?}: {printed}");
    }
}

#[test]
fn migrate_creates_the_sqlite_file() {
    let sb = Sandbox::new();
    let out = sb.run(&["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sb.dir.path().join("m.db").exists());
}

#[test]
fn api_keys_are_created_once_listed_and_revoked() {
    let sb = Sandbox::new();
    let created = sb.run(&["apikey", "create", "--app", "shop", "--name", "backend"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let secret = stdout(&created).trim().to_owned();
    assert!(secret.starts_with("mrd_") && secret.len() == 47, "{secret}");
    assert!(stderr(&created).contains("not shown again"));

    let again = sb.run(&["apikey", "create", "--app", "shop", "--name", "backend"]);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(stderr(&again).lines().count(), 1, "{}", stderr(&again));
    assert!(stderr(&again).contains("--name"), "{}", stderr(&again));

    let list = sb.run(&["apikey", "list", "--app", "shop"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let text = stdout(&list);
    assert!(
        text.contains(&secret[..12]) && text.contains("backend"),
        "{text}"
    );
    assert!(!text.contains(&secret), "the secret is never shown again");

    let revoked = sb.run(&["apikey", "revoke", "--app", "shop", "--name", "backend"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let twice = sb.run(&["apikey", "revoke", "--app", "shop", "--name", "backend"]);
    assert_eq!(twice.status.code(), Some(2));

    let unknown = sb.run(&["apikey", "create", "--app", "nope", "--name", "x"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("--app"), "{}", stderr(&unknown));
}

/// `meridian campaign list | head -1`: a reader that goes away ends the command
/// quietly with success, as with any Unix tool, never with a panic.
#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    let sb = Sandbox::new();
    let file = shipped_campaigns().remove(0);
    let plan = ["campaign", "plan", file.to_str().expect("utf-8 path")];
    for args in [&["check-config"][..], &plan[..]] {
        let mut child = sb
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meridian");
        // Gone before the command has loaded its configuration, let alone printed.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait for meridian");
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.status.success(), "{args:?}: {:?}: {err}", out.status);
    }
}
