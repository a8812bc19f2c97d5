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

* :mod:`.config`: the files and flags (``vmm_ec2rc``, ``im_ec2.conf``,
  ``vmm_ec2.conf``, ``-u/-h/-k/-c``), credentials that never print;
* :mod:`.types`: instance type names and sizes;
* :mod:`.limits`: client-side token buckets matching AWS's throttling;
* :mod:`.errors`: botocore failures translated once into cloudburst's tree;
* :mod:`.client`: one boto3 client per site, its thread pool and retry policy;
* :mod:`.launch`: deployment file -> the ``RunInstances`` request;
* :mod:`.instances`: ``DescribeInstances`` output -> compact views and poll results.

This package imports boto3 only from :mod:`.client`, and only when a driver
is built, so installations without EC2 sites do not need it.
"""
