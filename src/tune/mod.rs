//! `ringgate tune`: a report on the host for a gateway: io_uring and its features, the
//! file and locked-memory limits, every setting of the shipped sysctl profile and, with
//! `--profile`, its `throughput` or `latency` overlay (current against recommended), CPUs and NUMA nodes, NIC queues and the CPUs their interrupts
//! run on, and a recommended `server.cpus` layout. It only reads; nothing is changed.

mod host;
pub mod layout;

use std::fmt::Write as _;

use layout::{recommend, Topology};

/// The shipped base profile (`tuning/sysctl.d/90-ringgate.conf`).
const BASE: &str = include_str!("../../tuning/sysctl.d/90-ringgate.conf");
/// The overlays, each on top of the base: `91-ringgate-<name>.conf`.
const PROFILES: [(&str, &str); 2] = [
    (
        "throughput",
        include_str!("../../tuning/sysctl.d/91-ringgate-throughput.conf"),
    ),
    (
        "latency",
        include_str!("../../tuning/sysctl.d/91-ringgate-latency.conf"),
    ),
];

/// The names of the profiles `--profile` takes.
pub fn profile_names() -> Vec<&'static str> {
    PROFILES.iter().map(|(name, _)| *name).collect()
}

/// The recommended settings of the base profile and, with `profile`, its overlay (which
/// wins where both set a key), in file order; `Err` for an unknown profile.
pub fn profile_settings(profile: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut settings = settings_of(BASE);
    if let Some(name) = profile {
        let (_, overlay) = PROFILES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| format!("no profile {name:?}: one of {}", profile_names().join(", ")))?;
        for (key, value) in settings_of(overlay) {
            match settings.iter_mut().find(|(k, _)| *k == key) {
                Some(setting) => setting.1 = value,
                None => settings.push((key, value)),
            }
        }
    }
    Ok(settings)
}

/// The `key = value` lines of a sysctl.d file (a leading `-` only says the key may be
/// missing).
fn settings_of(file: &str) -> Vec<(String, String)> {
    file.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.split_once('=')?;
            let key = key.trim().trim_start_matches('-').trim().to_string();
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            Some((key, value))
        })
        .collect()
}

/// The whole report, as printed; sysctls compared with the base profile and `profile`'s
/// overlay.
pub fn report(profile: Option<&str>) -> Result<String, String> {
    let settings = profile_settings(profile)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ringgate tune: this host for a gateway (read only; nothing is changed)\n"
    );

    let uring = host::uring();
    let _ = writeln!(out, "io_uring");
    match &uring.available {
        Ok(features) => {
            let _ = writeln!(out, "  available: yes; features: {}", features.join(", "));
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "  available: NO ({e}): workers will run on epoll (driver = \"auto\"), or refuse to start (driver = \"io_uring\")"
            );
        }
    }
    let _ = writeln!(
        out,
        "  defer_taskrun (Linux 6.1+, fewest wakeups): {}",
        if uring.defer_taskrun {
            "yes"
        } else {
            "no (coop_taskrun or default used)"
        }
    );
    if let Some(disabled) = &uring.disabled_sysctl {
        let _ = writeln!(out, "  kernel.io_uring_disabled = {disabled} (0: allowed)");
    }

    let _ = writeln!(
        out,
        "\nlimits (of this process; the unit sets the service's)"
    );
    for (name, label, want) in [
        (
            "Max open files",
            "open files",
            "1048576 (LimitNOFILE in the unit)",
        ),
        (
            "Max locked memory",
            "locked memory",
            "unlimited before Linux 5.12 (LimitMEMLOCK=infinity)",
        ),
    ] {
        match host::limit(name) {
            Some((soft, hard)) => {
                let _ = writeln!(
                    out,
                    "  {label}: soft {soft}, hard {hard}; recommended {want}"
                );
            }
            None => {
                let _ = writeln!(out, "  {label}: unknown; recommended {want}");
            }
        }
    }

    let mut differ = 0;
    let files = match profile {
        Some(name) => format!("90-ringgate.conf + 91-ringgate-{name}.conf"),
        None => "90-ringgate.conf".to_string(),
    };
    let _ = writeln!(
        out,
        "\nsysctl (profile tuning/sysctl.d/{files}: current -> recommended)"
    );
    for (key, want) in &settings {
        let (mark, current) = match host::sysctl(key) {
            Some(now) if now == *want => ("ok    ", now),
            Some(now) => {
                differ += 1;
                ("CHANGE", now)
            }
            None => ("absent", "-".to_string()),
        };
        let _ = writeln!(out, "  {mark} {key} = {current} -> {want}");
    }
    let _ = writeln!(
        out,
        "  {differ} of {} differ{}",
        settings.len(),
        if differ > 0 {
            ": install the profile (tuning/README.md) or pick what suits this host"
        } else {
            ""
        }
    );

    let nodes = host::numa_nodes();
    let _ = writeln!(out, "\nCPUs and NUMA nodes");
    for (id, cpus) in &nodes {
        let _ = writeln!(out, "  node {id}: CPUs {}", cpu_ranges(cpus));
    }

    let nics = host::nics();
    let default = host::default_route_interface();
    let _ = writeln!(out, "\nNICs");
    if nics.is_empty() {
        let _ = writeln!(
            out,
            "  none with a device behind it (a container's veth only?)"
        );
    }
    for nic in &nics {
        let node = nic.numa_node.map_or("-".to_string(), |n| n.to_string());
        let irqs: Vec<String> = nic
            .irqs
            .iter()
            .map(|(irq, cpus)| format!("{irq}->{cpus}"))
            .collect();
        let _ = writeln!(
            out,
            "  {}{}: {} rx / {} tx queues, NUMA node {node}, interrupts (irq->CPUs): {}",
            nic.name,
            if Some(&nic.name) == default.as_ref() {
                " (default route)"
            } else {
                ""
            },
            nic.rx_queues,
            nic.tx_queues,
            if irqs.is_empty() {
                "none found".to_string()
            } else {
                irqs.join(" ")
            }
        );
    }

    // The NIC of the default route, else the first with a NUMA node (a management port
    // may sort first).
    let nic_node = nics
        .iter()
        .find(|n| Some(&n.name) == default.as_ref())
        .and_then(|n| n.numa_node)
        .or_else(|| nics.iter().find_map(|n| n.numa_node));
    let _ = writeln!(out, "\nrecommended layout");
    match recommend(&Topology { nodes, nic_node }) {
        Some(l) => {
            let cpus: Vec<String> = l.workers.iter().map(u32::to_string).collect();
            let whose = if nic_node == Some(l.node) {
                " (the NIC's)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  workers on NUMA node {}{whose}: server.cpus = [{}]",
                l.node,
                cpus.join(", ")
            );
            if l.housekeeping.is_empty() {
                let _ = writeln!(
                    out,
                    "  housekeeping: none set apart (a small machine: every CPU runs a worker)"
                );
            } else {
                let _ = writeln!(
                    out,
                    "  housekeeping (NIC interrupts, control side): CPUs {}; pin the NIC's interrupts there (tuning/README.md)",
                    cpu_ranges(&l.housekeeping)
                );
            }
        }
        None => {
            let _ = writeln!(out, "  no CPUs found: keep workers = \"auto\"");
        }
    }
    Ok(out)
}

/// `0-3,8` from a sorted list of CPUs.
fn cpu_ranges(cpus: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_is_read_as_sysctl_reads_it() {
        let settings = profile_settings(None).unwrap();
        assert!(settings.len() >= 10, "{settings:?}");
        assert!(settings.contains(&("net.core.somaxconn".to_string(), "65535".to_string())));
        assert!(settings
            .iter()
            .all(|(k, v)| !k.starts_with('-') && !v.is_empty()));
    }

    #[test]
    fn cpu_lists_are_written_as_ranges() {
        assert_eq!(cpu_ranges(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(cpu_ranges(&[]), "");
    }
}
