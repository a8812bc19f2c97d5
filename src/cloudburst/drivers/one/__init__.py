"""Partner-cloud drivers (``one_im_one``, ``one_vmm_one``): burst into another OpenNebula.

A partner cloud is any server speaking OpenNebula's XML-RPC API: another
cloudburst daemon or a real OpenNebula ``oned``. It is incarnated as one host
of our pool, driven by these two drivers::

    IM_MAD = [ name = "im_one",  executable = "one_im_one",
               arguments = "one/partnerrc" ]
    VM_MAD = [ name = "vmm_one", executable = "one_vmm_one",
               arguments = "-t 15 -r 3 one/partnerrc", type = "xml" ]

    $ onehost create partner im_one vmm_one tm_dummy dummy

The last word of ``ARGUMENTS`` names the partner's **rc file** (relative to
``$CLOUDBURST_HOME/etc``; default ``one/partnerrc``), which must be mode 0600
(see :mod:`cloudburst.drivers.one.config`)::

    ONE_XMLRPC=http://partner.example.org:2633/RPC2
    ONE_AUTH=burst:secret          # or the path of a file holding user:password
    TOTALCPU=800                   # optional quota: at most 8 cores ...
    TOTALMEMORY=16777216           # ... and 16 GiB (KB) on the partner

Credentials live only in that file: they are never copied into host or VM
templates, logs, error messages or deployment files. Several partners are
several driver pairs, each with its own rc file, each incarnated as a host.

VMs choose the partner with ``PUBLIC_CLOUD = [ TYPE = "one", ... ]``; see
:mod:`cloudburst.drivers.one.vm` for how the VM driver deploys, polls and
sweeps. Modules:

* :mod:`.config`: the rc file; :mod:`.client`: XML-RPC calls and their
  errors; :mod:`.documents`: pool documents and the tags of our partner VMs;
  :mod:`.pool`: pool listings shared by everyone waiting;
* the VM driver's parts: :mod:`.sections` (the section's keys and the create
  call), :mod:`.attempts` (never two partner VMs for one deploy),
  :mod:`.waits` (until running, until gone), :mod:`.partner_vms` (deploy ids,
  what remote states mean, what a poll shows);
* :mod:`.information`: the partner's capacity.
"""
