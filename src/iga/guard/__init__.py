"""The inference guard: recipe x request -> Plan, with presets, hard/soft constraints, overrides, audit log."""

from __future__ import annotations

from .audit import (
    AuditLogError, AuditLogRepairWarning, append_records, default_audit_path, read_records, record_plan_overrides,
)
from .plan import OVERRIDABLE, PLAN_SCHEMA, Finding, ModelIdentity, OverrideRecord, Plan, Request, VaeIdentity
from .resolve import GuardRefused, resolve

__all__ = [
    "AuditLogError", "AuditLogRepairWarning", "OVERRIDABLE", "PLAN_SCHEMA", "Finding", "GuardRefused", "ModelIdentity", "OverrideRecord", "Plan", "Request",
    "VaeIdentity", "append_records", "default_audit_path", "read_records", "record_plan_overrides", "resolve",
]
