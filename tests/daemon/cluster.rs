//! A throwaway Postgres cluster of our own for the tests that stop it or
//! configure it (TLS), so the shared server the other tests use is never disturbed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A throwaway Postgres cluster of our own (initdb into a temp dir, its own port),
/// so stopping it never disturbs the shared server the other tests use.
pub struct OwnPostgres {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Server settings beyond the port and socket (`-c name=value`).
    settings: String,
}

impl OwnPostgres {
    /// Starts a cluster with `files` written into its directory first (owned
    /// by the cluster's user, readable by it alone: a TLS key must be) and
    /// `settings` (`name=value`; a value ending in `.pem` names one of `files`).
    pub fn start(files: &[(&str, &[u8])], settings: &[&str]) -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())?;
        let dir = tempfile::tempdir().ok()?;
        for (name, bytes) in files {
            let file = dir.path().join(name);
            std::fs::write(&file, bytes).ok()?;
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .ok()?;
        }
        // initdb refuses to run as root; the cluster belongs to the postgres user.
        let as_postgres = running_as_root();
        let chown = |p: &Path| {
            if as_postgres {
                let _ = Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(p)
                    .status();
            }
        };
        chown(dir.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let data = dir.path().join("data");
        let ok = run_pg(
            as_postgres,
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str()?,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        if !ok {
            return None;
        }
        let settings = settings
            .iter()
            .map(|s| match s.split_once('=') {
                Some((k, v)) if v.ends_with(".pem") => {
                    format!(" -c {k}={}", dir.path().join(v).display())
                }
                _ => format!(" -c {s}"),
            })
            .collect();
        let pg = Self {
            dir,
            bin,
            port,
            settings,
        };
        pg.pg_ctl("start").then_some(pg)
    }

    pub fn pg_ctl(&self, action: &str) -> bool {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off{}",
            self.port,
            self.dir.path().display(),
            self.settings
        );
        let mut args = vec![
            "-D",
            data.to_str().unwrap_or(""),
            "-l",
            log.to_str().unwrap_or(""),
            "-w",
            "-o",
            &opts,
        ];
        if action == "stop" {
            args.extend(["-m", "fast"]);
        }
        args.push(action);
        run_pg(running_as_root(), &self.bin.join("pg_ctl"), &args)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.pg_ctl("stop");
    }
}

/// Whether this process runs as root (then the cluster runs as `postgres`).
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

fn run_pg(as_postgres: bool, program: &Path, args: &[&str]) -> bool {
    let status = if as_postgres {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .status()
    } else {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .status()
    };
    status.map(|s| s.success()).unwrap_or(false)
}
