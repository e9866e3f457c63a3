//! The install script (`packaging/install.sh`) into a scratch root (`DESTDIR`): every file
//! in its place with its mode, the installed binary checks the installed default config,
//! the installed unit verifies, and a second run keeps an edited config.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::temp_dir;

const BIN: &str = env!("CARGO_BIN_EXE_ringgate");

fn install(root: &Path) -> std::process::Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/install.sh"))
        .env("DESTDIR", root)
        .env("BIN", BIN)
        .output()
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn the_install_script_leaves_a_service_systemd_could_start() {
    let root = temp_dir("install");
    let out = install(&root);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (file, want) in [
        ("usr/local/bin/ringgate", 0o755),
        ("etc/systemd/system/ringgate.service", 0o644),
        ("usr/lib/sysusers.d/ringgate.conf", 0o644),
        ("etc/logrotate.d/ringgate", 0o644),
        ("etc/ringgate", 0o750),
        ("etc/ringgate/ringgate.toml", 0o640),
        (
            "usr/local/share/ringgate/tuning/sysctl.d/90-ringgate.conf",
            0o644,
        ),
        ("usr/local/share/doc/ringgate/README.md", 0o644),
    ] {
        assert_eq!(mode(&root.join(file)), want, "{file}");
    }
    // The installed binary accepts the installed default config.
    let config = root.join("etc/ringgate/ringgate.toml");
    support::assert_config_checks(&root.join("usr/local/bin/ringgate"), &config);

    // The installed unit, its paths pointed into the scratch root, verifies.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let unit =
            std::fs::read_to_string(root.join("etc/systemd/system/ringgate.service")).unwrap();
        let unit = unit
            .replace(
                "/usr/local/bin/ringgate",
                &root.join("usr/local/bin/ringgate").display().to_string(),
            )
            .replace("/etc/ringgate/ringgate.toml", &config.display().to_string());
        let path = root.join("check.service");
        std::fs::write(&path, unit).unwrap();
        support::assert_unit_verifies(&path);
    }

    // Installing again (an upgrade) keeps the operator's config.
    std::fs::write(&config, "[server]\nlisten = [\"127.0.0.1:0\"]\n# edited\n").unwrap();
    let out = install(&root);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("# edited"));
}
