#!/bin/sh
# pmemkit guest, stage 2 (PID 1 in the Debian root image, run by dash).
#
# 1. mount the job directory (9p tag pmemkit-job): settings, one file per key in cfg/ (written
#    by pmemkit.vm.runner, never parsed as shell), job.json (the command), and where the
#    command's stdout, stderr and exit status go;
# 2. mount the host share (9p tag pmemkit-share) at the same path as on the host;
# 3. put the pmem namespace in the asked mode (ndctl), partition it, make and mount the
#    filesystems (-o dax in fsdax mode) - keeping what is already there (NVDIMM reboots);
# 4. run the command (or a shell on the serial console), record its status, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM="${TERM:-linux}"
JOB=/run/pmemkit-job
NINEP_OPTS=trans=virtio,version=9p2000.L,msize=262144
# pmemkit.defaults.MIN_FS_MIB["xfs"] and PARTITION_TABLE (tests/vm/test_vm_config.py pins them)
MIN_XFS_MIB=300
PARTITION_TABLE=gpt

log() { echo "pmemkit-guest: $*" >/dev/console; [ -d "$JOB" ] && echo "$*" >>"$JOB/setup.log"; }
finish() {  # finish STATUS: record it and power off (never returns)
    echo "$1" >"$JOB/status.tmp" && mv "$JOB/status.tmp" "$JOB/status"
    sync
    umount -a -r >/dev/null 2>&1
    /run/busybox poweroff -f
    sleep 60
}
fail() { log "setup failed: $*"; finish "setup-failed"; }
cfg() { cat "$JOB/cfg/$1" 2>/dev/null; }

mkdir -p "$JOB"
if ! mount -t 9p -o "$NINEP_OPTS" pmemkit-job "$JOB"; then
    echo "pmemkit-guest: cannot mount the job directory" >/dev/console
    /run/busybox poweroff -f
fi
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
hostname pmemkit-guest 2>/dev/null
ip link set lo up 2>/dev/null
log "up at $(cut -d' ' -f1 /proc/uptime) s"

SHARE=$(cfg share)
if [ -n "$SHARE" ]; then
    mkdir -p "$SHARE" || fail "cannot create mount point $SHARE"
    mount -t 9p -o "$NINEP_OPTS" pmemkit-share "$SHARE" || fail "cannot mount the host share at $SHARE"
fi

# The host's pmemkit package, when the share does not hold it (read-only).
LIB=$(cfg pmemkit_lib)
if [ -n "$LIB" ]; then
    mkdir -p "$LIB/pmemkit" || fail "cannot create $LIB/pmemkit"
    mount -t 9p -o "$NINEP_OPTS,ro" pmemkit-lib "$LIB/pmemkit" || fail "cannot mount pmemkit's package at $LIB"
fi

# `pmemkit` on the PATH runs the host's pmemkit (PYTHONPATH points at it).
printf '#!/bin/sh\nexec python3 -m pmemkit "$@"\n' >/usr/local/bin/pmemkit && chmod 755 /usr/local/bin/pmemkit

MODE=$(cfg mode)
FSLIST=$(cfg fs)
LABELS=$(cfg labels)

# --- the namespace ------------------------------------------------------------
wait_for() {  # wait_for TENTHS MESSAGE COMMAND...: poll COMMAND until it succeeds
    tenths=$1 msg=$2
    shift 2
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -gt "$tenths" ] && fail "$msg"
        sleep 0.1
    done
}
ns_field() {  # ns_field NAME: a field of the first active namespace of $REGION
    ndctl list -N -r "$REGION" | sed -n "s/.*\"$1\":\"*\([a-z0-9.]*\).*/\1/p" | head -n 1
}
if [ "$(cfg cxl)" = 1 ]; then
    # CXL type-3 pmem: the region is made again at every boot (the kernel does not remember
    # it); its namespace then comes back from the labels. `cxl create-region` has exited 0
    # without making a region, so `cxl list -R` is the check.
    wait_for 300 "no CXL memory device mem0 appeared (cxl_pci/cxl_mem not loaded?)" \
        sh -c 'cxl list -M | grep -q "\"memdev\":\"mem0\""'
    cxl create-region -m -d decoder0.0 -t pmem -w 1 mem0 >>"$JOB/setup.log" 2>&1 \
        || fail "cxl create-region -m -d decoder0.0 -t pmem -w 1 mem0"
    cxl list -R 2>/dev/null | grep -q '"region":"region' \
        || fail "cxl create-region made no region (cxl list -R is empty)"
    log "CXL region: $(cxl list -R | tr -d ' \n')"
    wait_for 100 "the CXL region has no nvdimm region" sh -c 'ndctl list -R | grep -q region'
    REGION=$(ndctl list -R | sed -n 's/.*"dev":"\(region[0-9]*\)".*/\1/p' | head -n 1)
    sleep 0.5  # let the namespaces from the labels appear
    current=$(ns_field mode)
    log "$REGION: namespace $(ns_field dev) mode ${current:-none}"
    if [ "$current" != "$MODE" ]; then
        ns=$(ns_field dev)
        [ -n "$ns" ] && { ndctl destroy-namespace -f "$ns" >>"$JOB/setup.log" 2>&1 \
            || fail "ndctl destroy-namespace $ns"; }
        mapopt=""
        [ "$MODE" = fsdax ] && mapopt=--map=mem
        # shellcheck disable=SC2086
        ndctl create-namespace -r "$REGION" --mode="$MODE" $mapopt >>"$JOB/setup.log" 2>&1 \
            || fail "ndctl create-namespace -r $REGION --mode=$MODE"
    fi
    DEV=/dev/$(ns_field blockdev)
    [ "$DEV" = /dev/ ] && fail "the CXL namespace has no block device"
elif [ "$(cfg ramdax)" = 1 ]; then
    # ramdax: the memmap= range is a labelled NVDIMM; its namespaces (in the modes asked for,
    # equal sizes) come back from the labels when the guest's RAM is kept in a file.
    wait_for 100 "ramdax made no nvdimm region (is the ramdax module loaded?)" \
        sh -c 'ndctl list -R | grep -q region'
    REGION=$(ndctl list -R | sed -n 's/.*"dev":"\(region[0-9]*\)".*/\1/p' | head -n 1)
    sleep 0.5  # let the namespaces from the labels appear
    WANT=$(cfg namespaces)
    ns_of() {  # ns_of I FIELD: a field of namespace I of $REGION (ndctl lists them unordered)
        ndctl list -N -n "namespace${REGION#region}.$1" 2>/dev/null \
            | sed -n "s/.*\"$2\":\"\([a-z0-9.]*\)\".*/\1/p" | head -n 1
    }
    have="" i=0
    while [ -n "$(ns_of $i mode)" ]; do have="$have$(ns_of $i mode) "; i=$((i + 1)); done
    log "$REGION (ramdax): namespaces in modes: ${have:-none}; wanted: $WANT"
    if [ "$have" != "$WANT " ]; then
        ndctl disable-region "$REGION" >/dev/null 2>&1
        ndctl init-labels -f all >>"$JOB/setup.log" 2>&1 || fail "ndctl init-labels"
        ndctl enable-region "$REGION" >/dev/null 2>&1
        avail=$(ndctl list -R -r "$REGION" | sed -n 's/.*"available_size":\([0-9]*\).*/\1/p')
        align=16777216
        each=$(( ${avail:-0} / $(echo $WANT | wc -w) / align * align ))
        for mode in $WANT; do
            mapopt=""
            [ "$mode" = fsdax ] && mapopt=--map=mem
            # shellcheck disable=SC2086
            ndctl create-namespace -r "$REGION" --mode="$mode" $mapopt --size="$each" \
                >>"$JOB/setup.log" 2>&1 || fail "ndctl create-namespace -r $REGION --mode=$mode"
        done
    fi
    log "namespaces: $(ndctl list -N -r "$REGION" | sed -n 's/.*"blockdev":"\([a-z0-9.]*\)".*/\1/p' | tr '\n' ' ')"
    DEV=/dev/$(ns_of 0 blockdev)
else
    i=0
    while ! ndctl list -N -n namespace0.0 2>/dev/null | grep -q namespace0.0; do
        i=$((i + 1)); [ $i -gt 100 ] && fail "no pmem namespace appeared (memmap= / NVDIMM missing?)"
        sleep 0.1
    done
    current=$(ndctl list -N -n namespace0.0 | sed -n 's/.*"mode":"\([a-z]*\)".*/\1/p')
    size=$(ndctl list -N -n namespace0.0 | sed -n 's/.*"size":\([0-9]*\).*/\1/p')
    log "namespace0.0: mode ${current:-?}, size ${size:-0}"
    if [ "$current" != "$MODE" ] || [ "${size:-0}" = 0 ]; then
        if [ "$LABELS" = 1 ]; then
            # A labelled NVDIMM: (re)initialise its label area, then make a namespace of the
            # region's whole available size, rounded down to the 16 MiB fsdax alignment.
            ndctl disable-region all >/dev/null 2>&1
            ndctl init-labels -f all >>"$JOB/setup.log" 2>&1 || fail "ndctl init-labels"
            ndctl enable-region all >/dev/null 2>&1
            avail=$(ndctl list -R -r region0 | sed -n 's/.*"available_size":\([0-9]*\).*/\1/p')
            align=16777216
            nsize=$(( ${avail:-0} / align * align ))
            mapopt=""
            [ "$MODE" = fsdax ] && mapopt=--map=mem
            ndctl create-namespace -r region0 --mode="$MODE" $mapopt --size="$nsize" >>"$JOB/setup.log" 2>&1 \
                || fail "ndctl create-namespace --mode=$MODE (labels, size $nsize)"
        elif [ "$MODE" = fsdax ]; then
            ndctl create-namespace -f -e namespace0.0 --mode=fsdax --map=mem >>"$JOB/setup.log" 2>&1 \
                || fail "ndctl create-namespace --mode=fsdax"
        else
            ndctl create-namespace -f -e namespace0.0 --mode="$MODE" >>"$JOB/setup.log" 2>&1 \
                || fail "ndctl create-namespace --mode=$MODE"
        fi
    fi
    DEV=/dev/pmem0
    [ "$MODE" = sector ] && DEV=/dev/pmem0s
fi
i=0
while [ ! -b "$DEV" ]; do
    i=$((i + 1)); [ $i -gt 100 ] && fail "$DEV did not appear"
    sleep 0.1
done
log "$DEV ready ($MODE)"

# --- the data path ----------------------------------------------------------------
# A block of random bytes written and read back with O_DIRECT in the device's last MiB (never
# partitioned) before anything is trusted: an emulated device that drops writes while every
# tool reports success (CXL on QEMU 7.2 with one root port) is caught here.
if [ -n "$FSLIST" ]; then
    probe=$(( $(cat /sys/class/block/$(basename $DEV)/size) / 8 - 256 ))
    head -c 4096 /dev/urandom >/tmp/pmemkit-probe.w
    dd if=/tmp/pmemkit-probe.w of="$DEV" bs=4096 seek=$probe count=1 oflag=direct conv=notrunc status=none \
        2>>"$JOB/setup.log" || fail "cannot write to $DEV"
    dd if="$DEV" of=/tmp/pmemkit-probe.r bs=4096 skip=$probe count=1 iflag=direct status=none \
        2>>"$JOB/setup.log" || fail "cannot read from $DEV"
    cmp -s /tmp/pmemkit-probe.w /tmp/pmemkit-probe.r \
        || fail "data written to $DEV did not read back: the emulated device drops writes"
    rm -f /tmp/pmemkit-probe.w /tmp/pmemkit-probe.r
    log "data path of $DEV verified (4 KiB written and read back with O_DIRECT)"
fi

# --- filesystems ----------------------------------------------------------------
DAX_DIRS=""
if [ -n "$FSLIST" ]; then
    nfs=$(echo $FSLIST | wc -w)
    total_mib=$(( $(cat /sys/class/block/$(basename $DEV)/size) / 2048 ))
    avail=$(( total_mib - 4 ))
    if [ ! -b "${DEV}p1" ]; then
        # Partitions start on 2 MiB boundaries; xfs wants >= MIN_XFS_MIB (mkfs.xfs refuses less).
        script="label: $PARTITION_TABLE"
        start=2
        n=0
        for fs in $FSLIST; do
            n=$((n + 1))
            if [ $n = "$nfs" ]; then
                sz=$(( avail - start + 2 ))
            else
                sz=$(( (avail / nfs) / 2 * 2 ))
                [ "$fs" = xfs ] && [ $sz -lt $MIN_XFS_MIB ] && sz=$MIN_XFS_MIB
                if [ "$fs" != xfs ] && echo " $FSLIST " | grep -q " xfs " \
                        && [ $((avail - sz)) -lt $MIN_XFS_MIB ]; then
                    sz=$(( (avail - MIN_XFS_MIB) / 2 * 2 ))
                fi
            fi
            script="$script
start=$((start * 2048)), size=$((sz * 2048))"
            start=$((start + sz))
        done
        printf '%s\n' "$script" | sfdisk -q "$DEV" >>"$JOB/setup.log" 2>&1 || fail "sfdisk $DEV"
        i=0
        while [ ! -b "${DEV}p$nfs" ]; do
            i=$((i + 1)); [ $i -gt 50 ] && fail "partitions of $DEV did not appear"
            sleep 0.1
        done
    fi
    n=0
    for fs in $FSLIST; do
        n=$((n + 1))
        part="${DEV}p$n"
        mnt=$(cfg "mnt_$fs")
        have=$(blkid -o value -s TYPE "$part" 2>/dev/null)
        if [ "$have" != "$fs" ]; then
            # shellcheck disable=SC2046
            mkfs."$fs" $(cfg "mkfs_$fs") "$part" >>"$JOB/setup.log" 2>&1 || fail "mkfs.$fs $part"
        fi
        mkdir -p "$mnt"
        opts=""
        [ "$MODE" = fsdax ] && opts="-o $(cfg mount_options)"
        # shellcheck disable=SC2086
        mount -t "$fs" $opts "$part" "$mnt" >>"$JOB/setup.log" 2>&1 || fail "mount $opts $part $mnt"
        if [ "$MODE" = fsdax ]; then
            grep -q "^$part $mnt .*dax=always" /proc/mounts || fail "$mnt is not mounted with dax=always"
            DAX_DIRS="${DAX_DIRS:+$DAX_DIRS:}$mnt"
        fi
        log "$fs on $part at $mnt${opts:+ ($opts)}"
    done
fi
export PMEMKIT_DAX_DIRS="$DAX_DIRS"
echo "$DAX_DIRS" >"$JOB/dax_dirs"
log "ready at $(cut -d' ' -f1 /proc/uptime) s"

# --- the command ------------------------------------------------------------------
if [ "$(cfg action)" = shell ]; then
    cd "${SHARE:-/root}" 2>/dev/null || cd /
    echo "pmemkit guest shell: pmem is $DEV, DAX mounts: ${DAX_DIRS:-none}. Exit the shell to stop the VM." >/dev/ttyS0
    PS1='pmemkit-guest:\w# ' setsid -c -w /bin/bash -i </dev/ttyS0 >/dev/ttyS0 2>&1
    finish "$?"
fi
python3 -I -S /run/pmemkit-launch.py "$JOB" >"$JOB/stdout" 2>"$JOB/stderr" </dev/null
finish "$?"
