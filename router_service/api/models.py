"""The model catalog: list it, add or update a model at run time."""

from __future__ import annotations

from fastapi import APIRouter, Path, Response, status

from router_service.auth import AdminDep, PrincipalDep
from router_service.catalog import ModelSpec, ModelUpdate
from router_service.deps import StateDep
from router_service.errors import InvalidRequest

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
async def list_models(state: StateDep, principal: PrincipalDep) -> list[ModelSpec]:
    return list(state.catalog.snapshot().values())


@router.get("/{model_id:path}")
async def get_model(state: StateDep, principal: PrincipalDep, model_id: str) -> ModelSpec:
    return state.catalog.get(model_id)


@router.put("/{model_id:path}")
async def put_model(
    state: StateDep,
    admin: AdminDep,
    body: ModelUpdate,
    response: Response,
    model_id: str = Path(min_length=1, max_length=200),
) -> ModelSpec:
    try:
        spec = ModelSpec(id=model_id, **body.model_dump())
    except ValueError as exc:
        raise InvalidRequest(
            f"model id {model_id!r} is not valid: expected letters, digits and ._:/@-",
            field="model_id",
            value=model_id,
        ) from exc
    created = state.catalog.upsert(spec)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return spec
