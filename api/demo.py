"""A narrated story against a running Pingyi (the embedded default with the demo SLA policy).

Card PNG → citizen login → the officer → a 1-star rating → a misconduct report → SLA warnings and
escalation SMS up to the province → county acknowledges and replies → citizen not satisfied → city
re-checks → closed. Every step is checked; the exit code is 0 only if all of them happened.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import zxingcpp
from PIL import Image

DEMO_PASSWORD = "pingyi-demo"


class DemoFailed(Exception):
    pass


def say(zh: str, en: str) -> None:
    print(f"\n▶ {zh}\n  {en}", flush=True)


def show(text: str) -> None:
    print(f"    {text}", flush=True)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailed(what)


class Api:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=15)

    def call(
        self, method: str, path: str, *, token: str | None = None, expect: int = 200, **kw: Any
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        res = self.http.request(method, path, headers=headers, **kw)
        check(res.status_code == expect, f"{method} {path} → {res.status_code} {res.text[:300]}")
        return res.json()

    def staff_login(self, username: str) -> str:
        body = {"username": username, "password": DEMO_PASSWORD}
        token: str = self.call("POST", "/api/v1/staff/auth/login", json=body)["token"]
        return token


def decode_card(cards_dir: Path, unit_code: str) -> str:
    index = json.loads((cards_dir / "index.json").read_text())
    card = [c for c in index if c["unit_code"] == unit_code][1]
    png = cards_dir / card["png"]
    results = zxingcpp.read_barcodes(Image.open(png))
    check(len(results) == 1, f"no QR code found in {png}")
    url = results[0].text
    show(f"{png.name} → {url}")
    return url.rsplit("/c/", 1)[1]


def watch_escalation(api: Api, ticket: str, county: str, province: str, timeout: float) -> None:
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in api.call("GET", f"/api/v1/staff/complaints/{ticket}", token=county)["events"]:
            if (
                event["kind"].startswith(("sla_", "province", "criticism"))
                and (event["kind"], event["text"]) not in seen
            ):
                seen.add((event["kind"], event["text"]))
                show(f"[{event['at'][11:19]}] {event['text']}")
        sms = api.call("GET", "/api/v1/admin/sms", token=province, params={"ticket_no": ticket})[
            "items"
        ]
        to_province = [
            s for s in sms if s["template"] == "province_supervise" and s["status"] == "sent"
        ]
        if to_province:
            for s in sorted(sms, key=lambda s: s["id"]):
                show(f"SMS {s['status']:>7} → {s['phone']}: {s['text']}")
            return
        time.sleep(0.5)
    raise DemoFailed("the province SMS did not arrive in time")


def story(api: Api, cards_dir: Path, timeout: float) -> None:
    say("1. 群众扫描执法评议卡上的二维码", "A citizen scans the QR code on an evaluation card")
    code = decode_card(cards_dir, "430102")

    say("2. 微信登录小程序", "Log in through WeChat (wx.login code → jscode2session)")
    citizen = api.call(
        "POST", "/api/v1/auth/wechat", json={"code": f"dev-demo-{secrets.token_hex(4)}"}
    )["token"]
    show("token issued")

    say("3. 查看执法人员信息", "See who the officer is")
    card = api.call("GET", f"/api/v1/cards/{code}")
    show(
        f"{card['officer']['name']}，执法证号 {card['officer']['cert_no']}，{card['unit']['name']}"
    )

    say("4. 评价：1 星（非常不满意）→ 自动立案回访", "Rate 1 star → a follow-up case opens at once")
    rating = api.call(
        "POST",
        f"/api/v1/cards/{code}/evaluations",
        token=citizen,
        expect=201,
        json={"level": 1, "dimensions": {"civility": 1}, "comment": "态度粗暴"},
    )
    check(bool(rating["ticket_no"]), "a 1-star rating must open a case")
    show(f"差评回访案件 {rating['ticket_no']}")

    say("5. 投诉举报：态度恶劣、未使用执法记录仪", "Report misconduct: rude, no body camera")
    created = api.call(
        "POST",
        "/api/v1/complaints",
        token=citizen,
        expect=201,
        json={
            "card_code": code,
            "categories": ["RUDE", "NO_BODYCAM"],
            "anonymous": False,
            "description": "检查时语言粗暴，未开启执法记录仪。",
            "phone": "13800138000",
        },
    )
    ticket = created["ticket_no"]
    show(f"案件编号 {ticket}")
    for d in created["deadlines"]:
        show(f"时限 {d['label']}: {d['due_at']}")

    say(
        "6. 无人签收：预警、超时、报省厅督办",
        "Nobody acknowledges: warnings, overdue, SMS to the province",
    )
    county, province = api.staff_login("demo-county-430102"), api.staff_login("demo-province")
    watch_escalation(api, ticket, county, province, timeout)

    say("7. 大队签收并答复", "The county brigade acknowledges and replies")
    api.call("POST", f"/api/v1/staff/complaints/{ticket}/acknowledge", token=county)
    replied = api.call(
        "POST",
        f"/api/v1/staff/complaints/{ticket}/reply",
        token=county,
        json={"message": "经调阅记录，执法人员用语不规范，已批评教育。"},
    )
    check(replied["status"] == "replied", "the case must be replied")
    show(replied["status_label"])

    say("8. 群众不满意 → 上一级复核", "The citizen is not satisfied → re-check one level up")
    fb = api.call(
        "POST",
        f"/api/v1/complaints/{ticket}/feedback",
        token=citizen,
        json={"satisfied": False, "comment": "处理太轻", "reason": "只是口头批评，处理太轻"},
    )
    check(fb["status"] == "rechecking", "dissatisfaction must start a re-check")
    show(f"{fb['status_label']}：{fb['handling_unit']['name']}")

    say("9. 支队复核答复，案件办结", "The city detachment re-checks and replies; the case closes")
    city = api.staff_login("demo-city-4301")
    done = api.call(
        "POST",
        f"/api/v1/staff/complaints/{ticket}/reply",
        token=city,
        json={"message": "复核认定：给予执法人员警告处分，并全员培训。"},
    )
    check(done["status"] == "closed", "the re-check reply must close the case")

    say("10. 群众看到的办理过程", "What the citizen sees")
    final = api.call("GET", f"/api/v1/complaints/{ticket}", token=citizen)
    for event in final["timeline"]:
        show(f"[{event['at']}] {event['text']}")
    check(final["status"] == "closed", "the case must be closed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.demo", description=__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--cards", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=90)
    args = parser.parse_args(argv)
    try:
        story(Api(args.base_url), args.cards, args.timeout)
    except (DemoFailed, httpx.HTTPError) as exc:
        print(f"\n✗ 演示失败 / demo failed: {exc}", file=sys.stderr)
        return 1
    print("\n✓ 演示完成：每一步都已真实发生 / demo complete: every step really happened")
    return 0


if __name__ == "__main__":
    sys.exit(main())
