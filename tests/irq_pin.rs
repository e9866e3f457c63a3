//! `tuning/irq-pin.sh` against a made-up `/sys` and `/proc`: a NIC's interrupts pinned to
//! the given CPUs in turn; `--dry-run` says what it would write and writes nothing; a
//! missing interface or CPU list is a clear error.

mod support;

use std::path::Path;
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/irq-pin.sh");

fn run(root: &Path, args: &[&str]) -> Output {
    Command::new(SCRIPT)
        .args(args)
        .env("SYSFS", root.join("sys"))
        .env("PROCFS", root.join("proc"))
        .output()
        .unwrap()
}

fn affinity(root: &Path, irq: u32) -> String {
    std::fs::read_to_string(root.join(format!("proc/irq/{irq}/smp_affinity_list")))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn interrupts_are_spread_over_the_cpus_in_turn() {
    let root = support::temp_dir("irq-pin");
    for irq in [40, 41, 42] {
        std::fs::create_dir_all(root.join(format!("sys/class/net/eth9/device/msi_irqs/{irq}")))
            .unwrap();
        std::fs::create_dir_all(root.join(format!("proc/irq/{irq}"))).unwrap();
        std::fs::write(
            root.join(format!("proc/irq/{irq}/smp_affinity_list")),
            "0-15\n",
        )
        .unwrap();
    }

    let dry = run(&root, &["--dry-run", "eth9", "2-3"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let said = String::from_utf8(dry.stdout).unwrap();
    assert!(
        said.contains("irq 40 -> CPU 2") && said.contains("irq 42 -> CPU 2"),
        "{said}"
    );
    assert_eq!(affinity(&root, 40), "0-15", "a dry run writes nothing");

    let out = run(&root, &["eth9", "2-3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        [
            affinity(&root, 40),
            affinity(&root, 41),
            affinity(&root, 42)
        ],
        ["2", "3", "2"]
    );

    // An interrupt that refuses (here: not a file) is said and the others still pinned.
    std::fs::remove_file(root.join("proc/irq/41/smp_affinity_list")).unwrap();
    std::fs::create_dir(root.join("proc/irq/41/smp_affinity_list")).unwrap();
    let out = run(&root, &["eth9", "5-6"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("irq 41: cannot write"));
    assert_eq!([affinity(&root, 40), affinity(&root, 42)], ["5", "5"]);

    let out = run(&root, &["eth7", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no interface eth7"));
    let out = run(&root, &["eth9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
}
