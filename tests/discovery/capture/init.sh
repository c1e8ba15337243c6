#!/bin/busybox sh
# Guest /init for capture.sh: loads the nvdimm drivers, walks through the namespace
# modes of one scenario and dumps the sysfs/procfs entries discovery reads.
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in libnvdimm nd_btt nd_pmem nd_e820 dax_pmem device_dax nfit crc16 mbcache jbd2 \
         crc32c_generic ext4; do
  insmod /lib/modules/$m.ko 2>/dev/null
done
sleep 2
dump() { sh /dump.sh "$1"; }
scenario=$(sed -n 's/.*pmemkit.scenario=\([a-z0-9-]*\).*/\1/p' /proc/cmdline)
case "$scenario" in
memmap)
  dump memmap-fsdax
  # On 6.1 a memmap (label-less io) namespace boots in fsdax mode without a pfn device;
  # `ndctl create-namespace --mode=raw` keeps it so. force_raw gives the raw mode that
  # kernels without ZONE_DEVICE (or ranges mixed with System RAM) show.
  ndctl disable-namespace namespace0.0
  echo 1 > /sys/bus/nd/devices/namespace0.0/force_raw
  ndctl enable-namespace namespace0.0
  dump memmap-raw
  ndctl disable-namespace namespace0.0
  echo 0 > /sys/bus/nd/devices/namespace0.0/force_raw
  ndctl enable-namespace namespace0.0
  ndctl create-namespace -f -e namespace1.0 --mode=fsdax --map=mem
  /usr/sbin/mke2fs -q -F -t ext4 -b 4096 /dev/pmem0 && mkdir -p /mnt/pmem-ext4 \
    && mount -o dax /dev/pmem0 /mnt/pmem-ext4
  /usr/sbin/mke2fs -q -F -t ext4 -b 4096 /dev/pmem1 && mkdir -p /mnt/nodax && mount /dev/pmem1 /mnt/nodax
  dump memmap-fsdax-mounted
  ;;
nvdimm)
  dump nvdimm-raw
  ndctl create-namespace -f -e namespace0.0 --mode=fsdax --map=mem
  dump nvdimm-fsdax
  ndctl create-namespace -f -e namespace0.0 --mode=sector
  /usr/sbin/mke2fs -q -F -t ext4 -b 4096 /dev/pmem0s && mkdir -p /mnt/blk && mount /dev/pmem0s /mnt/blk
  dump nvdimm-sector
  ;;
devdax)
  ndctl create-namespace -f -e namespace0.0 --mode=devdax
  dump devdax
  ;;
esac
poweroff -f
