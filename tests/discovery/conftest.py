# The fixture trees are data, not tests: keep pytest from walking thousands of sysfs
# entries (and their symlinks), which is slow over a 9p share in a guest.
collect_ignore = ["fixtures", "dumps", "capture"]
