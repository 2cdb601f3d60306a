//! The Debian package (`packaging/build-deb.sh`, `[package.metadata.deb]`): its file
//! list, its conffile and its systemd unit. Cheap, and only where the tools are: it
//! reuses the `.deb` CI built (`target/debian/`), else packages an existing release
//! binary with `cargo deb --no-build`; without cargo-deb, dpkg-deb or a release binary
//! it prints why and passes. With `systemd-analyze` it also checks the unit's exposure.

use std::path::{Path, PathBuf};
use std::process::Command;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root().join(d) })
        .unwrap_or_else(|| root().join("target"))
}

/// Whether `program args` runs and exits 0.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The package to check, or why there is none.
fn package() -> Result<PathBuf, String> {
    if !runs("dpkg-deb", &["--version"]) {
        return Err("dpkg-deb is not installed".into());
    }
    if !runs("cargo", &["deb", "--version"]) {
        return Err("cargo-deb is not installed (cargo install cargo-deb --locked)".into());
    }
    let deb = target_dir()
        .join("debian")
        .join(format!("agent-sync_{VERSION}_amd64.deb"));
    if deb.is_file() {
        return Ok(deb);
    }
    if !target_dir().join("release").join("agent-sync").is_file() {
        return Err("no .deb in target/debian and no release binary to package".into());
    }
    let status = Command::new(root().join("packaging").join("build-deb.sh"))
        .arg("--no-build")
        .status()
        .map_err(|e| format!("cannot run packaging/build-deb.sh: {e}"))?;
    assert!(status.success(), "packaging/build-deb.sh --no-build failed");
    assert!(deb.is_file(), "build-deb.sh made no {}", deb.display());
    Ok(deb)
}

/// The package's file list, `dpkg-deb -c` lines as `(path, link target)`.
fn contents(deb: &Path) -> Vec<(String, Option<String>)> {
    output("dpkg-deb", &["-c", deb.to_str().unwrap()])
        .lines()
        .map(|line| {
            // -rwxr-xr-x root/root 1234 2026-01-01 00:00 ./usr/bin/agent-sync [-> target]
            let name = line[line.find(" ./").map_or(0, |i| i + 1)..].to_string();
            match name.split_once(" -> ") {
                Some((path, target)) => (path.to_string(), Some(target.to_string())),
                None => (name, None),
            }
        })
        .collect()
}

#[test]
fn the_deb_holds_the_binary_unit_man_pages_completions_and_default_file() {
    let deb = match package() {
        Ok(deb) => deb,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let files = contents(&deb);
    let has = |path: &str| files.iter().any(|(p, _)| p == path);
    let unit_path = [
        "./lib/systemd/system/agent-sync.service",
        "./usr/lib/systemd/system/agent-sync.service",
    ]
    .into_iter()
    .find(|p| has(p))
    .unwrap_or_else(|| panic!("no agent-sync.service in {files:#?}"));
    for path in [
        "./usr/bin/agent-sync",
        "./etc/default/agent-sync",
        "./usr/share/man/man1/agent-sync.1.gz",
        "./usr/share/man/man1/agent-sync-run.1.gz",
        "./usr/share/man/man1/agent-sync-push.1.gz",
        "./usr/share/bash-completion/completions/agent-sync",
        "./usr/share/zsh/vendor-completions/_agent-sync",
        "./usr/share/fish/vendor_completions.d/agent-sync.fish",
    ] {
        assert!(has(path), "{path} is not in the package: {files:#?}");
    }
    // The unit hands the token over as a credential; the key file agent-sync reads
    // ($CORE_HOME/.claude/brain.key) is a link to it.
    let link = files
        .iter()
        .find(|(p, _)| p == "./usr/lib/agent-sync/credential-home/.claude/brain.key")
        .unwrap_or_else(|| panic!("no credential link in {files:#?}"));
    assert_eq!(
        link.1.as_deref(),
        Some("/run/credentials/agent-sync.service/token")
    );

    let name = output("dpkg-deb", &["-f", deb.to_str().unwrap(), "Package"]);
    assert_eq!(name.trim(), "agent-sync");
    let ctrl = tempfile::tempdir().unwrap();
    output(
        "dpkg-deb",
        &["-e", deb.to_str().unwrap(), ctrl.path().to_str().unwrap()],
    );
    let conffiles = std::fs::read_to_string(ctrl.path().join("conffiles")).unwrap_or_default();
    assert!(
        conffiles.lines().any(|l| l == "/etc/default/agent-sync"),
        "/etc/default/agent-sync is not a conffile: {conffiles:?}"
    );

    let tree = tempfile::tempdir().unwrap();
    output(
        "dpkg-deb",
        &["-x", deb.to_str().unwrap(), tree.path().to_str().unwrap()],
    );
    let unit_file = tree.path().join(&unit_path[2..]);
    let unit = std::fs::read_to_string(&unit_file).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "ExecStart=/usr/bin/agent-sync --state-dir %S/agent-sync run $AGENT_SYNC_RUN_ARGS",
        "EnvironmentFile=-/etc/default/agent-sync",
        "LoadCredential=token:/etc/agent-sync/token",
        "Environment=CORE_HOME=/usr/lib/agent-sync/credential-home",
        "StateDirectory=agent-sync",
        "StateDirectoryMode=0700",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "the unit lacks {line:?}:\n{unit}"
        );
    }
    assert_eq!(
        unit,
        std::fs::read_to_string(root().join("packaging/agent-sync.service")).unwrap(),
        "the packaged unit is not packaging/agent-sync.service (a stale .deb?)"
    );
    let default = std::fs::read_to_string(tree.path().join("etc/default/agent-sync")).unwrap();
    assert!(
        default.lines().all(|l| l.is_empty() || l.starts_with('#')),
        "the default file sets nothing, it only shows the settings:\n{default}"
    );

    // The exposure score, where systemd-analyze is installed (offline: no systemd needed).
    if runs("systemd-analyze", &["--version"]) {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit_file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no exposure level in {text}"));
        let score: f64 = line
            .split(':')
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
        assert!(score <= 4.9, "exposure above 4.9: {line}");
        println!("{line}");
    } else {
        println!("systemd-analyze is not installed: exposure not checked");
    }
}
