"""The KVM/QEMU driver (``one_im_kvm``, ``one_vmm_kvm``), built on libvirt.

A kvm host is any hypervisor libvirt can reach. Which one is a per-host
setting, read from the host's template (set with ``onehost update``):

* ``LIBVIRT_URI``: the libvirt URI; for a host named ``localhost`` by default
  the daemon's ``LIBVIRT_DEFAULT_URI``, else ``qemu:///system`` when the daemon
  runs as root and ``qemu:///session`` otherwise; for other hosts
  ``qemu+ssh://<host name>/system``. Any URI libvirt
  accepts works (``test:///default`` is libvirt's in-memory test hypervisor).
* ``LIBVIRT_DOMAIN_TYPE``: ``kvm`` or ``qemu`` to force the emulation; by
  default ``kvm`` when the host's libvirt offers it (``/dev/kvm`` usable),
  else ``qemu`` (TCG), else whatever the hypervisor offers.
* ``CONSOLE_LOG_DIR``: a directory on the hypervisor host; when set, each
  guest's serial console is also written to ``<dir>/one-<vmid>.log``.
* ``CONTEXT_DIR``: a directory on the host where each VM's context CD-ROM
  (``CONTEXT = [ ... ]``, :mod:`.context_iso`) is written, readable by the
  hypervisor's user; by default the VM's own directory next to its deployment.
* ``CONTEXT_POOL``: a libvirt storage pool of the host into which each VM's
  context CD-ROM is uploaded as a volume instead (``virStorageVolUpload``),
  deleted with the domain; ``default`` when ``LIBVIRT_URI`` names another
  machine (the hypervisor cannot read the daemon's files). A VM migrated to
  another hypervisor needs its volume there at the same path (not copied).
* ``CHECKPOINT_DIR``: a directory on the host, writable by the hypervisor's
  user, where ``onevm stop`` (``one-<vmid>.checkpoint``) and cold migration
  (``one-<vmid>.migrate``) write a guest's memory; a VM resumes or migrates
  only between hosts that see it at the same path (shared storage). By
  default stop uses the VM's directory next to its deployment and cold
  migration ``/var/tmp``.
* ``SHUTDOWN_TIMEOUT``: seconds a guest gets to power off after the ACPI
  request before it is destroyed (default: the driver's
  ``--shutdown-timeout`` argument, else 90).
* ``RESERVED_CPU`` (percent of a core) and ``RESERVED_MEM`` (KB): capacity
  kept back from the scheduler, as in OpenNebula; negative values overcommit.

``libvirt`` (PyPI ``libvirt-python``, extra ``kvm``) is imported on first use,
so the rest of cloudburst, and a daemon whose ``oned.conf`` lists these
drivers, work without it; hosts using them then fail monitoring with a clear
message.

Modules: :mod:`.connection` (URIs, connections, thread pool, error
translation), :mod:`.domain_xml` (template to domain XML), :mod:`.host_caps`
(emulation and architecture from the host's capabilities), :mod:`.states`
(libvirt states to poll states), :mod:`.domains` (bulk domain sampling),
:mod:`.settings` (per-host settings), :mod:`.context_iso` (the context CD-ROM),
:mod:`.snapshots`, :mod:`.devices` (hot-plug), :mod:`.migration`,
:mod:`.information` and :mod:`.vm`.
"""
