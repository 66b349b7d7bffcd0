"""The command line: ``nextbest serve | check | replay | token``."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from nextbest.errors import CatalogError, NextbestError
from nextbest.settings import Settings

__all__ = ["app", "main"]

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


def _settings(catalog: str, data: str, **extra: object) -> Settings:
    return Settings.from_env(None, catalog=catalog, data=data, **extra)


@app.command()
def serve(
    catalog: str = CatalogOpt,
    data: str = DataOpt,
    host: str = typer.Option("127.0.0.1", envvar="NEXTBEST_HOST"),
    port: int = typer.Option(8000, envvar="NEXTBEST_PORT"),
    dev: bool = typer.Option(
        False, "--dev", help="Allow the development keys on a non-loopback address."
    ),
) -> None:
    """Run the HTTP service on the embedded store."""
    import uvicorn

    from nextbest.api.app import create_app
    from nextbest.engine import Engine

    settings = _settings(catalog, data, host=host, port=port)
    if settings.uses_dev_keys and not dev and host not in ("127.0.0.1", "localhost", "::1"):
        _console("err").print(
            f"[red]refusing to serve the development keys on {host}: anyone could mint "
            "customer tokens. Set NEXTBEST_*_KEYS and NEXTBEST_TOKEN_SECRET, or pass --dev."
            "[/red]"
        )
        raise typer.Exit(2)
    try:
        engine = Engine.from_settings(settings)
    except CatalogError as exc:
        for problem in exc.problems:
            _console("err").print(f"[red]{problem}[/red]")
        raise typer.Exit(1) from exc
    if settings.uses_dev_keys:
        _console("err").print(
            "[yellow]development keys in use (dev-write-key, dev-server-key, ...): "
            "set NEXTBEST_*_KEYS and NEXTBEST_TOKEN_SECRET for anything real[/yellow]"
        )
    _console("err").print(
        f"nextbest: catalog {engine.catalog.version}, {engine.profile_count} profiles, "
        f"store {settings.data}; http://{host}:{port}"
    )
    uvicorn.run(create_app(engine, settings), host=host, port=port, log_level="warning")


@app.command()
def check(catalog: str = typer.Argument("examples/bank", help="Catalog file or folder.")) -> None:
    """Validate a catalog: every problem with file, line and reason."""
    from nextbest.catalog.load import check_catalog, load_catalog

    problems = check_catalog(catalog)
    if problems:
        for problem in problems:
            _console("out").print(str(problem), markup=False)
        _console("out").print(f"{len(problems)} problem(s)")
        raise typer.Exit(1)
    loaded = load_catalog(catalog)
    spec = loaded.spec
    _console("out").print(
        f"ok: catalog {loaded.version}: {len(spec.topics)} topics, "
        f"{len(spec.segments)} segments, {len(spec.offers)} offers, "
        f"{len(spec.campaigns)} campaigns, {len(spec.placements)} placements"
    )


@app.command()
def replay(
    catalog: str = CatalogOpt,
    data: str = DataOpt,
    write: bool = typer.Option(False, "--write", help="Replace live state and snapshot."),
) -> None:
    """Rebuild every profile from the event log and compare with the stored state."""
    from nextbest.engine import Engine

    if not Path(data).exists():
        _console("err").print(f"no store at {data}")
        raise typer.Exit(1)
    engine = Engine.from_settings(_settings(catalog, data))
    try:
        report = engine.rebuild() if write else engine.replay()
    finally:
        if write:
            engine.close()
        else:
            engine.store.close()
    verdict = "identical" if report.identical else f"{len(report.differing)}+ differ"
    _console("out").print(
        f"replayed {report.events} events into {report.profiles} profiles: {verdict}"
    )
    for key in report.differing:
        _console("out").print(f"  differs: {key}", markup=False)
    if not report.identical and not write:
        raise typer.Exit(2)


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


sim_app = typer.Typer(no_args_is_help=True, help="The synthetic bank: generate, send, evaluate.")
app.add_typer(sim_app, name="sim")


@sim_app.command("generate")
def sim_generate(
    seed: int = typer.Option(1, help="Population and behaviour seed."),
    customers: int = typer.Option(1_000, help="How many customers."),
    days: int = typer.Option(30, help="How many days to simulate."),
    out: str = typer.Option("-", "--out", "-o", help="NDJSON file, or - for stdout."),
    start: str = typer.Option("2026-06-01", help="First simulated day (ISO date)."),
) -> None:
    """Write the synthetic bank's Segment-spec messages as NDJSON (same arguments, same bytes)."""
    from datetime import date

    from nextbest.sim.generate import generate_lines, write_ndjson

    began = time.perf_counter()
    n = write_ndjson(out, generate_lines(seed, customers, days, date.fromisoformat(start)))
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

    lines = ndjson_lines(file) if file else generate_lines(seed, customers, days)
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
        "random,static,nextbest,oracle", help="Comma-separated policies to compare."
    ),
    catalog: str = CatalogOpt,
    json_out: str = typer.Option("", "--json", help="Also write the metrics as JSON here."),
) -> None:
    """Run the site loop in process against each policy on identical populations."""
    from pathlib import Path

    import msgspec

    from nextbest.sim.loop import evaluate, format_table

    names = tuple(p.strip() for p in policies.split(",") if p.strip())
    try:
        results = evaluate(seed, customers, days, names, catalog)
    except ValueError as exc:
        _console("err").print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    _console("out").print(format_table(results), markup=False)
    if json_out:
        Path(json_out).write_bytes(msgspec.json.encode(results))


def main() -> None:
    try:
        app()
    except NextbestError as exc:
        _console("err").print(f"[red]{exc}[/red]")
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
