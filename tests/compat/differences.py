"""Every intended difference between pounce_worker and uvicorn, in one place.

``DIFFERENCES[case] = {"what", "why", "diff"}``: ``diff`` is the exact diff the
suite must observe between uvicorn (left) and pounce_worker (right), in both
modes, as ``{path: (uvicorn_value, pounce_value)}``; ``ANY`` matches any value
and ``Prefix(s)`` any string starting with ``s``. A case listed here fails when
the difference disappears or changes: then update this entry, on purpose.

Any difference *not* listed here is a bug in pounce_worker; those cases are
marked ``xfail(strict=True, reason="BUG: ...")`` in test_compat.py instead.
"""

from __future__ import annotations

from typing import Any

from .compare import MISSING


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


class Prefix(str):
    """Matches any string that starts with this one."""

    def __repr__(self) -> str:
        return f"Prefix({str.__repr__(self)})"


def matches(expected: Any, actual: Any) -> bool:
    if expected is ANY:
        return True
    if isinstance(expected, Prefix):
        return isinstance(actual, str) and actual.startswith(expected)
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(expected) == len(actual) and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(matches(expected[k], actual[k]) for k in expected)
    return bool(expected == actual)


def diff_matches(expected: dict[str, Any], actual: dict[str, list[Any]]) -> bool:
    return expected.keys() == actual.keys() and all(matches(list(expected[k]), actual[k]) for k in expected)


#: Rejections pounce_worker makes on purpose, with its own error page: 400/414/417/431 with
#: Content-Length and "connection: close", where uvicorn (h11 underneath) passes the request on.
def _rejected(status: int, reason: str, message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    body = message + "\n"
    diff: dict[str, Any] = {
        "open_after": (True, False),
        "responses[0].body": (ANY, body),
        "responses[0].headers": (ANY, [["connection", "close"], ["content-length", str(len(body))]]),
        "responses[0].reason": ("OK", reason),
        "responses[0].status": (200, status),
    }
    diff.update(extra or {})
    return diff


#: pounce_worker's 500 when the app failed before a response head was written.
_PLAIN_500 = {
    "version": "HTTP/1.1", "status": 500, "reason": "Internal Server Error",
    "headers": [["connection", "close"], ["content-length", "21"], ["content-type", "text/plain; charset=utf-8"]],
    "body": "Internal Server Error", "framing": "content-length", "complete": True, "interim": [],
}

_H11_REJECTED = Prefix("Invalid HTTP request: illegal request line")

_VALIDATE_WHY = (
    "pounce_worker/validate.py refuses requests h11 lets through where a front-end proxy and "
    "this server could disagree about where a request ends or what it means (request "
    "smuggling); it follows Gunicorn's own parser and status codes. uvicorn hands them to the app."
)

DIFFERENCES: dict[str, dict[str, Any]] = {
    # -- what the server claims ------------------------------------------------------------
    "asgi_spec_version": {
        "what": 'scope["asgi"]["spec_version"] is "2.4" (uvicorn 0.54 says "2.3").',
        "why": "pounce_worker declares ASGI HTTP spec 2.4 (send() on a closed connection raises an "
               "OSError subclass), as gunicorn's -k asgi does; send() raises ClientDisconnected "
               "(an OSError) once the client has gone.",
        "diff": {
            "responses[0].body": ('{"spec_version": "2.3", "version": "3.0"}',
                                  '{"spec_version": "2.4", "version": "3.0"}'),
        },
    },
    "disconnect_during_stream": {
        "what": "send() after the app was handed http.disconnect returns silently, as under uvicorn, "
                "though pounce_worker declares spec 2.4 (whose OSError it keeps for apps that do not listen).",
        "why": "An app that listens has learnt of the disconnect from receive(); raising from send() too "
               "made Django's ASGIHandler skip response.close() and its request_finished signal "
               "(tests/test_django_load.py). A streaming app that does not listen still stops on the "
               "OSError (disconnect_starlette_endless_stream).",
        "diff": {
            "records[0].notes.spec_2_4_promise_kept": (True, False),
        },
    },
    "disconnect_starlette_endless_stream": {
        "what": "Starlette's endless StreamingResponse stops when send() raises; its generator is "
                "finalized later (garbage collection) rather than cancelled at once.",
        "why": "Spec 2.4: Starlette then stops on send()'s OSError instead of cancelling the stream "
               "from a concurrent http.disconnect listener, as it does under uvicorn's 2.3.",
        "diff": {
            "generator_ended": ("stopped", None),
        },
    },
    "starlette_streaming_response": {
        "what": "Starlette's StreamingResponse never calls receive() under pounce_worker.",
        "why": "Follows from spec_version 2.4: Starlette then relies on send() raising OSError "
               "instead of running a concurrent http.disconnect listener (which, under uvicorn's "
               "2.3, is what reads the empty http.request).",
        "diff": {
            "records[0].received[0]": ("http.request", MISSING),
            "records[0].request_body.last_more_body": (False, None),
        },
    },
    # -- body-less statuses ----------------------------------------------------------------------
    "status_204_app_sends_body": {
        "what": "A body sent with a 204 is dropped and the connection stays open; under uvicorn "
                "h11 raises LocalProtocolError into the app's send() and the connection is closed.",
        "why": "pounce_worker treats 1xx/204/304 like HEAD (RFC 9110 §6.4.1: these responses "
               "have no content) and discards body bytes instead of failing the request; the "
               "bytes on the wire are identical (gunicorn's -k asgi does the same).",
        "diff": {
            "open_after": (False, True),
            "records[0].exception": ("LocalProtocolError: Too much data for declared Content-Length", None),
            "records[0].send_errors[0]": ("LocalProtocolError (OSError=False)", MISSING),
        },
    },
    # -- the server's own error responses ------------------------------------------------------
    "non_ascii_raw_path": {
        "what": "Both answer 400, but pounce_worker's page names the parse error and has "
                "Content-Length; uvicorn sends a fixed text, close-delimited.",
        "why": "pounce_worker's reject() writes one framed response for every refused request "
               "(status from h11's error_status_hint) and logs the same message.",
        "diff": {
            "responses[0].body": ("Invalid HTTP request received.", _H11_REJECTED),
            "responses[0].framing": ("close", "content-length"),
            "responses[0].headers": ([], [["content-length", ANY]]),
        },
    },
    "bad_request_line": {
        "what": "As non_ascii_raw_path: same 400, different page and framing.",
        "why": "As non_ascii_raw_path.",
        "diff": {
            "responses[0].body": ("Invalid HTTP request received.", _H11_REJECTED),
            "responses[0].framing": ("close", "content-length"),
            "responses[0].headers": ([], [["content-length", ANY]]),
        },
    },
    "app_raises_before_start": {
        "what": "The 500 carries Content-Length: 21; uvicorn's is chunked.",
        "why": "A fixed body has a known length: pounce_worker frames it with Content-Length "
               "(one write, no chunk overhead). Both add connection: close.",
        "diff": {
            "responses[0].framing": ("chunked", "content-length"),
            "responses[0].headers": ([["transfer-encoding", "chunked"]], [["content-length", "21"]]),
        },
    },
    "app_returns_without_response": {
        "what": "As app_raises_before_start: the 500 carries Content-Length: 21.",
        "why": "As app_raises_before_start.",
        "diff": {
            "responses[0].framing": ("chunked", "content-length"),
            "responses[0].headers": ([["transfer-encoding", "chunked"]], [["content-length", "21"]]),
        },
    },
    "app_header_injection": {
        "what": "A CR LF in a response header value gets a 500; under uvicorn the connection closes "
                "with no response at all. Neither writes the injected header.",
        "why": "uvicorn marks the response started before h11 validates the head, so after h11 "
               "refuses it there is nothing left to send; pounce_worker validates the head first "
               "(h11's rules, fastpath.py or h11 itself) and, as nothing was sent, answers 500.",
        "diff": {"responses[0]": (None, _PLAIN_500)},
    },
    "app_bad_header_name": {
        "what": "As app_header_injection, for a header name with a space: 500 instead of no response.",
        "why": "As app_header_injection.",
        "diff": {"responses[0]": (None, _PLAIN_500)},
    },
    "app_status_101": {
        "what": "status 101 in http.response.start: 500 with pounce_worker's own error message to the "
                "app; uvicorn closes without a response (h11 raises LocalProtocolError).",
        "why": "The ASGI HTTP spec has no 1xx in http.response.start; pounce_worker checks that before "
               "h11 sees it (a clearer error) and answers 500 since nothing was sent (see "
               "app_header_injection for uvicorn's side).",
        "diff": {
            "records[0].exception": (Prefix("LocalProtocolError: Response status_code should be in range"),
                                     "RuntimeError: ASGI: informational (1xx) statuses cannot be sent with "
                                     "http.response.start"),
            "records[0].send_errors[0]": ("LocalProtocolError (OSError=False)", "RuntimeError (OSError=False)"),
            "responses[0]": (None, _PLAIN_500),
        },
    },
    # -- Gunicorn's request limits -------------------------------------------------------------
    "request_headers_120_fields": {
        "what": "431 for 120 header fields; uvicorn serves it.",
        "why": "Gunicorn's limit_request_fields (default 100) applies, as with every Gunicorn worker.",
        "diff": _rejected(431, "Request Header Fields Too Large", "More header fields than limit_request_fields=100",
                          {"records[0]": (ANY, None)}),
    },
    "request_line_5000_bytes": {
        "what": "414 for a 5000-byte request target; uvicorn serves it.",
        "why": "Gunicorn's limit_request_line (default 4094) applies, as with every Gunicorn worker.",
        "diff": _rejected(414, "URI Too Long", "Request line is longer than limit_request_line=4094",
                          {"records[0]": (ANY, None)}),
    },
    "request_head_32kb_trickled": {
        "what": "A 32 KiB request head is served; uvicorn answers 400 once h11's buffer passes 16 KiB.",
        "why": "pounce_worker sizes h11's max_incomplete_event_size from Gunicorn's limits "
               "(limit_request_line + limit_request_fields x limit_request_field_size), so the "
               "per-field and field-count limits decide, as in Gunicorn, not h11's 16 KiB default.",
        "diff": {
            "app_called": (False, True),
            "open_after": (False, True),
            "responses[0].body": ("Invalid HTTP request received.", ANY),
            "responses[0].framing": ("close", "content-length"),
            "responses[0].headers": ([["connection", "close"]],
                                     [["content-length", ANY], ["content-type", "application/json"]]),
            "responses[0].reason": ("Bad Request", "OK"),
            "responses[0].status": (400, 200),
        },
    },
    # -- request targets (validate.split_target) --------------------------------------------------
    "absolute_form_target": {
        "what": "GET http://compat.test/scope/abs?x=1: scope path and raw_path are '/scope/abs'; uvicorn "
                "hands the app the whole URI as the path.",
        "why": "RFC 9112 §3.2.2: a server MUST accept the absolute-form, and the path is the URI's path; "
               "Gunicorn's PATH_INFO is '/scope/abs' too. With uvicorn's, routing and path-based checks "
               "see the scheme and authority (the route /scope/abs is not found by a framework).",
        "diff": {
            "records[0].scope.path": ("http://compat.test/scope/abs", "/scope/abs"),
            "records[0].scope.raw_path": ("http://compat.test/scope/abs", "/scope/abs"),
            "records[0].sent_bytes": (417, 381),
            "responses[0].body": (ANY, ANY),
            "responses[0].headers": ([["content-length", "417"]], [["content-length", "381"]]),
        },
    },
    "odd_targets": {
        "what": "GET /scope/frag#section: the app sees path '/scope/frag'; uvicorn passes "
                "'/scope/frag#section' as the path. The other odd targets are the same.",
        "why": "A '#fragment' belongs to no request-target form (RFC 9112 §3.2); Gunicorn drops it "
               "(PATH_INFO '/scope/frag'), and so does pounce_worker rather than hand the app a path "
               "that never names a resource.",
        "diff": {
            "responses[0].body": (
                '{"body_len": 0, "client_host": "127.0.0.1", "headers": [["host", "compat.test"]], '
                '"http_version": "1.1", "method": "GET", "path": "/scope/frag#section", "query_string": "", '
                '"raw_path": "/scope/frag#section", "root_path": "", "scheme": "http", "server_host": "127.0.0.1", '
                '"state": {"fastapi_db": "\'connected\'", "raw_startup": "\'yes\'"}, "type": "http"}',
                '{"body_len": 0, "client_host": "127.0.0.1", "headers": [["host", "compat.test"]], '
                '"http_version": "1.1", "method": "GET", "path": "/scope/frag", "query_string": "", '
                '"raw_path": "/scope/frag", "root_path": "", "scheme": "http", "server_host": "127.0.0.1", '
                '"state": {"fastapi_db": "\'connected\'", "raw_startup": "\'yes\'"}, "type": "http"}',
            ),
            "responses[0].headers": ([["content-length", "350"]], [["content-length", "334"]]),
        },
    },
    # -- stricter request validation (pounce_worker/validate.py) ----------------------------------
    "transfer_encoding_and_content_length": {
        "what": "400 for a request with both Content-Length and Transfer-Encoding; uvicorn (h11) "
                "lets Transfer-Encoding win and serves it.",
        "why": _VALIDATE_WHY + " RFC 9112 §6.1: such a message is a smuggling attempt; the server MUST close.",
        "diff": _rejected(400, "Bad Request", "Both Content-Length and Transfer-Encoding: ambiguous framing",
                          {"records[0]": (ANY, None)}),
    },
    "strict_repeated_content_length": {
        "what": "400 for two equal Content-Length fields; h11 merges them.",
        "why": _VALIDATE_WHY + " Content-Length is a singleton field (RFC 9110 §8.6).",
        "diff": _rejected(400, "Bad Request", "Repeated Content-Length header"),
    },
    "strict_host_list": {
        "what": "400 for Host: a.test, b.test.",
        "why": _VALIDATE_WHY + " RFC 9112 §3.2: a Host list is a 400.",
        "diff": _rejected(400, "Bad Request", "Host header holds a list"),
    },
    "strict_bare_lf": {
        "what": "400 for a head with bare LF line endings.",
        "why": _VALIDATE_WHY + " RFC 9112 §2.2.",
        "diff": _rejected(400, "Bad Request", "Bare LF in request head"),
    },
    "strict_obs_fold": {
        "what": "400 for an obs-fold continuation line (permit_obsolete_folding is off).",
        "why": _VALIDATE_WHY + " RFC 9112 §5.2.",
        "diff": _rejected(400, "Bad Request", "Obsolete line folding in request head"),
    },
    "strict_control_char_in_value": {
        "what": "400 for a control character in a header value.",
        "why": _VALIDATE_WHY + " RFC 9110 §5.5.",
        "diff": _rejected(400, "Bad Request", "Control character in request head"),
    },
    "strict_lowercase_method": {
        "what": "400 for the method 'get'.",
        "why": _VALIDATE_WHY + " Gunicorn's permit_unconventional_http_method is off by default.",
        "diff": _rejected(400, "Bad Request", "Invalid method 'get'"),
    },
    "strict_repeated_content_type": {
        "what": "400 for two Content-Type fields; h11 keeps both.",
        "why": _VALIDATE_WHY + " Content-Type is a singleton field (RFC 9110 §5.3, §8.3); Gunicorn answers 400.",
        "diff": _rejected(400, "Bad Request", "Repeated Content-Type header"),
    },
    "strict_host_invalid": {
        "what": "400 for Host: a b.",
        "why": _VALIDATE_WHY + " RFC 9112 §3.2: a Host that is not uri-host [':' port] MUST get a 400 "
               "(Gunicorn lets this one through; the RFC decides).",
        "diff": _rejected(400, "Bad Request", "Invalid Host header 'a b'"),
    },
    "strict_authority_form_get": {
        "what": "400 for GET compat.test:80 (authority-form); uvicorn hands the app the path 'compat.test:80'.",
        "why": _VALIDATE_WHY + " RFC 9112 §3.2.3: authority-form is for CONNECT only; Gunicorn answers 400.",
        "diff": _rejected(400, "Bad Request", "Request target 'compat.test:80' is neither a path nor an absolute URI"),
    },
    "strict_asterisk_form_get": {
        "what": "400 for GET *; uvicorn hands the app the path '*'.",
        "why": _VALIDATE_WHY + " RFC 9112 §3.2.4: asterisk-form is for OPTIONS only; Gunicorn answers 400.",
        "diff": _rejected(400, "Bad Request", "Request target '*' is for OPTIONS only"),
    },
    "strict_transfer_encoding_http_1_0": {
        "what": "400 for a chunked HTTP/1.0 request; h11 frames it by the chunked coding and uvicorn serves it. "
                "Both close the connection (HTTP/1.0).",
        "why": _VALIDATE_WHY + " RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing; "
               "Gunicorn answers 400.",
        "diff": {
            "responses[0].body": (ANY, "Transfer-Encoding on an HTTP/1.0 request\n"),
            "responses[0].headers": (ANY, [["content-length", "41"]]),
            "responses[0].reason": ("OK", "Bad Request"),
            "responses[0].status": (200, 400),
        },
    },
    # chunked.py: h11 reads chunk lines and trailers loosely, a strict proxy in front would not.
    "strict_chunk_size_whitespace": {
        "what": "400 for a chunk-size line '5 ' (whitespace after the size); h11 takes it.",
        "why": _VALIDATE_WHY + " RFC 9112 §7.1: chunk-size = 1*HEXDIG, whitespace only before a ';' (BWS); "
               "Gunicorn answers 400. Checked by pounce_worker/chunked.py before h11 reads the body.",
        "diff": _rejected(400, "Bad Request", "Invalid chunk size '5 '"),
    },
    "strict_chunk_extension": {
        "what": "400 for the chunk extension ';a b'; h11 takes anything after ';'.",
        "why": _VALIDATE_WHY + " RFC 9112 §7.1.1: chunk-ext = *( BWS ';' BWS token [ BWS '=' BWS "
               "( token / quoted-string ) ] ); Gunicorn answers 400. Checked by pounce_worker/chunked.py.",
        "diff": _rejected(400, "Bad Request", "Invalid chunk extension ';a b'"),
    },
    "strict_trailer_content_length": {
        "what": "400 for Content-Length in a chunked body's trailer section; h11 takes it.",
        "why": _VALIDATE_WHY + " RFC 9110 §6.5.1: framing, routing and authentication fields are not "
               "allowed in trailers; Gunicorn answers 400. Checked by pounce_worker/chunked.py.",
        "diff": _rejected(400, "Bad Request", "content-length is not allowed in a trailer section"),
    },
    "strict_expect_unknown": {
        "what": "417 for Expect: 200-ok; uvicorn ignores the expectation.",
        "why": _VALIDATE_WHY + " RFC 9110 §10.1.1: an unsupported expectation may get a 417.",
        "diff": _rejected(417, "Expectation Failed", "Unsupported expectation '200-ok'"),
    },
    # -- WebSockets (uvicorn --ws wsproto) -----------------------------------------------------
    "ws_app_returns": {
        "what": "An app that returns after accepting, without websocket.close: the client gets a close "
                "frame 1000 (uvicorn drops the TCP connection: the client sees 1006).",
        "why": "Returning ends the session normally, and RFC 6455 §7.1.1 has the server close "
               "with a close frame; Hypercorn does the same. A client library would otherwise "
               "report an abnormal closure (and reconnect) after every normal end.",
        "diff": {"closed_by_server": (None, {"code": 1000, "reason": ""})},
    },
    "ws_app_error_after_accept": {
        "what": "An app that raises after accepting: close frame 1011 (internal error); uvicorn drops "
                "the TCP connection (1006 for the client).",
        "why": "RFC 6455 §7.4.1 defines 1011 for exactly this; the client learns the server failed "
               "rather than the network.",
        "diff": {"closed_by_server": (None, {"code": 1011, "reason": ""})},
    },
    "ws_abrupt_close": {
        "what": "A client that vanishes without a close frame: the app's websocket.disconnect says "
                "1006 (uvicorn's wsproto implementation says 1005).",
        "why": "RFC 6455 §7.1.5: a connection closed without a close frame has code 1006 (abnormal "
               "closure); 1005 means a close frame without a code. uvicorn's own websockets "
               "implementation also reports 1006.",
        "diff": {"app.code": (1005, 1006)},
    },
}
