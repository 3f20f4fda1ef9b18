"""The strategies this server offers and the parameters each takes (JSON Schema)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.schemas import StrategyInfo
from app.services import strategies as service

router = APIRouter(prefix="/strategies", tags=["strategies"])


@router.get("", response_model=list[StrategyInfo], summary="Strategies and their parameters (JSON Schema)")
def list_strategies() -> list[dict[str, Any]]:
    return service.describe_all()
