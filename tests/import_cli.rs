//! `meridian import users` as a user runs it: counts on stdout, rejected rows on
//! stderr, and the exit code saying whether everything got in.

use std::path::{Path, PathBuf};
use std::process::Output;

use sqlx::Connection;

/// A directory with the shipped config (one app, `shop`) and its own SQLite file.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/meridian.toml");
    std::fs::copy(config, dir.path().join("meridian.toml")).expect("copy config");
    dir
}

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("m.db").display())
}

/// Runs `meridian import users ARGS…` in `dir`; stderr is a pipe, not a terminal.
fn import(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out: Output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .current_dir(dir)
        .env("MERIDIAN_CONFIG", dir.join("meridian.toml"))
        .env("MERIDIAN_DATABASE__URL", db_url(dir))
        .env_remove("RUST_LOG")
        .args(["import", "users"])
        .args(args)
        .output()
        .expect("run meridian");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write input");
    path
}

/// `(external id, phone)` of every user of `shop`, read straight from the file.
async fn stored(dir: &Path) -> Vec<(String, Option<String>)> {
    let mut c = sqlx::SqliteConnection::connect(&db_url(dir))
        .await
        .expect("open db");
    sqlx::query_as(
        "SELECT external_id, phone FROM users WHERE app_id = 'shop' ORDER BY external_id",
    )
    .fetch_all(&mut c)
    .await
    .expect("read users")
}

#[tokio::test]
async fn a_csv_file_with_a_bad_row_imports_the_rest_and_exits_1() {
    let dir = workdir();
    write(
        dir.path(),
        "users.csv",
        "external_id,phone,tier\nu1,+49 151 12345678,gold\nu2,12,silver\nu3,,\n",
    );
    let (code, out, err) = import(dir.path(), &["users.csv"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(out.trim(), "users.csv: 2 accepted, 1 rejected");
    assert!(
        err.contains("line 3: phone: expected an E.164 number"),
        "{err}"
    );
    assert!(err.ends_with("error: 1 of 3 rows rejected\n"), "{err}");
    assert!(
        !err.contains('\r') && !err.contains('\u{1b}'),
        "no progress bar off a terminal: {err:?}"
    );
    assert_eq!(
        stored(dir.path()).await,
        [
            ("u1".to_owned(), Some("+4915112345678".to_owned())),
            ("u3".to_owned(), None)
        ]
    );

    // Fixed and imported again: everything in, exit 0.
    write(
        dir.path(),
        "users.csv",
        "external_id,phone\nu2,+1 415 555 0100\n",
    );
    let (code, out, err) = import(dir.path(), &["users.csv", "--app", "shop"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "users.csv: 1 accepted, 0 rejected");
    assert_eq!(err, "");
    assert_eq!(stored(dir.path()).await.len(), 3);
}

#[tokio::test]
async fn the_format_comes_from_the_extension_or_the_flag() {
    let dir = workdir();
    let rows = "{\"externalId\": \"a\", \"phone\": \"+4915112345678\"}\n{\"externalId\": \"b\"}\n";
    write(dir.path(), "users.jsonl", rows);
    let (code, out, err) = import(dir.path(), &["users.jsonl"]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), "users.jsonl: 2 accepted, 0 rejected"),
        "{err}"
    );

    write(dir.path(), "export.txt", "{\"externalId\": \"c\"}\n");
    let (code, _, err) = import(dir.path(), &["export.txt"]);
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with("error: --format: ") && err.lines().count() == 1,
        "{err}"
    );
    let (code, out, err) = import(dir.path(), &["export.txt", "--format", "ndjson"]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), "export.txt: 1 accepted, 0 rejected"),
        "{err}"
    );
    assert_eq!(stored(dir.path()).await.len(), 3);
}

#[test]
fn an_unusable_file_or_app_exits_2_with_one_line() {
    let dir = workdir();
    write(dir.path(), "ok.csv", "external_id\nu1\n");
    write(dir.path(), "no-id.csv", "id,phone\nu1,+4915112345678\n");
    let cases: [(&[&str], &str); 4] = [
        (&["missing.csv"], "error: missing.csv: "),
        (
            &["no-id.csv"],
            "error: no-id.csv: line 1, the CSV header: no external_id column",
        ),
        (
            &["ok.csv", "--app", "nope"],
            "error: --app: \"nope\" is not a configured app",
        ),
        (
            &["ok.csv", "--format", "xml"],
            "error: invalid value 'xml' for '--format <FORMAT>'",
        ),
    ];
    for (args, want) in cases {
        let (code, out, err) = import(dir.path(), args);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(err.starts_with(want), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
    }
}
