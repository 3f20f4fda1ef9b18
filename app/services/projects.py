"""Projects (tenants) and their API keys."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.security import hash_key, new_api_key
from app.errors import Conflict, Unauthorized
from app.models import ApiKey, Project


def create_project(*, session: Session, name: str) -> tuple[Project, str]:
    """A new project and its first API key (returned once, stored hashed)."""
    if session.scalar(select(Project).where(Project.name == name)) is not None:
        raise Conflict(f"a project named {name!r} already exists", code="project_exists")
    project = Project(name=name)
    session.add(project)
    session.flush()
    return project, add_key(session=session, project=project)


def add_key(*, session: Session, project: Project) -> str:
    key = new_api_key()
    session.add(ApiKey(project_id=project.id, key_hash=hash_key(key), prefix=key[:8]))
    session.flush()
    return key


def project_for_key(*, session: Session, key: str) -> Project:
    project = session.scalar(select(Project).join(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if project is None:
        raise Unauthorized("this API key is not valid; create one with `mixlab project create NAME`")
    return project
