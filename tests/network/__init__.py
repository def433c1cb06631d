"""A client whose network vanished: TCP keepalive and TCP_USER_TIMEOUT in network namespaces."""
