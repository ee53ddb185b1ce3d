"""A small client of Airflow 3's public REST API (``/api/v2``): the runs of a DAG, and triggering one.

Used where no Airflow may be imported (the ``ls4`` command) or where its CLI's
output would have to be scraped (``include/run_sample.py``). Plain HTTP, JSON
in and out.

Authentication: a JWT from the API server's auth manager. With
``LS4_AIRFLOW_USER`` and ``LS4_AIRFLOW_PASSWORD`` set it is asked for with
them (``POST /auth/token``); without, the local stack's simple auth manager,
which makes everyone an admin (``simple_auth_manager_all_admins``), hands
one out to anyone (``GET /auth/token``).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime

TIMEOUT_SECONDS = 10


class AirflowUnreachable(ConnectionError):
    """Nothing answers at the API's address."""

    def __init__(self, url: str, reason: object):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class AirflowApiError(RuntimeError):
    """The API answered with an error status."""

    def __init__(self, status: int, detail: str, url: str):
        super().__init__(f"Airflow API {url} answered {status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class DagRun:
    dag_id: str
    run_id: str
    state: str
    run_type: str
    conf: dict
    queued: datetime | None
    started: datetime | None
    ended: datetime | None

    @classmethod
    def from_response(cls, run: dict) -> "DagRun":
        return cls(dag_id=run["dag_id"], run_id=run["dag_run_id"], state=run["state"], run_type=run["run_type"],
                   conf=run.get("conf") or {}, queued=_time(run.get("queued_at") or run.get("run_after")),
                   started=_time(run.get("start_date")), ended=_time(run.get("end_date")))

    @property
    def last_change(self) -> datetime | None:
        """When the run last changed state: ended, else started, else queued."""
        return self.ended or self.started or self.queued


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class AirflowApi:
    def __init__(self, base_url: str, username: str | None = None, password: str | None = None,
                 timeout: float = TIMEOUT_SECONDS):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self._token: str | None = None

    @classmethod
    def from_env(cls, environ=os.environ) -> "AirflowApi":
        """``LS4_AIRFLOW_URL``, else the local stack's API server on ``LS4_AIRFLOW_PORT``."""
        url = environ.get("LS4_AIRFLOW_URL") or f"http://127.0.0.1:{environ.get('LS4_AIRFLOW_PORT', '8080')}"
        return cls(url, environ.get("LS4_AIRFLOW_USER") or None, environ.get("LS4_AIRFLOW_PASSWORD") or None)

    def run_url(self, run: DagRun) -> str:
        """The run's page in the Airflow UI."""
        return f"{self.base_url}/dags/{_quote(run.dag_id)}/runs/{_quote(run.run_id)}"

    def has_dag(self, dag_id: str) -> bool:
        """Whether the API server knows the DAG (its DAG processor has parsed it)."""
        try:
            self._get(f"/api/v2/dags/{_quote(dag_id)}")
        except AirflowApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def is_paused(self, dag_id: str) -> bool:
        return bool(self._get(f"/api/v2/dags/{_quote(dag_id)}")["is_paused"])

    def last_run(self, dag_id: str) -> DagRun | None:
        """The DAG's latest run; None when it has none. AirflowApiError 404: no such DAG."""
        runs = self._get(f"/api/v2/dags/{_quote(dag_id)}/dagRuns", order_by="-run_after", limit=1)["dag_runs"]
        return DagRun.from_response(runs[0]) if runs else None

    def trigger(self, dag_id: str, conf: dict) -> DagRun:
        """Queue a manual run of the DAG with ``conf``."""
        return DagRun.from_response(self._request(
            "POST", f"/api/v2/dags/{_quote(dag_id)}/dagRuns", {"logical_date": None, "conf": conf}))

    def _get(self, path: str, **query) -> dict:
        return self._request("GET", f"{path}?{urllib.parse.urlencode(query)}" if query else path)

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return self._send(method, path, body, headers)

    def token(self) -> str:
        if self._token is None:
            if self.username and self.password:
                answer = self._send("POST", "/auth/token", {"username": self.username, "password": self.password})
            else:
                answer = self._send("GET", "/auth/token")
            self._token = answer["access_token"]
        return self._token

    def _send(self, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> dict:
        url = self.base_url + path
        request = urllib.request.Request(url, method=method, headers={"Accept": "application/json", **(headers or {})})
        if body is not None:
            request.data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raise AirflowApiError(error.code, _detail(error), url) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise AirflowUnreachable(self.base_url, getattr(error, "reason", error)) from None


def _detail(error: urllib.error.HTTPError) -> str:
    """What the API says is wrong: FastAPI's ``detail``, else the body as it is."""
    text = error.read().decode(errors="replace")
    try:
        detail = json.loads(text).get("detail", text)
    except (ValueError, AttributeError):
        return text.strip() or error.reason
    return detail if isinstance(detail, str) else json.dumps(detail)


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")
