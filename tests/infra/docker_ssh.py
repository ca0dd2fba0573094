"""Point the Docker SDK at an SSH host with OUR key, known_hosts and host-key policy.

How docker-py 7.x does SSH (docker/transport/sshconn.py, `SSHHTTPAdapter`): with
`use_ssh_client=False` it builds its own `paramiko.SSHClient` in the constructor, reads only
`~/.ssh/config` (HostName, Port, User, IdentityFile, ProxyCommand) and
`~/.ssh/known_hosts` (`load_system_host_keys()`, `RejectPolicy`), and connects at once. It
takes no key or known_hosts argument. Two clean ways that leave the real ~/.ssh alone:

1. HOME: both paths are `os.path.expanduser("~/.ssh/...")`, so a process (or test) whose HOME
   holds `.ssh/config` (`IdentityFile <key>`) and `.ssh/known_hosts` gets exactly those.
   Fine for tests (monkeypatch HOME); clumsy for a long-running product process.
2. Our own connection (this module): build the client with `use_ssh_client=True`, whose
   adapter makes no connection in its constructor, then mount an `SSHHTTPAdapter` subclass that
   uses a `paramiko.SSHClient` we opened ourselves (e.g. `machines.ssh_connect.connect`, with its
   known_hosts checks, TOFU rule, keepalive) and reconnects through the same function when the
   link dropped. It touches two private attributes of docker-py (`_custom_adapter`,
   `_version`), pinned by the tests in tests/integration/test_infra.py.
"""

from __future__ import annotations

from collections.abc import Callable

import docker
import paramiko
from docker.constants import DEFAULT_MAX_POOL_SIZE, MINIMUM_DOCKER_API_VERSION
from docker.transport import SSHHTTPAdapter


class GivenClientSSHAdapter(SSHHTTPAdapter):
    """docker-py's SSH adapter over a paramiko client made by `connect` (called again to reconnect)."""

    def __init__(
        self,
        connect: Callable[[], paramiko.SSHClient],
        base_url: str,
        timeout: int,
        max_pool_size: int = DEFAULT_MAX_POOL_SIZE,
    ) -> None:
        self._connect_fn = connect
        # shell_out=True: the parent makes no paramiko client of its own
        super().__init__(base_url, timeout, max_pool_size=max_pool_size, shell_out=True)
        self.ssh_client = connect()

    def _connect(self) -> None:
        if self.ssh_client is not None:
            self.ssh_client.close()
        self.ssh_client = self._connect_fn()

    def get_connection(self, url, proxies=None):
        transport = self.ssh_client.get_transport() if self.ssh_client is not None else None
        if transport is None or not transport.is_active():  # the link dropped: start over
            with self.pools.lock:
                self.pools.clear()
            self._connect()
        return super().get_connection(url, proxies)


def docker_client_over_ssh(
    connect: Callable[[], paramiko.SSHClient], label: str = "gpu-host", timeout: int = 120
) -> docker.DockerClient:
    """A DockerClient whose API calls run `docker system dial-stdio` over `connect()`'s SSH link.

    `label` only names the host in docker-py's URLs; the connection comes from `connect`.
    """
    base_url = f"ssh://{label}"
    client = docker.DockerClient(
        base_url=base_url, use_ssh_client=True, timeout=timeout, version=MINIMUM_DOCKER_API_VERSION
    )  # no connection made yet
    api = client.api
    api._custom_adapter.close()
    adapter = GivenClientSSHAdapter(connect, base_url, timeout)
    api._custom_adapter = adapter
    api.mount("http+docker://ssh", adapter)
    api._version = api._retrieve_server_version()
    return client
