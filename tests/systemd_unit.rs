//! `systemd/meridian.service` holds what docs/operations.md promises and passes
//! `systemd-analyze verify` with no output, when that tool is installed.

use std::path::PathBuf;
use std::process::Command;

const UNIT: &str = include_str!("../systemd/meridian.service");

/// The lines the unit must keep (issue 6's list).
const REQUIRED: &[&str] = &[
    "Type=notify",
    "ExecStart=/usr/bin/meridian serve --config /etc/meridian/meridian.toml",
    "ExecReload=/bin/kill -HUP $MAINPID",
    "Restart=on-failure",
    "DynamicUser=yes",
    "StateDirectory=meridian",
    "ConfigurationDirectory=meridian",
    "EnvironmentFile=-/etc/meridian/meridian.env",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "NoNewPrivileges=yes",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter=@system-service",
    "CapabilityBoundingSet=",
];

#[test]
fn the_unit_has_the_promised_settings() {
    let lines: Vec<&str> = UNIT.lines().map(str::trim).collect();
    for want in REQUIRED {
        assert!(
            lines.contains(want),
            "systemd/meridian.service lacks {want:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("WatchdogSec=")),
        "no WatchdogSec="
    );
}

fn on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `verify` checks that the ExecStart binary exists, so it runs on a copy whose
/// `/usr/bin/meridian` is the binary cargo built. It exits 0 on a directive it
/// cannot parse ("…, ignoring"), so clean means no output at all.
#[test]
fn systemd_analyze_verify_is_clean() {
    let Some(analyze) = on_path("systemd-analyze") else {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian: apt-get install systemd)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("meridian.service");
    let text = UNIT.replace("/usr/bin/meridian", env!("CARGO_BIN_EXE_meridian"));
    assert_ne!(text, UNIT, "ExecStart no longer names /usr/bin/meridian");
    std::fs::write(&unit, text).unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && printed.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{printed}",
        out.status
    );
}
