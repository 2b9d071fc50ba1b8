"""Roles, in the order of what they may do (each may do everything of the ones before it)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"  # reads servers, metrics, alerts and commands of its tenant
    OPERATOR = "operator"  # + sends commands, acknowledges alerts, silences
    APPROVER = "approver"  # + approves or rejects other people's commands, reads the audit log
    ADMIN = "admin"  # + rules, approval policies, tokens, users, enrollment

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank
