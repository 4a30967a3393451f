"""The ModelPool spec as typed objects (the CRD, crds/mserve.io_modelpools.yaml, validates it)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from kubernetes.utils.quantity import parse_quantity
from pydantic import Field, field_validator

from mserve_operator.spec import Gpu, Resources, _Spec

POOL_KIND = "ModelPool"
POOL_PLURAL = "modelpools"


class ModelPoolSpec(_Spec):
    image: str = ""
    replicas: int = Field(1, ge=1, le=100)
    memory_budget: str | int | None = None
    isolation: Literal["Shared", "Process"] = "Shared"
    resources: Resources = Resources()
    gpu: Gpu = Gpu()

    @field_validator("memory_budget")
    @classmethod
    def _quantity(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            memory_budget_bytes(value)
        return value

    @property
    def memory_budget_bytes(self) -> int:
        """0 when unset: the runtime then takes half of the pod's memory limit."""
        return 0 if self.memory_budget is None else memory_budget_bytes(self.memory_budget)

    @property
    def uses_gpu(self) -> bool:
        return self.gpu.count > 0


def memory_budget_bytes(value: str | int) -> int:
    """A Kubernetes quantity as whole bytes; ValueError naming the field when it is not one."""
    try:
        parsed = parse_quantity(value)
    except ValueError as exc:
        raise ValueError(f"spec.memoryBudget: {value!r} is not a quantity (e.g. 2Gi): {exc}") from None
    if parsed < 1:
        raise ValueError(f"spec.memoryBudget: {value!r} must be at least 1 byte")
    return int(parsed.to_integral_value(rounding="ROUND_CEILING") if isinstance(parsed, Decimal) else parsed)


def parse_pool_spec(spec: dict) -> ModelPoolSpec:
    return ModelPoolSpec.model_validate(spec)
