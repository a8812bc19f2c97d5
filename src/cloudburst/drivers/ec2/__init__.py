"""The built-in EC2 driver: Amazon EC2 and EC2-compatible clouds through boto3.

``one_im_ec2`` (:mod:`.information`) reports a site's capacity from
``im_ec2.conf``; ``one_vmm_ec2`` (:mod:`.vm`) runs VMs there. Both are wired
as in the seed "Amazon EC2 Driver 3.0"::

    IM_MAD = [ name = "im_ec2", executable = "one_im_ec2",
               arguments = "im_ec2/im_ec2.conf" ]
    VM_MAD = [ name = "vmm_ec2", executable = "one_vmm_ec2",
               arguments = "-u https://eu-west-1.ec2.amazonaws.com vmm_ec2/vmm_ec2.conf",
               type = "xml" ]

Modules, each small and typed:

* files and flags: :mod:`.arguments` (``-u/-h/-k/-c`` and the defaults
  file), :mod:`.env_file` (``KEY=VALUE`` files), :mod:`.credentials` (keys
  that never print), :mod:`.config` (a site's resolved settings, from
  ``vmm_ec2rc``), :mod:`.defaults_file` (``vmm_ec2.conf``), :mod:`.im_config`
  (``im_ec2.conf``);
* :mod:`.types`: instance type names and sizes;
* :mod:`.limits`: client-side token buckets matching AWS's throttling;
* :mod:`.errors`: botocore failures translated once into cloudburst's tree;
* :mod:`.client`: one boto3 client per site, its thread pool and retry policy;
* :mod:`.launch`: deployment file -> the ``RunInstances`` request;
* :mod:`.instances`: our tags; ``DescribeInstances`` output -> compact views
  and poll results;
* the VM driver's parts: :mod:`.run_instances` (launch and find by token),
  :mod:`.security_groups`, :mod:`.elastic_ips`, :mod:`.listing` (the instance
  listing polls and sweeps share), :mod:`.sweep` (orphans).

This package imports boto3 only from :mod:`.client`, and only when a driver
is built, so installations without EC2 sites do not need it.
"""
