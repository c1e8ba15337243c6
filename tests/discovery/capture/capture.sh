#!/usr/bin/env bash
# Capture real sysfs/procfs entries for the discovery fixtures: boots the Debian
# generic kernel under QEMU (TCG) with memmap= pmem and a QEMU NVDIMM, walks the
# namespace modes (init.sh) and writes one dump per scenario to ../dumps/.
# make_fixtures.py turns the dumps into fixture trees. Needs (as root):
# qemu-system-x86 busybox-static ndctl e2fsprogs kmod, and network access to the
# Debian mirror for `apt-get download` of the kernel.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
ver=${pkg#linux-image-}
apt-get download "$pkg" >/dev/null
dpkg -x ./*.deb k
depmod -b k "$ver"
mkdir -p ir/bin ir/usr/sbin ir/lib/modules ir/lib64 ir/lib/x86_64-linux-gnu ir/proc ir/sys ir/dev ir/mnt
cp /bin/busybox ir/bin/
cp /usr/bin/ndctl ir/bin/
cp /sbin/mke2fs ir/usr/sbin/      # by full path: busybox's own mke2fs applet would win
for bin in /usr/bin/ndctl /sbin/mke2fs; do
  for lib in $(ldd "$bin" | grep -o '/lib[^ ]*'); do cp -L "$lib" "ir$lib"; done
done
for m in nd_e820 nd_pmem nd_btt dax_pmem device_dax nfit ext4; do
  modprobe -C /dev/null -d k -S "$ver" --show-depends "$m" | awk '{print $2}'
done | sort -u | xargs -I{} cp {} ir/lib/modules/
cp "$here/init.sh" ir/init && chmod +x ir/init && cp "$here/dump.sh" ir/dump.sh
(cd ir && find . | cpio -o -H newc 2>/dev/null | gzip -1 > ../initrd.gz)
truncate -s 256M nvdimm.img
boot() {  # name, kernel args, extra qemu args...
  local name=$1 args=$2; shift 2
  timeout 300 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -nographic -no-reboot -net none \
    -kernel "k/boot/vmlinuz-$ver" -initrd initrd.gz \
    -append "console=ttyS0 quiet panic=-1 pmemkit.scenario=$name $args" "$@" \
    | tr -d '\r' | sed -n '/^=== STATE/,/^=== END/p' > "$here/../dumps/$name.dump"
  echo "captured $name: $(grep -c '^=== STATE' "$here/../dumps/$name.dump") state(s)"
}
mkdir -p "$here/../dumps"
boot memmap "memmap=512M!1G memmap=512M!2G" -m 3G
boot nvdimm "" -machine pc,nvdimm=on,nvdimm-persistence=mem-ctrl -m 2G,slots=2,maxmem=8G \
  -object memory-backend-file,id=mem1,share=on,mem-path=nvdimm.img,size=256M \
  -device nvdimm,id=nvdimm1,memdev=mem1
boot devdax "" -machine pc,nvdimm=on,nvdimm-persistence=cpu -m 2G,slots=2,maxmem=8G \
  -object memory-backend-file,id=mem1,share=on,mem-path=nvdimm.img,size=256M \
  -device nvdimm,id=nvdimm1,memdev=mem1
