"""Reaching an MLflow tracking store: its URI, whether a server answers (fast), whether this mlflow can open it, and
which MLflow version reads it (`bench export mlflow --check`). mlflow is imported only when a store is opened."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from bench.errors import UserError, check_output_file

INSTALL = "pip install 'metric-bench[mlflow]'"
SQL = ("sqlite", "postgresql", "mysql", "mssql")  # the stores with a database schema
SCHEMES = (*SQL, "file", "http", "https", "databricks")  # the stores MLflow's client opens
PROBE_SECONDS = 5.0  # how long a tracking server gets to answer before the export (or run) stops
WRITER = "bench.mlflow_version"  # the experiment tag with the mlflow-skinny version that last wrote it


def require_mlflow() -> None:
    """A one-line UserError unless mlflow and the SQLite store's SQLAlchemy and Alembic are installed (found, not
    imported: importing mlflow takes seconds, and the store does it when it opens)."""
    from importlib.util import find_spec

    if any(find_spec(name) is None for name in ("mlflow", "sqlalchemy", "alembic")):  # mlflow-skinny brings neither of the last two
        raise UserError(f"MLflow export needs mlflow — {INSTALL}")


def reader_install() -> str:
    """The install a reader of a store this mlflow-skinny writes needs: an mlflow at its schema revision or newer."""
    return f"pip install 'mlflow>={import_mlflow().__version__}'"


def import_mlflow():
    """mlflow, imported, its INFO lines ("Creating initial MLflow database tables...") silenced."""
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # after the import, which sets its own level
    return mlflow


def store_uri(uri: str | None, results: Path, flag: str = "--tracking-uri") -> str:
    """The tracking URI: `uri` (a bare PATH.db is SQLite), by default a SQLite file beside the first results file.
    A SQLite file that cannot be written is a UserError here, before anything is created."""
    uri = uri or f"sqlite:///{(Path(results).parent / 'mlflow.db').as_posix()}"
    if len(urlparse(uri).scheme) < 2:  # no scheme (or a Windows drive letter): a path
        if not uri.endswith(".db"):
            raise UserError(f"{flag} {uri!r}: not a URI — give sqlite:///PATH.db (a file), file:///FOLDER or http://HOST:PORT")
        uri = f"sqlite:///{Path(uri).as_posix()}"
    scheme = urlparse(uri).scheme.split("+", 1)[0]  # postgresql+psycopg2 is postgresql
    if scheme not in SCHEMES:
        raise UserError(
            f"{flag} {uri!r}: {scheme!r} is not a tracking store MLflow reads — give sqlite:///PATH.db (a file), "
            "file:///FOLDER or http(s)://HOST:PORT (an MLflow server)"
        )
    db = sqlite_file(uri)
    if db is not None:
        check_output_file(db, flag)
        if db.exists() and not os.access(db, os.W_OK):
            raise UserError(f"{db}: cannot write the MLflow store (permission denied) — give a writable {flag}")
    if scheme in ("http", "https"):
        probe_server(uri, flag)
    return uri


def probe_server(uri: str, flag: str, path: str = "health") -> str:
    """The answer of the server at `uri` to GET /`path`; a one-line UserError within PROBE_SECONDS when none answers
    (MLflow's own client retries for minutes before it gives up). An error status still means a server is there."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/{path}", timeout=PROBE_SECONDS) as answer:
            return answer.read(200).decode(errors="replace").strip()
    except urllib.error.HTTPError:
        return ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", exc)
        raise UserError(
            f"{flag} {uri}: no MLflow server answered within {PROBE_SECONDS:g} s ({type(why).__name__}: "
            f"{' '.join(str(why).split())[:120]}) — start one (mlflow server --host HOST --port PORT) or give another "
            f"{flag}"
        ) from None


def sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative with three slashes, absolute with four), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


# --- versions: which MLflow reads a store ---------------------------------------------------------------------


def schema_report(uri: str) -> list[str]:
    """`bench export mlflow --check`: the store's schema revision and the mlflow-skinny that wrote it against this
    client's, and the `pip install` a server that reads it needs. A store this client cannot open is a UserError
    (`schema_error`); a file store or a server has no schema to compare."""
    mlflow = import_mlflow()

    scheme = urlparse(uri).scheme.split("+", 1)[0]
    mine = f"mlflow-skinny {mlflow.__version__}"
    if scheme in ("http", "https"):
        server = probe_server(uri, "--tracking-uri", "version") or "an unknown version"
        return [f"{uri}: an MLflow server, version {server}; it keeps its own schema, and this {mine} talks to it over its REST API"]
    if scheme == "file" or scheme == "databricks":
        return [f"{uri}: a {scheme} store has no database schema; this {mine} opens it"]
    head, (found, writers) = _head(), _revision(uri)
    if found is None:
        return [f"{uri}: no MLflow tables yet; this {mine} creates them at schema {head}, which a server reads after {reader_install()}"]
    if found != head:
        raise UserError(schema_error(uri))
    said = f" (written by mlflow-skinny {', '.join(writers)})" if writers else ""
    return [
        f"{uri}: schema {found}{said}; this {mine} expects {head}: it reads and writes the store",
        f"a server reads it after {reader_install()}; a newer mlflow asks for `mlflow db upgrade` first, "
        "after which this export needs the same mlflow-skinny (pip install -U mlflow-skinny)",
    ]


def schema_error(uri: str) -> str:
    """The one line for a SQL store whose schema this mlflow does not expect (MLflow's own message calls any
    difference "out-of-date" and asks for `mlflow db upgrade`, which an older mlflow cannot do)."""
    mlflow = import_mlflow()

    from packaging.version import Version

    head, (found, writers) = _head(), _revision(uri)
    said = f" (written by mlflow-skinny {', '.join(writers)})" if writers else ""
    if not _known(found):
        newer = [v for v in writers if Version(v) > Version(mlflow.__version__)]
        install = f"pip install -U 'mlflow-skinny>={newer[-1]}'" if newer else "pip install -U mlflow-skinny (to the mlflow that upgraded it, or newer)"
        return f"{uri}: the store's schema {found}{said} is newer than this mlflow-skinny {mlflow.__version__} knows ({head}) — {install}"
    return (
        f"{uri}: the store's schema {found}{said} is older than this mlflow-skinny {mlflow.__version__}'s ({head}) — back it up, "
        f"then `mlflow db upgrade {uri}` (pip install 'mlflow=={mlflow.__version__}'), or give another --tracking-uri"
    )


def _head() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision  # the revision this mlflow's migrations end at

    return _get_latest_schema_revision()


def _known(revision: str | None) -> bool:
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    try:
        return revision is not None and ScriptDirectory.from_config(_get_alembic_config(db_url="")).get_revision(revision) is not None
    except Exception:
        return False


def _revision(uri: str) -> tuple[str | None, list[str]]:
    """(the store's alembic revision, None with no MLflow tables; the mlflow-skinny versions that wrote it, oldest
    first, from its experiments' WRITER tags), read with SQLAlchemy alone, whatever the schema."""
    import sqlalchemy as sa
    from packaging.version import InvalidVersion, Version

    db = sqlite_file(uri)
    if db is not None and not db.exists():
        return None, []
    engine = sa.create_engine(uri)
    try:
        with engine.connect() as connection:
            tables = set(sa.inspect(connection).get_table_names())
            if "alembic_version" not in tables:
                return None, []
            revision = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            found = (
                connection.execute(sa.text("SELECT DISTINCT value FROM experiment_tags WHERE key = :k"), {"k": WRITER}).scalars().all()
                if "experiment_tags" in tables
                else []
            )
    except sa.exc.SQLAlchemyError as exc:
        raise UserError(
            f"{uri}: cannot read the store's schema ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}) — give another --tracking-uri"
        ) from None
    finally:
        engine.dispose()
    writers = []
    for v in found:
        try:
            writers.append((Version(v), v))
        except InvalidVersion:
            continue
    return revision, [v for _, v in sorted(writers)]
