//! `ringgate tune` on this machine: a complete report (every section, every setting of the
//! shipped sysctl profile with its current value) and a `server.cpus` of online CPUs that
//! the config accepts.

mod support;

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ringgate");

#[test]
fn the_report_is_complete_and_its_layout_is_usable() {
    let out = Command::new(BIN).arg("tune").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8(out.stdout).unwrap();
    for section in [
        "\nio_uring\n",
        "\nlimits",
        "\nsysctl",
        "\nCPUs and NUMA nodes\n",
        "\nNICs\n",
        "\nrecommended layout\n",
    ] {
        assert!(report.contains(section), "no {section:?} in:\n{report}");
    }
    assert!(report.contains("available: yes") || report.contains("available: NO"));
    assert!(report.contains("open files: soft ") && report.contains("locked memory: soft "));
    for (key, want) in ringgate::tune::profile_settings(None).unwrap() {
        let line = report
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(key.as_str()))
            .unwrap_or_else(|| panic!("no line for {key} in:\n{report}"));
        assert!(line.ends_with(&format!("-> {want}")), "{line}");
        // The current value is this kernel's.
        let current = std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "-".into());
        assert!(
            line.contains(&format!("{key} = {current} ->")),
            "{line} (kernel: {current})"
        );
    }
    // The recommended worker CPUs are online, and a config with them checks.
    let cpus = report
        .lines()
        .find_map(|l| l.split("server.cpus = ").nth(1))
        .unwrap_or_else(|| panic!("no server.cpus in:\n{report}"));
    let online = ringgate::tune::layout::parse_cpu_list(
        &std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap(),
    );
    let listed: Vec<u32> = cpus
        .trim_matches(['[', ']'])
        .split(", ")
        .map(|c| c.parse().unwrap())
        .collect();
    assert!(
        !listed.is_empty() && listed.iter().all(|c| online.contains(c)),
        "{cpus}"
    );
    let dir = support::temp_dir("tune");
    let config = dir.join("ringgate.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = [\"127.0.0.1:0\"]\ncpus = {cpus}\n"),
    )
    .unwrap();
    support::assert_config_checks(std::path::Path::new(BIN), &config);
}

#[test]
fn a_profile_overlay_is_compared_too_and_a_wrong_one_refused() {
    let out = Command::new(BIN)
        .args(["tune", "--profile", "latency"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(
        report.contains("90-ringgate.conf + 91-ringgate-latency.conf"),
        "{report}"
    );
    assert!(
        report.contains("net.ipv4.tcp_autocorking = ") && report.contains("-> 0"),
        "{report}"
    );
    let out = Command::new(BIN)
        .args(["tune", "--profile", "fast"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: no profile \"fast\": one of throughput, latency"
    );
}
