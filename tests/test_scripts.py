"""The two commands a new user runs first, exercised as a user would: scripts/server and scripts/demo."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import zxingcpp
from PIL import Image

from api.settings import ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINGYI_")}
    env.update(extra)
    return env


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("the server did not become healthy")


def test_server_serves_a_card_decoded_from_its_png(tmp_path: Path) -> None:
    port = _free_port()
    var = tmp_path / "var"
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "server"), "--var", str(var)],
        env=_clean_env(PINGYI_PORT=str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(f"{base}/healthz", proc)
        children = psutil.Process(proc.pid).children(recursive=True)
        index = json.loads((var / "cards" / "index.json").read_text())
        png = var / "cards" / index[0]["png"]
        url = zxingcpp.read_barcodes(Image.open(png))[0].text
        code = url.rsplit("/c/", 1)[1]
        card = httpx.get(f"{base}/api/v1/cards/{code}").json()
        assert card["officer"]["cert_no"] == index[0]["cert_no"]
        assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    # Nothing is left running: the worker and the embedded Redis stop with the server.
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, [p.cmdline() for p in alive]


def test_demo_tells_the_whole_story() -> None:
    res = subprocess.run(
        [str(ROOT / "scripts" / "demo")],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "省厅督办" in res.stdout
    assert "演示完成" in res.stdout
