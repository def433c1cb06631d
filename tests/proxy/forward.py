"""Forward each line of stdin as one UDP datagram to 127.0.0.1:PORT: Apache's piped logger.

``python tests/proxy/forward.py PORT``, run by Apache for ``ErrorLog "|..."`` and
``CustomLog "|..."``, so that its log lines reach the test's :class:`tests.proxy.front.LogFeed`
as they are written. Ends when Apache closes the pipe.
"""

from __future__ import annotations

import socket
import sys


def main(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        for line in sys.stdin.buffer:
            out.sendto(line.rstrip(b"\n"), ("127.0.0.1", port))


if __name__ == "__main__":
    main(int(sys.argv[1]))
