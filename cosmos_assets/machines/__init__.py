"""Where a run happens, Dagster-free: this computer (:mod:`.local`) or a host over SSH (:mod:`.ssh_host`).

The interface is :class:`~cosmos_assets.machines.base.Machine`; the job contract is :mod:`.job`. The SSH host is
composed of one module per concept:

- :mod:`.ssh_target`: the SSH target model, resolved against ``~/.ssh/config`` (ProxyJump/ProxyCommand included);
- :mod:`.ssh_connect`: host-key policy and the verified, fast paramiko connection;
- :mod:`.ssh_link`: remote commands and streams over one link, and the one rule for a dropped link;
- :mod:`.sftp_wire`: pipelined SFTP (the only module touching paramiko internals);
- :mod:`.sftp_transfer` and :mod:`.sftp_download` (with :mod:`.sftp_parallel`, :mod:`.remote_hash`): verified, resumable transfers;
- :mod:`.docker`: the ``docker run`` argv and the container lifecycle;
- :mod:`.host_facts`, :mod:`.preflight`: what the host is like, and whether it can run a job.

Nothing is imported here, so using the local machine never loads paramiko.
"""
