#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "trace-init: $(grep -c ^processor /proc/cpuinfo) CPUs up, $(cut -d' ' -f1 /proc/uptime) s"
sleep 0.2
grep -E "arch_timer|GIC|ttyAMA" /proc/interrupts
poweroff -f
