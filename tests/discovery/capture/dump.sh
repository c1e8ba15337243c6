#!/bin/sh
# Print the sysfs/procfs entries pmemkit.discovery reads, as one "=== STATE NAME" block
# (make_fixtures.py turns it into a fixture tree). Run inside a guest: sh dump.sh NAME
state=${1:?usage: dump.sh STATE-NAME}
echo; echo "=== STATE $state"
for e in /sys/bus/nd/devices/* /sys/class/block/pmem* /sys/block/pmem* /sys/bus/dax/devices/*; do
  [ -e "$e" ] || continue
  echo "LINK $e -> $(readlink $e)"
  r=$(readlink -f $e)
  for a in $r/* $r/queue/dax $r/queue/logical_block_size; do
    [ -f "$a" ] || continue
    case "$a" in */uevent|*/badblocks|*/delete|*/activate) continue;; esac
    echo "ATTR $a=$(cat $a 2>/dev/null | head -c 200 | tr '\n' '|')"
  done
done
for f in /proc/cmdline /proc/mounts /proc/sys/kernel/osrelease; do
  echo "FILE $f=$(tr '\n' '|' < $f)"
done
echo "FILE /proc/meminfo=$(grep MemTotal /proc/meminfo)|"
echo "FILE /proc/cpuinfo=$(awk '/^$/{exit} {print}' /proc/cpuinfo | tr '\n' '|')"
for d in /dev/pmem* /dev/dax*; do [ -e "$d" ] && echo "DEV $d"; done
echo "=== END $state"
