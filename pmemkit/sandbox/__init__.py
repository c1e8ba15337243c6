"""The developer sandbox: a bootable Debian disk image with GRUB, ``memmap=`` on its kernel command
line and SSH, for testing the Ansible role and the Vagrantfile (see ``docs/sandbox.md``).

* :mod:`pmemkit.sandbox.disk` - builds the disk image and boots it with QEMU.
* :mod:`pmemkit.sandbox.ssh` - SSH to a booted image (keys, waiting, commands).

It uses :mod:`pmemkit.vm`'s QEMU launcher and cache; :mod:`pmemkit.vm` does not use it.
"""
