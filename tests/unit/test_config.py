"""The options: one list, checked once, with a message that names what is wrong."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI

from fastapi_abort import RequestAbortedMiddleware, install
from fastapi_abort._config import UNKNOWN_OPTION, Config


def names() -> str:
    return "status_code, log_level, message, watcher_delay, deadline, on_abort, max_budget"


def test_install_refuses_an_unknown_option_and_lists_the_options() -> None:
    message = UNKNOWN_OPTION.format(what="install()", name="status", names=names())
    with pytest.raises(TypeError, match=re.escape(message)):
        install(FastAPI(), status=499)  # type: ignore[call-arg]


def test_the_middleware_refuses_an_unknown_option_too() -> None:
    message = UNKNOWN_OPTION.format(what="RequestAbortedMiddleware()", name="delay", names=names())
    with pytest.raises(TypeError, match=re.escape(message)):
        RequestAbortedMiddleware(FastAPI(), delay=1)  # type: ignore[call-arg]


def test_the_defaults_are_the_configs_and_a_level_name_becomes_its_number() -> None:
    config = Config.of("install()", {"log_level": "DEBUG", "watcher_delay": 0})
    assert config == Config(log_level=10, watcher_delay=0.0)
    assert config.level == 10
    assert isinstance(config.watcher_delay, float)
    assert Config.of("install()", {}) == Config()
