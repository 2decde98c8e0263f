#!/bin/busybox sh
# /init of tests/experiments/boot-time: say when /init started, power off.
/bin/busybox mount -t proc proc /proc
echo "BOOT-MARK: /init at uptime $(/bin/busybox cut -d' ' -f1 /proc/uptime)"
/bin/busybox poweroff -f
