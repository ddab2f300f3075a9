"""Ports for the workers of one `keras-dp launch` attempt."""

from __future__ import annotations

from typing import List, Optional

from keras_dp.errors import ConfigError


def pick_ports(count: int, *, host: str = "127.0.0.1", port_base: Optional[int] = None,
               attempt: int = 0) -> List[int]:
    """Ports for `count` workers: free ones from portpicker, or `port_base` onwards.

    With `port_base`, attempt `k` uses the `count` ports after attempt `k - 1`'s (a
    restarted TensorFlow server cannot always rebind at once); each must be free.
    """
    import portpicker

    if port_base is None:
        free = set()
        while len(free) < count:
            free.add(portpicker.pick_unused_port())
        return list(free)
    first = port_base + attempt * count
    ports = list(range(first, first + count))
    if ports[-1] > 65535:
        raise ConfigError(f"{count} workers from port {first} would pass port 65535",
                          variable="--port-base", received=port_base,
                          fix="choose a lower --port-base")
    for port in ports:
        if not portpicker.is_port_free(port):
            raise ConfigError(f"port {port} on {host} is in use", variable="--port-base",
                              received=port_base, fix="choose another --port-base, or leave "
                                                      "it out to use free ports")
    return ports
