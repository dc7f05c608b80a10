"""The REST API's own request and response bodies; agents themselves travel as the library's models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DeregisterResponse",
    "DrainingRequest",
    "ErrorBody",
    "HealthBody",
    "HeartbeatRequest",
    "MaintenanceRequest",
    "RegisterResponse",
]


class HeartbeatRequest(BaseModel):
    """A heartbeat: proves the agent alive and optionally reports its load and health."""

    model_config = ConfigDict(extra="forbid")

    load: float | None = Field(default=None, ge=0.0, le=1.0)
    status: Literal["passing", "warning", "critical"] = "passing"
    output: str | None = Field(default=None, max_length=4096)


class MaintenanceRequest(BaseModel):
    """Put an agent in maintenance (it is then never discovered unless asked for) or take it out."""

    model_config = ConfigDict(extra="forbid")

    enable: bool
    reason: str = Field(default="", max_length=1024)


class DrainingRequest(BaseModel):
    """Mark an agent draining (alive, taking no new work: never selected, out of DNS answers) or not."""

    model_config = ConfigDict(extra="forbid", strict=True)

    draining: bool


class RegisterResponse(BaseModel):
    agent_id: str


class DeregisterResponse(BaseModel):
    agent_id: str
    deregistered: bool


class ErrorBody(BaseModel):
    """Every error answer: a machine-readable kind, a sentence for people, and the offending field if any."""

    error: Literal[
        "bad_request",
        "invalid",
        "not_found",
        "no_match",
        "denied",
        "unavailable",
        "consul_error",
        "method_not_allowed",
    ]
    message: str
    field: str | None = None


class HealthBody(BaseModel):
    status: Literal["ok", "unavailable"]
    consul: str
    leader: str | None = None
    message: str | None = None
