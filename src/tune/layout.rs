//! The recommended `server.cpus`: workers on the NIC's NUMA node (their packets, their
//! memory and their interrupts stay local), with housekeeping CPUs left on that node for
//! the NIC's interrupts and the control side's threads.

/// What the recommendation is made from.
pub struct Topology {
    /// The online CPUs of each NUMA node (one node on a machine without NUMA).
    pub nodes: Vec<(u32, Vec<u32>)>,
    /// The NUMA node of the NIC that serves traffic (`None`: unknown, e.g. virtual).
    pub nic_node: Option<u32>,
}

/// The layout: worker CPUs and housekeeping CPUs (interrupts, control side).
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub node: u32,
    pub workers: Vec<u32>,
    pub housekeeping: Vec<u32>,
}

/// One housekeeping CPU per eight on the node, at least one, when the node has four or
/// more CPUs; on smaller machines every CPU runs a worker (a housekeeping CPU would be a
/// big share of the capacity, and the kernel shares CPUs well enough at that size).
pub fn recommend(topology: &Topology) -> Option<Layout> {
    let (node, cpus) = match topology.nic_node {
        Some(n) => topology.nodes.iter().find(|(id, _)| *id == n),
        None => topology.nodes.first(),
    }
    .or_else(|| topology.nodes.first())?;
    if cpus.is_empty() {
        return None;
    }
    let housekeeping = if cpus.len() >= 4 {
        cpus.len().div_ceil(8)
    } else {
        0
    };
    Some(Layout {
        node: *node,
        housekeeping: cpus[..housekeeping].to_vec(),
        workers: cpus[housekeeping..].to_vec(),
    })
}

/// Parses a kernel CPU list (`0-3,8,10-11`).
pub fn parse_cpu_list(text: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    cpus.extend(a..=b.min(a.saturating_add(4096)));
                }
            }
            None => cpus.extend(part.parse::<u32>()),
        }
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_read_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), [0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("5"), [5]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
    }

    #[test]
    fn workers_go_on_the_nic_node_with_housekeeping_left() {
        let topology = Topology {
            nodes: vec![(0, (0..16).collect()), (1, (16..32).collect())],
            nic_node: Some(1),
        };
        let layout = recommend(&topology).unwrap();
        assert_eq!(layout.node, 1);
        assert_eq!(layout.housekeeping, [16, 17]);
        assert_eq!(layout.workers, (18..32).collect::<Vec<_>>());
        // Small machines: every CPU a worker.
        let small = Topology {
            nodes: vec![(0, vec![0, 1])],
            nic_node: None,
        };
        let layout = recommend(&small).unwrap();
        assert_eq!((layout.workers, layout.housekeeping), (vec![0, 1], vec![]));
        // A NIC on a node that is gone: the first node.
        let odd = Topology {
            nodes: vec![(0, (0..4).collect())],
            nic_node: Some(3),
        };
        assert_eq!(recommend(&odd).unwrap().housekeeping, [0]);
    }
}
