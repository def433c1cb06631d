"""The expected "Behind a proxy" table: what each proxy configuration does with each row.

``tests/test_proxies.py`` asserts every observed cell against this, and that the committed
``docs/servers.md`` says the same. A cell that does not trip says why (the proxy's source or
documentation) and the setting that makes it trip, or why none can.
"""

from __future__ import annotations

from tests.matrix.expected import COMPLETE, H2_ONLY, TRIPS, Expected
from tests.proxy.fronts import COLUMNS

SCENARIOS = (
    "close_before_response",
    "rst",
    "leave_mid_stream",
    "upload_then_leave",
    "keepalive_complete",
    "proxy_timeout",
    "rst_stream",
)

HAPROXY_WAITS = Expected(
    "limitation",
    "Without `option abortonclose`, HAProxy stops reading the client once the request is "
    "forwarded, so it sees neither the client's FIN nor its RST, and waits for the response "
    "(`src/http_ana.c`: only with the backend's `PR_O_ABRT_CLOSE`, \"immediately abort request "
    'when client closes" in `include/haproxy/proxy-t.h`, does it "monitor the client\'s '
    'connection and forward any shutdown notification to the server"; the configuration '
    "manual, section 4, `option abortonclose`, off by default). The access line shows the "
    "abort only once the response came (`term=CD`). `option http-server-close` changes "
    "nothing here.",
    "`option abortonclose` in the defaults or the backend: the client's FIN or RST then "
    "closes the upstream connection (the abortonclose columns, `http-reuse always` too).",
)
APACHE_WAITS = Expected(
    "limitation",
    "mod_proxy_http does not watch the client connection while it waits for the backend's "
    "response: it blocks reading the backend (`modules/proxy/mod_proxy_http.c`, "
    "`ap_proxy_http_process_response`), and a gone client is only noticed when a write to it "
    "fails (`c->aborted`), i.e. once the response starts. No directive changes that: not "
    "`keepalive=On`, not `flushpackets=on` (both measured). The access line shows `%X` = "
    "`X` (aborted).",
    "None in Apache: put the app behind nginx, Caddy (default `flush_interval`) or HAProxy "
    "with `option abortonclose`, or make the endpoint stream early (a stream's next write "
    "fails and Apache closes the backend: the mid-stream row).",
)
CADDY_IGNORES = Expected(
    "limitation",
    "With `flush_interval -1`, Caddy's reverse proxy deliberately detaches the upstream "
    "request from the client's context, so a client that leaves does not cancel it "
    '(`modules/caddyhttp/reverseproxy/reverseproxy.go`, `Handler.reverseProxy`: "if '
    "FlushInterval is explicitly configured to -1 ... don't let the transport cancel the "
    "request if the client disconnects\", Caddy issue 4922; 2.6.2's `ignoreClientGoneContext`).",
    "Leave `flush_interval` at its default: Caddy flushes `text/event-stream` responses at "
    "once anyway, and a client that leaves then cancels the upstream request (caddy-default).",
)

VARNISH_FETCHES = Expected(
    "limitation",
    "In `pass` mode Varnish fetches the response for the client and does not watch the "
    "client's connection while it waits for the backend (the request's state machine, "
    "`bin/varnishd/cache/cache_req_fsm.c`, waits in the fetch step; the client is next "
    "touched when the response is delivered), so the backend connection stays open until the "
    "response comes or `first_byte_timeout` strikes; no VCL or parameter aborts a fetch "
    "because its client left.",
    "`return (pipe)` for the routes with long work (varnish-pipe): a piped request is a byte "
    "tunnel, and the client's FIN or RST closes the backend connection at once; but a pipe "
    "is one request per connection and nothing is cached. Otherwise, stream early: a "
    "stream's next write fails and Varnish closes the backend (the mid-stream row).",
)

_DEFAULTS: dict[str, Expected] = {
    **dict.fromkeys(SCENARIOS, TRIPS),
    "keepalive_complete": COMPLETE,
    "rst_stream": H2_ONLY,
}
#: An HTTP/2 column: every row applies, and a reset stream trips its own token only.
_HTTP2 = {"rst_stream": TRIPS}
_HAPROXY = {"close_before_response": HAPROXY_WAITS, "rst": HAPROXY_WAITS}
_HAPROXY |= {"upload_then_leave": HAPROXY_WAITS}
_APACHE = dict.fromkeys(("close_before_response", "rst", "upload_then_leave"), APACHE_WAITS)
_CADDY_FLUSH = dict.fromkeys(("close_before_response", "rst", "upload_then_leave"), CADDY_IGNORES)
_VARNISH_PASS = dict.fromkeys(
    ("close_before_response", "rst", "upload_then_leave"), VARNISH_FETCHES
)
_OVERRIDES: dict[str, dict[str, Expected]] = {
    "haproxy-default": _HAPROXY,
    "haproxy-server-close": _HAPROXY,
    "apache-default": _APACHE,
    "apache-keepalive-flushpackets": _APACHE,
    "caddy-flush": _CADDY_FLUSH,
    "varnish-pass": _VARNISH_PASS,
}

EXPECTED: dict[str, dict[str, Expected]] = {
    column.name: {
        **_DEFAULTS,
        **(_HTTP2 if column.http2 else {}),
        **_OVERRIDES.get(column.name, {}),
    }
    for column in COLUMNS
}


def measured(column: str) -> list[str]:
    """The rows measured in ``column`` (all but its ``n/a`` cells), in row order."""
    return [scenario for scenario in SCENARIOS if EXPECTED[column][scenario].outcome != "n/a"]
