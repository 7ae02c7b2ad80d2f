"""Gunicorn's logging settings keep their meaning under ``-k pounce_worker.ThreadWorker``.

Every test runs a real gunicorn master. The access-log atoms are checked twice:
against the values a known request must produce, and against what Gunicorn's
own sync worker logs for the same bytes (``tests.apps:settings_wsgi`` answers
exactly what ``tests.apps:settings_probe`` answers), so "same meaning" is
measured, not assumed.
"""

from __future__ import annotations

import base64
import datetime
import re
import socket
import time

import pytest

from tests.harness import (
    HOST,
    build_request,
    config_file,
    exchange,
    poll_until,
    reference,
    running,
    subject,
)

PROBE = "tests.apps:settings_probe"
WSGI = "tests.apps:settings_wsgi"

#: Every atom Gunicorn documents for ``access_log_format``, plus request/response/environ lookups.
ATOMS = [
    "h", "l", "u", "t", "r", "m", "U", "q", "H", "s", "B", "b", "f", "a", "T", "M", "D", "L", "p",
    "{x-trace}i", "{user-agent}i", "{x-resp}o", "{content-type}o",
    "{remote_port}e", "{server_protocol}e", "{http_x_trace}e", "{path_info}e", "{raw_uri}e",
    "{request_method}e", "{query_string}e", "{remote_addr}e", "{wsgi.url_scheme}e",
]
ACCESS_FORMAT = "\t".join(f"{atom}=%({atom})s" for atom in ATOMS)
#: Atoms whose value cannot depend on the server: the sync worker must log the same.
SAME_AS_GUNICORN = [a for a in ATOMS if a not in ("t", "T", "M", "D", "L", "p", "{remote_port}e")]

USER_AGENT = "probe-agent/1.0"
REFERER = "http://referer.example/page"
AUTH = "Basic " + base64.b64encode(b"alice:secret").decode()
TARGET = "/probe%20x/fixed?sleep=0.2&b=two"


def _probe_request(method: str = "GET") -> bytes:
    return build_request(TARGET, [
        ("User-Agent", USER_AGENT), ("Referer", REFERER), ("Authorization", AUTH), ("X-Trace", "trace-123"),
    ], method=method)


def _access_lines(path, count: int) -> list[dict[str, str]]:
    poll_until(lambda: path.exists() and len(path.read_text().splitlines()) >= count, 10,
               what=f"{count} access-log lines in {path}")
    lines = path.read_text().splitlines()
    out = []
    for line in lines:
        fields = dict(item.split("=", 1) for item in line.split("\t"))
        out.append(fields)
    return out


def _access_server(factory, app: str, **kwargs):
    server = factory(app, **kwargs)
    server.args += ["--access-logfile", str(server.tmp / "access.log"), "--access-logformat", ACCESS_FORMAT]
    return server


def test_access_log_atoms_match_gunicorn(mode):
    ours = _access_server(subject, PROBE, mode=mode)
    theirs = _access_server(reference, WSGI)
    with running(ours, theirs):
        results = {}
        for name, server in (("ours", ours), ("theirs", theirs)):
            before = time.time()
            status, headers, body, port_get = exchange(server.port, _probe_request())
            assert (status, body, headers.get("x-resp")) == (200, b"0123456789", "probe-value"), server.output()
            status, _, body, port_head = exchange(server.port, _probe_request("HEAD"))
            assert (status, body) == (200, b"")
            after = time.time()
            lines = _access_lines(server.tmp / "access.log", 2)
            results[name] = (lines, (port_get, port_head), (before, after), server.worker_pids())

    lines, ports, (before, after), pids = results["ours"]
    get, head = lines[0], lines[1]
    expected = {
        "h": "127.0.0.1", "l": "-", "u": "alice", "m": "GET",
        "r": f"GET {TARGET} HTTP/1.1", "U": "/probe x/fixed", "q": "sleep=0.2&b=two", "H": "HTTP/1.1",
        "s": "200", "B": "10", "b": "10", "f": REFERER, "a": USER_AGENT,
        "{x-trace}i": "trace-123", "{user-agent}i": USER_AGENT,
        "{x-resp}o": "probe-value", "{content-type}o": "text/plain",
        "{server_protocol}e": "HTTP/1.1", "{http_x_trace}e": "trace-123", "{path_info}e": "/probe x/fixed",
        "{raw_uri}e": TARGET, "{request_method}e": "GET", "{query_string}e": "sleep=0.2&b=two",
        "{remote_addr}e": "127.0.0.1", "{wsgi.url_scheme}e": "http",
        "{remote_port}e": str(ports[0]), "p": f"<{pids[0]}>",
    }
    assert {k: get[k] for k in expected} == expected
    # The duration atoms all measure the same request, which slept 0.2 s in the app. A loop's
    # timer may fire a little early by time.monotonic (uvloop counts in whole milliseconds
    # from a clock read at the start of its iteration): 199,983 µs was seen once.
    micros = int(get["D"])
    assert 195_000 <= micros < 5_000_000
    assert int(get["M"]) == micros // 1000
    assert get["T"] == str(micros // 1_000_000)
    assert get["L"] == f"{micros // 1_000_000}.{micros % 1_000_000:06d}"
    logged = datetime.datetime.strptime(get["t"], "[%d/%b/%Y:%H:%M:%S %z]").timestamp()
    assert before - 1 <= logged <= after + 1
    # HEAD: no body went out, so B and b are 0, as Gunicorn logs them.
    assert (head["m"], head["B"], head["b"], head["{remote_port}e"]) == ("HEAD", "0", "0", str(ports[1]))

    their_lines = results["theirs"][0]
    for ours_line, their_line in zip(lines, their_lines, strict=True):
        assert {a: ours_line[a] for a in SAME_AS_GUNICORN} == {a: their_line[a] for a in SAME_AS_GUNICORN}


def test_no_access_log_without_accesslog(tmp_path):
    """accesslog unset: nothing is written anywhere for a request (Gunicorn's default)."""
    server = subject(PROBE)
    with running(server):
        assert exchange(server.port, build_request("/fixed"))[0] == 200
        time.sleep(0.3)
    assert '"GET /fixed HTTP/1.1" 200' not in server.output()


def test_errorlog_file_and_loglevel():
    """errorlog names the file errors go to; loglevel filters them (error hides info and warning)."""
    quiet = subject(PROBE, loops_expected=False)
    quiet.args += ["--log-level", "error"]
    loud = subject(PROBE)  # the harness runs at --log-level debug
    with running(quiet, loud):
        for server in (quiet, loud):
            assert exchange(server.port, build_request("/crash"))[0] == 500
            status = exchange(server.port, b"NOT HTTP AT ALL\r\n\r\n")[0]
            assert status == 400
            server.wait_for_log(r"settings_probe crash on purpose")
        time.sleep(0.3)
        quiet_log, loud_log = quiet.log(), loud.log()
    # error level: the app's traceback is there, info ("Booting worker") and warnings are not.
    assert "Exception in ASGI application" in quiet_log
    assert "Booting worker" not in quiet_log and "pounce_worker:" not in quiet_log
    assert "Invalid request from ip=" not in quiet_log
    # debug level: all of them, with the loop that logged the error named.
    assert "Booting worker" in loud_log and "Invalid request from ip=127.0.0.1" in loud_log
    assert re.search(r"\[worker \d+ loop \d+\] Exception in ASGI application", loud_log)


def test_errorlog_dash_is_stderr():
    """errorlog '-' sends the error log to stderr, as in Gunicorn."""
    server = subject(PROBE, loops_expected=False)
    server.args += ["--error-logfile", "-"]
    with running(server):
        assert exchange(server.port, build_request("/crash"))[0] == 500
        out = server.tmp / "stdout.log"
        poll_until(lambda: "settings_probe crash on purpose" in out.read_text(), 10, what="traceback on stderr")
    assert not server.errorlog.exists() or "crash on purpose" not in server.log()


def test_capture_output_sends_print_to_errorlog():
    captured = subject(PROBE)
    captured.args += ["--capture-output"]
    plain = subject(PROBE)
    with running(captured, plain):
        assert exchange(captured.port, build_request("/print?marker=CAPTURED-42"))[0] == 200
        assert exchange(plain.port, build_request("/print?marker=UNCAPTURED-43"))[0] == 200
        captured.wait_for_log(r"CAPTURED-42 on stdout")
        captured.wait_for_log(r"CAPTURED-42 on stderr")
        out = plain.tmp / "stdout.log"
        poll_until(lambda: "UNCAPTURED-43 on stderr" in out.read_text(), 10, what="print on the terminal")
    assert "UNCAPTURED-43" not in plain.log()


LOGGER_CLASS_CONF = '''
import json, os
from gunicorn.glogging import Logger

class RecordingLogger(Logger):
    """Records each access() call (what the worker hands it) and tags error lines."""

    def access(self, resp, req, environ, request_time):
        with open(os.environ["POUNCE_TEST_ACCESS_RECORD"], "a") as fh:
            fh.write(json.dumps({
                "status": str(resp.status), "sent": resp.sent, "method": req.method, "path": req.path,
                "remote": environ["REMOTE_ADDR"], "seconds": request_time.total_seconds(),
            }) + "\\n")

    def error(self, msg, *args, **kwargs):
        super().error("RECORDED-ERROR " + str(msg), *args, **kwargs)

    def exception(self, msg, *args, **kwargs):
        super().exception("RECORDED-EXCEPTION " + str(msg), *args, **kwargs)

logger_class = RecordingLogger
'''


def test_logger_class_gets_every_request_and_error():
    """logger_class: the worker logs through the configured class, access calls included
    (no accesslog is set: a custom class decides itself what to do with them)."""
    import json

    server = subject(PROBE)
    record = server.tmp / "access.jsonl"
    server.extra_env["POUNCE_TEST_ACCESS_RECORD"] = str(record)
    server.args += ["-c", str(config_file(server, LOGGER_CLASS_CONF))]
    with running(server):
        assert exchange(server.port, build_request("/fixed?sleep=0.1"))[0] == 200
        assert exchange(server.port, build_request("/crash"))[0] == 500
        poll_until(lambda: record.exists() and len(record.read_text().splitlines()) >= 2, 10, what="access records")
        server.wait_for_log(r"RECORDED-EXCEPTION .*Exception in ASGI application")
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(c["method"], c["path"], c["status"], c["sent"], c["remote"]) for c in calls] == [
        ("GET", "/fixed", "200", 10, "127.0.0.1"),
        ("GET", "/crash", "500", 21, "127.0.0.1"),
    ]
    assert calls[0]["seconds"] >= 0.095  # slept 0.1 s; a loop's timer may fire a little early (above)


LOGCONFIG_DICT_CONF = '''
import os
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"tagged": {"format": "DICTCONFIG %(levelname)s %(message)s"}},
    "handlers": {
        "err": {"class": "logging.FileHandler", "filename": os.environ["POUNCE_TEST_ERR"], "formatter": "tagged"},
        "acc": {"class": "logging.FileHandler", "filename": os.environ["POUNCE_TEST_ACC"], "formatter": "tagged"},
    },
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["err"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["acc"], "propagate": False},
    },
}
'''


def test_logconfig_dict_routes_error_and_access_logs():
    server = subject(PROBE, loops_expected=False)
    err, acc = server.tmp / "dict-error.log", server.tmp / "dict-access.log"
    server.extra_env.update(POUNCE_TEST_ERR=str(err), POUNCE_TEST_ACC=str(acc))
    server.args += ["-c", str(config_file(server, LOGCONFIG_DICT_CONF))]
    with running(server):
        assert exchange(server.port, build_request("/fixed"))[0] == 200
        assert exchange(server.port, build_request("/crash"))[0] == 500
        poll_until(lambda: acc.exists() and acc.read_text().count("DICTCONFIG INFO") >= 2, 10, what="access lines")
        poll_until(lambda: err.exists() and "settings_probe crash on purpose" in err.read_text(), 10,
                   what="traceback in the dict-configured error log")
    access = acc.read_text()
    assert '"GET /fixed HTTP/1.1" 200 10' in access and '"GET /crash HTTP/1.1" 500' in access
    error = err.read_text()
    assert "DICTCONFIG INFO" in error and "pounce_worker:" in error
    assert "DICTCONFIG ERROR" in error and "Exception in ASGI application" in error
    assert "GET /fixed" not in error


def _udp_listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(0.2)
    return sock


def _drain_udp(sock: socket.socket, until, timeout: float = 10.0) -> list[str]:
    """Datagrams received until ``until(list)`` holds or ``timeout`` passes."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(got):
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        got.extend(data.decode("utf-8", "replace").splitlines())
    return got


@pytest.mark.parametrize("redirect", [True, False], ids=["access-to-syslog", "disable-redirect"])
def test_syslog_and_disable_redirect_access_to_syslog(redirect):
    """syslog gets the error log, and the access log unless disable_redirect_access_to_syslog."""
    with _udp_listener() as udp:
        server = subject(PROBE)
        server.args += ["--log-syslog", "--log-syslog-to", f"udp://{HOST}:{udp.getsockname()[1]}",
                        "--log-syslog-prefix", "pouncetest"]
        if not redirect:
            server.args += ["--disable-redirect-access-to-syslog"]
        with running(server):
            assert exchange(server.port, build_request("/fixed"))[0] == 200
            assert exchange(server.port, build_request("/crash"))[0] == 500
            got = _drain_udp(udp, lambda lines: any("crash on purpose" in line for line in lines))
            time.sleep(0.3)
            got += _drain_udp(udp, lambda lines: False, timeout=0.5)
    text = "\n".join(got)
    assert "gunicorn.pouncetest.error" in text and "Exception in ASGI application" in text
    assert ('"GET /fixed HTTP/1.1" 200' in text) is redirect, text


def test_statsd_metrics(mode):
    with _udp_listener() as udp:
        server = subject(PROBE, mode=mode)
        server.args += ["--statsd-host", f"{HOST}:{udp.getsockname()[1]}", "--statsd-prefix", "pfx"]
        with running(server):
            for _ in range(3):
                assert exchange(server.port, build_request("/fixed"))[0] == 200
            assert exchange(server.port, build_request("/missing-route-crash/crash"))[0] == 500

            def enough(lines):
                # status.500 is the last metric the last request sends.
                return ("pfx.gunicorn.request.status.500:1|c|@1.0" in lines
                        and "pfx.gunicorn.log.exception:1|c|@1.0" in lines)

            got = _drain_udp(udp, enough)
    requests = [line for line in got if line.startswith("pfx.gunicorn.requests:")]
    assert requests == ["pfx.gunicorn.requests:1|c|@1.0"] * 4, got
    assert sum(line == "pfx.gunicorn.request.status.200:1|c|@1.0" for line in got) == 3, got
    assert "pfx.gunicorn.request.status.500:1|c|@1.0" in got, got
    durations = [line for line in got if line.startswith("pfx.gunicorn.request.duration:")]
    assert len(durations) == 4 and all(re.fullmatch(r"pfx\.gunicorn\.request\.duration:[\d.]+\|ms", d)
                                       for d in durations), got
    # The worker's error log is counted too: the crash went through the statsd logger's exception().
    assert "pfx.gunicorn.log.exception:1|c|@1.0" in got, got
