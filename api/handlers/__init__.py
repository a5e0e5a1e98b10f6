"""HTTP only: one blueprint per area."""

from __future__ import annotations

from sanic import Blueprint


def blueprints() -> list[Blueprint]:
    from api.handlers import (
        admin,
        auth,
        cards,
        complaints,
        content,
        health,
        integrity,
        me,
        staff,
        subscriptions,
        units,
        uploads,
    )

    return [
        health.bp,
        auth.bp,
        cards.bp,
        complaints.bp,
        uploads.bp,
        staff.bp,
        admin.bp,
        me.bp,
        content.bp,
        subscriptions.bp,
        integrity.bp,
        units.bp,
    ]
