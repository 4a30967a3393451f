"""Which objects the operator may change: only those whose controller is this ModelService.

A same-named Service, HPA, PDB, Deployment, Job or NetworkPolicy that someone else made is
reported (a Conflict naming it), never updated, adopted or deleted.
"""

from __future__ import annotations

from mserve_operator.builders.pod import Owner


class OwnershipConflictError(Exception):
    """An object the operator would write exists and is controlled by someone else (or no one)."""

    def __init__(self, obj: dict, owner: Owner) -> None:
        meta = obj.get("metadata") or {}
        self.kind = obj.get("kind", "object")
        self.name = meta.get("name", "")
        controller = controller_of(obj)
        held_by = (
            f"controlled by {controller.get('kind')} {controller.get('name')}"
            if controller
            else "not controlled by any owner"
        )
        super().__init__(
            f"{self.kind} {meta.get('namespace', owner.namespace)}/{self.name} already exists and is "
            f"{held_by}, not by ModelService {owner.name}: mserve leaves it untouched; "
            "delete or rename it to let this ModelService create its own"
        )


def controller_of(obj: dict) -> dict | None:
    return next(
        (ref for ref in (obj.get("metadata") or {}).get("ownerReferences") or [] if ref.get("controller")),
        None,
    )


def is_controlled_by(obj: dict, owner: Owner) -> bool:
    controller = controller_of(obj) or {}
    return controller.get("uid") == owner.uid and controller.get("kind") == owner.kind


def check_controlled(obj: dict | None, owner: Owner) -> dict | None:
    """The object if absent or ours; raises OwnershipConflictError otherwise."""
    if obj is not None and not is_controlled_by(obj, owner):
        raise OwnershipConflictError(obj, owner)
    return obj
