"""The citizen's own profile and their phone number, verified through WeChat.

Two ways in, as the mini-program's getPhoneNumber button offers them: the current one hands over
a ``code`` exchanged at ``wxa/business/getuserphonenumber``; the older one hands over
``encryptedData`` + ``iv``, decrypted with the ``session_key`` WeChat gave this session at login
(kept server-side on the session row, never returned). A named complaint without a phone uses it.
"""

from __future__ import annotations

from typing import Any

from api import clock
from api.errors import BadRequest, UpstreamUnavailable, ValidationFailed
from api.integrations.sms import normalize_phone
from api.integrations.wechat import WeChatError, decrypt_data
from api.models import AuthSession, Citizen
from api.schemas import PhoneCreate
from api.services import auth, public_supervisors
from api.services.context import Services
from api.services.views import mask_phone

# getuserphonenumber: 40029 a bad, expired or used code — the user taps the button again.
_CODE_INVALID = {40029, 40163}
_BUSY = {-1, 45011}


async def profile(services: Services, token: str) -> dict[str, Any]:
    citizen = await auth.citizen_for(services, token)
    return await _view(citizen)


async def _view(citizen: Citizen) -> dict[str, Any]:
    return {
        "phone": mask_phone(citizen.phone),  # masked even to its owner: the screen may be seen
        "has_phone": bool(citizen.phone),
        "is_public_supervisor": citizen.is_public_supervisor,
        # 群众监督员: shown to an administrator to be appointed (never the openid)
        "supervisor_code": await public_supervisors.supervisor_code(citizen),
        "created_at": clock.iso(citizen.created_at),
    }


async def set_phone(services: Services, token: str, body: PhoneCreate) -> dict[str, Any]:
    session = await auth.session_for(token, "citizen")
    citizen = await Citizen.get(id=session.citizen_id)
    if body.phone_code is not None:
        raw = await _from_code(services, body.phone_code)
    else:
        assert body.encrypted_data is not None and body.iv is not None
        raw = await _from_encrypted(services, session, body.encrypted_data, body.iv)
    try:
        phone = normalize_phone(raw)
    except ValueError as exc:
        raise ValidationFailed(
            "暂只支持中国大陆手机号码", code="phone_unsupported", details={"phone": mask_phone(raw)}
        ) from exc
    citizen.phone = phone
    await citizen.save(update_fields=["phone"])
    return await _view(citizen)


async def _from_code(services: Services, code: str) -> str:
    try:
        return await services.wechat.phone_number(code)
    except WeChatError as exc:
        if exc.errcode in _CODE_INVALID:
            raise BadRequest(
                "手机号授权凭证无效或已过期，请重新授权",
                code="phone_code_invalid",
                details={"errcode": exc.errcode},
            ) from exc
        raise _unavailable(exc) from exc


def _unavailable(exc: WeChatError) -> UpstreamUnavailable:
    # -1 busy, 45011 too frequent, timeouts and anything unexpected: WeChat's, so come back later.
    return UpstreamUnavailable(
        "微信服务繁忙，请稍后重试",
        code="wechat_busy",
        headers={"Retry-After": "5" if exc.errcode in _BUSY else "30"},
        details={"errcode": exc.errcode},
    )


async def _from_encrypted(
    services: Services, session: AuthSession, encrypted_data: str, iv: str
) -> str:
    # This session's key first; a later wx.login rotates the key WeChat encrypts with, so the
    # citizen's newest session key is the other candidate (both only the citizen's own).
    keys = [session.wechat_session_key]
    newest = (
        await AuthSession.filter(citizen_id=session.citizen_id, wechat_session_key__isnull=False)
        .order_by("-created_at", "-id")
        .first()
    )
    if newest is not None and newest.wechat_session_key not in keys:
        keys.append(newest.wechat_session_key)
    for key in keys:
        if not key:
            continue
        try:
            payload = decrypt_data(
                session_key=key,
                encrypted_data=encrypted_data,
                iv=iv,
                appid=services.settings.wechat_appid,
            )
        except WeChatError:
            continue
        return _phone_of(payload)
    raise BadRequest("手机号数据无法解密，请重新进入小程序后再授权", code="encrypted_data_invalid")


def _phone_of(payload: dict[str, Any]) -> str:
    pure, country = payload.get("purePhoneNumber"), str(payload.get("countryCode", "86"))
    if not isinstance(pure, str) or not pure:
        raise BadRequest("解密的数据中没有手机号码", code="phone_missing")
    return pure if country == "86" else f"+{country}{pure}"
