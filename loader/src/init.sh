#!/bin/busybox sh
# /init of splitvisor's default guest: the initramfs that `splitvisor` builds
# around Debian's busybox-static (see loader/README.md). It mounts the kernel's
# file systems, installs the busybox applets, and runs an interactive shell on
# the console; leaving the shell powers the VM off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /root /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
hostname splitvisor
export HOME=/root PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PS1='splitvisor:\w# '
echo
echo "splitvisor default guest: Linux $(uname -r), $(nproc) CPU(s), $(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo) MiB of RAM"
echo "'poweroff -f' or leaving the shell powers the VM off; Ctrl-a x stops it from the host terminal."
cd /root
# cttyhack opens the real console (ttyAMA0) as the controlling terminal of a
# new session, so that job control and Ctrl-C work in the shell.
setsid cttyhack sh
poweroff -f
