"""The command line: ``nextbest serve | check | replay | models | token | migrate | export |
evaluate | audit | sim``. Commands parse arguments and print; what they do is a use case
(``nextbest.usecases``, ``nextbest.migrate``) or the engine's."""

from __future__ import annotations

import contextlib
import enum
import io
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console

from nextbest.clock import ClockKind
from nextbest.errors import CatalogError, NextbestError, NotFound, ValidationError
from nextbest.settings import Settings, without_password

if TYPE_CHECKING:
    from nextbest.audit.model import Actor
    from nextbest.catalog.compiled import Catalog
    from nextbest.engine import Engine
    from nextbest.experiments.report import ExperimentResult
    from nextbest.sim.engines import SiteEngine
    from nextbest.sim.loop import Metrics

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="nextbest: real-time next-best-action engine for banks.",
)
_consoles: dict[str, Console] = {}


def _console(name: str) -> Console:
    """Made on first use: nothing is built at import."""
    if name not in _consoles:
        _consoles[name] = Console(stderr=name == "err", soft_wrap=True)
    return _consoles[name]


CatalogOpt = typer.Option(
    "examples/bank",
    "--catalog",
    "-c",
    envvar="NEXTBEST_CATALOG",
    help="Catalog YAML file or folder.",
)
DataOpt = typer.Option(
    ".nextbest/embedded.sqlite",
    "--data",
    "-d",
    envvar="NEXTBEST_DATA",
    help="SQLite file of the embedded store.",
)
ClockOpt = typer.Option(
    ClockKind.WALL,
    "--clock",
    envvar="NEXTBEST_CLOCK",
    case_sensitive=False,
    help="wall: decide on the server's clock (production). event: now is the latest "
    "accepted event timestamp, and a server key may send a decision's time as "
    "context.now (replays, backfills, simulations).",
)


class Role(enum.StrEnum):
    """What ``serve`` runs: the embedded engine, or one worker of a scaled deployment."""

    ALL = "all"
    API = "api"
    FOLD = "fold"


RoleOpt = typer.Option(
    Role.ALL,
    "--role",
    envvar="NEXTBEST_ROLE",
    help="all: one process, the embedded engine (default). api: a stateless API worker "
    "(publishes events to NEXTBEST_BUS, decides from NEXTBEST_PROFILES). fold: the fold "
    "worker (folds the bus into NEXTBEST_PROFILES, writes the logs to NEXTBEST_DATA); "
    "docs/scale-out.md.",
)


def _settings(catalog: str, data: str, **extra: object) -> Settings:
    return Settings.from_env(None, catalog=catalog, data=data, **extra)


def _operator(kind: str) -> Actor:
    """Who runs this command (or this server, for what a signal makes it do), as the audit
    log names them: the operating system account."""
    import getpass

    from nextbest.audit.model import Actor

    try:
        user: str | None = getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without one)
        user = None
    return Actor(kind=kind, operator=user)


def _found(use_case: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a use case; a store that is not there (exit 1) or a bad option (exit 2) is said
    plainly."""
    try:
        return use_case(*args, **kwargs)
    except NotFound as exc:
        _console("err").print(exc.message, markup=False)
        raise typer.Exit(1) from exc
    except ValidationError as exc:
        _console("err").print(exc.message, markup=False)
        raise typer.Exit(2) from exc


@app.command()
def serve(
    catalog: str = CatalogOpt,
    data: str = DataOpt,
    host: str = typer.Option("127.0.0.1", envvar="NEXTBEST_HOST"),
    port: int = typer.Option(8000, envvar="NEXTBEST_PORT"),
    dev: bool = typer.Option(
        False, "--dev", help="Allow the development keys on a non-loopback address."
    ),
    clock: ClockKind = ClockOpt,
    role: Role = RoleOpt,
    partitions: str = typer.Option(
        "",
        "--partitions",
        envvar="NEXTBEST_FOLD_PARTITIONS",
        help="With --role fold: the bus partitions this fold worker owns (0-7, or "
        "0,2,5-6), one of several; empty: it owns them all (docs/scale-out.md).",
    ),
) -> None:
    """Run the HTTP service on the embedded store (or one role of a scaled deployment).

    Logs are JSON lines on stderr (``api.logs``): one access line a request with its request
    id, uvicorn's own lines, errors. A backend that cannot be reached stops it with one line
    naming the backend and its host:port (exit 1), never a password or a traceback."""
    import uvicorn

    from nextbest.api.app import create_app
    from nextbest.api.http_protocol import serving_protocol
    from nextbest.api.logs import close_on_signals, configure
    from nextbest.bootstrap import build_engine

    settings = _settings(
        catalog, data, host=host, port=port, clock=clock, fold_partitions=partitions
    )
    if settings.uses_dev_keys and not dev and host not in ("127.0.0.1", "localhost", "::1"):
        _console("err").print(
            f"[red]refusing to serve the development keys on {host}: anyone could mint "
            "customer tokens. Set NEXTBEST_*_KEYS and NEXTBEST_TOKEN_SECRET, or pass --dev."
            "[/red]"
        )
        raise typer.Exit(2)
    if role is not Role.ALL:
        _serve_role(role, settings)
        return
    if settings.bus:
        _console("err").print(
            "nextbest: cannot start: NEXTBEST_BUS is for a scaled deployment: "
            "serve --role api or --role fold",
            markup=False,
        )
        raise typer.Exit(1)
    try:
        engine = build_engine(settings)
    except CatalogError as exc:
        for problem in exc.problems:
            _console("err").print(f"[red]{problem}[/red]")
        raise typer.Exit(1) from exc
    except NextbestError as exc:  # a backend unreachable, a malformed setting: one line
        _console("err").print(f"nextbest: cannot start: {_one_line(exc.message)}", markup=False)
        raise typer.Exit(1) from None
    if settings.uses_dev_keys:
        _console("err").print(
            "[yellow]development keys in use (dev-write-key, dev-server-key, ...): "
            "set NEXTBEST_*_KEYS and NEXTBEST_TOKEN_SECRET for anything real[/yellow]"
        )
    _console("err").print(
        f"nextbest: catalog {engine.catalog.version}, {engine.profile_count} profiles, "
        f"store {without_password(settings.data)}, {engine.clock_kind.value} clock; http://{host}:{port}"
    )
    _reload_on_hangup(engine, settings.catalog)
    from nextbest.bootstrap import build_background

    # the outbox delivered in-process (``nextbest outbox send`` alike), callback timers swept
    background = build_background(settings, engine)
    if settings.webhooks:
        names = ", ".join(w.name for w in settings.webhooks)
        _console("err").print(f"nextbest: outbox sender for webhooks {names}", markup=False)
    if engine.catalog.advisors and not any(w.name == "telephony" for w in settings.webhooks):
        _console("err").print(
            "nextbest: no telephony webhook (NEXTBEST_WEBHOOK_TELEPHONY_URL): click-to-call "
            "requests of accepted callbacks wait in the outbox (nextbest outbox list)",
            markup=False,
        )
    lines = configure()
    with close_on_signals(lines):  # the last lines written before a signal ends the process
        app = create_app(engine, settings, background=background)
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_config=None,  # configure() routed uvicorn's loggers through the JSON lines
            log_level=None,
            access_log=False,  # nextbest.access writes one line a request, with its id
            # a response's head and body in one write; single events served by the protocol
            http=serving_protocol(app),
        )


def _serve_role(role: Role, settings: Settings) -> None:
    """``serve --role api|fold``: one worker of a scaled deployment (docs/scale-out.md)."""
    import uvicorn

    from nextbest.api.app import create_app
    from nextbest.api.fold_ops import create_fold_app
    from nextbest.api.http_protocol import serving_protocol
    from nextbest.api.logs import close_on_signals, configure
    from nextbest.api.worker_metrics import ApiWorkerMetrics
    from nextbest.bootstrap import (
        build_api_worker,
        build_background,
        build_fold_worker,
        build_partitioned_fold,
    )
    from nextbest.heap import settle_for_serving

    try:
        if role is Role.API:
            worker = build_api_worker(settings)
            metrics = ApiWorkerMetrics(worker)
            # callbacks: the timers swept by one worker at a time (a lease on PostgreSQL),
            # the click-to-call requests sent from the shared outbox (claimed under leases)
            background = build_background(settings, worker, lease=worker.sweep_lease)
            app = create_app(
                worker, settings, flush_interval=0.1, metrics=metrics, background=background
            )
            what = f"API worker, catalog {worker.catalog.version}"
        elif settings.fold_partitions:
            several = build_partitioned_fold(settings)
            app = create_fold_app(several, settings)
            models = ", the model writer" if several.models is not None else ""
            what = (
                f"fold worker of partitions {settings.fold_partitions}{models}, catalog "
                f"{several.catalog.version}, folded up to {several.position}"
            )
        else:
            folder = build_fold_worker(settings)
            app = create_fold_app(folder, settings)
            what = (
                f"fold worker, catalog {folder.engine.catalog.version}, "
                f"{folder.engine.profile_count} profiles, folded up to {folder.position}"
            )
    except CatalogError as exc:
        for problem in exc.problems:
            _console("err").print(f"[red]{problem}[/red]")
        raise typer.Exit(1) from exc
    except NextbestError as exc:
        _console("err").print(f"nextbest: cannot start: {_one_line(exc.message)}", markup=False)
        raise typer.Exit(1) from None
    # what was built at start (modules, catalog, model, connections) lives as long as the
    # worker: out of the cyclic collector's reach, a full collection walks only what came
    # after instead of pausing every thread for the whole heap (the single fold worker's
    # engine froze its profiles too, ``freeze_gc``); young objects collected less often
    settle_for_serving()
    _console("err").print(
        f"nextbest: {what}; store {without_password(settings.data)}, profiles "
        f"{without_password(settings.profiles)}, bus {without_password(settings.bus)}; "
        f"http://{settings.host}:{settings.port}",
        markup=False,
    )
    lines = configure()
    with close_on_signals(lines):  # the last lines written before a signal ends the process
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            log_level=None,
            access_log=False,
            http=serving_protocol(app),
        )


def _one_line(text: str) -> str:
    """``text`` on one line: a driver's message may run over several."""
    return " ".join(text.split())


def _reload_on_hangup(engine: Engine, location: str) -> None:
    """SIGHUP re-reads the catalog at ``location`` and swaps it in if it checks, as
    ``POST /v1/admin/catalog/reload`` does; what happened goes to stderr. The reload runs
    in a thread of its own: the signal handler returns at once to the server's loop."""
    import signal
    import threading

    from nextbest.usecases import reload_catalog

    def reload() -> None:
        err = _console("err")
        try:
            done = reload_catalog(engine, location, _operator("signal"))
        except CatalogError as exc:
            err.print(
                f"nextbest: catalog {location} not reloaded, still serving "
                f"{engine.catalog.version}:",
                markup=False,
            )
            for problem in exc.problems:
                err.print(f"  {problem}", markup=False)
            return
        except NextbestError as exc:
            err.print(f"nextbest: catalog not reloaded: {exc.message}", markup=False)
            return
        if not done.changed:
            err.print(f"nextbest: catalog {done.version} unchanged", markup=False)
            return
        refolded = f"; profiles refolded from {done.events:,} events" if done.refolded else ""
        err.print(
            f"nextbest: catalog reloaded: {done.previous} -> {done.version}{refolded}",
            markup=False,
        )
        for warning in done.warnings:
            err.print(f"  {warning}", markup=False)

    def on_hangup(signum: int, frame: object) -> None:
        threading.Thread(target=reload, name="nextbest-catalog-reload", daemon=True).start()

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hangup)


@app.command()
def check(catalog: str = typer.Argument("examples/bank", help="Catalog file or folder.")) -> None:
    """Validate a catalog like a compiler: every error and warning with file, line and
    reason. Exit 1 on an error (the catalog would not load), 0 with warnings only."""
    from nextbest.usecases import check_catalog

    checked = check_catalog(catalog, now=time.time())
    out = _console("out")
    for problem in checked.problems:
        out.print(str(problem), markup=False)
    warned = len(checked.warnings)
    warnings = f"{warned} warning{'s' if warned != 1 else ''}"
    if checked.catalog is None:
        errors = len(checked.errors)
        out.print(f"{errors} error{'s' if errors != 1 else ''}, {warnings}")
        raise typer.Exit(1)
    loaded = checked.catalog
    spec = loaded.spec
    out.print(
        f"ok: catalog {loaded.version}: {len(spec.topics)} topics, "
        f"{len(spec.segments)} segments, {len(spec.offers)} offers, "
        f"{len(spec.campaigns)} campaigns, {len(spec.placements)} placements, "
        f"{len(spec.advisors)} advisors" + (f"; {warnings}" if warned else "")
    )


@app.command()
def replay(
    catalog: str = CatalogOpt,
    data: str = DataOpt,
    write: bool = typer.Option(False, "--write", help="Replace live state and snapshot."),
) -> None:
    """Rebuild every profile from the event log and compare with the stored state."""
    from nextbest.usecases import replay_store

    report = _found(replay_store, _settings(catalog, data), write)
    verdict = "identical" if report.identical else f"{len(report.differing)}+ differ"
    models = "identical" if report.models_identical else "differ"
    experiments = "identical" if report.experiments_identical else "differ"
    _console("out").print(
        f"replayed {report.events} events into {report.profiles} profiles: {verdict}; "
        f"models: {models}; experiment counters: {experiments}"
    )
    for key in report.differing:
        _console("out").print(f"  differs: {key}", markup=False)
    same = report.identical and report.models_identical and report.experiments_identical
    if not same and not write:
        raise typer.Exit(2)


@app.command("rebuild-partitioned")
def rebuild_partitioned(catalog: str = CatalogOpt, data: str = DataOpt) -> None:
    """Rebuild the live state of several fold workers (serve --role fold --partitions) in
    NEXTBEST_PROFILES from the event log: after Redis lost its data, or to start them on a
    log they did not write. Every fold worker stopped first (docs/scale-out.md)."""
    from nextbest.bootstrap import rebuild_partitioned as rebuild

    try:
        report = rebuild(_settings(catalog, data))
    except CatalogError as exc:
        for problem in exc.problems:
            _console("err").print(f"[red]{problem}[/red]")
        raise typer.Exit(1) from exc
    except NextbestError as exc:
        _console("err").print(f"nextbest: {_one_line(exc.message)}", markup=False)
        raise typer.Exit(1) from None
    _console("out").print(
        f"rebuilt {report.profiles} profiles and {report.links} links from {report.events} "
        f"events, positions of {report.partitions} partitions",
        markup=False,
    )


@app.command()
def models(
    catalog: str = CatalogOpt,
    data: str = DataOpt,
    top: int = typer.Option(5, help="Top features (largest weights) to list per model."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List each learning placement's model: kind, version, training count, top features."""
    import msgspec

    from nextbest.usecases import list_models

    listed = _found(list_models, _settings(catalog, data), top)
    out = _console("out")
    if as_json:
        out.print(msgspec.json.encode(listed).decode(), markup=False, soft_wrap=True)
        return
    if not listed:
        out.print("no placement learns (add `learning:` to a placement in the catalog)")
    for m in listed:
        i = m.info
        out.print(
            f"{m.placement}: {i.kind.value}{', shared' if m.shared else ''} ({m.explore}) "
            f"version {i.version}, "
            f"{i.n_learned} feedback events, state {i.state_bytes:,} bytes",
            markup=False,
        )
        for name, weight in i.top_features:
            out.print(f"    {weight:+.4f}  {name}", markup=False)
        for c in m.calibration:
            deciles = " ".join(f"{b.predicted:.3f}/{b.observed:.3f}" for b in c.bins)
            out.print(
                f"    calibration, {c.outcome}: {c.n:,} items, predicted {c.predicted:.4f}, "
                f"observed {c.observed:.4f}, ECE {c.ece:.4f}; by decile (predicted/observed): "
                f"{deciles}",
                markup=False,
            )


PlotOpt = typer.Option(
    None, "--plot", help="Draw the primary KPI's lift and interval day by day (a PNG file)."
)


@app.command()
def results(
    campaign: str | None = typer.Argument(None, help="A campaign id (default: every campaign)."),
    catalog: str = CatalogOpt,
    data: str = DataOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    plot: str | None = PlotOpt,
) -> None:
    """A campaign's experiment results (arm, exposed, conversions, rate, lift with its
    interval, p-value, chance to win, SRM) and the verdict; without CAMPAIGN, every
    campaign's verdict."""
    import msgspec

    from nextbest.experiments.report import ExperimentResult
    from nextbest.usecases import experiment_results

    found = _found(experiment_results, _settings(catalog, data), campaign)
    out = _console("out")
    if as_json:
        out.print(msgspec.json.encode(found).decode(), markup=False, soft_wrap=True)
    elif isinstance(found, ExperimentResult):
        _print_result(found)
    else:
        for e in found.experiments:
            out.print(
                f"{e.campaign} ({e.status}, {e.exposed:,} exposed): {e.summary}", markup=False
            )
    if plot is not None:
        if not isinstance(found, ExperimentResult):
            _console("err").print("--plot draws one campaign: name it")
            raise typer.Exit(2)
        try:
            from nextbest.results_plot import plot_daily_lift

            plot_daily_lift(found, Path(plot))
        except ImportError:
            _console("err").print("--plot needs matplotlib: pip install 'matplotlib>=3.8'")
            raise typer.Exit(1) from None
        _console("err").print(f"lift by day drawn in {plot}", markup=False)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.1%}"


def _print_result(r: ExperimentResult) -> None:
    from rich.table import Table

    out = _console("out")
    h = r.hypothesis
    out.print(f"{r.name} ({r.campaign}, {r.status}; owner {r.owner})", markup=False)
    out.print(f"  because we saw: {h.observation}", markup=False)
    out.print(f"  we will: {h.change}", markup=False)
    out.print(f"  and expect: {h.expected}", markup=False)
    srm = "FLAGGED" if r.srm_flagged else "ok"
    out.print(f"  sample ratio check: {srm} (p = {r.srm_p_value:.3g})", markup=False)
    test = "always-valid (sequential)" if r.sequential else "fixed-horizon"
    for kpi in r.kpis:
        role = "guardrail" if kpi.guardrail else "primary KPI"
        where = "" if kpi.where == "true" else f" where {kpi.where}"
        table = Table(
            title=f"{role}: {kpi.event}{where} within {kpi.within_days:g} days "
            f"({kpi.direction.value} is good; {test} {1 - r.alpha:.0%} intervals)",
            title_justify="left",
        )
        for name in (
            "arm",
            "exposed",
            "conversions",
            "rate",
            "lift",
            "interval",
            "p-value",
            "chance to win",
            "SRM",
        ):
            table.add_column(name, justify="left" if name == "arm" else "right")
        for a in kpi.arms:
            interval = "" if a.ci_lower is None else f"{_pct(a.ci_lower)} .. {_pct(a.ci_upper)}"
            untested = a.lift is not None and a.status != "ok"
            table.add_row(
                a.arm,
                f"{a.exposed:,}",
                f"{a.conversions:,.0f}" if kpi.kind == "proportion" else f"{a.conversions:,.2f}",
                f"{a.rate:.2%}" if kpi.kind == "proportion" else f"{a.rate:,.2f}",
                "n/a" if untested else _pct(a.lift) + ("*" if a.significant else ""),
                "not enough data" if untested else interval,
                "" if a.p_value is None or untested else f"{a.p_value:.3g}",
                "" if a.chance_to_win is None or untested else f"{a.chance_to_win:.1%}",
                "FLAGGED" if r.srm_flagged else "ok",
            )
        _print_table(table)
        for a in kpi.arms:
            if a.cuped is not None:
                c = a.cuped
                out.print(
                    f"  {a.arm} with CUPED (the same KPI in the 30 days before first exposure): "
                    f"lift {_pct(c.lift)}{'*' if c.significant else ''}, interval "
                    f"{_pct(c.ci_lower)} .. {_pct(c.ci_upper)}, p = {c.p_value:.3g}; "
                    f"interval {1 - c.interval_ratio:.0%} narrower",
                    markup=False,
                )
    _print_audiences(r)
    out.print("* significant at the interval's level", markup=False)
    out.print(f"verdict: {r.summary}", markup=False)


def _print_table(table: Any) -> None:
    """``table`` never squeezed: a pipe or a narrow terminal still gets one line per row."""
    out = _console("out")
    buffer = io.StringIO()
    Console(width=max(out.width, 140), file=buffer, no_color=True).print(table)
    out.print(buffer.getvalue().rstrip("\n"), markup=False, highlight=False)


def _print_audiences(r: ExperimentResult) -> None:
    """The primary KPI per audience: registered audiences first, then the exploratory ones
    with their adjusted p-values."""
    from rich.table import Table

    if not r.audiences:
        return
    kpi = r.kpis[0]
    table = Table(
        title=f"primary KPI by audience at first exposure (exploratory: p-values adjusted, "
        f"{r.audience_adjustment.replace('_', '-')})",
        title_justify="left",
    )
    for name in ("audience", "read as", "arm", "exposed", "rate", "lift", "interval", "p-value"):
        left = name in ("audience", "read as", "arm")
        table.add_column(name, justify="left" if left else "right")
    for aud in r.audiences:
        read = "registered" if aud.registered else "exploratory"
        for k, a in enumerate(aud.arms):
            interval = "" if a.ci_lower is None else f"{_pct(a.ci_lower)} .. {_pct(a.ci_upper)}"
            p = a.adjusted_p_value
            shown = "" if p is None else f"{p:.3g}"
            if p is not None and aud.exploratory and a.p_value is not None:
                shown += f" (raw {a.p_value:.3g})"
            table.add_row(
                aud.name if k == 0 else "",
                read if k == 0 else "",
                a.arm,
                f"{a.exposed:,}",
                f"{a.rate:.2%}" if kpi.kind == "proportion" else f"{a.rate:,.2f}",
                "" if a.lift is None else _pct(a.lift) + ("*" if a.significant else ""),
                interval,
                shown,
            )
    _print_table(table)


@app.command("advisor-token")
def advisor_token(
    advisor_id: str,
    ttl: int = typer.Option(8 * 3600, help="Seconds until the token expires (a shift)."),
) -> None:
    """Mint an advisor token binding an advisor's desktop to ADVISOR_ID
    (NEXTBEST_ADVISOR_TOKEN_SECRET); the desktop sends it as its Bearer key."""
    from nextbest.api.advisor_token import mint_advisor_token

    settings = Settings.from_env()
    try:
        minted = mint_advisor_token(settings.advisor_token_secret, advisor_id, time.time() + ttl)
    except NextbestError as exc:
        _console("err").print(f"nextbest: {exc.message}", markup=False)
        raise typer.Exit(2) from exc
    _console("out").print(minted, markup=False, soft_wrap=True)


@app.command()
def token(
    user_id: str,
    ttl: int = typer.Option(3600, help="Seconds until the token expires."),
) -> None:
    """Mint a customer token binding a browser session to USER_ID (NEXTBEST_TOKEN_SECRET)."""
    from nextbest.api.customer_token import mint_customer_token

    settings = Settings.from_env()
    _console("out").print(
        mint_customer_token(settings.token_secret, user_id, time.time() + ttl),
        markup=False,
        soft_wrap=True,
    )


quarantine_app = typer.Typer(
    no_args_is_help=True,
    help="Messages set apart because they broke the event vocabulary: list and replay.",
)
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("list")
def quarantine_list(
    catalog: str = CatalogOpt,
    data: str = DataOpt,
    limit: int = typer.Option(50, "--limit", min=1, help="Show at most this many, oldest first."),
) -> None:
    """Show the held messages: when, why, where in their request, and what they were."""
    from nextbest.usecases import list_quarantine

    total, held = _found(list_quarantine, _settings(catalog, data), limit)
    out = _console("out")
    out.print(f"{total} message(s) held in quarantine", markup=False)
    for m in held:
        when = datetime.fromtimestamp(m.received_at, UTC).isoformat(timespec="seconds")
        what = m.event.name or m.event.type.value
        who = m.event.user_id or m.event.anonymous_id
        out.print(
            f"#{m.id} {when} {what!r} for {who} from a {m.sender} key: "
            f"{m.code} at {m.path}: {m.reason}",
            markup=False,
        )


@quarantine_app.command("replay")
def quarantine_replay(catalog: str = CatalogOpt, data: str = DataOpt) -> None:
    """Let in the held messages the vocabulary and the decision log now accept (after a fix),
    on a store at rest; a running server does it with POST /v1/admin/quarantine/replay."""
    from nextbest.usecases import replay_quarantine

    report = _found(replay_quarantine, _settings(catalog, data))
    out = _console("out")
    out.print(
        f"replayed {report.replayed} message(s) ({report.duplicates} already in the log); "
        f"{len(report.still_held)} still held",
        markup=False,
    )
    for m in report.still_held:
        out.print(f"  #{m.id} {m.code} at {m.path}: {m.reason}", markup=False)


outbox_app = typer.Typer(
    no_args_is_help=True,
    help="Messages to send out (click-to-call requests ...): list, replay dead letters, send.",
)
app.add_typer(outbox_app, name="outbox")


class OutboxStateOpt(enum.StrEnum):
    """``--state``: the outbox states (``store.port.OutboxState``)."""

    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    DEAD = "dead"


OutboxStateFilter = typer.Option(
    None, "--state", case_sensitive=False, help="Only messages in this state."
)
OutboxIds = typer.Argument(None, help="Ids of dead messages to send again.")


def _when(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@outbox_app.command("list")
def outbox_list(
    catalog: str = CatalogOpt,
    data: str = DataOpt,
    state: OutboxStateOpt | None = OutboxStateFilter,
    limit: int = typer.Option(50, "--limit", min=1, help="Show at most this many, oldest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
) -> None:
    """Show the outbox: how many messages are pending, delivering, delivered and dead, and
    each (id, channel, destination, idempotency key, state, attempts, when next due, the
    last error). Payloads are not shown: they may carry a customer's phone number."""
    import msgspec

    from nextbest.store.port import OutboxState
    from nextbest.usecases import list_outbox

    wanted = None if state is None else OutboxState(state.value)
    counts, messages = _found(list_outbox, _settings(catalog, data), wanted, limit)
    out = _console("out")
    if as_json:
        listed = {
            "counts": {s.value: n for s, n in counts.items()},
            "messages": [
                {
                    "id": m.id,
                    "channel": m.channel,
                    "destination": m.destination,
                    "key": m.key,
                    "state": m.state.value,
                    "attempts": m.attempts,
                    "next_attempt_at": _when(m.next_attempt_at),
                    "last_error": m.last_error,
                    "created_at": _when(m.created_at),
                    "delivered_at": _when(m.delivered_at),
                    "payload_bytes": len(m.payload),
                }
                for m in messages
            ],
        }
        out.print(msgspec.json.encode(listed).decode(), markup=False, soft_wrap=True)
        return
    out.print(", ".join(f"{n} {s.value}" for s, n in counts.items()), markup=False)
    for m in messages:
        if m.state is OutboxState.DELIVERED:
            status = f"delivered {_when(m.delivered_at)}"
        elif m.state is OutboxState.DEAD:
            status = "dead"
        else:
            verb = "due" if m.state is OutboxState.PENDING else "leased until"
            status = f"{m.state.value}, {verb} {_when(m.next_attempt_at)}"
        error = f": {m.last_error}" if m.last_error else ""
        out.print(
            f"#{m.id} {m.channel} to {m.destination} key {m.key!r}: {status}, "
            f"{m.attempts} attempt(s){error}",
            markup=False,
        )


@outbox_app.command("replay")
def outbox_replay(
    ids: list[int] | None = OutboxIds,
    all_dead: bool = typer.Option(False, "--all-dead", help="Every dead message."),
    catalog: str = CatalogOpt,
    data: str = DataOpt,
) -> None:
    """Send dead messages again, with a fresh retry schedule, once their cause is fixed; a
    running sender picks them up on its next look."""
    from nextbest.usecases import replay_outbox

    settings = _settings(catalog, data)
    done = _found(replay_outbox, settings, ids or (), all_dead=all_dead, now=time.time())
    out = _console("out")
    out.print(f"replayed {len(done.replayed)} message(s)", markup=False)
    for i, why in done.skipped.items():
        out.print(f"  #{i} not replayed: {why}", markup=False)
    if done.skipped:
        raise typer.Exit(1)


@outbox_app.command("send")
def outbox_send(
    catalog: str = CatalogOpt,
    data: str = DataOpt,
    once: bool = typer.Option(
        False, "--once", help="Deliver what is due now, then exit (no waiting for retries)."
    ),
    batch: int = typer.Option(16, "--batch", min=1, help="Messages claimed at a time."),
    lease: float | None = typer.Option(
        None,
        "--lease",
        help="Seconds a claim lasts (default: a batch of timeouts plus 60): a sender that "
        "dies leaves its claimed messages to others for this long.",
    ),
    poll: float = typer.Option(1.0, "--poll", min=0.01, help="Seconds between idle looks."),
) -> None:
    """Deliver the outbox to the webhooks configured by NEXTBEST_WEBHOOK_<NAME>_URL and
    _SECRET, until SIGTERM or Ctrl-C (``serve`` runs the same loop in-process). Several may
    run at once on one store: each message goes to one of them at a time."""
    import signal
    import threading

    from nextbest.api.logs import configure
    from nextbest.usecases import send_outbox

    settings = _settings(catalog, data)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    lines = configure()  # JSON lines on stderr, as ``serve`` writes them
    try:
        report = send_outbox(
            settings, stop, once=once, batch=batch, lease_seconds=lease, poll_seconds=poll
        )
    except NextbestError as exc:
        _console("err").print(f"nextbest: outbox: {_one_line(exc.message)}", markup=False)
        raise typer.Exit(1) from None
    finally:
        lines.close()
    if once:
        _console("out").print(
            f"claimed {report.claimed}: {report.delivered} delivered, {report.retried} to "
            f"retry, {report.dead} dead",
            markup=False,
        )


@app.command()
def migrate(
    source: str = typer.Option(
        ..., "--from", help="The store to copy: sqlite:PATH (or PATH), or a postgresql:// URL."
    ),
    target: str = typer.Option(
        ..., "--to", help="An empty store to copy into, e.g. postgresql://user@host/db."
    ),
    catalog: str = CatalogOpt,
    batch: int = typer.Option(5_000, "--batch", min=1, help="Rows written per append."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted copy into the same target."
    ),
    state: bool = typer.Option(
        True,
        "--state/--no-state",
        help="Copy the saved profiles and models when folded under --catalog (else the "
        "target folds its logs on its first start).",
    ),
) -> None:
    """Move a stopped installation to another store (an embedded SQLite file to PostgreSQL):
    the event log in order, the decision log, the quarantine and the callback queue (with the
    advisors' presence), in batches; then verify
    counts, sha256 digests and that a replay on either side gives identical profiles and
    models. Exit 1 on any mismatch."""
    from rich.table import Table

    from nextbest.errors import InputError
    from nextbest.migrate import migrate as run_migrate
    from nextbest.store.catalog_files import load_catalog

    err, out = _console("err"), _console("out")

    def progress(port: str, done: int, total: int) -> None:
        if err.is_terminal:
            err.print(f"  {port}: {done:,} / {total:,}", markup=False)

    try:
        report = _found(
            run_migrate,
            source,
            target,
            load_catalog(catalog),
            batch=batch,
            resume=resume,
            state=state,
            progress=progress,
        )
    except InputError as exc:
        err.print(exc.message, markup=False)
        raise typer.Exit(2) from exc
    except NextbestError as exc:  # a server not reachable, a catalog that does not load
        err.print(exc.message, markup=False)
        raise typer.Exit(1) from exc
    table = Table(title=f"{report.source} -> {report.target}")
    for column in ("port", "source", "target", "copied", "kept", "MB", "s", "rows/s", "sha256"):
        table.add_column(column, justify="left" if column in ("port", "sha256") else "right")
    for p in report.ports:
        table.add_row(
            p.port,
            f"{p.source_rows:,}",
            f"{p.target_rows:,}",
            f"{p.copied:,}",
            f"{p.kept:,}",
            f"{p.bytes / 1e6:.2f}",
            f"{p.seconds:.2f}",
            f"{p.rows_per_second:,.0f}",
            "equal" if p.matches else "DIFFERS",
        )
    out.print(table)
    copy = report.state
    out.print(
        f"saved state: {'copied' if copy.copied else 'not copied'}: {copy.note}", markup=False
    )
    r = report.replay
    out.print(
        f"replayed {r.events:,} events into {r.profiles:,} profiles on each side under catalog "
        f"{r.catalog}: profiles {'identical' if r.identical else 'differ'}; models "
        f"{'identical' if r.models_identical else 'differ'}; the target's state "
        f"{'equals' if r.target_replay_identical else 'differs from'} its replay",
        markup=False,
    )
    out.print(
        f"{report.rows:,} rows, {report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s",
        markup=False,
    )
    if not report.ok:
        for problem in report.problems:
            err.print(f"mismatch: {problem}", markup=False)
        raise typer.Exit(1)
    out.print("verified: the target is a copy of the source", markup=False)


customer_app = typer.Typer(
    no_args_is_help=True,
    help="A customer's rights to their data: export everything held, erase it (docs/trust.md).",
)
app.add_typer(customer_app, name="customer")


ExportOut = typer.Option(None, "--out", "-o", help="Write the JSON here (default: stdout).")


@customer_app.command("export")
def customer_export(
    customer_id: str = typer.Argument(..., help="The customer's userId."),
    out: Path | None = ExportOut,
    catalog: str = CatalogOpt,
    data: str = DataOpt,
) -> None:
    """Everything the store holds about a customer and every id stitched to them, as JSON
    (GDPR art. 15 and 20); recorded in the audit log."""
    from nextbest.usecases import export_customer_of_store

    body = _found(export_customer_of_store, _settings(catalog, data), customer_id, _operator("cli"))
    if out is None:
        sys.stdout.buffer.write(body + b"\n")
        return
    out.write_bytes(body)
    _console("out").print(f"wrote {len(body)} bytes to {out}", markup=False)


@customer_app.command("erase")
def customer_erase(
    customer_id: str = typer.Argument(..., help="The customer's userId."),
    catalog: str = CatalogOpt,
    data: str = DataOpt,
) -> None:
    """Erase a customer and every id stitched to them from a store at rest (GDPR art. 17;
    on a running server: DELETE /v1/customers/{id}). Prints the receipt: with the id, it is
    the only way to find the erasure's audit entry (docs/trust.md)."""
    import msgspec

    from nextbest.usecases import erase_in_store

    report = _found(erase_in_store, _settings(catalog, data), customer_id, _operator("cli"))
    _console("out").print(msgspec.json.encode(report).decode(), markup=False, soft_wrap=True)


export_app = typer.Typer(no_args_is_help=True, help="Export logs for analysts.")
app.add_typer(export_app, name="export")


def _epoch(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        _console("err").print(f"{flag}: not an ISO date or date-time: {text!r}", markup=False)
        raise typer.Exit(2) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _today() -> date:
    """Today's UTC date (tests replace it: what a default depends on is injected here)."""
    return datetime.now(UTC).date()


def _date(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        _console("err").print(f"{flag}: not an ISO date: {text!r}", markup=False)
        raise typer.Exit(2) from None


ParquetOut = typer.Option(..., "--out", help="Parquet file to write.")
SinceOpt = typer.Option(None, "--since", help="From this time (ISO, UTC if naive).")
UntilOpt = typer.Option(None, "--until", help="Before this time (ISO, UTC if naive).")


@export_app.command("decisions")
def export_decisions(
    out: Path = ParquetOut,
    data: str = DataOpt,
    catalog: str = CatalogOpt,
    since: str | None = SinceOpt,
    until: str | None = UntilOpt,
) -> None:
    """Write the decision log (one row per shown item, with its click and conversion) to a
    Parquet file."""
    from nextbest.usecases import export_decisions as export

    lo, hi = _epoch(since, "--since"), _epoch(until, "--until")
    rows = _found(export, catalog, data, out, lo, hi, _operator("cli"))
    _console("out").print(f"wrote {rows} rows to {out}", markup=False)


@app.command()
def evaluate(
    policy: str = typer.Option(..., "--policy", help="The candidate catalog (file or folder)."),
    logs: str = typer.Option(
        ".nextbest/embedded.sqlite", "--logs", help="A store, or an exported .parquet file."
    ),
    catalog: str = CatalogOpt,
    since: str | None = SinceOpt,
    until: str | None = UntilOpt,
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the 95 % intervals."),
    seed: int = typer.Option(12345, help="Seed of the bootstrap."),
    fatigue: bool = typer.Option(
        True, "--fatigue/--no-fatigue", help="DR's reward model counts wear-out (repeats)."
    ),
    fatigue_days: float | None = typer.Option(
        None, help="How far back an earlier impression wears out (default: per-offer cap days)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Estimate a candidate catalog's click and conversion rate and value per slot from the
    decision log: IPS, SNIPS and DR with bootstrap intervals (off-policy evaluation), the value
    by offer, and a verdict against the logging policy. DR's reward model fits how much an
    offer's rate fades per earlier impression to the same customer."""
    import msgspec

    from nextbest.usecases import evaluate_policy

    report = _found(
        evaluate_policy,
        policy,
        logs,
        catalog,
        since=_epoch(since, "--since"),
        until=_epoch(until, "--until"),
        n_bootstrap=bootstrap,
        seed=seed,
        fatigue=fatigue,
        fatigue_days=fatigue_days,
    )
    out = _console("out")
    if as_json:
        out.print(msgspec.json.encode(report).decode(), markup=False, soft_wrap=True)
        return
    out.print(
        f"candidate {report.candidate}: {report.decisions} decisions, {report.rounds} shown "
        f"slots, {report.actions} actions, {report.slots} slots; its contact caps held offers "
        f"back in {report.capped_decisions} decisions",
        markup=False,
    )
    for r in report.rewards:
        fades = ", ".join(f"{kind} {f:.3f}" for kind, f in r.fade.items())
        kept = f" (DR: share kept per earlier impression: {fades})" if fades else ""
        out.print(f"{r.reward} rate per slot, logged {r.logged:.5f}{kept}:", markup=False)
        for e in r.estimates:
            out.print(
                f"  {e.estimator.value:<11} {e.value:.5f}  95% [{e.ci_lower:.5f}, {e.ci_upper:.5f}]"
                f"  ESS {e.effective_sample_size:,.0f}",
                markup=False,
            )
        warnings = sorted({w for e in r.estimates for w in e.warnings})
        for w in warnings:
            out.print(f"  warning: {w}", markup=False)
    for w in report.warnings:
        out.print(f"warning: {w}", markup=False)
    if report.offers:
        out.print(
            "value per slot by offer (DR), and each offer's share of the slots:", markup=False
        )
        out.print(
            f"  {'offer':<24} {'logged':>10} {'candidate':>10} {'shown':>7} {'would show':>10}",
            markup=False,
        )
        for o in report.offers:
            out.print(
                f"  {o.offer_id:<24} {o.logged_value:>10.4f} {o.estimated_value:>10.4f} "
                f"{o.logged_share:>7.1%} {o.candidate_share:>10.1%}",
                markup=False,
            )
    verdict = report.verdict
    if verdict is not None:
        if verdict.kind == "too_little_overlap":
            out.print(
                f"warning: effective sample size {verdict.effective_sample_size:,.0f} of "
                f"{verdict.rows:,} rows ({verdict.effective_sample_size / verdict.rows:.1%}): "
                "too small to trust the estimates",
                markup=False,
            )
        out.print(f"verdict: {verdict.text}", markup=False)


audit_app = typer.Typer(
    no_args_is_help=True,
    help="The audit log: who read which customer's data, consent and catalog changes.",
)
app.add_typer(audit_app, name="audit")

AnchorOpt = typer.Option(
    None,
    "--anchor",
    help="SEQ:HASH of an entry kept outside nextbest (a head printed earlier): it must "
    "still be in the chain. Repeat for several.",
)


@audit_app.command("verify")
def audit_verify(
    data: str = DataOpt,
    anchor: list[str] | None = AnchorOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
) -> None:
    """Check the whole hash chain: exit 0 with a summary and the head to anchor elsewhere,
    or exit 1 naming the first broken entry."""
    import msgspec

    from nextbest.auditing import parse_anchor, verify_audit

    anchors = [_found(parse_anchor, a, "--anchor") for a in anchor or ()]
    verdict = _found(verify_audit, data, anchors)
    out = _console("out")
    if as_json:
        out.print(msgspec.json.encode(verdict).decode(), markup=False, soft_wrap=True)
    elif verdict.ok:
        head = verdict.head
        out.print(f"audit log ok: {verdict.entries} entries, chain intact", markup=False)
        if head is not None:
            out.print(f"head {head} (anchor it: --anchor {head})", markup=False, soft_wrap=True)
    else:
        _console("err").print(
            f"audit log broken at entry {verdict.broken_seq}: {verdict.reason}", markup=False
        )
    if not verdict.ok:
        raise typer.Exit(1)


@audit_app.command("list")
def audit_list(
    data: str = DataOpt,
    subject: str | None = typer.Option(
        None, "--subject", help="Only entries about this subject (a customer id, catalog)."
    ),
    after: int = typer.Option(0, "--after", min=0, help="Only entries past this seq."),
    limit: int = typer.Option(100, "--limit", min=1, help="Show at most this many."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
) -> None:
    """Show the entries, oldest first: when, who, what, about whom."""
    import msgspec

    from nextbest.auditing import list_audit

    head, entries = _found(list_audit, data, subject, after, limit)
    out = _console("out")
    if as_json:
        listed = {"head": head, "entries": entries}
        out.print(msgspec.json.encode(listed).decode(), markup=False, soft_wrap=True)
        return
    for e in entries:
        who = e.actor.kind + "".join(
            f" {k}={v}"
            for k, v in (
                ("key", e.actor.key_id),
                ("advisor", e.actor.advisor),
                ("user", e.actor.user),
                ("operator", e.actor.operator),
            )
            if v
        )
        details = {k: v for k, v in e.details.items() if k != "diff"}
        shown = msgspec.json.encode(details).decode() if details else ""
        out.print(
            f"#{e.seq} {_when(e.time)} {e.action} {e.subject} by {who} {shown}".rstrip(),
            markup=False,
            soft_wrap=True,
        )
        if "diff" in e.details:
            out.print(str(e.details["diff"]), markup=False, soft_wrap=True)


sim_app = typer.Typer(no_args_is_help=True, help="The synthetic bank: generate, send, evaluate.")
app.add_typer(sim_app, name="sim")
WorldOpt = typer.Option(
    "default", "--world", help="Which synthetic bank of the zoo (docs/worlds.md)."
)


def _known_world(name: str) -> None:
    """Exit 2 with the known worlds when ``name`` is not one."""
    from nextbest.sim.worlds import world_named

    try:
        world_named(name)
    except ValueError as exc:
        _console("err").print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


@sim_app.command("generate")
def sim_generate(
    seed: int = typer.Option(1, help="Population and behaviour seed."),
    customers: int = typer.Option(1_000, help="How many customers."),
    days: int = typer.Option(30, help="How many days to simulate."),
    out: str = typer.Option("-", "--out", "-o", help="NDJSON file, or - for stdout."),
    start: str | None = typer.Option(
        None,
        help="First simulated day (ISO date). Default: DAYS days ago, so the last simulated "
        "day is yesterday and a server deciding today finds the events in its windows; "
        "give it to get the same bytes on any day.",
    ),
    world: str = WorldOpt,
    takeovers: float = typer.Option(
        0.0,
        "--takeovers",
        min=0.0,
        max=1.0,
        help="Share of customers whose account is taken over once (docs/guard.md); with it "
        "every customer's devices, habits, trips and sensitive errands are simulated too. "
        "0: off, the stream as always.",
    ),
) -> None:
    """Write the synthetic bank's Segment-spec messages as NDJSON (same arguments and
    --start, same bytes)."""
    from nextbest.sim.generate import generate_lines, write_ndjson
    from nextbest.sim.takeover import TakeoverParams

    _known_world(world)
    first = _date(start, "--start") if start else _today() - timedelta(days=days)
    began = time.perf_counter()
    params = TakeoverParams(share=takeovers) if takeovers > 0 else None
    lines = generate_lines(seed, customers, days, first, world=world, takeovers=params)
    n = write_ndjson(out, lines)
    took = time.perf_counter() - began
    _console("err").print(
        f"{n:,} messages for {customers:,} customers over {days} days in {took:.1f} s "
        f"({n / max(took, 1e-9):,.0f} messages/s)"
    )


@sim_app.command("send")
def sim_send(
    target: str = typer.Option(
        ..., "--target", help="nextbest base URL, e.g. http://127.0.0.1:8000"
    ),
    write_key: str = typer.Option(..., "--write-key", help="A write key (the Basic user name)."),
    rate: float = typer.Option(1_000.0, help="Offered events per second (open loop)."),
    duration: float = typer.Option(10.0, help="Seconds of scheduled sending."),
    file: str = typer.Option(
        "", "--file", "-f", help="NDJSON messages (from sim generate); default: generate"
    ),
    seed: int = typer.Option(1, help="With no --file: the population seed."),
    customers: int = typer.Option(1_000, help="With no --file: how many customers."),
    days: int = typer.Option(30, help="With no --file: how many days."),
    batch_size: int = typer.Option(100, help="Messages per /v1/batch request."),
    max_messages: int = typer.Option(0, help="Stop after this many messages (0: no bound)."),
    concurrency: int = typer.Option(8, help="Connections in flight."),
    json_out: str = typer.Option("", "--json", help="Also write the report as JSON here."),
) -> None:
    """Send events to a running nextbest at a fixed arrival schedule (no coordinated omission):
    latency counts from each batch's scheduled time. Bounded by --duration and --max-messages."""
    from pathlib import Path

    import msgspec

    from nextbest.sim.generate import generate_lines
    from nextbest.sim.send import ndjson_lines, run_send

    first = _today() - timedelta(days=days)  # the generated days end today, like sim generate's
    lines = ndjson_lines(file) if file else generate_lines(seed, customers, days, first)
    report = run_send(
        target,
        write_key,
        rate,
        duration,
        lines,
        batch_size=batch_size,
        max_messages=max_messages or None,
        concurrency=concurrency,
    )
    _console("out").print(report.render())
    if json_out:
        Path(json_out).write_bytes(msgspec.json.encode(report))
    if report.errors_by_status or report.errors_by_kind:
        raise typer.Exit(1)


@sim_app.command("evaluate")
def sim_evaluate(
    seed: int = typer.Option(1, help="Population and behaviour seed."),
    customers: int = typer.Option(1_000, help="How many customers."),
    days: int = typer.Option(30, help="How many days to simulate."),
    policies: str = typer.Option(
        "none,random,static,greedy_recent,prior,nextbest,oracle",
        help="Comma-separated policies to compare.",
    ),
    catalog: str = CatalogOpt,
    world: str = WorldOpt,
    json_out: str = typer.Option("", "--json", help="Also write the metrics as JSON here."),
    need_rate: float = typer.Option(
        1.0, min=0.0, help="Scales how often life events start needs (1: the defaults)."
    ),
    start: str | None = typer.Option(
        None,
        help="First simulated day (ISO date). Default: a fixed day (2026-06-01), so the "
        "same arguments give the same figures on any day.",
    ),
    target: str = typer.Option(
        "",
        "--target",
        help="Drive a running nextbest over HTTP as a site would, instead of an engine in "
        "process: a server on event time (nextbest serve --clock event) on a new store, "
        "serving --catalog. Only the nextbest policy runs there.",
    ),
    write_key: str = typer.Option(
        "dev-write-key", "--write-key", help="With --target: the key events are sent with."
    ),
    server_key: str = typer.Option(
        "dev-server-key", "--server-key", help="With --target: the key decisions ask with."
    ),
    data: str = typer.Option(
        "",
        "--data",
        "-d",
        help="Keep the nextbest policy's events, decisions and feedback in this new SQLite "
        "store (for nextbest export / evaluate / models).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Run the site loop against each policy on identical populations (in process,
    or the nextbest policy against a server with --target); print what each earned.

    incremental_conversions: per campaign, (treatment rate - control rate)
    x treatment customers, summed. [95% CI]: its percentile interval from 1,000
    bootstrap resamples of the customers (the unit campaigns randomize), seeded
    by --seed."""
    from nextbest.sim.generate import DEFAULT_START
    from nextbest.sim.loop import evaluate

    names = tuple(p.strip() for p in policies.split(",") if p.strip())
    first_day = _date(start, "--start") if start else DEFAULT_START
    _refuse_sim_where(names, target, data)
    engine_for = _site_engines(target, data, write_key, server_key)
    err = _console("err")
    with _progress(err, quiet, names, days) as progress:
        try:
            results = evaluate(
                seed,
                customers,
                days,
                names,
                catalog,
                start=first_day,
                need_rate=need_rate,
                world=world,
                progress=progress,
                engine_for=engine_for,
            )
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from exc
    _print_sim_results(results, world, json_out)


def _refuse_sim_where(names: tuple[str, ...], target: str, data: str) -> None:
    """Exit 2 where --target or --data cannot serve the policies asked for."""
    err = _console("err")
    if target and set(names) != {"nextbest"}:
        err.print(
            "--target runs the nextbest policy only (the others choose inside the engine, "
            "which needs it in process): pass --policies nextbest",
            markup=False,
        )
        raise typer.Exit(2)
    if data and "nextbest" not in names:
        err.print("--data keeps the nextbest policy's run: add it to --policies")
        raise typer.Exit(2)
    if data and (target or Path(data).exists()):
        why = "the server keeps its own store" if target else f"{data} exists"
        err.print(f"--data needs a new store, in process: {why}", markup=False)
        raise typer.Exit(2)


def _site_engines(
    target: str, data: str, write_key: str, server_key: str
) -> Callable[[str, Catalog], SiteEngine | None]:
    """Where each policy decides: the nextbest policy on the server at ``target`` or in a
    SQLite store ``data``; every other policy (and nextbest otherwise) in memory (None)."""
    from nextbest.sim.engines import LocalEngine, RemoteEngine

    def engine_for(policy: str, loaded: Catalog) -> SiteEngine | None:
        if policy != "nextbest":
            return None
        if target:
            remote = RemoteEngine(target, loaded, write_key=write_key, server_key=server_key)
            try:
                remote.check()
            except BaseException:
                remote.close()
                raise
            return remote
        return LocalEngine(loaded, data, id_prefix="nextbest-") if data else None

    return engine_for


def _print_sim_results(results: dict[str, Metrics], world: str, json_out: str) -> None:
    """The metrics table, the oracle's margin and true incremental conversions."""
    import msgspec

    from nextbest.sim.baselines import describe_margin, oracle_margin, true_incremental
    from nextbest.sim.loop import format_table

    out = _console("out")
    out.print(f"world: {world}", markup=False)
    out.print(format_table(results), markup=False)
    out.print(describe_margin(oracle_margin(results)), markup=False)
    gains = true_incremental(results)
    if gains:
        text = ", ".join(f"{name} {n:+d}" for name, n in gains.items())
        out.print(f"true incremental conversions (vs none): {text}", markup=False)
    if json_out:
        Path(json_out).write_bytes(msgspec.json.encode(results))


@contextlib.contextmanager
def _progress(
    console: Console, quiet: bool, policies: tuple[str, ...], days: int
) -> Iterator[Callable[[str, int], None] | None]:
    """A progress bar on ``console`` (days played per policy), or None when quiet or when
    ``console`` is not a terminal."""
    if quiet or not console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("days"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        tasks = {p: bar.add_task(p, total=days) for p in policies}

        def advance(policy: str, day: int) -> None:
            bar.update(tasks[policy], completed=day)

        yield advance


def main() -> None:
    try:
        app()
    except NextbestError as exc:
        _console("err").print(f"[red]{exc}[/red]")
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
