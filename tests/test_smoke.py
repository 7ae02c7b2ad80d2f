import httpx
import pytest

from tests.harness import serve


@pytest.mark.smoke
def test_get_and_post(mode):
    with serve("tests.apps:echo", mode=mode) as server:
        r = httpx.get(server.url + "/hello%20world?x=1")
        assert r.status_code == 200
        data = r.json()
        assert data["path"] == "/hello world"
        assert data["raw_path"] == "/hello%20world"
        assert data["query_string"] == "x=1"
        assert data["state_loop_id"] == data["loop_id"]
        r = httpx.post(server.url + "/p", content=b"x" * 100000)
        assert r.json()["body_len"] == 100000
