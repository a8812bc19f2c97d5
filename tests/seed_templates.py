"""The seeds' texts, word for word, for the tests that use them.

Seed 000 is "Amazon EC2 Driver 3.0" (a VM template with an ``EC2`` section,
``im_ec2.conf``, ``vmm_ec2.conf`` and the ``oned.conf`` lines that register the
drivers); seed 003 is "Cloud Bursting Driver" (a ``PUBLIC_CLOUD`` VM template
and the ``one_im_sh`` / ``one_vmm_sh`` sections of a script provider).

Tests that need a variant (other limits, no elastic IP, a real endpoint) keep
it next to themselves, so that a change here changes only tests that mean
"the seed as written".
"""

from __future__ import annotations

# -- seed 000: "Amazon EC2 Driver 3.0" --------------------------------------------------------

#: The worked example VM template, as written (``REQUIREMENTS`` stays commented out).
SEED_EC2_TEMPLATE = """\
CPU      = 0.5
MEMORY   = 128

#Xen or KVM template machine, this will be use when submitting this VM to local resources

OS       = [kernel="/vmlinuz",initrd= "/initrd.img",root="sda1" ]
DISK     = [source="/imges/apache.img",target="sda",readonly="no"]
NIC      = [bridge="eth0"]

#EC2 template machine, this will be use wen submitting this VM to EC2

EC2 = [ AMI="ami-00bafcb5",
        KEYPAIR="gsg-keypair",
        ELASTICIP="75.101.155.97",
        AUTHORIZED_PORTS="22",
        INSTANCETYPE=m1.small]

#Add this if you want to use only EC2 cloud
#REQUIREMENTS = 'NAME = "ec2"'
"""

#: ``/etc/one/im_ec2/im_ec2.conf``: how many instances of each type EC2 may run.
SEED_IM_EC2_CONF = """\
# Max number of instances that can be launched into EC2
SMALL_INSTANCES=5
LARGE_INSTANCES=
EXTRALARGE_INSTANCES=
"""

#: ``/etc/one/vmm_ec2/vmm_ec2.conf`` as shipped: XML after a comment holding an example.
SEED_VMM_EC2_CONF = """\
<!--
 Default configuration attributes for the EC2 driver
 (all domains will use these values as defaults)
 Valid atributes are:
   - ec2[keypair,authorizedports,instancetype]
 Use XML syntax to specify defaults, note elements are UPCASE
 Example:
 <TEMPLATE>
   <EC2>
     <KEYPAIR>gsg-keypair</KEYPAIR>
     <AUTHORIZEDPORTS>22</AUTHORIZEDPORTS>
     <INSTANCETYPE>m1.small</INSTANCETYPE>
   </EC2>
 </TEMPLATE>
-->

<TEMPLATE>
  <EC2>
    <INSTANCETYPE>m1.small</INSTANCETYPE>
  </EC2>
</TEMPLATE>
"""

#: The ``IM_MAD`` section the seed adds to ``oned.conf``, indented as in the seed.
SEED_ONED_CONF_EC2_IM_MAD = """\
  IM_MAD = [
      name       = "im_ec2",
      executable = "one_im_ec2",
      arguments  = "im_ec2/im_ec2.conf",
      default    = "im_ec2/im_ec2.conf" ]
"""

#: All the lines the seed adds to ``oned.conf`` (the ``VM_MAD`` line ends in a blank).
SEED_ONED_CONF_EC2 = SEED_ONED_CONF_EC2_IM_MAD + """
  VM_MAD = [\x20
      name       = "vmm_ec2",
      executable = "one_vmm_ec2",
      arguments  = "<ec2_configuration_options> vmm_ec2/vmm_ec2.conf",
      type       = "xml" ]
"""

#: The seed's ``IM_MAD`` section, unindented, as the end-to-end daemons get it.
EC2_IM_MAD = """
IM_MAD = [
    name       = "im_ec2",
    executable = "one_im_ec2",
    arguments  = "im_ec2/im_ec2.conf",
    default    = "im_ec2/im_ec2.conf" ]
"""


def ec2_vm_mad(name: str, url: str, flags: str = "") -> str:
    """The seed's ``VM_MAD`` section, unindented, named ``name`` and sent to ``url``.

    ``flags`` go before ``-u`` (e.g. ``"-t 5 "``, with its trailing blank).
    """
    return f"""
VM_MAD = [
    name       = "{name}",
    executable = "one_vmm_ec2",
    arguments  = "{flags}-u {url} vmm_ec2/vmm_ec2.conf",
    type       = "xml" ]
"""


# -- seed 003: "Cloud Bursting Driver" --------------------------------------------------------

#: The VM template, as written: no comma after ``TYPE=provider_name``.
SEED_PROVIDER_TEMPLATE = """\
CPU=1
MEMORY=256
PUBLIC_CLOUD=[

  TYPE=provider_name
  PROVIDER_IMAGE_ID=id-141234,
  PROVIDER_INSTANCE_TYPE=small_256mb

]
"""

#: The same VM template on one line, commas in place.
PROVIDER_VM = ("CPU=1 MEMORY=256 PUBLIC_CLOUD=[TYPE=provider_name, "
               "PROVIDER_IMAGE_ID=id-141234, PROVIDER_INSTANCE_TYPE=small_256mb]")

#: The information driver section the seed adds to ``oned.conf``.
SEED_PROVIDER_IM_MAD = """\
IM_MAD = [
      name       = "im_provider",
      executable = "one_im_sh",
      arguments  = "-t 1 -r 0 provider_name" ]
"""

#: The VM driver section the seed adds to ``oned.conf``.
SEED_PROVIDER_VM_MAD = """\
VM_MAD = [
    name       = "vmm_provider",
    executable = "one_vmm_sh",
    arguments  = "-t 15 -r 0 provider_name",
    type       = "xml" ]
"""


#: ``onehost list`` as the cloud-bursting guide prints it.
SEED_ONEHOST_LIST = """\
ID NAME            CLUSTER   RVM      ALLOCATED_CPU      ALLOCATED_MEM STAT
 2 kvm-            -           0       0 / 800 (0%)      0K / 16G (0%) on
 3 kvm-1           -           0       0 / 100 (0%)     0K / 1.8G (0%) on
 4 remote_provider -           0       0 / 500 (0%)     0K / 8.5G (0%) on
"""
