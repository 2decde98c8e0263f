#!/bin/busybox sh
# /init of the isolation experiment (tests/experiments/isolation): checks
# from inside the guest, a verdict line, power-off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null || mount -t tmpfs dev /dev
[ -e /dev/null ] || mknod /dev/null c 1 3
mkdir -p /tmp && mount -t tmpfs tmp /tmp
fail=0
check() { if eval "$2"; then echo "PASS: $1"; else echo "FAIL: $1"; fail=1; fi; }
cpus=$(grep -c ^processor /proc/cpuinfo)
check "2 CPUs online ($cpus)" '[ "$cpus" = 2 ]'
ticks() { grep arch_timer /proc/interrupts | tr -s ' ' | cut -d' ' -f3,4; }
before=$(ticks)
t0=$(cut -d' ' -f1 /proc/uptime)
sleep 1
t1=$(cut -d' ' -f1 /proc/uptime)
after=$(ticks)
check "timer ticks grew on both CPUs ($before -> $after)" '[ "${before% *}" -lt "${after% *}" ] && [ "${before#* }" -lt "${after#* }" ]'
check "sleep 1 took about 1 s ($t0 -> $t1)" 'awk "BEGIN{d=$t1-$t0; exit !(d>=0.9 && d<=1.5)}"'
# Work on both CPUs (IPIs, scheduling), and a file system round trip.
for i in 1 2 3 4; do (seq 1 20000 | md5sum > /tmp/sum.$i) & done; wait
check "parallel work gave equal results" '[ "$(cat /tmp/sum.* | sort -u | wc -l)" = 1 ]'
if [ $fail = 0 ]; then echo "EXPERIMENT: PASS"; else echo "EXPERIMENT: FAIL"; fi
poweroff -f
