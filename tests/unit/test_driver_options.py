"""Options of the built-in drivers: flags, environment variables, defaults."""

from __future__ import annotations

import os

import pytest

from jobqueue_store import cli_verbs
from jobqueue_store.driver import Driver
from jobqueue_store.drivers import build_parser, builtin_driver, is_builtin
from jobqueue_store.drivers import http as http_driver
from jobqueue_store.drivers import shell as shell_driver
from jobqueue_store.drivers.urls import normalise


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SHELL_DRIVER_", "HTTP_DRIVER_", "JOBQUEUE_STORE_")):
            monkeypatch.delenv(name)


def test_builtin_names() -> None:
    assert is_builtin("shell") and is_builtin("http")
    assert not is_builtin("examples/shell_driver.py:driver")


def test_shell_defaults_then_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    options = shell_driver.options_from(build_parser("shell").parse_args([]))
    assert options == shell_driver.ShellOptions()
    assert "echo" in options.allow and "rm" not in options.allow

    monkeypatch.setenv("SHELL_DRIVER_ALLOW", "ls, cat")
    monkeypatch.setenv("SHELL_DRIVER_MAX_TIMEOUT", "5")
    monkeypatch.setenv("SHELL_DRIVER_MAX_OUTPUT", "100")
    monkeypatch.setenv("SHELL_DRIVER_GRACE", "0")
    options = shell_driver.options_from(build_parser("shell").parse_args([]))
    assert options == shell_driver.ShellOptions(frozenset({"ls", "cat"}), 5.0, 100, 0.0)

    args = build_parser("shell").parse_args(
        ["--allow", "echo,sh", "--allow", "/bin/date", "--max-timeout", "2", "--grace", "0.5"]
    )
    options = shell_driver.options_from(args)
    assert options.allow == {"echo", "sh", "/bin/date"}  # the flags replace the variable
    assert (options.max_timeout, options.max_output, options.grace) == (2.0, 100, 0.5)


def test_http_defaults_then_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    options = http_driver.options_from(build_parser("http").parse_args([]))
    assert not options.allow
    assert (options.timeout, options.max_response, options.max_retries) == (30.0, 262144, 3)

    monkeypatch.setenv("HTTP_DRIVER_ALLOW_URL", "http://a.example/x/, https://b.example")
    monkeypatch.setenv("HTTP_DRIVER_TIMEOUT", "7")
    monkeypatch.setenv("HTTP_DRIVER_MAX_RETRIES", "0")
    options = http_driver.options_from(build_parser("http").parse_args([]))
    assert options.allow.allows(normalise("http://a.example/x/y"))
    assert options.allow.allows(normalise("https://b.example/anything"))
    assert (options.timeout, options.max_retries) == (7.0, 0)

    args = build_parser("http").parse_args(
        ["--allow-url", "http://c.example/", "--timeout", "3", "--max-response", "10"]
    )
    options = http_driver.options_from(args)
    assert options.allow.allows(normalise("http://c.example/z"))
    assert not options.allow.allows(normalise("http://a.example/x/y"))  # flags replace the variable
    assert (options.timeout, options.max_response) == (3.0, 10)


def test_the_driver_is_configured_from_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQUEUE_STORE_TOKEN", "tok")
    monkeypatch.setenv("HTTP_DRIVER_CONCURRENCY", "3")
    driver = builtin_driver(
        "http", ["--allow-url", "http://a.example/", "--max-retries", "5", "--retry-backoff", "2"]
    )
    assert (driver.dsid, driver.token, driver.url) == ("http", "tok", "http://127.0.0.1:8080")
    assert (driver.concurrency, driver.max_retries, driver.retry_backoff) == (3, 5, 2.0)
    assert driver.request_schema == http_driver.REQUEST_SCHEMA
    shell = builtin_driver("shell", ["--dsid", "runner", "--concurrency", "2"])
    assert (shell.dsid, shell.concurrency) == ("runner", 2)
    assert shell.request_schema == shell_driver.REQUEST_SCHEMA


@pytest.mark.parametrize(
    ("name", "argv", "message"),
    [
        ("shell", ["--max-timeout", "0"], "must be a number above 0"),
        ("shell", ["--max-output", "lots"], "is not a whole number"),
        ("http", ["--timeout", "nan"], "must be a number above 0"),
        ("http", ["--max-retries", "-1"], "must be at least 0"),
        ("http", ["--concurrency", "0"], "must be at least 1"),
    ],
)
def test_bad_option_values_are_usage_errors(
    name: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser(name).parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_allowed_prefix_is_a_sentence() -> None:
    with pytest.raises(ValueError, match=r"allowed URL prefix: 'a\.example/x' is not an http"):
        builtin_driver("http", ["--allow-url", "a.example/x"])


def test_run_driver_resolves_builtin_names_before_module_attr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ``run-driver --dsid D shell``: options before the name reach the generic path
    monkeypatch.setenv("SHELL_DRIVER_ALLOW", "echo")
    found = cli_verbs.load_driver("shell")
    assert isinstance(found, Driver)
    assert found.request_schema == shell_driver.REQUEST_SCHEMA
    assert isinstance(cli_verbs.load_driver("http"), Driver)
    with pytest.raises(cli_verbs.UsageError, match="is not MODULE:ATTR"):
        cli_verbs.load_driver("ftp")
