"""Helpers for the reverse-proxy tests: runners for nginx, HAProxy, Apache httpd, Caddy and Varnish
(each on its own config, on 127.0.0.1), the app they proxy to, the expected table and its page."""
