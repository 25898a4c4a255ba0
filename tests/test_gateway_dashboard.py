"""``/dashboard`` in a real browser: headless Chromium (Debian's package) loads the page from a live
gateway over scripted backends and the test reads the DOM the page's script built. Before this
release there was no page: the router's view was JSON to poll."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess

import httpx
import pytest
from gateway_servers import Gateway, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make install adds "
                                    "Debian's chromium package where apt-get may run)")
KEY = "sk-dashboard-test-0123456789"


def chromium(url: str, *args: str) -> str:
    """Headless Chromium on ``url``, its scripts run for 6 s of virtual time (two refreshes)."""
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          "--window-size=1400,1000", "--virtual-time-budget=6000", *args, url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def cell(dom: str, row: str, name: str) -> str:
    """The text of the ``class=name`` cell of the table row whose opening tag holds ``row``."""
    found = re.search(rf'<tr {row}>.*?<td class="{name}[^"]*">([^<]*)', dom, re.S)
    assert found, f"no {name} cell in the row {row}"
    return found.group(1)


@needs_chromium
def test_the_page_shows_backend_states_and_the_decision_just_made(scripted, tmp_path):
    dead = free_port()  # nothing listens there: unreachable from the start-up probe on
    backends = [f"{b}=http://127.0.0.1:{scripted.port}/{b}/v1" for b in "abc"] + [f"d=http://127.0.0.1:{dead}/v1"]
    gw = Gateway(tmp_path, "dashboard", backends, "--store", str(tmp_path / "d.sqlite"), "--api_key_env", "DASH_KEY",
                 "--max_failures", "3", "--cooldown", "120", env={"DASH_KEY": KEY}).start()
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        for _ in range(3):  # c fails three times in a row: it cools down
            r = httpx.post(gw.url + "/v1/chat/completions", headers=auth, timeout=60,
                           json={"model": "c", "messages": [{"role": "user", "content": "[[c:crash]]"}]})
            assert r.status_code == 502
        r = httpx.post(gw.url + "/v1/chat/completions", headers=auth, timeout=60,
                       json={"messages": [{"role": "user", "content": "which of you answers?"}]})
        assert r.status_code == 200
        rid, chosen = r.json()["id"], r.json()["smoothie"]["chosen"]
        refused = httpx.get(gw.url + "/dashboard")
        basic = "Basic " + base64.b64encode(f"anyone:{KEY}".encode()).decode()
        data = httpx.get(gw.url + "/dashboard/data", headers={"Authorization": basic}).json()
        url = f"http://smoothie:{KEY}@127.0.0.1:{gw.port}/dashboard"  # HTTP Basic: the key as password
        dom = chromium(url, "--dump-dom")
        shot = tmp_path / "dashboard.png"
        chromium(url, f"--screenshot={shot}")
        if os.environ.get("SMOOTHIE_DASHBOARD_SCREENSHOT"):  # docs/serving.md's picture comes from here
            shutil.copy(shot, os.environ["SMOOTHIE_DASHBOARD_SCREENSHOT"])
    finally:
        gw.stop()
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert KEY not in refused.text
    assert [b["name"] for b in data["backends"]] == ["a", "b", "c", "d"]
    assert 'id="error" style="display: none;"' in dom, "the page's fetch of /dashboard/data failed"
    states = {b: cell(dom, f'data-backend="{b}"', "state") for b in "abcd"}
    assert states == {"a": "ok", "b": "ok", "c": "cooling", "d": "unreachable"}
    assert cell(dom, f'data-id="{rid}"', "chosen") == chosen
    assert cell(dom, f'data-id="{rid}"', "mode") == "fanout"
    assert "c: skipped" in re.search(rf'<tr data-id="{rid}">(.*?)</tr>', dom, re.S).group(1)
    assert cell(dom, 'data-backend="a"', "in_flight") == "0 / 4"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_the_data_and_decisions_want_the_key(scripted, tmp_path):
    gw = Gateway(tmp_path, "dashkey", [f"{b}=http://127.0.0.1:{scripted.port}/{b}/v1" for b in "abc"],
                 "--store", str(tmp_path / "k.sqlite"), "--api_key_env", "DASH_KEY", env={"DASH_KEY": KEY}).start()
    try:
        r = httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                       json={"messages": [{"role": "user", "content": "hello"}]})
        rid = r.json()["id"]
        wrong = "Basic " + base64.b64encode(b"anyone:not-the-key").decode()
        statuses = [httpx.get(gw.url + path, headers=h).status_code
                    for path in ("/dashboard", "/dashboard/data", f"/dashboard/decision/{rid}")
                    for h in ({}, {"Authorization": wrong})]
        one = httpx.get(gw.url + f"/dashboard/decision/{rid}", headers={"Authorization": f"Bearer {KEY}"})
        missing = httpx.get(gw.url + "/dashboard/decision/nope", headers={"Authorization": f"Bearer {KEY}"})
    finally:
        gw.stop()
    assert statuses == [401] * 6
    assert one.status_code == 200 and one.json()["id"] == rid and one.json()["chosen"] == r.json()["smoothie"]["chosen"]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
