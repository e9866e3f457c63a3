#!/bin/sh
# Pins a NIC's interrupts to the given CPUs, one interrupt per CPU in turn (queue 0 to
# the first CPU, queue 1 to the next, ...): the housekeeping CPUs `ringgate tune`
# recommends, so that packet processing (softirq) stays off the worker CPUs, or the worker
# CPUs themselves, one queue each, to keep each connection's packets on its worker's CPU.
#
#   tuning/irq-pin.sh [--dry-run] <interface> <cpus>     e.g. irq-pin.sh eth0 0-1
#
# Stop irqbalance first (systemctl disable --now irqbalance), or it moves them back.
# Every vector of the device is pinned, its misc/admin one too, so with "aligned" queues
# check the order in /proc/interrupts. Virtual NICs (virtio) often show no vectors here.
# Settings do not survive a reboot: run it from a unit ordered after the network.
# SYSFS and PROCFS (default /sys and /proc) point elsewhere, for tests.
set -eu

SYSFS=${SYSFS:-/sys}
PROCFS=${PROCFS:-/proc}
dry=
if [ "${1:-}" = "--dry-run" ]; then
    dry=1
    shift
fi
if [ $# -ne 2 ]; then
    echo "usage: $0 [--dry-run] <interface> <cpus, e.g. 0-1 or 0,8>" >&2
    exit 2
fi
iface=$1
cpulist=$2

# The CPU list, expanded: 0-2,8 -> 0 1 2 8.
cpus=
for part in $(echo "$cpulist" | tr ',' ' '); do
    case $part in
        *-*) cpus="$cpus $(seq "${part%-*}" "${part#*-}")" ;;
        *) cpus="$cpus $part" ;;
    esac
done
set -- $cpus
if [ $# -eq 0 ]; then
    echo "$0: no CPUs in \"$cpulist\"" >&2
    exit 2
fi

# The NIC's interrupts: its MSI vectors, else the lines of /proc/interrupts naming it.
if [ ! -e "$SYSFS/class/net/$iface" ]; then
    echo "$0: no interface $iface" >&2
    exit 1
fi
irqs=
if [ -d "$SYSFS/class/net/$iface/device/msi_irqs" ]; then
    irqs=$(ls "$SYSFS/class/net/$iface/device/msi_irqs" | sort -n)
fi
if [ -z "$irqs" ] && [ -r "$PROCFS/interrupts" ]; then
    irqs=$(grep -E "[[:space:]]$iface(-|$)" "$PROCFS/interrupts" | cut -d: -f1 | tr -d ' ')
fi
if [ -z "$irqs" ]; then
    echo "$0: no interrupts found for $iface (a virtual NIC?)" >&2
    exit 1
fi

n=$#
i=0
failed=
for irq in $irqs; do
    # The ((i mod n) + 1)-th CPU.
    k=$((i % n + 1))
    cpu=$(eval echo "\${$k}")
    target="$PROCFS/irq/$irq/smp_affinity_list"
    if [ -n "$dry" ]; then
        echo "irq $irq -> CPU $cpu (would write $target)"
    elif { echo "$cpu" >"$target"; } 2>/dev/null; then
        echo "irq $irq -> CPU $cpu"
    else
        # A managed interrupt (the kernel places it) or a full vector table: the others
        # are still pinned.
        echo "irq $irq: cannot write $target (not root, or a managed interrupt)" >&2
        failed=1
    fi
    i=$((i + 1))
done
[ -z "$failed" ]
