//! What the host says about itself, read from `/proc` and `/sys` (and an io_uring ring
//! made and dropped): each reader gives `None` or an empty list when the file is not
//! there (a container, another kernel), never an error that stops the report.

use std::path::Path;

use super::layout::parse_cpu_list;

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// io_uring: whether a ring can be made here, and the features the kernel offers.
pub struct Uring {
    pub available: Result<Vec<&'static str>, String>,
    /// `DEFER_TASKRUN` (Linux 6.1+), which workers use when they can.
    pub defer_taskrun: bool,
    /// `/proc/sys/kernel/io_uring_disabled` (Linux 6.6+): 0 allowed, 1 for a group, 2 off.
    pub disabled_sysctl: Option<String>,
}

pub fn uring() -> Uring {
    let available = io_uring::IoUring::new(8)
        .map(|ring| {
            let p = ring.params();
            [
                ("single_mmap", p.is_feature_single_mmap()),
                ("nodrop", p.is_feature_nodrop()),
                ("submit_stable", p.is_feature_submit_stable()),
                ("fast_poll", p.is_feature_fast_poll()),
                ("ext_arg", p.is_feature_ext_arg()),
                ("native_workers", p.is_feature_native_workers()),
                ("skip_cqe_on_success", p.is_feature_skip_cqe_on_success()),
                ("linked_file", p.is_feature_linked_file()),
            ]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| name)
            .collect()
        })
        .map_err(|e| e.to_string());
    let defer_taskrun = io_uring::IoUring::<io_uring::squeue::Entry>::builder()
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)
        .is_ok();
    Uring {
        available,
        defer_taskrun,
        disabled_sysctl: read("/proc/sys/kernel/io_uring_disabled"),
    }
}

/// A resource limit of this process (`/proc/self/limits`): soft and hard, as written
/// ("unlimited" or a number).
pub fn limit(name: &str) -> Option<(String, String)> {
    let text = read("/proc/self/limits")?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let mut fields = line[name.len()..].split_whitespace();
    Some((fields.next()?.to_string(), fields.next()?.to_string()))
}

/// A sysctl's current value (`net.core.somaxconn` -> `/proc/sys/net/core/somaxconn`),
/// whitespace-normalized.
pub fn sysctl(key: &str) -> Option<String> {
    let value = read(Path::new("/proc/sys").join(key.replace('.', "/")))?;
    Some(value.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The online CPUs of each NUMA node (one node 0 with every online CPU when the kernel
/// shows no nodes).
pub fn numa_nodes() -> Vec<(u32, Vec<u32>)> {
    let online = read("/sys/devices/system/cpu/online")
        .map(|l| parse_cpu_list(&l))
        .unwrap_or_default();
    let mut nodes: Vec<(u32, Vec<u32>)> = std::fs::read_dir("/sys/devices/system/node")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id: u32 = name.strip_prefix("node")?.parse().ok()?;
            let cpus = parse_cpu_list(&read(entry.path().join("cpulist"))?);
            let cpus: Vec<u32> = cpus.into_iter().filter(|c| online.contains(c)).collect();
            Some((id, cpus))
        })
        .collect();
    nodes.sort();
    if nodes.is_empty() && !online.is_empty() {
        nodes.push((0, online));
    }
    nodes
}

/// The interface of the default route (`/proc/net/route`): the one traffic arrives on.
pub fn default_route_interface() -> Option<String> {
    read("/proc/net/route")?
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000"))
        .and_then(|f| f.first().map(|i| i.to_string()))
}

/// A network interface with a device behind it (not `lo`, bridges or veths).
pub struct Nic {
    pub name: String,
    pub rx_queues: usize,
    pub tx_queues: usize,
    /// `None`: no NUMA information (one node, or a virtual device).
    pub numa_node: Option<u32>,
    /// Its interrupts and the CPUs each may run on.
    pub irqs: Vec<(u32, String)>,
}

pub fn nics() -> Vec<Nic> {
    let mut nics: Vec<Nic> = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join("device").exists())
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let queues = |prefix: &str| {
                std::fs::read_dir(entry.path().join("queues"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|q| q.file_name().to_string_lossy().starts_with(prefix))
                    .count()
            };
            let numa_node = read(entry.path().join("device/numa_node"))
                .and_then(|n| n.parse::<i64>().ok())
                .and_then(|n| u32::try_from(n).ok());
            let irqs = device_irqs(&entry.path(), &name);
            Nic {
                rx_queues: queues("rx-"),
                tx_queues: queues("tx-"),
                numa_node,
                irqs,
                name,
            }
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

/// A device's interrupts (its MSI vectors, else the lines of `/proc/interrupts` that name
/// it), each with `/proc/irq/N/smp_affinity_list`.
fn device_irqs(dev: &Path, name: &str) -> Vec<(u32, String)> {
    let mut irqs: Vec<u32> = std::fs::read_dir(dev.join("device/msi_irqs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    if irqs.is_empty() {
        irqs = read("/proc/interrupts")
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .any(|w| w == name || w.starts_with(&format!("{name}-")))
            })
            .filter_map(|l| l.split(':').next()?.trim().parse().ok())
            .collect();
    }
    irqs.sort_unstable();
    irqs.into_iter()
        .map(|irq| {
            let cpus =
                read(format!("/proc/irq/{irq}/smp_affinity_list")).unwrap_or_else(|| "?".into());
            (irq, cpus)
        })
        .collect()
}
