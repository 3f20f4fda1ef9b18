"""Browser pages: server-rendered shells whose scripts fetch the JSON under /api/v1 and draw with Plotly.

The project key lives in an HttpOnly cookie (the API accepts it like a bearer key), so the scripts call
the same endpoints as any client and a page never sees another project's data.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.api.deps import COOKIE, SessionDep
from app.errors import NotFound, Unauthorized
from app.models import Project
from app.services import dashboard as dashboard_data
from app.services import experiments as experiment_service
from app.services import strategies as strategy_service
from app.services.projects import project_for_key

router = APIRouter(include_in_schema=False)
UI = "/ui"
HERE = Path(__file__).parent
STATIC = HERE / "static"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
templates = Jinja2Templates(directory=HERE / "templates")


@lru_cache
def static_files() -> dict[str, Path]:
    """Our own assets plus Plotly's bundled build (no CDN: the page must work offline)."""
    files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
    spec = importlib.util.find_spec("plotly")
    if spec and spec.submodule_search_locations:
        bundled = Path(spec.submodule_search_locations[0]) / "package_data" / "plotly.min.js"
        if bundled.is_file():
            files["plotly.min.js"] = bundled
    return files


def page_project(request: Request, session: SessionDep) -> Project | None:
    key = request.cookies.get(COOKIE)
    if not key:
        return None
    try:
        return project_for_key(session=session, key=key)
    except Unauthorized:
        return None


ProjectOrNone = Annotated[Project | None, Depends(page_project)]


def _safe_next(target: str | None) -> str:
    """Only same-site paths, so the login form cannot be used as an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return UI


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{UI}/login?next={quote(target)}", status_code=303)


def _not_found(request: Request, project: Project, message: str) -> Response:
    return templates.TemplateResponse(
        request, "not_found.html", {"project": project, "message": message}, status_code=404
    )


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse(UI, status_code=307)


@router.get(f"{UI}/static/{{name}}")
def static(name: str) -> FileResponse:
    path = static_files().get(name)
    if path is None:
        raise NotFound(f"no static file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


@router.get(f"{UI}/login")
def login_form(request: Request, next_path: Annotated[str | None, Query(alias="next")] = None) -> Response:
    return templates.TemplateResponse(request, "login.html", {"next": _safe_next(next_path), "error": None})


@router.post(f"{UI}/login")
def login(
    request: Request,
    session: SessionDep,
    key: Annotated[str, Form()],
    next_path: Annotated[str, Form(alias="next")] = UI,
) -> Response:
    try:
        project_for_key(session=session, key=key.strip())
    except Unauthorized:
        return templates.TemplateResponse(
            request,
            "login.html",
            {"next": _safe_next(next_path), "error": "That key is not valid for any project."},
            status_code=401,
        )
    response = RedirectResponse(_safe_next(next_path), status_code=303)
    response.set_cookie(
        COOKIE,
        key.strip(),
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.post(f"{UI}/logout")
def logout() -> Response:
    response = RedirectResponse(f"{UI}/login", status_code=303)
    response.delete_cookie(COOKIE, httponly=True, samesite="lax")
    return response


@router.get(UI)
def experiments_page(request: Request, session: SessionDep, project: ProjectOrNone) -> Response:
    if project is None:
        return _to_login(request)
    rows = dashboard_data.experiment_summaries(session=session, project_id=project.id)
    return templates.TemplateResponse(request, "experiments.html", {"project": project, "experiments": rows})


@router.get(f"{UI}/strategies")
def strategies_page(request: Request, project: ProjectOrNone) -> Response:
    """The strategies and their parameters, from the same JSON Schemas as ``GET /api/v1/strategies``."""
    if project is None:
        return _to_login(request)
    rows = [
        {**s, "params": [_param(name, spec) for name, spec in s["parameters"].get("properties", {}).items()]}
        for s in strategy_service.describe_all()
    ]
    return templates.TemplateResponse(request, "strategies.html", {"project": project, "strategies": rows})


BOUNDS = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<"}


def _param(name: str, spec: dict[str, Any]) -> dict[str, str]:
    """A parameter's JSON Schema as one table row: type, default, allowed range and description."""
    types = [s.get("type", "any") for s in spec.get("anyOf", [spec])]
    bounds = [f"{op} {spec[k]}" for k, op in BOUNDS.items() if k in spec]
    if "enum" in spec:
        bounds.append("one of " + ", ".join(map(str, spec["enum"])))
    return {
        "name": name,
        "type": " | ".join(types),
        "default": json.dumps(spec["default"]) if "default" in spec else "required",
        "range": ", ".join(bounds),
        "description": spec.get("description", ""),
    }


@router.get(f"{UI}/experiments/{{experiment_id}}")
def experiment_page(
    request: Request, experiment_id: int, session: SessionDep, project: ProjectOrNone
) -> Response:
    if project is None:
        return _to_login(request)
    try:
        experiment = experiment_service.get_experiment(
            session=session, project_id=project.id, experiment_id=experiment_id
        )
    except NotFound as e:
        return _not_found(request, project, e.message)
    return templates.TemplateResponse(
        request,
        "experiment.html",
        {
            "project": project,
            "experiment": dashboard_data.summary(session, experiment),
            "inputs": experiment,  # what it was given: shown as entered, never changes while it runs
        },
    )


@router.get(f"{UI}/experiments/{{experiment_id}}/runs/{{run_id}}")
def run_page(
    request: Request, experiment_id: int, run_id: int, session: SessionDep, project: ProjectOrNone
) -> Response:
    if project is None:
        return _to_login(request)
    try:
        experiment = experiment_service.get_experiment(
            session=session, project_id=project.id, experiment_id=experiment_id
        )
        detail = dashboard_data.run_detail(session=session, experiment=experiment, run_id=run_id)
    except NotFound as e:
        return _not_found(request, project, e.message)
    return templates.TemplateResponse(request, "run.html", {"project": project, "detail": detail})
