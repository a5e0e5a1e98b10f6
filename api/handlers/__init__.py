"""HTTP only: one blueprint per area."""

from __future__ import annotations

from sanic import Blueprint


def blueprints() -> list[Blueprint]:
    from api.handlers import admin, auth, cards, complaints, health, staff, units, uploads

    return [health.bp, auth.bp, cards.bp, complaints.bp, uploads.bp, staff.bp, admin.bp, units.bp]
